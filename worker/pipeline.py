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
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sandbox
from sandbox import Status, warm

from .checkers import Checker, LinesChecker, ProgramChecker
from .compiler import Program, compile_program
from .interactive import run_interactive
from .languages import Language
from .results import (
    DEFAULT_FEEDBACK,
    JudgeResult,
    TestResult,
    Verdict,
)
from .runs import (
    JUDGE_DEFAULTS,
    REQUEST_NAMES,
    RunLimits,
    apply_outcome,
    cell_spec,
    from_run,
    judge_limit_fields,
    request_name,
)
from .testsets import TestCase

__all__ = [  # what judging takes and gives (runs.py's are here too, for callers)
    "JUDGE_DEFAULTS",
    "REQUEST_NAMES",
    "JudgeOptions",
    "RunLimits",
    "apply_outcome",
    "cell_spec",
    "from_run",
    "judge",
    "judge_limit_fields",
    "judge_program",
    "request_name",
    "run_test",
]


Progress = Callable[[TestResult, int, int], None]


@dataclass
class JudgeOptions:
    limits: RunLimits = field(default_factory=RunLimits)
    checker: Checker = field(default_factory=LinesChecker)
    stop_on_failure: bool = False
    recheck_tle: bool = False  # run a test once more when it ends just over the CPU limit
    interactor: Program | None = None
    deadline: float | None = None  # time.monotonic() by which judging must end
    progress: Progress | None = None  # called after each test: (result, index, total)
    feedback: str = DEFAULT_FEEDBACK  # what results reveal of the tests (FEEDBACK_LEVELS)
    whole_output: bool = False  # tests keep their whole stdout and stderr, not excerpts
    runs: int = 1  # runs of each test, figures averaged (a request's `runs`)


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
            outcome = run_interactive(program, options.interactor, test, options.limits, remaining)
        else:
            outcome = run_test(program, test, options, remaining)
        # Before it is reported as it finishes (events) as well as in the result.
        result.tests.append(outcome.redact(options.feedback))
        if options.progress:
            options.progress(outcome, index, len(tests))
        if options.stop_on_failure and outcome.verdict != Verdict.AC:
            break


# The TLE re-check (Codeforces re-runs a solution that fails on time, as a
# busy machine can push a program just over its limit): the cell's CPU limit
# is raised by this fraction; a program that ends in that margin, over the
# problem's limit, runs once more and the second run decides; one that is
# still running at the raised limit is TLE at once, with no second run.
RECHECK_MARGIN = 0.2


def _run_rechecking_tle(
    program: Program, test: TestCase, limits: RunLimits, wall: float
) -> tuple[sandbox.RunResult, TestResult]:
    raised = dataclasses.replace(limits, time=limits.time * (1 + RECHECK_MARGIN))
    cut = wall < limits.effective_wall_time
    first = None
    for _ in range(2):
        run = sandbox.run_spec(cell_spec(program, test.input, raised, wall))
        tested = from_run(test, run, cut, program.language)
        if run.status == Status.TLE:
            if run.time >= raised.time:  # still running at the raised limit: far over
                tested.message = tested.summary = (
                    f"CPU time limit of {limits.time:g} s exceeded ({run.time:.3f} s used, "
                    f"more than {raised.time:g} s: not re-run)"
                )
            break  # (or the wall-clock limit: not a matter of CPU time)
        if run.time <= limits.time:  # within the problem's limit: the verdict is the run's
            break
        tested.verdict, tested.score = Verdict.TLE, 0.0
        used = f"{run.time:.3f} s" if first is None else f"{first:.3f} s, then {run.time:.3f} s"
        tested.message = tested.summary = (
            f"CPU time limit of {limits.time:g} s exceeded ({used} used)"
        )
        if first is not None:
            break
        first = run.time
    tested.rechecked = first is not None
    return run, tested


def _run_times(
    program: Program, test: TestCase, limits: RunLimits, wall: float, times: int
) -> sandbox.RunResult:
    """A test run `times` times (Judge0's number_of_runs, for steadier
    figures): the last run, with time, wall time and memory averaged over all
    of them. A run that does not end cleanly ends it and is the result, as it is."""
    done: list[sandbox.RunResult] = []
    for _ in range(max(times, 1)):
        run = sandbox.run_spec(cell_spec(program, test.input, limits, wall))
        done.append(run)
        if run.status != Status.OK:
            return run
    return dataclasses.replace(
        run,
        time=round(sum(r.time for r in done) / len(done), 6),
        wall_time=round(sum(r.wall_time for r in done) / len(done), 6),
        memory=sum(r.memory for r in done) // len(done),
    )


def run_test(
    program: Program, test: TestCase, options: JudgeOptions, remaining: float | None = None
) -> TestResult:
    """One test in a fresh cell, then the checker on its output."""
    limits = options.limits
    wall = limits.effective_wall_time
    if remaining is not None and remaining < wall:
        wall = remaining
    if options.recheck_tle:
        run, tested = _run_rechecking_tle(program, test, limits, wall)
    else:
        run = _run_times(program, test, limits, wall, options.runs)
        tested = from_run(test, run, wall < limits.effective_wall_time, program.language)
    if options.whole_output:
        tested.stdout, tested.stderr = run.stdout, run.stderr
        tested.stdout_truncated, tested.stderr_truncated = (
            run.stdout_truncated,
            run.stderr_truncated,
        )
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
