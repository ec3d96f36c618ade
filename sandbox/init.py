"""The cell's PID 1: reap every process, notice the program's end, end the rest.

The init is our code, cloned from the supervisor (or from the cell maker,
maker.py, which makes warm cells), and it outlives the program
only long enough to kill what the program left behind (daemons, orphans),
collect accounting and copy files out. Its own pages stay charged to the
supervisor's cgroup: it never joins the cell's cgroup.

It cannot be killed from inside: a PID namespace's init ignores signals from
its own namespace for which it has no handler, and the only handler it keeps
(SIGCHLD, to wake up) does nothing but wake it. It is not dumpable, so the
program cannot read its memory (a copy of the supervisor's or the maker's)
through /proc/1/mem either, and the cell's /proc (hidepid) does not show it.
"""

from __future__ import annotations

import _signal
import contextlib
import ctypes
import os
import resource
import select
import selectors
import signal
import time
from dataclasses import dataclass

from .channel import Channel, ChannelClosed
from .locks import LockSupervisor


def reset_signals(keep_sigchld_wakeup: bool = False) -> None:
    """Default dispositions and an empty mask: nothing of the supervisor's (Python
    ignores SIGPIPE, a worker may trap SIGTERM) may carry into the cell.

    Through `_signal`, the C core of `signal`: the same calls without an enum
    made for every signal and handler (0.3-0.5 ms of the init's start)."""
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    for sig in _signal.valid_signals():
        # Python knows every disposition (it reads them all at start-up), so
        # only the ones that differ from the default cost a system call.
        if _signal.getsignal(sig) in (_signal.SIG_DFL, None):
            continue
        try:
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # signals reserved by the C library
    if keep_sigchld_wakeup:
        signal.signal(signal.SIGCHLD, lambda *_: None)


_argv_area: tuple[int, int, int] | None = None  # (pid, start, end) of our argv


def note_command_line() -> None:
    """Find where our argv is in memory, before cloning an init: the init, a
    copy of us, then only overwrites it (hide_command_line)."""
    global _argv_area
    if _argv_area is not None and _argv_area[0] == os.getpid():
        return
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        stat = os.read(fd, 4096)
    finally:
        os.close(fd)
    fields = stat.rsplit(b")", 1)[1].split()
    # Fields 48 and 49 of proc(5), counted after the ")" that ends the command name.
    _argv_area = (os.getpid(), int(fields[45]), int(fields[46]))


def hide_command_line(title: bytes = b"cellblock-init") -> None:
    """Overwrite our argv in memory: /proc/1/cmdline is readable by every process
    of the cell where hidepid does not hide us, and ours is a copy of the
    supervisor's (which may name secrets).
    Where it is was noted by our parent (note_command_line) before the clone."""
    assert _argv_area is not None, "note_command_line() was not called before the clone"
    _, arg_start, arg_end = _argv_area
    size = arg_end - arg_start
    if size > 0:
        ctypes.memset(arg_start, 0, size)
        ctypes.memmove(arg_start, title[: size - 1], min(len(title), size - 1))


@dataclass
class ProgramExit:
    wait_status: int
    start: float  # CLOCK_MONOTONIC, shared with the host
    end: float  # when the last process of the cell was gone
    cpu_time: float  # user + system of every process the init reaped
    max_rss: int  # bytes, the largest single process (a fallback figure)
    killed_on_request: bool
    locks_refused: int  # byte-range lock requests answered ENOLCK (locks.py)


def supervise(
    channel: Channel, program_pid: int, start: float, listener: int | None = None
) -> ProgramExit:
    """Wait for the program, reaping orphans meanwhile, and answer its seccomp
    notifications (`listener`: byte-range locks, locks.py); then end every process."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    pidfd = os.pidfd_open(program_pid)
    selector = selectors.DefaultSelector()
    selector.register(channel.sock, selectors.EVENT_READ, "channel")
    selector.register(pidfd, selectors.EVENT_READ, "program")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    # The lock supervisor's thread starts at the program's first lock request:
    # most programs never make one.
    locks: LockSupervisor | None = None
    if listener is not None:
        selector.register(listener, selectors.EVENT_READ, "locks")
    wait_status: int | None = None
    killed = False
    while wait_status is None:
        for key, _ in selector.select():
            if key.data == "channel":
                try:
                    request = channel.receive()
                except ChannelClosed:
                    request = {"kind": "kill"}  # the host is gone: end the cell
                if isinstance(request, dict) and request.get("kind") == "kill" and not killed:
                    kill_all()
                    killed = True
            elif key.data == "wake":
                _drain(wake_r)
            elif key.data == "locks":
                selector.unregister(key.fd)
                if _pending(key.fd):  # not only the hang-up of a filter nobody uses any more
                    locks = LockSupervisor(key.fd)
        wait_status = _reap(program_pid)
    kill_all()
    _reap_all()
    end = time.monotonic()
    refused = locks.stop() if locks is not None else 0
    selector.close()
    for fd in (pidfd, wake_r, wake_w):
        os.close(fd)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ProgramExit(
        wait_status=wait_status,
        start=start,
        end=end,
        cpu_time=usage.ru_utime + usage.ru_stime,
        max_rss=usage.ru_maxrss * 1024,
        killed_on_request=killed,
        locks_refused=refused,
    )


def _pending(fd: int) -> bool:
    """Whether a request waits on the seccomp listener `fd` (epoll also reports
    its hang-up, when the last process that could ask is gone, as readable)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & select.POLLIN for _, events in poller.poll(0))


def kill_all() -> None:
    """SIGKILL every process of the PID namespace but the init itself."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _reap(program_pid: int) -> int | None:
    """Reap whatever has exited; the program's wait status once it has."""
    status = None
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == program_pid:
            status = wait_status


def _reap_all() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
