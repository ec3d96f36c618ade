"""What judging produces: a verdict per test and for the whole submission.

The names are docs/contract.md, section 3 (JudgeResult); fields beyond the
contract's are extensions and are never renamed once added.
"""

from __future__ import annotations

import base64
import copy
import enum
from dataclasses import dataclass, field, fields
from typing import Any

from sandbox import RunResult, Status


class Verdict(enum.StrEnum):
    AC = "AC"
    WA = "WA"
    TLE = "TLE"
    MLE = "MLE"
    OLE = "OLE"
    RE = "RE"
    CE = "CE"
    IE = "IE"

    def __str__(self) -> str:
        return self.value


# A cell's status, when it is not OK, is the test's verdict. SV (a forbidden
# syscall) is a runtime error to a judge: the program did something it may not.
STATUS_VERDICT = {
    Status.RE: Verdict.RE,
    Status.TLE: Verdict.TLE,
    Status.MLE: Verdict.MLE,
    Status.OLE: Verdict.OLE,
    Status.SV: Verdict.RE,
    Status.IE: Verdict.IE,
}

# How much of a program's output a result keeps (feedback for people and LLMs).
EXCERPT_BYTES = 1024

# How much of the tests a result may reveal (`feedback`): `none` verdicts and
# figures only; `verdict` plus the checker's message without test data ("line 3
# differs"); `diff` plus where the output first differs, what was expected there,
# and excerpts of the program's output. An online judge keeps its hidden tests
# hidden with `none` or `verdict`: the program's own output is withheld too (it
# could echo a hidden input). The compile result is kept at every level: it
# tells about the submission only.
FEEDBACK_LEVELS = ("none", "verdict", "diff")
DEFAULT_FEEDBACK = "diff"


def output_files(files: dict[str, bytes]) -> dict[str, str]:
    """Files copied out of a run, as a result holds them: base64, by path."""
    return {path: base64.b64encode(data).decode() for path, data in files.items()}


def excerpt(text: str, limit: int = EXCERPT_BYTES) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


@dataclass
class TestResult:
    """One test: the contract's fields, then extensions."""

    name: str
    verdict: Verdict
    time: float = 0.0
    wall_time: float = 0.0
    memory: int = 0
    exit_code: int | None = None
    signal: int | None = None
    message: str = ""
    # Extensions.
    score: float = 0.0
    max_score: float = 1.0
    status: str = ""  # the cell's own status (OK, RE, SV, ...)
    oom_killed: bool = False
    stdout: str = ""  # excerpts, for feedback
    stderr: str = ""
    checker: dict[str, Any] | None = None  # the checker program's or interactor's cell
    rechecked: bool = False  # run twice: the first run ended just over the CPU limit
    interactor: dict[str, Any] | None = None
    # Set when stdout and stderr are the run's whole output (up to its output
    # limit), not excerpts: a single run's, as Judge0's clients expect.
    stdout_truncated: bool | None = None
    stderr_truncated: bool | None = None
    # A request's `output_files` the run left: path -> base64 of the content.
    files: dict[str, str] | None = None
    # The message without test data, for feedback "verdict" (None: only the verdict).
    summary: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The contract's form. What dataclasses.asdict gives, without its deep
        copy of every field (a sixth of a worker's CPU per test, between runs):
        only the nested dicts are copied."""
        data = {name: getattr(self, name) for name in _TEST_FIELDS}
        data["verdict"] = self.verdict.value
        for key in ("checker", "interactor", "stdout_truncated", "stderr_truncated", "files"):
            if data[key] is None:
                del data[key]
            elif isinstance(data[key], dict):
                data[key] = copy.deepcopy(data[key])
        return data

    def redact(self, feedback: str) -> TestResult:
        """Keep only what `feedback` allows (FEEDBACK_LEVELS), in place."""
        if feedback != "diff":
            self.message = (self.summary or "") if feedback == "verdict" else ""
            self.stdout = self.stderr = ""
            self.stdout_truncated = self.stderr_truncated = None
            self.checker = self.interactor = None  # their output is about the test data
            self.files = None  # the program's output, as stdout is
        return self


_TEST_FIELDS = tuple(f.name for f in fields(TestResult) if f.name != "summary")


@dataclass
class JudgeResult:
    """A whole submission: the contract's JudgeResult."""

    verdict: Verdict
    score: float = 0.0
    max_score: float = 0.0
    compile: RunResult | None = None
    tests: list[TestResult] = field(default_factory=list)
    time: float = 0.0
    memory: int = 0
    # Extensions.
    message: str = ""
    language: str = ""
    wall_time: float = 0.0
    tests_total: int = 0  # tests in the set; more than len(tests) when judging stopped early

    def redact(self, feedback: str) -> JudgeResult:
        """Keep only what `feedback` allows, in place: every test, and the
        message that names the first failed one."""
        if feedback != "diff" and self.tests:
            for test in self.tests:
                test.redact(feedback)
            self.message = ""
            self.finish()
        return self

    def finish(self) -> JudgeResult:
        """Fill the verdict and maxima from the tests (first non-AC test decides)."""
        self.score = round(sum(t.score for t in self.tests), 6)
        self.time = max((t.time for t in self.tests), default=0.0)
        self.wall_time = max((t.wall_time for t in self.tests), default=0.0)
        self.memory = max((t.memory for t in self.tests), default=0)
        failed = next((t for t in self.tests if t.verdict != Verdict.AC), None)
        self.verdict = failed.verdict if failed else Verdict.AC
        if failed and not self.message:
            self.message = f"test {failed.name}: {failed.verdict}" + (
                f" ({failed.message})" if failed.message else ""
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        compile_result = None
        if self.compile is not None:
            compile_result = self.compile.to_dict()
        return {
            "verdict": self.verdict.value,
            "score": self.score,
            "max_score": self.max_score,
            "compile": compile_result,
            "tests": [t.to_dict() for t in self.tests],
            "time": self.time,
            "memory": self.memory,
            "message": self.message,
            "language": self.language,
            "wall_time": self.wall_time,
            "tests_total": self.tests_total,
        }


def run_fields(result: RunResult) -> dict[str, Any]:
    """The per-test fields a cell's result gives."""
    return {
        "time": result.time,
        "wall_time": result.wall_time,
        "memory": result.memory,
        "exit_code": result.exit_code,
        "signal": result.signal,
        "status": str(result.status),
        "oom_killed": result.oom_killed,
    }


def cell_summary(result: RunResult) -> dict[str, Any]:
    """A helper cell's result (checker, interactor) as kept in a TestResult."""
    data = run_fields(result)
    data["message"] = result.message
    data["stderr"] = excerpt(result.stderr)
    return data
