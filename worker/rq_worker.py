"""One worker process of `cellblock worker` (worker/supervisor.py starts N of them).

Each is an RQ worker whose work horse, forked per job, runs worker.jobs.
Beyond plain RQ, each worker:
- claims the submission and takes its lease before forking the horse, and
  renews the lease while the horse runs (RQ's monitoring loop);
- runs the reaper (worker/store.py) every few seconds, idle or busy, so a
  SIGKILLed worker's job is run again by another one within the lease time;
- treats a horse that died without finishing its job as a lost run (bounded
  retries, then `failed` with the reason);
- keeps no threads: RQ's pubsub command thread is left off, because the
  horse is forked from this process and forking a multi-threaded process is
  unsafe;
- runs the escape self-check (worker/selfcheck.py) at start and every
  `CELLBLOCK_SELFCHECK_INTERVAL` seconds (default 600), between jobs, and
  publishes it with its heartbeat for GET /v1/health.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

from rq import Queue, Worker
from rq.job import Job

import sandbox

from .store import QUEUE, Store, Timing, connect, worker_name

log = logging.getLogger("cellblock.worker")


class CellWorker(Worker):
    """An RQ worker with leases, a reaper and an escape self-check."""

    def __init__(self, store: Store, selfcheck_interval: float = 600.0, **options: Any) -> None:
        timing = store.timing
        self.store = store  # before RQ's constructor, which reads dequeue_timeout
        super().__init__(
            [Queue(QUEUE, connection=store.redis)],
            connection=store.redis,
            name=worker_name(),
            job_monitoring_interval=max(1, int(timing.renew)),
            worker_ttl=max(int(timing.reap) + 15, 20),
            **options,
        )
        self.store = store
        self.selfcheck_interval = selfcheck_interval
        self.started = time.time()
        self.jobs_done = 0
        self.last_selfcheck: dict[str, Any] | None = None
        self._current: tuple[str, int] | None = None
        self._next_reap = 0.0
        self._next_alive = 0.0
        self._next_selfcheck = 0.0
        from .languages import all_languages

        self.languages = [lang.id for lang in all_languages().values() if lang.installed()]

    # RQ's idle loop blocks on the queue for this long, then heartbeats (and we reap).
    @property
    def dequeue_timeout(self) -> int:
        return max(1, int(self.store.timing.reap))

    def subscribe(self) -> None:
        """No pubsub thread: this process must stay single-threaded (see module doc)."""

    def unsubscribe(self) -> None:
        pass

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        # The first self-check also warms what every horse inherits (the
        # sandbox's imports, the compiled seccomp filter).
        self._tick(force_selfcheck=True)

    def execute_job(self, job: Job, queue: Queue) -> None:
        sub_id, attempt = job.args[0], int(job.args[1])
        claimed = self.store.claim(sub_id, attempt, self.name)
        self._current = (sub_id, attempt) if claimed else None
        os.environ["CELLBLOCK_WORKER_PID"] = str(os.getpid())
        try:
            super().execute_job(job, queue)
        finally:
            self._current = None
        if claimed and self.store.is_current(sub_id, attempt):
            # The horse ended without finishing the submission: it was killed
            # (OOM killer, a signal) or crashed outside the job's own handler.
            self.store.recover(sub_id, "its job process died before finishing", force=True)
        self.jobs_done += 1
        self._tick()

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        super().maintain_heartbeats(job, execution)
        if self._current:
            self.store.renew(*self._current)
        self._tick(busy=True)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout, pipeline)
        if pipeline is None and not self.is_horse:
            self._tick()

    def register_death(self) -> None:
        super().register_death()
        self.store.worker_gone(self.name)

    def _tick(self, busy: bool = False, force_selfcheck: bool = False) -> None:
        """Periodic duties of the main process, between or around jobs."""
        now = time.time()
        if not busy and (force_selfcheck or now >= self._next_selfcheck):
            from .selfcheck import run_selfcheck

            self.last_selfcheck = run_selfcheck().to_dict()
            self._next_selfcheck = now + self.selfcheck_interval
            if not self.last_selfcheck["contained"]:
                log.error("escape self-check failed: %s", self.last_selfcheck)
            self._next_alive = 0.0
        if now >= self._next_reap:
            self._next_reap = now + self.store.timing.reap
            try:
                for sub_id, outcome in self.store.reap():
                    log.warning("recovered submission %s: %s", sub_id, outcome)
            except Exception:  # noqa: BLE001 - the reaper must never take the worker down
                log.exception("reaper pass failed")
        if now >= self._next_alive:
            self._next_alive = now + max(self.store.timing.reap / 2, 1.0)
            self.store.worker_alive(
                self.name,
                {
                    "name": self.name,
                    "pid": os.getpid(),
                    "host": os.uname().nodename,
                    "started_at": self.started,
                    "seen_at": now,
                    "jobs": self.jobs_done,
                    "busy": self._current[0] if self._current else None,
                    "languages": self.languages,
                    "selfcheck": self.last_selfcheck,
                },
                ttl=max(self.store.timing.reap * 3, 10.0),
            )


def run_one(url: str, log_level: str) -> int:
    """One worker process (what the supervisor starts N of)."""
    # Imported here, once, so that every forked horse has them already.
    from . import checkers, compiler, jobs, languages, pipeline, testsets  # noqa: F401

    # Warm cells, made by one cell maker started here: each job's work horse
    # is forked from this process and asks that maker for its cells (a
    # horse's own maker would cost it ~150 ms of imports per job).
    sandbox.keep_warm()
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
