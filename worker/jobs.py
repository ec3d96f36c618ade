"""The RQ job: judge one stored submission, publish its progress, store its result.

`run_submission(id, attempt)` runs in RQ's work horse, a single-threaded
process forked for this job, so it may launch cells (forking a multi-threaded
process is unsafe). It reads the request the API validated from Redis, judges
it, and finishes the submission with a TTL. Whatever goes wrong inside the
judging ends as verdict IE with a message, never as a silent failure.

The request is what worker/request.py describes (docs/contract.md, section
4); a single run (no tests) keeps its whole stdout and stderr, up to the
output limit, as Judge0's clients expect.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from typing import Any

from .results import JudgeResult, TestResult, Verdict, excerpt

# Room the judging leaves before RQ's own job timeout kills the horse.
TIMEOUT_MARGIN = 20.0


def run_submission(sub_id: str, attempt: int) -> None:
    """RQ entry point (worker/rq_worker.py claims the submission before forking)."""
    from rq import get_current_job

    from .request import JudgeRequest
    from .store import Store

    _die_with_worker()
    job = get_current_job()
    assert job is not None  # RQ calls this inside a job
    store = Store(job.connection)
    if not store.is_current(sub_id, attempt):
        return  # a stale attempt: another run owns the submission now
    record = store.get(sub_id) or {}
    request = record.get("request") or {}
    store.publish(sub_id, {"type": "status", "status": "running", "attempt": attempt})
    budget = float(record.get("job_timeout") or 600) - TIMEOUT_MARGIN
    started = time.monotonic()

    def progress(test: TestResult, index: int, total: int) -> None:
        event = test.to_dict()
        for stream in ("stdout", "stderr"):  # events carry excerpts, the result the whole output
            event[stream] = excerpt(event[stream])
        store.publish(sub_id, {"type": "test", "index": index, "total": total, "test": event})

    try:
        judged = JudgeRequest.parse(request)
        # A single run (no tests) keeps its whole output, as Judge0's clients expect.
        data = judged.judge(
            progress, deadline=started + max(budget, 1.0), whole_output=judged.single_run
        ).to_dict()
    except Exception as error:  # noqa: BLE001 - any crash of the pipeline is an IE verdict
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        data = JudgeResult(
            verdict=Verdict.IE,
            language=str(request.get("language", "")),
            message=f"internal error while judging: {detail}",
        ).to_dict()
    duration = time.monotonic() - started
    store.finish(
        sub_id,
        attempt,
        "done",
        data,
        verdict=str(data.get("verdict") or ""),
        duration=duration,
        cell_seconds=cell_seconds(data),
        runs=len(data.get("tests") or []) + (1 if data.get("compile") else 0),
    )


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


def _die_with_worker() -> None:
    """The horse dies with its worker: RQ puts it in its own process group, so a
    SIGKILLed worker would otherwise leave it running a job that a reaper is about
    to hand to someone else. (Its cells die with it: their init has PDEATHSIG.)"""
    from sandbox import libc

    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    worker = os.environ.get("CELLBLOCK_WORKER_PID")
    if worker and os.getppid() != int(worker):
        os._exit(1)  # the worker died before the signal was armed
