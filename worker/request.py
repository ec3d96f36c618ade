"""A submission to judge, whichever door it came by: the one request path of worker/.

An HTTP submission (the API validates and stores it; worker/jobs.py judges it)
and a batch item (worker/batch.py) are both this JSON object, parsed by
`JudgeRequest.parse` and judged by `JudgeRequest.judge` (docs/contract.md,
sections 3 and 4):

    {"language": "python3", "source": "...",
     "image": "name:tag" | null,                # an allowed image instead of the language's
     "test": "assert f() == 1",                 # appended to the source
     "tests": [{"name", "input", "output", "score"}] | null,
     "tests_dir": "path/to/tests",              # host paths only (a batch)
     "stdin": "..." | null, "expected_output": "..." | null,
     "checker": "lines" | "float:1e-6" | {"language", "source"} | "path" (host paths only),
     "limits": {"time", "wall_time", "memory", "pids", "output", "file_size",
                "compile_time", "compile_memory"},
     "stop_on_failure": false,
     "feedback": "none" | "verdict" | "diff",
     "args": ["..."],                           # after the language's run command
     "files": [{"path", "content", "encoding": "utf8" | "base64"}],  # beside the source
     "output_files": ["path"],                  # read back after each run (base64)
     "compile_options": ["-O2"],                # after the compile command (allow-listed)
     "stderr_to_stdout": false,
     "runs": 1}                                 # runs per test, figures averaged

Without tests (neither `tests` nor `tests_dir`), the submission is one run on
`stdin`: AC on a clean exit, or the checker's verdict against
`expected_output`. A batch's defaults fill what an item leaves out.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fnmatch
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import SpecError
from sandbox.spec import cell_path

from .checkers import Checker, CheckerError, build_checker
from .compiler import compile_program
from .languages import Language, LanguageError, get_language
from .pipeline import JudgeOptions, Progress, judge_program
from .results import DEFAULT_FEEDBACK, FEEDBACK_LEVELS, JudgeResult
from .runs import RunLimits
from .testsets import TestCase, TestSetError, from_data, load_dir

# The fields a batch's defaults may give (the CLI's flags of `cellblock judge --batch`).
DEFAULTABLE = ("limits", "checker", "stop_on_failure", "recheck_tle", "feedback")


# The images a submission may name (comma-separated references, exactly as
# pulled); the default is none: a submission runs in its language's image. A
# batch given by the operator may name any image.
ALLOWED_IMAGES_VARIABLE = "CELLBLOCK_ALLOWED_IMAGES"


# The compiler options a submission may add (whitespace-separated shell-style
# patterns). Unset: COMPILE_OPTIONS_ALLOWED; set, exactly what it says (empty:
# none). An operator's batch may give any. The compile runs in a cell either
# way: the list is the operator's policy (what a problem's rules allow), not a
# wall around the host.
COMPILE_OPTIONS_VARIABLE = "CELLBLOCK_COMPILE_OPTIONS"
COMPILE_OPTIONS_ALLOWED = (
    "-O0 -O1 -O2 -O3 -Os -Og -g -w -Wall -Wextra -Werror -pedantic -std=* -DONLINE_JUDGE -lm"
)
# How much a request may ask of these (the API's caps on sizes sit on top).
MAX_ARGS = 256
MAX_FILES = 256
MAX_OUTPUT_FILES = 64
MAX_RUNS = 10


class RequestError(ValueError):
    """A request that cannot be judged as given; the message names the field."""


def allowed_images() -> frozenset[str]:
    raw = os.environ.get(ALLOWED_IMAGES_VARIABLE, "")
    return frozenset(ref.strip() for ref in raw.split(",") if ref.strip())


def check_image(image: object, host_paths: bool = False) -> str | None:
    """A submission's `image`: None, or a reference it may use (RequestError)."""
    if image is None:
        return None
    if not isinstance(image, str) or not image:
        raise RequestError("image: expected an image reference")
    allowed = allowed_images()
    if not host_paths and image not in allowed:
        names = ", ".join(sorted(allowed)) or f"none: the operator sets {ALLOWED_IMAGES_VARIABLE}"
        raise RequestError(f"image: {image!r} is not allowed here (allowed: {names})")
    return image


def allowed_compile_options() -> tuple[str, ...]:
    raw = os.environ.get(COMPILE_OPTIONS_VARIABLE)
    return tuple((COMPILE_OPTIONS_ALLOWED if raw is None else raw).split())


def check_compile_options(options: object, host_paths: bool = False) -> tuple[str, ...]:
    """A submission's `compile_options`, each allowed here (else RequestError naming it)."""
    given = _strings(options, "compile_options", MAX_ARGS)
    allowed = allowed_compile_options()
    for option in given:
        if not host_paths and not any(fnmatch.fnmatchcase(option, p) for p in allowed):
            names = " ".join(allowed) or f"none: the operator sets {COMPILE_OPTIONS_VARIABLE}"
            raise RequestError(
                f"compile_options: {option!r} is not allowed here (allowed: {names})"
            )
    return given


def read_files(files: object, source_name: str = "") -> dict[str, bytes]:
    """A request's `files`: [{path, content, encoding}] as /box paths -> bytes."""
    if files is None:
        return {}
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise RequestError(f"files: a list of at most {MAX_FILES} {{path, content, encoding}}")
    out: dict[str, bytes] = {}
    for index, item in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise RequestError(f"{where}: expected {{path, content, encoding}}")
        try:
            path = cell_path(item.get("path"))  # type: ignore[arg-type]
        except SpecError as error:
            raise RequestError(f"{where}.path: {error}") from None
        if path in out or path == source_name:
            raise RequestError(f"{where}.path: {path!r} is given twice (or is the source's name)")
        encoding = item.get("encoding") or "utf8"
        if encoding == "utf8":
            out[path] = item["content"].encode()
        elif encoding == "base64":
            try:
                out[path] = base64.b64decode(item["content"], validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(f"{where}.content: not valid base64") from None
        else:
            raise RequestError(f"{where}.encoding: utf8 or base64")
    return out


@dataclass
class JudgeRequest:
    """What to judge and how, checked: the program, its tests, the limits of a
    test, the checker (built), and what the result may reveal."""

    language: Language
    source: bytes
    tests: list[TestCase]
    single_run: bool  # no tests were given: one run on stdin
    limits: RunLimits
    checker: Checker
    stop_on_failure: bool = False
    recheck_tle: bool = False
    feedback: str = DEFAULT_FEEDBACK
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    args: tuple[str, ...] = ()
    output_files: tuple[str, ...] = ()
    compile_options: tuple[str, ...] = ()
    stderr_to_stdout: bool = False
    runs: int = 1

    @classmethod
    def parse(
        cls,
        data: Any,
        defaults: dict[str, Any] | None = None,
        *,
        host_paths: bool = False,
    ) -> JudgeRequest:
        """A request from its JSON form. `host_paths`: the request may name
        files of this machine (tests_dir, a checker's path), as a batch given
        by the operator may; a request that came over HTTP never may."""
        if not isinstance(data, dict):
            raise RequestError("a request must be a JSON object")
        defaults = defaults or {}
        given = {key: defaults.get(key) for key in DEFAULTABLE}
        given.update({key: data[key] for key in DEFAULTABLE if data.get(key) is not None})
        try:
            language = get_language(_text(data, "language"))
            image = check_image(data.get("image"), host_paths)
            if image is not None:
                language = dataclasses.replace(language, image=image)
            source = _text(data, "source")
            if data.get("test") is not None:
                source += "\n" + _text(data, "test") + "\n"
            tests, single_run = _tests(data, host_paths)
            if not isinstance(data.get("limits") or {}, dict):
                raise RequestError("limits: expected an object")
            limits = RunLimits.from_request(
                {**(defaults.get("limits") or {}), **(data.get("limits") or {})}
            )
            checker = build_checker(given.get("checker"), host_paths=host_paths)
            files = read_files(data.get("files"), language.source)
            args = _strings(data.get("args"), "args", MAX_ARGS)
            output_files = tuple(
                cell_path(p)
                for p in _strings(data.get("output_files"), "output_files", MAX_OUTPUT_FILES)
            )
            compile_options = check_compile_options(data.get("compile_options"), host_paths)
            runs = data.get("runs", 1)
            if runs is None:
                runs = 1
            if type(runs) is not int or not 1 <= runs <= MAX_RUNS:
                raise RequestError(f"runs: an integer from 1 to {MAX_RUNS}")
        except (LanguageError, CheckerError, TestSetError, SpecError) as error:
            raise RequestError(str(error)) from None
        return cls(
            language=language,
            source=source.encode(),
            tests=tests,
            single_run=single_run,
            limits=limits,
            checker=checker,
            stop_on_failure=bool(given.get("stop_on_failure")),
            recheck_tle=bool(given.get("recheck_tle")),
            feedback=feedback_level(given.get("feedback")),
            files=files,
            args=args,
            output_files=output_files,
            compile_options=compile_options,
            stderr_to_stdout=bool(data.get("stderr_to_stdout")),
            runs=runs,
        )

    def judge(
        self,
        progress: Progress | None = None,
        deadline: float | None = None,
        whole_output: bool = False,
    ) -> JudgeResult:
        """Compile once, run every test, check, score. `deadline`:
        time.monotonic() by which compile and tests together must end;
        `whole_output`: tests keep their whole stdout and stderr (up to the
        output limit), not excerpts."""
        options = JudgeOptions(
            limits=self.limits,
            checker=self.checker,
            deadline=deadline,
            progress=progress,
            stop_on_failure=self.stop_on_failure,
            recheck_tle=self.recheck_tle,
            feedback=self.feedback,
            whole_output=whole_output,
            runs=self.runs,
        )
        wall = None if deadline is None else deadline - time.monotonic()
        program = compile_program(
            self.language,
            self.source,
            self.files,
            wall_time=wall,
            options=self.compile_options,
            limits=self.limits.compile_cell_options(),
        )
        program.args = self.args
        program.stderr_to_stdout = self.stderr_to_stdout
        program.output_files = self.output_files
        return judge_program(program, self.tests, options)


def feedback_level(value: Any) -> str:
    """A request's `feedback` (default diff), checked."""
    if value is None:
        return DEFAULT_FEEDBACK
    if value not in FEEDBACK_LEVELS:
        raise RequestError(f"feedback {value!r}: expected one of {', '.join(FEEDBACK_LEVELS)}")
    return str(value)


def _tests(data: dict[str, Any], host_paths: bool) -> tuple[list[TestCase], bool]:
    if data.get("tests") is not None:
        if not isinstance(data["tests"], list):
            raise RequestError("tests: a list of {name, input, output, score}")
        tests = from_data(data["tests"])
        single = False
    elif data.get("tests_dir"):
        if not host_paths:
            raise RequestError("tests_dir: names a file of this machine; give tests")
        tests = load_dir(Path(_text(data, "tests_dir")))
        single = False
    else:
        stdin, expected = data.get("stdin") or "", data.get("expected_output")
        if not isinstance(stdin, str) or not (expected is None or isinstance(expected, str)):
            raise RequestError("stdin and expected_output: strings")
        tests = [TestCase("1", stdin.encode(), None if expected is None else expected.encode())]
        single = True
    if not tests:
        raise RequestError("tests: empty")
    return tests, single


def _strings(value: object, key: str, most: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"{key}: a list of strings")
    if len(value) > most:
        raise RequestError(f"{key}: at most {most}")
    if any("\0" in v for v in value):
        raise RequestError(f"{key}: no NUL bytes")
    return tuple(value)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise RequestError(f"{key}: a string is required")
    return value
