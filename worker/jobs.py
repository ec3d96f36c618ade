"""The RQ job: judge one stored submission, publish its progress, store its result.

`run_submission(id, attempt)` runs in RQ's work horse, a single-threaded
process forked for this job, so it may launch cells (forking a multi-threaded
process is unsafe). It reads the request the API validated from Redis, judges
it, and finishes the submission with a TTL. Whatever goes wrong inside the
judging ends as verdict IE with a message, never as a silent failure.

A request (what the API stores; docs/contract.md, section 4):

    {"language": "python3", "source": "...",
     "tests": [{"name", "input", "output", "score"}] | null,
     "stdin": "..." | null, "expected_output": "..." | null,   # a single run, without tests
     "checker": "lines" | "float:1e-6" | {"language", "source"} | null,
     "limits": {"time", "wall_time", "memory", "pids", "output"},
     "stop_on_failure": false}

Without `tests`, the submission is a single run on `stdin`: AC on a clean exit
(or the checker's verdict against `expected_output`), and its test keeps the
whole stdout and stderr (up to the output limit), as Judge0's clients expect.
"""

from __future__ import annotations

import os
import re
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from .results import JudgeResult, TestResult, Verdict

# The API accepts only these checker names: a path would name a host file.
BUILTIN_CHECKER = re.compile(r"^(exact|lines|tokens|float(:[0-9eE.+-]+)?)$")
# Room the judging leaves before RQ's own job timeout kills the horse.
TIMEOUT_MARGIN = 20.0


class RequestError(ValueError):
    """A stored request the worker cannot judge (the API should have refused it)."""


Progress = Callable[[TestResult, int, int], None]


def run_submission(sub_id: str, attempt: int) -> None:
    """RQ entry point (worker/rq_worker.py claims the submission before forking)."""
    from rq import get_current_job

    from .store import Store

    _die_with_worker()
    job = get_current_job()
    store = Store(job.connection)
    if not store.is_current(sub_id, attempt):
        return  # a stale attempt: another run owns the submission now
    record = store.get(sub_id) or {}
    request = record.get("request") or {}
    store.publish(sub_id, {"type": "status", "status": "running", "attempt": attempt})
    budget = float(record.get("job_timeout") or 600) - TIMEOUT_MARGIN
    started = time.monotonic()

    def progress(test: TestResult, index: int, total: int) -> None:
        store.publish(
            sub_id, {"type": "test", "index": index, "total": total, "test": test.to_dict()}
        )

    try:
        data = judge_request(request, progress, deadline=started + max(budget, 1.0))
    except Exception as error:  # noqa: BLE001 - any crash of the pipeline is an IE verdict
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        data = JudgeResult(
            verdict=Verdict.IE,
            language=str(request.get("language", "")),
            message=f"internal error while judging: {detail}",
        ).to_dict()
    duration = time.monotonic() - started
    store.redis.hset(
        f"cb:sub:{sub_id}",
        mapping={
            "judge_seconds": repr(duration),
            "cell_seconds": repr(cell_seconds(data)),
        },
    )
    store.redis.hincrby(
        "cb:metrics", "runs", len(data.get("tests") or []) + (1 if data.get("compile") else 0)
    )
    store.finish(
        sub_id, attempt, "done", data, verdict=str(data.get("verdict") or ""), duration=duration
    )


def judge_request(
    request: dict[str, Any], progress: Progress | None = None, deadline: float | None = None
) -> dict[str, Any]:
    """Judge a validated request; the JudgeResult as a dict."""
    from .compiler import compile_program
    from .languages import get_language
    from .pipeline import JudgeOptions, RunLimits, judge_program
    from .testsets import TestCase, from_data

    language = get_language(_text(request, "language"))
    source = _text(request, "source").encode()
    limits = RunLimits.from_request(dict(request.get("limits") or {}))
    checker = _checker(request.get("checker"))
    options = JudgeOptions(
        limits=limits,
        checker=checker,
        deadline=deadline,
        progress=progress,
        stop_on_failure=bool(request.get("stop_on_failure")),
        feedback=feedback_level(request.get("feedback")),
    )
    wall = None if deadline is None else deadline - time.monotonic()
    program = compile_program(language, source, wall_time=wall)
    if request.get("tests") is not None:
        tests = from_data(request["tests"])
        if not tests:
            raise RequestError("tests: empty")
        return judge_program(program, tests, options).to_dict()
    stdin = (request.get("stdin") or "").encode()
    expected = request.get("expected_output")
    test = TestCase("1", stdin, None if expected is None else str(expected).encode())
    if not program.ok:
        return judge_program(program, [test], options).to_dict()
    return single_run(program, test, options)


def single_run(program, test, options) -> dict[str, Any]:
    """One run that keeps its whole output (the pipeline keeps excerpts for feedback)."""
    import sandbox
    from sandbox import Status

    from .pipeline import apply_outcome, cell_spec, from_run

    limits = options.limits
    wall = limits.effective_wall_time
    cut = False
    if options.deadline is not None and options.deadline - time.monotonic() < wall:
        wall, cut = max(options.deadline - time.monotonic(), 0.1), True
    run = sandbox.run_spec(cell_spec(program, test.input, limits, wall))
    tested = from_run(test, run, cut, program.language)
    if tested.verdict == Verdict.AC and run.status == Status.OK and test.answer is not None:
        outcome = options.checker.check(test.input_bytes(), run.stdout, test.answer_bytes())
        tested = apply_outcome(tested, outcome, test.score)
    result = JudgeResult(
        verdict=Verdict.AC,
        max_score=test.score,
        compile=program.compile,
        language=program.language.id,
        tests_total=1,
    )
    result.tests.append(tested)
    result.finish().redact(options.feedback)
    if options.progress:
        options.progress(tested, 0, 1)
    data = result.to_dict()
    if options.feedback == "diff":
        data["tests"][0].update(
            stdout=run.stdout,
            stderr=run.stderr,
            stdout_truncated=run.stdout_truncated,
            stderr_truncated=run.stderr_truncated,
        )
    return data


def cell_seconds(result: dict[str, Any]) -> float:
    """Wall-clock seconds spent inside cells (compile, tests, checker programs)."""
    total = 0.0
    if result.get("compile"):
        total += float(result["compile"].get("wall_time") or 0.0)
    for test in result.get("tests") or []:
        total += float(test.get("wall_time") or 0.0)
        for helper in ("checker", "interactor"):
            if test.get(helper):
                total += float(test[helper].get("wall_time") or 0.0)
    return total


def feedback_level(value: Any) -> str:
    """A request's `feedback` (default diff), checked."""
    from .results import DEFAULT_FEEDBACK, FEEDBACK_LEVELS

    if value is None:
        return DEFAULT_FEEDBACK
    if value not in FEEDBACK_LEVELS:
        raise RequestError(f"feedback {value!r}: expected one of {', '.join(FEEDBACK_LEVELS)}")
    return str(value)


def _checker(spec: Any):
    from .checkers import ProgramChecker, get_checker
    from .compiler import compile_program
    from .languages import get_language

    if spec is None or spec == "":
        return get_checker(None)
    if isinstance(spec, str):
        if not BUILTIN_CHECKER.match(spec):
            raise RequestError(f"checker {spec!r}: not a built-in checker")
        return get_checker(spec)
    if isinstance(spec, dict):
        language = get_language(_text(spec, "language"))
        program = compile_program(language, _text(spec, "source").encode())
        if not program.ok:
            output = (program.compile.stderr + program.compile.stdout) if program.compile else ""
            raise RequestError(f"the checker does not compile: {program.error}\n{output[:2000]}")
        return ProgramChecker(program, f"{language.id} checker")
    raise RequestError("checker: a name or {language, source}")


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise RequestError(f"{key}: a string is required")
    return value


def _die_with_worker() -> None:
    """The horse dies with its worker: RQ puts it in its own process group, so a
    SIGKILLed worker would otherwise leave it running a job that a reaper is about
    to hand to someone else. (Its cells die with it: their init has PDEATHSIG.)"""
    from sandbox import libc

    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    worker = os.environ.get("CELLBLOCK_WORKER_PID")
    if worker and os.getppid() != int(worker):
        os._exit(1)  # the worker died before the signal was armed
