"""Judge a submission: compile once, run every test in a fresh cell, check, score.

    from worker.pipeline import JudgeOptions, RunLimits, judge
    result = judge(get_language("cpp"), source, load_dir(Path("tests")),
                   JudgeOptions(limits=RunLimits.build(time=1, memory="256M")))
    result.verdict, result.score, result.to_dict()

Tests run one after the other (the figures of one test are not disturbed by
another's), in the order given. A test's verdict is the cell's status when the
program did not end cleanly (SV counts as RE), else the checker's. The overall
verdict is the first non-AC test's; with `stop_on_failure` judging ends there.
"""

from __future__ import annotations

import contextlib
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import Any

import sandbox
from sandbox import Limits, RunResult, SpecError, Status, warm
from sandbox.spec import limit_fields

from .checkers import Checker, LinesChecker, Outcome, ProgramChecker
from .compiler import Program, compile_program
from .languages import Language
from .results import (
    DEFAULT_FEEDBACK,
    STATUS_VERDICT,
    JudgeResult,
    TestResult,
    Verdict,
    excerpt,
    run_fields,
)
from .testsets import TestCase

# Defaults of a judged test (the contract leaves them to us): what online
# judges give a typical problem, with room for the slower interpreters. The
# limits themselves (kinds, bounds, help) are sandbox.spec.Limits's fields.
JUDGE_DEFAULTS: dict[str, object] = {
    "time": 2.0,
    "wall_time": None,  # 2 * time + 1, as a cell's
    "memory": 256 << 20,
    "pids": 64,
    "output_limit": 64 << 20,
    "file_size": 64 << 20,
}
# What a judged test's limits are called in a request (HTTP, batch items): the
# output limit is `output` there.
REQUEST_NAMES = {"output_limit": "output"}


def judge_limit_fields() -> list[Field[Any]]:
    """The limits a judged test has, in Limits's order."""
    return [limit for limit in limit_fields() if limit.name in JUDGE_DEFAULTS]


def request_name(limit: Field[Any]) -> str:
    return REQUEST_NAMES.get(limit.name, limit.name)


@dataclass(frozen=True)
class RunLimits:
    """The problem's limits for one test run (a language may add to memory and pids)."""

    time: float = typing.cast(float, JUDGE_DEFAULTS["time"])
    wall_time: float | None = None  # default: 2 * time + 1 (the cell's default)
    memory: int = typing.cast(int, JUDGE_DEFAULTS["memory"])
    pids: int = typing.cast(int, JUDGE_DEFAULTS["pids"])
    output_limit: int = typing.cast(int, JUDGE_DEFAULTS["output_limit"])
    file_size: int = typing.cast(int, JUDGE_DEFAULTS["file_size"])

    @classmethod
    def build(cls, **options: object) -> RunLimits:
        """Validated limits from user input (by their Limits names); raises
        sandbox.SpecError naming the bad one."""
        unknown = set(options) - set(JUDGE_DEFAULTS)
        if unknown:
            raise SpecError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        given = {k: v for k, v in options.items() if v is not None}
        checked = Limits.build(**{**JUDGE_DEFAULTS, **given})
        return cls(**{name: getattr(checked, name) for name in JUDGE_DEFAULTS})

    @classmethod
    def from_request(cls, limits: dict[str, object]) -> RunLimits:
        """From a request's `limits` (HTTP, batch items: `output` for the output limit)."""
        if not isinstance(limits, dict):
            raise SpecError("limits: expected an object")
        by_request_name = {request_name(limit): limit.name for limit in judge_limit_fields()}
        unknown = set(limits) - set(by_request_name)
        if unknown:
            raise SpecError(
                f"unknown limit(s): {', '.join(sorted(unknown))} (known: "
                f"{', '.join(by_request_name)})"
            )
        return cls.build(**{by_request_name[name]: value for name, value in limits.items()})

    @property
    def effective_wall_time(self) -> float:
        return self.wall_time if self.wall_time is not None else 2 * self.time + 1.0

    def cell_options(self, language: Language, wall_time: float | None = None) -> dict:
        return {
            "time": self.time,
            "wall_time": wall_time if wall_time is not None else self.effective_wall_time,
            "memory": self.memory + language.memory_overhead,
            "pids": max(self.pids, language.run_pids or 0),
            "output_limit": self.output_limit,
            "file_size": self.file_size,
        }


Progress = Callable[[TestResult, int, int], None]


@dataclass
class JudgeOptions:
    limits: RunLimits = field(default_factory=RunLimits)
    checker: Checker = field(default_factory=LinesChecker)
    stop_on_failure: bool = False
    interactor: Program | None = None
    deadline: float | None = None  # time.monotonic() by which judging must end
    progress: Progress | None = None  # called after each test: (result, index, total)
    feedback: str = DEFAULT_FEEDBACK  # what results reveal of the tests (FEEDBACK_LEVELS)


def judge(
    language: Language, source: bytes, tests: list[TestCase], options: JudgeOptions
) -> JudgeResult:
    """Compile `source` once and judge it on `tests`."""
    return judge_program(compile_program(language, source), tests, options)


def judge_program(program: Program, tests: list[TestCase], options: JudgeOptions) -> JudgeResult:
    result = JudgeResult(
        verdict=Verdict.AC,
        max_score=round(sum(t.score for t in tests), 6),
        compile=program.compile,
        language=program.language.id,
        tests_total=len(tests),
    )
    if not program.ok:
        result.verdict = Verdict.IE if program.internal else Verdict.CE
        result.message = program.error
        return result
    with _warm_cells(len(tests) > 1):
        _run_tests(program, tests, options, result)
    return result.finish().redact(options.feedback)


@contextlib.contextmanager
def _warm_cells(wanted: bool) -> Iterator[None]:
    """Each test's cell (and checker's) is made while the one before runs
    (sandbox.keep_warm); afterwards the caller's setting is back (off: nothing
    of it is left when the judging is done)."""
    if not wanted or warm.enabled():  # off, or on already (by the caller)
        yield
        return
    before = warm.setting()
    sandbox.keep_warm()
    try:
        yield
    finally:
        sandbox.keep_warm(before)


def _run_tests(
    program: Program, tests: list[TestCase], options: JudgeOptions, result: JudgeResult
) -> None:
    for index, test in enumerate(tests):
        remaining = None
        if options.deadline is not None:
            remaining = options.deadline - time.monotonic()
            if remaining <= 0.05:
                not_run = "not run: the deadline of the whole judging passed"
                result.tests.append(
                    TestResult(
                        test.name,
                        Verdict.TLE,
                        max_score=test.score,
                        status="",
                        message=not_run,
                        summary=not_run,
                    ).redact(options.feedback)
                )
                break
        if options.interactor is not None:
            from .interactive import run_interactive

            outcome = run_interactive(program, options.interactor, test, options.limits, remaining)
        else:
            outcome = run_test(program, test, options, remaining)
        # Before it is reported as it finishes (events) as well as in the result.
        result.tests.append(outcome.redact(options.feedback))
        if options.progress:
            options.progress(outcome, index, len(tests))
        if options.stop_on_failure and outcome.verdict != Verdict.AC:
            break


def run_test(
    program: Program, test: TestCase, options: JudgeOptions, remaining: float | None = None
) -> TestResult:
    """One test in a fresh cell, then the checker on its output."""
    limits = options.limits
    wall = limits.effective_wall_time
    if remaining is not None and remaining < wall:
        wall = remaining
    run = sandbox.run_spec(cell_spec(program, test.input, limits, wall))
    tested = from_run(test, run, wall < limits.effective_wall_time, program.language)
    if tested.verdict != Verdict.AC or run.status != Status.OK:
        return tested
    if test.answer is None and not isinstance(options.checker, ProgramChecker):
        return tested  # nothing to compare with: a clean exit is AC
    # Only a checker program reads the input: a large test is not read again for the others.
    needs_input = isinstance(options.checker, ProgramChecker)
    outcome = options.checker.check(
        test.input_bytes() if needs_input else b"", run.stdout, test.answer_bytes()
    )
    return apply_outcome(tested, outcome, test.score)


def cell_spec(
    program: Program, stdin: bytes | Path | int, limits: RunLimits, wall: float
) -> sandbox.RunSpec:
    """The cell of one run of `program`. A test input on disk goes in by path
    (the cell copies it once, the host never holds it)."""
    return sandbox.RunSpec(
        argv=tuple(program.argv(limits.memory)),
        limits=Limits.build(**limits.cell_options(program.language, wall)),
        stdin=stdin,  # type: ignore[arg-type]
        copy_in=program.files,
        readonly=program.readonly,
        seccomp=program.language.seccomp,
        env=program.language.run_env,
    )


def from_run(
    test: TestCase, run: RunResult, deadline_cut: bool = False, language: Language | None = None
) -> TestResult:
    """A TestResult from the cell's result alone (AC when it ended cleanly, for now)."""
    tested = TestResult(
        name=test.name,
        verdict=Verdict.AC,
        max_score=test.score,
        message=run.message,
        stdout=excerpt(run.stdout),
        stderr=excerpt(run.stderr),
        **run_fields(run),
    )
    if run.status != Status.OK:
        tested.verdict = STATUS_VERDICT[run.status]
        if run.status == Status.SV:
            tested.message = f"forbidden system call: {run.message}"
        if (
            run.status == Status.RE
            and language is not None
            and run.signal is None
            and run.exit_code == language.oom_exit_code
        ):
            tested.verdict = Verdict.MLE
            tested.message = (
                f"the runtime's heap limit was exceeded (it exited with "
                f"{run.exit_code}, its out-of-memory code)"
            )
        if run.status == Status.TLE and deadline_cut and "wall" in run.message:
            tested.message = f"{run.message} (cut short by the deadline of the whole judging)"
        tested.summary = tested.message  # what a cell says of its run holds no test data
        return tested
    tested.score = test.score
    return tested


def apply_outcome(tested: TestResult, outcome: Outcome, score: float) -> TestResult:
    tested.verdict = outcome.verdict
    tested.score = round(score * outcome.fraction, 6)
    tested.message = outcome.message or ("accepted" if outcome.verdict == Verdict.AC else "")
    tested.summary = outcome.summary or ("accepted" if outcome.verdict == Verdict.AC else "")
    tested.checker = outcome.cell
    return tested
