"""`cellblock worker`: the supervisor of N RQ worker processes, and its command line.

Kept apart from worker/rq_worker.py (the worker itself) so that the command
line does not import RQ and Redis for every `cellblock` command.

    cellblock worker [--redis-url URL] [--cells N] [--pin-cpus] [--grace S]

starts N worker processes (default: one per CPU it may use, as one cell at a
time per core keeps every cell's CPU figures honest), restarts one that dies,
and on SIGTERM/SIGINT lets each finish its job for `--grace` seconds before
killing it (a killed job is not lost: its lease expires and a reaper queues it
again).

With --pin-cpus each worker runs on a CPU of its own (the i-th of those this
process may use), and so do its cell maker, its cells and their programs,
which inherit it: a program's hand-offs with its init and worker stay on one
CPU (in a VM, a wake-up of another, idle CPU is dear), and no cell shares a
core with another's work, as judges pin their runs for steady timings. A
restarted worker gets the CPU of the one it replaces. A program still may
widen its own affinity (sched_setaffinity): this is placement, not a limit;
its CPU time counts every CPU it uses.
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

log = logging.getLogger("cellblock.worker")


def _die_with_parent() -> None:
    """Run in the child before exec: a worker never outlives its supervisor."""
    from sandbox import libc

    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGTERM)


def usable_cpus() -> int:
    """The CPUs this process may run on: the default number of cells."""
    return len(os.sched_getaffinity(0))


def cpu_slots(cells: int) -> list[int]:
    """With --pin-cpus, each worker's CPU: the first `cells` of those this
    process may run on (its affinity: all of the machine's, a Slurm job's, a
    cpuset's). ValueError if there are fewer."""
    allowed = sorted(os.sched_getaffinity(0))
    if cells > len(allowed):
        raise ValueError(
            f"--pin-cpus needs a CPU for each cell: {cells} cells, but this process "
            f"may use {len(allowed)} CPU(s) ({', '.join(map(str, allowed))})"
        )
    return allowed[:cells]


class Supervisor:
    """Starts `cells` worker processes, restarts those that die, stops them all.
    `cpus`: worker i's CPU (--pin-cpus), or None."""

    def __init__(
        self, url: str, cells: int, log_level: str, grace: float, cpus: list[int] | None = None
    ) -> None:
        self.url = url
        self.cells = cells
        self.log_level = log_level
        self.grace = grace
        self.cpus = cpus
        self.children: dict[int, subprocess.Popen] = {}
        self.slots: dict[int, int] = {}  # pid → its slot (0..cells-1): a restart keeps the CPU
        self.stopping = False

    def spawn(self, slot: int) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env["REDIS_URL"] = self.url
        cpu = None if self.cpus is None else self.cpus[slot]

        def before_exec() -> None:
            _die_with_parent()
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        process = subprocess.Popen(
            [sys.executable, "-m", "worker.rq_worker", "--one", "--log-level", self.log_level],
            env=env,
            preexec_fn=before_exec,  # noqa: PLW1509 - this process has no threads
        )
        self.children[process.pid] = process
        self.slots[process.pid] = slot
        return process

    def run(self) -> int:
        if os.environ.get("CELLBLOCK_DIE_WITH_PARENT") == "1":
            # Set by `cellblock serve` and the tests: the workers never outlive what
            # started them, even through runuser/sh in between.
            _die_with_parent()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for slot in range(self.cells):
            self.spawn(slot)
        restarts: list[float] = []
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            process = self.children.pop(pid, None)
            slot = self.slots.pop(pid, 0)
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
            self.spawn(slot)
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
        "worker",
        help="run submissions from Redis (RQ workers, one cell per core)",
        description="Start N RQ workers that judge submissions queued in Redis by "
        "`cellblock serve`. Any number of machines may run workers against one Redis.",
    )
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis to work for (default: $REDIS_URL), e.g. redis://host:6379/0",
    )
    p.add_argument(
        "--cells",
        type=int,
        metavar="N",
        help="worker processes, one cell each (default: one per CPU this process may use)",
    )
    add_pin_argument(p)
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds a running job may take to finish (default 30)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def add_pin_argument(parser: argparse.ArgumentParser) -> None:
    """--pin-cpus, for `cellblock worker` and `cellblock serve` alike."""
    parser.add_argument(
        "--pin-cpus",
        action="store_true",
        help="run each worker, its cells and their programs on a CPU of its own "
        "(needs a CPU per cell; a program then has one CPU)",
    )


def main(args: argparse.Namespace) -> int:
    url = args.redis_url or os.environ.get("REDIS_URL")
    if not url:
        print("cellblock worker: error: give --redis-url or set REDIS_URL", file=sys.stderr)
        return 2
    cells = args.cells or usable_cpus()
    if cells < 1:
        print("cellblock worker: error: --cells must be at least 1", file=sys.stderr)
        return 2
    try:
        cpus = cpu_slots(cells) if args.pin_cpus else None
    except ValueError as error:
        print(f"cellblock worker: error: {error}", file=sys.stderr)
        return 2
    from .store import connect

    try:
        connect(url).ping()
    except Exception as error:  # noqa: BLE001 - any connection failure is reported the same
        print(f"cellblock worker: error: cannot reach Redis at {url}: {error}", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    return Supervisor(url, cells, args.log_level, args.grace, cpus).run()
