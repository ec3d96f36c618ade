"""Request and response bodies of /v1 (docs/contract.md, section 4), and their checks.

Pydantic checks shapes and types; `normalize` checks what depends on the
configuration (caps) and turns a request into what worker/request.py parses and judges.
Every refusal names the field (`loc`), and nothing here echoes the input back
(an echoed NaN or lone surrogate is what turns a 422 into a 500).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from sandbox.spec import SpecError, cell_path, read_limit, show_default
from worker.checkers import CheckerError, build_checker
from worker.languages import all_languages
from worker.pipeline import JUDGE_DEFAULTS, RunLimits, judge_limit_fields, request_name
from worker.request import (
    MAX_ARGS,
    MAX_FILES,
    MAX_OUTPUT_FILES,
    MAX_RUNS,
    RequestError,
    check_compile_options,
    check_image,
    read_files,
)
from worker.results import DEFAULT_FEEDBACK, FEEDBACK_LEVELS
from worker.runs import COMPILE_LIMIT_FIELDS, read_compile_limit

from .settings import Settings


def _utf8(value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_utf8)]
Size = int | Text
Number = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestIn(Strict):
    __test__ = False  # not a pytest class

    name: Text | None = Field(None, max_length=128)
    input: Text = ""
    output: Text | None = None
    score: Number = Field(1.0, ge=0, le=1e9)


def _limits_model() -> type[BaseModel]:
    """LimitsIn: a judged test's limits as a request names them, made from
    sandbox.spec.Limits's fields and the judge's defaults (worker/pipeline.py)."""
    types: dict[str, Any] = {"seconds": Number, "cores": Number, "size": Size, "count": int}
    bounds: dict[str, dict[str, float]] = {"seconds": {"gt": 0}, "count": {"ge": 1}}
    fields: dict[str, Any] = {}
    for limit in judge_limit_fields():
        kind = limit.metadata["kind"]
        default = show_default(limit, JUDGE_DEFAULTS[limit.name])
        description = f"{limit.metadata['help']} (default {default})"
        if kind == "size":
            description += "; bytes or K/M/G"
        constraints: dict[str, Any] = bounds.get(kind, {})
        fields[request_name(limit)] = (
            types[kind] | None,
            Field(None, description=description, **constraints),
        )
    fields["compile_time"] = (
        Number | None,
        Field(None, gt=0, description="the compile's wall-clock and CPU seconds (the language's)"),
    )
    fields["compile_memory"] = (
        Size | None,
        Field(None, description="the compile's memory (the language's); bytes or K/M/G"),
    )
    return create_model("LimitsIn", __base__=Strict, **fields)


LimitsIn = _limits_model()


class CheckerProgram(Strict):
    language: Text
    source: Text


class FileIn(Strict):
    path: Text = Field(..., max_length=4096, description="relative to the working directory")
    content: Text
    encoding: Literal["utf8", "base64"] = "utf8"


class SubmissionIn(Strict):
    language: Text = Field(..., description="a language id (GET /v1/languages)")
    source: Text
    image: Text | None = Field(
        None,
        description="run in this image instead of the language's: one of the operator's "
        "allowed images (CELLBLOCK_ALLOWED_IMAGES), others are refused",
    )
    stdin: Text | None = None
    expected_output: Text | None = None
    tests: list[TestIn] | None = None
    checker: Text | CheckerProgram | None = Field(
        None, description="exact, lines (default), tokens, float[:EPS], or {language, source}"
    )
    limits: LimitsIn | None = None  # type: ignore[valid-type]
    callback_url: Text | None = Field(None, max_length=2048)
    stop_on_failure: bool = False
    recheck_tle: bool = Field(
        False,
        description="run a test once more when it ends just over its CPU limit (within 20%): "
        "the second run decides; one still running at 1.2x the limit is TLE at once",
    )
    feedback: Literal[FEEDBACK_LEVELS] = Field(  # type: ignore[valid-type]
        DEFAULT_FEEDBACK,
        description="what the result reveals of the tests: none (verdicts "
        "and figures), verdict (plus the checker's message without test data), diff (plus "
        "where the output differs and the program's output)",
    )
    args: list[Text] = Field(
        [], max_length=MAX_ARGS, description="arguments after the language's run command"
    )
    files: list[FileIn] = Field(
        [],
        max_length=MAX_FILES,
        description="files beside the source, for the compile and every run (their sizes "
        "count in the test data's cap)",
    )
    output_files: list[Text] = Field(
        [],
        max_length=MAX_OUTPUT_FILES,
        description="files read back after each run: each test's `files` (base64, by path)",
    )
    compile_options: list[Text] = Field(
        [],
        max_length=MAX_ARGS,
        description="after the compile command; each allowed by the operator "
        "(CELLBLOCK_COMPILE_OPTIONS)",
    )
    stderr_to_stdout: bool = Field(False, description="the program's stderr goes into stdout")
    runs: int = Field(
        1, ge=1, le=MAX_RUNS, description="runs of each test; time and memory averaged"
    )


class BatchIn(Strict):
    submissions: list[SubmissionIn]


class Queued(BaseModel):
    id: str
    status: Literal["queued"] = "queued"


class BatchQueued(BaseModel):
    submissions: list[Queued]


class SubmissionOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    result: dict[str, Any] | None = None
    error: str | None = None
    language: str | None = None
    attempt: int = 1
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


class RequestInvalid(ValueError):
    """A request that passed the types but not the service's rules."""

    def __init__(self, loc: tuple[str | int, ...], msg: str, status: int = 422) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg
        self.status = status


def limits_dict(
    limits: BaseModel | None, settings: Settings, loc: tuple[str | int, ...] = ("body", "limits")
) -> dict[str, Any]:
    """Limits checked against the caps of this service; sizes in bytes. Keyed
    by their request names (`output`), as the job's request keeps them."""
    out: dict[str, Any] = {}
    if limits is None:
        return out
    caps = settings.limit_caps()
    # A test's limits (by their request names), then the compile's a request may set.
    readers: list[tuple[str, Callable[[object], float | int], float, str]] = [
        (
            request_name(limit),
            functools.partial(read_limit, limit),
            caps[limit.name],
            " seconds" if limit.metadata["kind"] == "seconds" else "",
        )
        for limit in judge_limit_fields()
    ]
    compile_caps = {"compile_time": settings.max_wall_time, "compile_memory": settings.max_memory}
    readers += [
        (name, functools.partial(read_compile_limit, name), compile_caps[name], "")
        for name in COMPILE_LIMIT_FIELDS
    ]
    for name, read, cap, unit in readers:
        value = getattr(limits, name)
        if value is None:
            continue
        try:
            checked = read(value)
        except SpecError as error:
            raise RequestInvalid((*loc, name), str(error)) from None
        if checked > cap:
            raise RequestInvalid((*loc, name), f"at most {cap:g}{unit} here")
        out[name] = checked
    return out


def _field_loc(field: str) -> tuple[str | int, ...]:
    """'files[3].path' (a RequestError's field) as a loc: ('files', 3, 'path')."""
    parts: list[str | int] = []
    for name in field.split("."):
        head, _, index = name.partition("[")
        parts.append(head)
        if index.rstrip("]").isdigit():
            parts.append(int(index.rstrip("]")))
    return tuple(parts)


def normalize(
    sub: SubmissionIn,
    settings: Settings,
    known_languages: set[str],
    loc: tuple[str | int, ...] = ("body",),
) -> dict[str, Any]:
    """The stored request (worker/request.py), or RequestInvalid naming the field."""
    if sub.language not in known_languages:
        raise RequestInvalid(
            (*loc, "language"), f"unknown language (known: {', '.join(sorted(known_languages))})"
        )
    if len(sub.source.encode()) > settings.max_source:
        raise RequestInvalid(
            (*loc, "source"), f"larger than {settings.max_source} bytes", status=413
        )
    try:
        check_image(sub.image)
    except RequestError as error:
        raise RequestInvalid((*loc, "image"), str(error)) from None
    checker: Any = None
    if isinstance(sub.checker, str):
        try:  # a built-in's name: a path would name a file of the worker's machine
            build_checker(sub.checker, host_paths=False)
        except CheckerError as error:
            raise RequestInvalid((*loc, "checker"), str(error)) from None
        checker = sub.checker
    elif sub.checker is not None:
        if sub.checker.language not in known_languages:
            raise RequestInvalid((*loc, "checker", "language"), "unknown language")
        if len(sub.checker.source.encode()) > settings.max_source:
            raise RequestInvalid(
                (*loc, "checker", "source"), f"larger than {settings.max_source} bytes", status=413
            )
        checker = sub.checker.model_dump()
    tests = None
    data = len((sub.stdin or "").encode()) + len((sub.expected_output or "").encode())
    if sub.tests is not None:
        if sub.stdin is not None or sub.expected_output is not None:
            raise RequestInvalid(
                (*loc, "tests"), "give tests, or stdin and expected_output, not both"
            )
        if not sub.tests:
            raise RequestInvalid((*loc, "tests"), "at least one test")
        if len(sub.tests) > settings.max_tests:
            raise RequestInvalid((*loc, "tests"), f"at most {settings.max_tests} tests here")
        tests, seen = [], set()
        for index, test in enumerate(sub.tests):
            name = test.name if test.name is not None else str(index + 1)
            if name in seen:
                raise RequestInvalid((*loc, "tests", index, "name"), "duplicate test name")
            seen.add(name)
            data += len(test.input.encode()) + len((test.output or "").encode())
            tests.append(
                {"name": name, "input": test.input, "output": test.output, "score": test.score}
            )
    # What the worker would refuse is refused here, naming the field: a
    # submission the API took is one a worker can judge.
    try:
        source_name = all_languages()[sub.language].source
        files = read_files([f.model_dump() for f in sub.files], source_name)
        options = check_compile_options(sub.compile_options)
        for index, arg in enumerate(sub.args):
            if "\0" in arg:
                raise RequestError(f"args[{index}]: no NUL bytes")
        for index, path in enumerate(sub.output_files):
            try:
                cell_path(path)
            except SpecError as error:
                raise RequestError(f"output_files[{index}]: {error}") from None
    except RequestError as error:
        field, _, message = str(error).partition(": ")
        raise RequestInvalid((*loc, *_field_loc(field)), message) from None
    data += sum(len(content) for content in files.values())
    if data > settings.max_test_data:
        raise RequestInvalid(
            (*loc, "tests" if tests else "stdin"),
            f"test data larger than {settings.max_test_data} bytes",
            status=413,
        )
    return {
        "language": sub.language,
        "source": sub.source,
        "image": sub.image,
        "tests": tests,
        "stdin": sub.stdin,
        "expected_output": sub.expected_output,
        "checker": checker,
        "limits": limits_dict(sub.limits, settings, (*loc, "limits")),
        "stop_on_failure": sub.stop_on_failure,
        "recheck_tle": sub.recheck_tle,
        "feedback": sub.feedback,
        "args": sub.args,
        "files": [f.model_dump() for f in sub.files],
        "output_files": sub.output_files,
        "compile_options": list(options),
        "stderr_to_stdout": sub.stderr_to_stdout,
        "runs": sub.runs,
    }


def job_timeout(request: dict[str, Any]) -> int:
    """RQ's timeout of the job: compiles plus every test's wall limit, with room."""
    wall = RunLimits.from_request(request.get("limits") or {}).effective_wall_time
    tests = len(request.get("tests") or [None])
    compiles = 60 + (60 if isinstance(request.get("checker"), dict) else 0)
    return int(
        min(compiles + tests * (wall * (2 if request.get("checker") else 1) + 2) + 60, 6 * 3600)
    )


# The fields of a stored submission that `view` shows and its owner check
# reads: only these are read for a GET, never the request, whose tests may be
# megabytes (a poll then costs the same whatever the submission's size).
VIEW_FIELDS = (
    "id",
    "status",
    "result",
    "error",
    "language",
    "attempt",
    "created_at",
    "started_at",
    "finished_at",
    "owner",
    "kind",
)


def view(record: dict[str, Any]) -> dict[str, Any]:
    """A stored submission as GET /v1/submissions/{id} shows it."""
    return SubmissionOut(
        id=record["id"],
        status=record["status"],
        result=record.get("result"),
        error=record.get("error") or None,
        language=record.get("language") or record.get("request", {}).get("language"),
        attempt=record.get("attempt", 1),
        created_at=record.get("created_at"),
        started_at=record.get("started_at"),
        finished_at=record.get("finished_at"),
    ).model_dump()
