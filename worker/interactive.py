"""Interactive problems: the solution and an interactor, each in its own cell, talking over pipes.

    interactor stdout --pipe--> solution stdin
    solution stdout   --pipe--> interactor stdin

The interactor runs as `interactor input output answer` (testlib's order): it
reads the test's input and answer files, may write `output` (ignored), and its
exit code decides like a checker's (0 AC, 1 WA, 2 PE, 7 partial, else IE). The
solution sees nothing of the test but what the interactor writes.

The two cells run at once: the interactor's from a forked child process (the
cell is launched from a single-threaded process, never from a thread) that
reports back over a pipe. Both cells take their pipe ends over (RunSpec's
stdin_fd/stdout_fd), so each side sees EOF as soon as the other's cell is gone.

Who is to blame, in order: a failure of either cell or of the interactor is
IE; when the interactor ended first with a rejection, its verdict (the
solution's later death, e.g. SIGPIPE or spinning on EOF, is a consequence);
the solution's own failure (TLE, MLE, RE...); then the interactor's verdict.
The solution's figures are the test's; the interactor's are in `interactor`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time

import sandbox
from sandbox import Limits, RunResult, Status

from .checkers import Outcome, interpret_exit
from .compiler import Program
from .languages import Language
from .results import TestResult, Verdict, cell_summary
from .runs import RunLimits, apply_outcome, cell_spec, from_run
from .testsets import TestCase

# The interactor's own limits: generous in CPU, and a wall clock that outlasts
# the solution's so that a hung solution is the one the clock catches.
INTERACTOR_MEMORY = 512 << 20
INTERACTOR_EXTRA_WALL = 2.0


def run_interactive(
    program: Program,
    interactor: Program,
    test: TestCase,
    limits: RunLimits,
    remaining: float | None = None,
) -> TestResult:
    wall = limits.effective_wall_time
    if remaining is not None:
        wall = min(wall, remaining)
    to_solution_r, to_solution_w = os.pipe()
    to_interactor_r, to_interactor_w = os.pipe()
    solution_spec = dataclasses.replace(
        cell_spec(program, b"", limits, wall), stdin_fd=to_solution_r, stdout_fd=to_interactor_w
    )
    files = dict(interactor.files)
    files.update({"input": test.input_bytes(), "answer": test.answer_bytes()})
    interactor_spec = sandbox.RunSpec(
        argv=(*interactor.argv(INTERACTOR_MEMORY), "input", "output", "answer"),
        limits=Limits.build(
            time=max(5.0, 2 * limits.time),
            wall_time=wall + INTERACTOR_EXTRA_WALL,
            memory=INTERACTOR_MEMORY + interactor.language.memory_overhead,
            pids=max(64, interactor.language.run_pids or 0),
            output_limit="1M",
        ),
        copy_in=files,
        readonly=interactor.readonly,
        seccomp=interactor.language.seccomp,
        env=interactor.language.run_env,
        image=interactor.language.image,
        stdin_fd=to_interactor_r,
        stdout_fd=to_solution_w,
    )
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the interactor's side
        code = 1
        try:
            os.close(report_r)
            os.close(to_solution_r)
            os.close(to_interactor_w)
            result = sandbox.run_spec(interactor_spec)
            ended = time.monotonic()
            data = result.to_dict()
            data.pop("files", None)
            payload = json.dumps({"result": data, "ended": ended}).encode()
            view = memoryview(payload)
            while view:
                view = view[os.write(report_w, view) :]
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    os.close(to_interactor_r)
    os.close(to_solution_w)
    try:
        solution = sandbox.run_spec(solution_spec)
        solution_ended = time.monotonic()
        raw = _read_all(report_r)
    finally:
        os.close(report_r)
        _, status = os.waitpid(pid, 0)
    try:
        report = json.loads(raw)
        interactor_result = _result(report["result"])
        interactor_ended = float(report["ended"])
    except (ValueError, KeyError, TypeError):
        message = f"the interactor's side ended without a result (wait status {status})"
        interactor_result, interactor_ended = RunResult(Status.IE, message=message), 0.0
    return decide(
        test,
        solution,
        solution_ended,
        interactor_result,
        interactor_ended,
        program.language,
        interactor.language,
    )


def decide(
    test: TestCase,
    solution: RunResult,
    solution_ended: float,
    interactor: RunResult,
    interactor_ended: float,
    language: Language | None = None,
    interactor_language: Language | None = None,
) -> TestResult:
    tested = from_run(test, solution, language=language)
    tested.stdout = ""  # went to the interactor
    outcome: Outcome = interpret_exit(interactor, "interactor", interactor_language)
    tested.interactor = cell_summary(interactor)
    if solution.status == Status.IE:
        return tested
    if outcome.verdict == Verdict.IE:
        tested.verdict, tested.score, tested.message = Verdict.IE, 0.0, outcome.message
        tested.summary = outcome.summary
        return tested
    if (
        outcome.verdict != Verdict.AC
        and outcome.fraction == 0.0
        and (interactor_ended < solution_ended or solution.status == Status.OK)
    ):
        return _with(tested, outcome, test.score)
    if solution.status != Status.OK:
        if solution.signal == signal.SIGPIPE:
            tested.verdict, tested.score = Verdict.WA, 0.0
            tested.message = tested.summary = (
                "the solution wrote after the interactor had finished (SIGPIPE)"
            )
        return tested
    return _with(tested, outcome, test.score)


def _with(tested: TestResult, outcome: Outcome, score: float) -> TestResult:
    cell = tested.interactor
    apply_outcome(tested, outcome, score)
    tested.checker = None
    tested.interactor = cell
    return tested


def _result(data: dict) -> RunResult:
    data = dict(data)
    data["status"] = Status(data["status"])
    data.pop("files", None)
    known = {f.name for f in dataclasses.fields(RunResult)}
    return RunResult(**{k: v for k, v in data.items() if k in known})


def _read_all(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)
