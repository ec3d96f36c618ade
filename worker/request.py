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
     "limits": {"time", "wall_time", "memory", "pids", "output", "file_size"},
     "stop_on_failure": false,
     "feedback": "none" | "verdict" | "diff"}

Without tests (neither `tests` nor `tests_dir`), the submission is one run on
`stdin`: AC on a clean exit, or the checker's verdict against
`expected_output`. A batch's defaults fill what an item leaves out.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import SpecError

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
        )
        wall = None if deadline is None else deadline - time.monotonic()
        program = compile_program(self.language, self.source, wall_time=wall)
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


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise RequestError(f"{key}: a string is required")
    return value
