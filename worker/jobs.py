"""The RQ job: judge one stored submission, publish its progress, store its result.

`run_submission(id, attempt)` runs in the worker's own process
(worker/rq_worker.py: no fork per job), one job after another, so its cells
come warm from the worker's cell maker. It claims the submission (which also
sends its `running` event and reads the request the API validated), judges
it while the worker's lease keeper renews its lease, sends the tests' events
in batches, and finishes the submission in one step (result, metrics, `end`).

An infrastructure failure (the sandbox could not make or run a cell: verdict
IE; a crash of the judging; Redis gone for longer than the retries) is never
a program's verdict: the attempt is given up with the reason, and the store
queues the submission again, up to its `max_attempts`, then ends it `failed`
with that reason (worker/store.py, `recover`).

An image the submission needs and this worker lacks is pulled first
(worker/imagepull.py), counted in the service's metrics; a pull that fails
is such an infrastructure failure, its reason naming the image.

The request is what worker/request.py describes (docs/contract.md, section
4); a single run (no tests) keeps its whole stdout and stderr, up to the
output limit, as Judge0's clients expect.
"""

from __future__ import annotations

import logging
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis

from .imagepull import PullRecord
from .results import TestResult, Verdict, excerpt
from .store import Store, worker_name

log = logging.getLogger("cellblock.worker")

# Room the judging leaves before RQ's own job timeout ends the job.
TIMEOUT_MARGIN = 20.0
# Test events go out at most this often (and all at once at the end): one
# round trip for a burst of fast tests instead of one per test.
EVENT_INTERVAL = 0.05
# How long a worker keeps trying to reach Redis to claim or finish a run
# before it gives the attempt up (the lease then expires; a reaper requeues).
REDIS_PATIENCE = 30.0

T = TypeVar("T")


class LeaseHolder(Protocol):
    """Renews a run's lease while it is held (rq_worker.LeaseKeeper)."""

    def hold(self, sub_id: str, attempt: int, until: float) -> None: ...

    def release(self) -> None: ...


@dataclass
class WorkerContext:
    """What the worker process gives its jobs (install() once at start)."""

    store: Store
    name: str
    lease: LeaseHolder | None = None
    # Whether the worker has been told to stop (SIGTERM: a warm shutdown).
    stopping: Callable[[], bool] = lambda: False
    # The last (id, attempt) whose job ended with its outcome stored (or found
    # stale): the worker need not ask Redis whether it is left unfinished.
    settled: tuple[str, int] | None = None


_context: WorkerContext | None = None


def install(context: WorkerContext) -> None:
    global _context
    _context = context


def _current_context() -> WorkerContext:
    if _context is not None:
        return _context
    from rq import get_current_job  # a plain RQ worker: no lease keeper

    job = get_current_job()
    assert job is not None  # RQ calls this inside a job
    return WorkerContext(Store(job.connection), worker_name())


def run_submission(sub_id: str, attempt: int) -> None:
    """RQ entry point."""
    context = _current_context()
    store = context.store
    claim = _patiently(lambda: store.claim(sub_id, attempt, context.name))
    if claim is None:
        context.settled = (sub_id, attempt)
        return  # a stale attempt: another run owns the submission now
    started = time.monotonic()
    budget = max(float(claim.job_timeout) - TIMEOUT_MARGIN, 1.0)
    if context.lease is not None:
        context.lease.hold(sub_id, attempt, time.time() + claim.job_timeout)
    try:  # the lease is renewed until the outcome is stored
        _judge_and_store(store, sub_id, attempt, claim.request, started, started + budget)
        context.settled = (sub_id, attempt)
    finally:
        if context.lease is not None:
            context.lease.release()


def _judge_and_store(
    store: Store,
    sub_id: str,
    attempt: int,
    request: dict[str, Any],
    started: float,
    deadline: float,
) -> None:
    events = EventBatch(store, sub_id)
    outcome = judge(request, events.test, deadline, lambda pull: _count_pull(store, pull))
    if outcome.failure is None and _stopped_with_the_worker(outcome.result):
        outcome = Judged(
            {},
            "a program died of a signal the worker's own stop sent it too (a job's "
            "SIGTERM reaches every process: Slurm's scancel, a container's stop)",
        )
    data, failure = outcome.result, outcome.failure
    if failure is not None and outcome.retry:
        log.warning("submission %s attempt %d: %s", sub_id, attempt, failure)
        events.flush(final=True)
        _patiently(lambda: store.recover(sub_id, failure, force=True, attempt=attempt))
        return
    duration = time.monotonic() - started
    _patiently(
        lambda: store.finish(
            sub_id,
            attempt,
            "failed" if failure else "done",
            None if failure else data,
            error=failure or "",
            verdict=str(data.get("verdict") or ""),
            duration=duration,
            cell_seconds=cell_seconds(data),
            runs=len(data.get("tests") or []) + (1 if data.get("compile") else 0),
            events=events.pending,  # the last tests' events go with the result
        )
    )


@dataclass
class Judged:
    """A job's outcome: a result, or the failure that kept it from one (and
    whether another attempt could do better)."""

    result: dict[str, Any]
    failure: str | None = None
    retry: bool = True


def judge(
    request: dict[str, Any],
    progress: Callable[[TestResult, int, int], None],
    deadline: float,
    pulled: Callable[[PullRecord], None] | None = None,
) -> Judged:
    from .imagepull import ImagePullError, ensure_images
    from .request import JudgeRequest, RequestError

    try:
        ensure_images(request, pulled)
    except ImagePullError as error:  # another attempt (another worker, a registry back) may
        return Judged({}, str(error))
    try:
        judged = JudgeRequest.parse(request)
    except RequestError as error:  # stored without the API's checks: no attempt can judge it
        return Judged({}, f"the request is invalid: {error}", retry=False)
    try:
        # A single run (no tests) keeps its whole output, as Judge0's clients expect.
        data = judged.judge(progress, deadline=deadline, whole_output=judged.single_run).to_dict()
    except Exception as error:  # noqa: BLE001 - any crash of the judging is ours, not the program's
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        return Judged({}, f"internal error while judging: {detail}")
    if data.get("verdict") == Verdict.IE:
        return Judged(data, f"the sandbox failed: {_internal_message(data)}")
    return Judged(data)


# Signals that stop a worker and, sent to a whole process tree (Slurm's
# scancel without --batch, preemption, a job's time limit), its cells too.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP})


def _stopped_with_the_worker(result: dict[str, Any]) -> bool:
    """A run killed by a stop signal while this worker was being stopped: the
    signal is most likely the stop's, not the program's doing, so the attempt
    is the infrastructure's (judged again), never the program's verdict."""
    if _context is None or not _context.stopping():
        return False
    parts = [result.get("compile") or {}, *(result.get("tests") or [])]
    return any(part.get("signal") in STOP_SIGNALS for part in parts)


def _count_pull(store: Store, pull: PullRecord) -> None:
    log.info("pulled image %s from %s: %s", pull.image, pull.source, "ok" if pull.ok else "failed")
    try:
        store.count_image_pull(pull.ok, pull.seconds)
    except redis.RedisError as error:  # a figure lost, not the submission
        log.warning("image pull not counted: %s", error)


def _internal_message(result: dict[str, Any]) -> str:
    """What an IE result says went wrong (the first test or compile that says it)."""
    for part in [result.get("compile") or {}, *(result.get("tests") or [])]:
        if part.get("verdict") == Verdict.IE and part.get("message"):
            return str(part["message"])
    return str(result.get("message") or "internal error")


class EventBatch:
    """A submission's test events, sent in batches (one round trip each)."""

    def __init__(self, store: Store, sub_id: str) -> None:
        self.store = store
        self.sub_id = sub_id
        self.pending: list[dict[str, Any]] = []
        self.sent_at = time.monotonic()

    def test(self, test: TestResult, index: int, total: int) -> None:
        event = test.to_dict()
        for stream in ("stdout", "stderr"):  # events carry excerpts, the result the whole output
            event[stream] = excerpt(event[stream])
        self.pending.append({"type": "test", "index": index, "total": total, "test": event})
        if time.monotonic() - self.sent_at >= EVENT_INTERVAL:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Send what is pending. Redis being away a moment only delays events
        (kept for the next try); at the end they are tried for REDIS_PATIENCE."""
        if not self.pending:
            return
        try:
            if final:
                _patiently(lambda: self.store.publish_many(self.sub_id, self.pending))
            else:
                self.store.publish_many(self.sub_id, self.pending)
        except redis.RedisError as error:
            if final:
                log.warning("events of %s lost: %s", self.sub_id, error)
                self.pending = []
            return
        self.pending = []
        self.sent_at = time.monotonic()


def _patiently(call: Callable[[], T], patience: float = REDIS_PATIENCE) -> T:
    """`call()`, tried again while Redis cannot be reached, for up to `patience` s."""
    deadline = time.monotonic() + patience
    pause = 0.05
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("redis unreachable (%s); trying again in %.2f s", error, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def cell_seconds(result: dict[str, Any], measure: str = "wall_time") -> float:
    """Seconds spent inside cells (compile, tests, checker programs): wall-clock,
    or with `measure` "time" the programs' CPU."""
    total = 0.0
    if result.get("compile"):
        total += float(result["compile"].get(measure) or 0.0)
    for test in result.get("tests") or []:
        total += float(test.get(measure) or 0.0)
        for helper in ("checker", "interactor"):
            if test.get(helper):
                total += float(test[helper].get(measure) or 0.0)
    return total
