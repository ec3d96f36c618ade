"""One worker process of `cellblock worker` (worker/supervisor.py starts N of them).

Each is an RQ worker that runs its jobs (worker.jobs) in its own process, one
after another: no work horse is forked per job, so a job pays neither a fork
of this interpreter nor a fresh set of imports, and the warm cells this
process keeps (and its cell maker, sandbox/maker.py) serve every job, not one.
Beyond plain RQ, each worker:
- has a lease keeper (a thread) that renews the lease of the submission being
  judged while its cells run, runs the reaper (worker/store.py) every few
  seconds, idle or busy, so a SIGKILLed worker's job is run again by another
  one within the lease time, and publishes the worker's heartbeat for
  GET /v1/health. The thread only talks to Redis: cells are made by the cell
  maker, and a cold cell made here takes sandbox's way for a threaded caller
  (an outer process forks, never this one's clone);
- restarts nothing itself: a worker that dies (the OOM killer, a crash) is
  restarted by the supervisor, and its submission's lease expires and is
  queued again (bounded retries, then `failed` with the reason);
- runs the escape self-check (worker/selfcheck.py) at start and every
  `CELLBLOCK_SELFCHECK_INTERVAL` seconds (default 600), between jobs;
- sends RQ's own bookkeeping in fewer round trips (seven a job, from twelve):
  heartbeats and states only when they say something new, no heartbeat of a
  job's end, a job's success without the transaction around its dependents
  (these jobs have none), and `rq suspend` asked at most once a second. What
  it writes is RQ's; these overrides are RQ 3.0's methods (pyproject pins it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import Any

from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import now as rq_now
from rq.worker import WorkerStatus

import sandbox

from . import jobs
from .store import QUEUE, Store, Timing, connect, worker_name

log = logging.getLogger("cellblock.worker")

# RQ sends the worker's heartbeat up to four times around each job; one sent
# within this many seconds of the last, asking no later expiry, is skipped
# (the worker's key then expires at most this much sooner than RQ asked, out
# of a time to live of 20 s or more).
HEARTBEAT_SLACK = 1.0
# RQ asks Redis before each job whether `rq suspend` was run; while jobs keep
# coming, this worker asks at most once in this many seconds (a round trip
# less per job), so it notices a suspension within that much longer.
SUSPENSION_CHECK_INTERVAL = 1.0


class LeaseKeeper(threading.Thread):
    """Renews the lease of the job being run, reaps lost runs, says the worker
    is alive: what must go on while the main thread waits on a cell."""

    def __init__(self, worker: CellWorker) -> None:
        super().__init__(name="cellblock-lease", daemon=True)
        self.worker = worker
        self.store = worker.store
        self.lock = threading.Lock()
        self.current: tuple[str, int, float] | None = None  # id, attempt, renew until
        self.stopping = threading.Event()
        self._next_reap = 0.0
        self._next_alive = 0.0

    # jobs.LeaseHolder
    def hold(self, sub_id: str, attempt: int, until: float) -> None:
        with self.lock:
            self.current = (sub_id, attempt, until)
        self._next_alive = 0.0

    def release(self) -> None:
        with self.lock:
            self.current = None
        self._next_alive = 0.0

    def busy(self) -> str | None:
        current = self.current
        return current[0] if current else None

    def run(self) -> None:
        timing = self.store.timing
        tick = max(min(timing.renew, timing.reap / 2, 1.0), 0.05)
        while not self.stopping.wait(tick):
            try:
                self.tick()
            except Exception as error:  # noqa: BLE001 - Redis may be down a moment: go on
                log.warning("lease keeper: %s", error)

    def tick(self) -> None:
        now = time.time()
        with self.lock:
            current = self.current
        if current is not None and now < current[2]:
            self.store.renew(current[0], current[1])
        if now >= self._next_reap:
            self._next_reap = now + self.store.timing.reap
            for sub_id, outcome in self.store.reap():
                log.warning("recovered submission %s: %s", sub_id, outcome)
        if now >= self._next_alive:
            self._next_alive = now + max(self.store.timing.reap / 2, 1.0)
            self.worker.say_alive(now)


class CellWorker(SimpleWorker):
    """An RQ worker that runs jobs in its own process, with leases, a reaper
    and an escape self-check."""

    def __init__(self, store: Store, selfcheck_interval: float = 600.0, **options: Any) -> None:
        self.store = store  # before RQ's constructor, which reads dequeue_timeout
        self._unwritten_state: str | None = None  # set_state's, for the next heartbeat
        self._suspension_checked = -SUSPENSION_CHECK_INTERVAL  # monotonic, the last check
        super().__init__(
            [Queue(QUEUE, connection=store.redis)],
            connection=store.redis,
            name=worker_name(),
            worker_ttl=max(int(store.timing.reap) + 15, 20),
            **options,
        )
        self.selfcheck_interval = selfcheck_interval
        self.started = time.time()
        self.jobs_done = 0
        self.last_selfcheck: dict[str, Any] | None = None
        self._next_selfcheck = 0.0
        self.keeper = LeaseKeeper(self)
        self._alive_until = 0.0  # monotonic time the last heartbeat's expiry covers
        from .imagepull import source_for
        from .languages import all_languages

        installed = [lang for lang in all_languages().values() if lang.installed()]
        # A language whose image is not here yet but can be pulled is this
        # worker's too: its first job pulls the image (worker/imagepull.py).
        pullable = [
            lang
            for lang in all_languages().values()
            if lang not in installed
            and lang.image != "host"
            and source_for(lang.image, lang.image_source) is not None
        ]
        self.languages = sorted(lang.id for lang in [*installed, *pullable])
        # Each language's version line, for the listings (GET /v1/languages,
        # Judge0's, Piston's), published with the heartbeat. The host's
        # toolchains are asked off the job path (rustc alone takes a quarter
        # of a second); an image's is asked in a cell, which only this thread
        # makes: in bootstrap, before the first job.
        self.versions: dict[str, str] = {}
        self._in_images = [lang for lang in installed if lang.image != "host"]
        on_host = [lang for lang in installed if lang.image == "host"]
        threading.Thread(
            target=lambda: self.versions.update({lang.id: lang.version() for lang in on_host}),
            name="language versions",
            daemon=True,
        ).start()

    # RQ's idle loop blocks on the queue for this long, then heartbeats.
    @property
    def dequeue_timeout(self) -> int:
        return max(1, int(self.store.timing.reap))

    def subscribe(self) -> None:
        """No RQ pubsub thread: its commands (kill a horse, stop a job) assume a forked horse."""

    def unsubscribe(self) -> None:
        pass

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        self._selfcheck(force=True)
        self.versions.update({lang.id: lang.version() for lang in self._in_images})
        self.job_context = jobs.WorkerContext(
            self.store,
            self.name,
            self.keeper,
            stopping=lambda: getattr(self, "_shutdown_requested_date", None) is not None,
        )
        jobs.install(self.job_context)
        self.keeper.start()

    def execute_job(self, job: Job, queue: Queue) -> None:
        sub_id, attempt = job.args[0], int(job.args[1])
        try:
            super().execute_job(job, queue)
        finally:
            self.keeper.release()
        if self.job_context.settled != (sub_id, attempt) and self.store.is_current(
            sub_id, attempt, self.name
        ):
            # The job ended without finishing its submission (RQ's job timeout
            # cut it): an infrastructure failure, never a verdict.
            self.store.recover(
                sub_id, "its job ended before finishing", force=True, attempt=attempt
            )
        self.jobs_done += 1
        self._selfcheck()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat (three commands) in one round trip, and none when the
        last one, a moment ago, already keeps the worker's key long enough. A
        state not written yet (set_state) goes with it."""
        ttl = timeout or self.worker_ttl + 60
        now = time.monotonic()
        if pipeline is not None:
            self._write_heartbeat(timeout, pipeline)
        elif self._alive_until - now >= ttl - HEARTBEAT_SLACK:
            return
        else:
            with self.connection.pipeline() as pipe:
                self._write_heartbeat(timeout, pipe)
                pipe.execute()
        self._alive_until = now + ttl

    def _write_heartbeat(self, timeout: int | None, pipeline: Any) -> None:
        super().heartbeat(timeout, pipeline)
        if self._unwritten_state is not None:
            super().set_state(self._unwritten_state, pipeline)
            self._unwritten_state = None

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ's, without writing again the state the worker's key already holds
        (RQ sets `idle` twice between two jobs), and with `idle` after a job
        written by the heartbeat that follows it at once (RQ's suspension
        check, before the worker waits for the next job): a round trip less
        per job."""
        if pipeline is None and state == getattr(self, "_state", None):
            return
        busy = getattr(self, "_state", None) == WorkerStatus.BUSY
        if pipeline is None and state == WorkerStatus.IDLE and busy:
            self._state = state
            self._unwritten_state = state
            return
        self._unwritten_state = None
        super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's check for `rq suspend`, at most once per SUSPENSION_CHECK_INTERVAL."""
        if time.monotonic() < self._suspension_checked + SUSPENSION_CHECK_INTERVAL:
            return
        super().check_for_suspension(burst)
        self._suspension_checked = time.monotonic()

    def handle_job_success(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry,
        execution: Execution,
    ) -> None:
        """RQ's, in one round trip instead of three: without the transaction
        that watches and reads the job's dependents, which these jobs never
        have (worker.store queues each with none), nor what repeats and rate
        limits need (these jobs use neither). The writes are RQ's own: the
        worker's counts, the job's status, result and registries, the end of
        its execution."""
        assert job.started_at is not None and job.ended_at is not None
        with self.connection.pipeline() as pipeline:
            pipeline.multi()
            self.increment_successful_job_count(pipeline=pipeline)
            self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl != 0:
                job._handle_success(
                    result_ttl,
                    pipeline=pipeline,
                    worker_name=self.name,
                    execution_id=execution.id,
                    execution_started_at=execution.created_at,
                    execution_ended_at=job.ended_at,
                )
            job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            job._status = JobStatus.FINISHED
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            pipeline.execute()

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ's, without its write of the job's heartbeat (a round trip per
        job): it keeps a job alive while its success or failure callback runs,
        and these jobs have none; the job's hash is saved whole right after."""
        job.ended_at = job.last_heartbeat = rq_now()

    def register_death(self) -> None:
        self.keeper.stopping.set()
        super().register_death()
        self.store.worker_gone(self.name)

    def say_alive(self, now: float) -> None:
        self.store.worker_alive(
            self.name,
            {
                "name": self.name,
                "pid": os.getpid(),
                "host": os.uname().nodename,
                "started_at": self.started,
                "seen_at": now,
                "jobs": self.jobs_done,
                "busy": self.keeper.busy(),
                "cpus": sorted(os.sched_getaffinity(0)),  # one with --pin-cpus
                "languages": self.languages,
                "versions": dict(self.versions),
                "selfcheck": self.last_selfcheck,
            },
            ttl=max(self.store.timing.reap * 3, 10.0),
        )

    def _selfcheck(self, force: bool = False) -> None:
        """Between jobs, when due: cells that try known escapes (worker/selfcheck.py)."""
        now = time.time()
        if not force and now < self._next_selfcheck:
            return
        from .selfcheck import run_selfcheck

        self.last_selfcheck = run_selfcheck().to_dict()
        self._next_selfcheck = now + self.selfcheck_interval
        if not self.last_selfcheck["contained"]:
            log.error("escape self-check failed: %s", self.last_selfcheck)
        self.keeper._next_alive = 0.0


def run_one(url: str, log_level: str) -> int:
    """One worker process (what the supervisor starts N of)."""
    # Everything a job needs, imported once, before the first job.
    from . import checkers, compiler, languages, pipeline, request, testsets  # noqa: F401

    # Warm cells and the cell maker from the first run: this process runs
    # every job, so every cell after the first is made ahead of time; and
    # recycled (sandbox/warm.py): a cell renewed after its run serves the next
    # one, at about half a new cell's CPU. CELLBLOCK_RECYCLE=0 turns that off.
    sandbox.for_many_runs()
    store = Store(connect(url), Timing.from_env())
    interval = float(os.environ.get("CELLBLOCK_SELFCHECK_INTERVAL", "600"))
    worker = CellWorker(store, selfcheck_interval=interval)
    worker.work(logging_level=log_level.upper())
    return 0


def _entry() -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.rq_worker")
    parser.add_argument("--one", action="store_true", help="run a single worker in this process")
    parser.add_argument("--log-level", default="info")
    options = parser.parse_args()
    url = os.environ.get("REDIS_URL", "")
    if not options.one or not url:
        parser.error("internal entry point of `cellblock worker` (needs --one and REDIS_URL)")
    return run_one(url, options.log_level)


if __name__ == "__main__":
    sys.exit(_entry())
