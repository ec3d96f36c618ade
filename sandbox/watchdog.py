"""The host side of a running cell: limits in time and output, and its report.

One loop waits on the program's stdout and stderr pipes and on the init's
channel. It ends the cell (asking the init to kill everything, and through the
cgroup when there is one) when the wall clock passes the limit, the CPU time of
the whole cell does, or the output overflows its cap. It then collects the
init's report and the copied-out files.

The cell's CPU time is read when the limit could have been reached, not on a
fixed beat: a cell cannot use more than every CPU of the machine at once, so
`left` CPU seconds of its limit last at least `left / MACHINE_CPUS` seconds of
the wall clock. The next reading is due then, and never more than
CPU_POLL_INTERVAL after the limit is passed (the latency of a fixed poll). A
run shorter than half its limit (on two CPUs) is read once; a long one about
log2(limit / CPU_POLL_INTERVAL) times before the fixed beat, not every 10 ms.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from dataclasses import dataclass, field
from typing import Any

from . import cpuwait
from .channel import CellError, Channel, ChannelClosed
from .files import OutputBuffer

# How long the init may take to report after it was asked to kill the cell
# (it has to reap every process and copy files out) before we give up on it.
KILL_GRACE = 5.0
CPU_POLL_INTERVAL = 0.01
# Every CPU the kernel knows of, online or not (hot-added ones come online from
# these): no cell, whatever affinity its programs set, runs on more at once.
MACHINE_CPUS = max(os.sysconf("SC_NPROCESSORS_CONF"), os.cpu_count() or 1, 1)


def next_cpu_check(now: float, used: float, cpu_limit: float) -> float:
    """When the cell's CPU time is next read: the earliest moment it could pass
    `cpu_limit` from `used` now, or CPU_POLL_INTERVAL on, whichever is later."""
    return now + max((cpu_limit - used) / MACHINE_CPUS, CPU_POLL_INTERVAL)


class CpuMeter:
    """Something that reads the CPU seconds used so far by the whole cell."""

    def cpu_seconds(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def kill(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def threads(self) -> list[int]:
        """The cell's live threads (host tids), for sandbox/cpuwait.py."""
        return []


@dataclass
class Observed:
    """What the host saw while the cell ran."""

    report: dict[str, Any] | None = None
    kill_reason: str | None = None  # "wall", "cpu", "output"
    cpu_wait: cpuwait.CpuWait | None = None  # read at a wall-clock kill
    stdout: OutputBuffer | None = None
    stderr: OutputBuffer | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    file_errors: dict[str, str] = field(default_factory=dict)


def watch(
    channel: Channel,
    stdout_fd: int,
    stderr_fd: int,
    start: float,
    wall_limit: float,
    cpu_limit: float,
    output_limit: int,
    meter: CpuMeter | None = None,
    cell_pid: int | None = None,
) -> Observed:
    """Watch a run to its end. `cell_pid`: the cell's spawned process, outside
    it, whose affinity is what the cell started with (sandbox/cpuwait.py)."""
    stdout, stderr = OutputBuffer(output_limit), OutputBuffer(output_limit)
    seen = Observed(stdout=stdout, stderr=stderr)
    buffers = {stdout_fd: stdout, stderr_fd: stderr}
    selector = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    selector.register(channel.sock, selectors.EVENT_READ)
    deadline = start + wall_limit
    cpu_check = (
        next_cpu_check(time.monotonic(), meter.cpu_seconds(), cpu_limit)
        if meter is not None
        else deadline
    )
    killed_at: float | None = None
    pending_file: tuple[str, int, list[bytes]] | None = None

    def end_cell(reason: str) -> None:
        nonlocal killed_at
        if killed_at is not None:
            return
        seen.kill_reason = reason
        killed_at = time.monotonic()
        if meter is not None:
            if reason == "wall" and cell_pid:  # before the kill: the counts end with it
                with contextlib.suppress(OSError):
                    seen.cpu_wait = cpuwait.measure(
                        meter.threads(),
                        os.sched_getaffinity(cell_pid),
                        killed_at - start,
                        meter.cpu_seconds(),
                    )
            meter.kill()
        with contextlib.suppress(OSError):
            channel.send("kill")

    try:
        while seen.report is None or buffers:
            now = time.monotonic()
            if killed_at is None:
                timeout = min(deadline, cpu_check) - now
            else:
                timeout = killed_at + KILL_GRACE - now
                if timeout <= 0:
                    raise CellError("the cell's init did not finish after the cell was killed")
            for key, _ in selector.select(max(timeout, 0)):
                if key.fileobj is channel.sock:
                    try:
                        message = channel.receive()
                    except ChannelClosed:
                        if seen.report is None:
                            raise CellError("the cell's init died before reporting") from None
                        selector.unregister(channel.sock)
                        continue
                    pending_file = _take(message, seen, pending_file)
                    if seen.report is not None:
                        # The init's last word on this run; what it says next
                        # (a recycled cell's "ready") is for the next run.
                        selector.unregister(channel.sock)
                    continue
                stream = key.fileobj
                assert isinstance(stream, int)
                try:
                    data = os.read(stream, 1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    selector.unregister(stream)
                    del buffers[stream]
                    continue
                buffers[stream].feed(data)
                if buffers[stream].truncated:
                    end_cell("output")
            if killed_at is None and seen.report is None:
                now = time.monotonic()
                if now >= deadline:
                    end_cell("wall")
                elif meter is not None and now >= cpu_check:
                    used = meter.cpu_seconds()
                    if used > cpu_limit:
                        end_cell("cpu")
                    cpu_check = next_cpu_check(now, used, cpu_limit)
    finally:
        selector.close()
    return seen


def _take(
    message: dict[str, Any] | bytes,
    seen: Observed,
    pending: tuple[str, int, list[bytes]] | None,
) -> tuple[str, int, list[bytes]] | None:
    """Fold one message of the init into what we have seen; returns the file in transit."""
    if isinstance(message, bytes):
        if pending is None:
            raise CellError("the cell sent file data nobody asked for")
        path, size, chunks = pending
        chunks.append(message)
        if sum(map(len, chunks)) >= size:
            seen.files[path] = b"".join(chunks)[:size]
            return None
        return pending
    kind = message.get("kind")
    if kind == "file":
        if "error" in message:
            seen.file_errors[message["path"]] = message["error"]
            return None
        if message["size"] == 0:
            seen.files[message["path"]] = b""
            return None
        return (message["path"], int(message["size"]), [])
    if kind == "exited":
        seen.report = message
        return None
    if kind == "error":
        raise CellError(message.get("message", "the cell failed"))
    raise CellError(f"unexpected message from the cell: {kind!r}")
