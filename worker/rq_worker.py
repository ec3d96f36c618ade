"""`cellblock worker`: RQ workers that judge submissions from Redis, one cell each.

    cellblock worker [--redis-url URL] [--cells N]

starts a supervisor and N worker processes (default: one per core, as one
cell at a time per core keeps every cell's CPU figures honest). Each worker
is an RQ worker whose work horse, forked per job, runs worker.jobs. The
supervisor restarts a worker that dies and, on SIGTERM/SIGINT, lets each
finish its job for `--grace` seconds before killing it (a killed job is not
lost: its lease expires and a reaper queues it again).

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
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rq import Queue, Worker
from rq.job import Job

from .store import QUEUE, Store, Timing, connect, worker_name

log = logging.getLogger("cellblock.worker")


class CellWorker(Worker):
    """An RQ worker with leases, a reaper and an escape self-check."""

    def __init__(self, store: Store, selfcheck_interval: float = 600.0, **options: Any) -> None:
        timing = store.timing
        self.store = store  # before RQ's constructor, which reads dequeue_timeout
        super().__init__(
            [Queue(QUEUE, connection=store.redis)], connection=store.redis, name=worker_name(),
            job_monitoring_interval=max(1, int(timing.renew)),
            worker_ttl=max(int(timing.reap) + 15, 20), **options,
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
            self.store.worker_alive(self.name, {
                "name": self.name, "pid": os.getpid(), "host": os.uname().nodename,
                "started_at": self.started, "seen_at": now, "jobs": self.jobs_done,
                "busy": self._current[0] if self._current else None,
                "selfcheck": self.last_selfcheck,
            }, ttl=max(self.store.timing.reap * 3, 10.0))


def run_one(url: str, log_level: str) -> int:
    """One worker process (what the supervisor starts N of)."""
    # Imported here, once, so that every forked horse has them already.
    from . import checkers, compiler, jobs, languages, pipeline, testsets  # noqa: F401

    store = Store(connect(url), Timing.from_env())
    interval = float(os.environ.get("CELLBLOCK_SELFCHECK_INTERVAL", "600"))
    worker = CellWorker(store, selfcheck_interval=interval)
    worker.work(logging_level=log_level.upper())
    return 0


# --- the supervisor -----------------------------------------------------------


def _die_with_parent() -> None:
    """Run in the child before exec: a worker never outlives its supervisor."""
    from sandbox import libc

    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Starts `cells` worker processes, restarts those that die, stops them all."""

    def __init__(self, url: str, cells: int, log_level: str, grace: float) -> None:
        self.url = url
        self.cells = cells
        self.log_level = log_level
        self.grace = grace
        self.children: dict[int, subprocess.Popen] = {}
        self.stopping = False

    def spawn(self) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env["REDIS_URL"] = self.url
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.rq_worker", "--one", "--log-level", self.log_level],
            env=env, preexec_fn=_die_with_parent,  # noqa: PLW1509 - this process has no threads
        )
        self.children[process.pid] = process
        return process

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for _ in range(self.cells):
            self.spawn()
        restarts: list[float] = []
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            process = self.children.pop(pid, None)
            if process is None or self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.warning("worker %d ended (%s); starting another", pid, code)
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > 10 * self.cells:
                log.error("workers keep dying (%d restarts in a minute): giving up", len(restarts))
                self._stop(signal.SIGTERM, None)
                continue
            time.sleep(min(len(restarts) * 0.2, 5.0))
            self.spawn()
        return 0

    def _stop(self, signum: int, frame: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        for process in self.children.values():
            _signal(process, signal.SIGTERM)  # RQ: a warm shutdown, the job finishes
        deadline = time.monotonic() + self.grace
        for process in list(self.children.values()):
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal(process, signal.SIGKILL)  # its horse and cells die with it (PDEATHSIG)
                process.wait()
        self.children.clear()


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker", help="run submissions from Redis (RQ workers, one cell per core)",
        description="Start N RQ workers that judge submissions queued in Redis by "
        "`cellblock serve`. Any number of machines may run workers against one Redis.",
    )
    p.add_argument("--redis-url", metavar="URL",
                   help="Redis to work for (default: $REDIS_URL), e.g. redis://host:6379/0")
    p.add_argument("--cells", type=int, metavar="N",
                   help="worker processes, one cell each (default: the number of cores)")
    p.add_argument("--grace", type=float, default=30.0, metavar="S",
                   help="on SIGTERM, seconds a running job may take to finish (default 30)")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))


def main(args: argparse.Namespace) -> int:
    url = args.redis_url or os.environ.get("REDIS_URL")
    if not url:
        print("cellblock worker: error: give --redis-url or set REDIS_URL", file=sys.stderr)
        return 2
    cells = args.cells or os.cpu_count() or 1
    if cells < 1:
        print("cellblock worker: error: --cells must be at least 1", file=sys.stderr)
        return 2
    try:
        connect(url).ping()
    except Exception as error:  # noqa: BLE001 - any connection failure is reported the same
        print(f"cellblock worker: error: cannot reach Redis at {url}: {error}", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    return Supervisor(url, cells, args.log_level, args.grace).run()


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

