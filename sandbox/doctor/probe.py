"""Probes: a kernel feature tried for real in a forked, time-boxed child.

The child always leaves through ``os._exit`` (no atexit handler or buffered
output of the parent runs twice), gets SIGKILL if it hangs or its parent dies,
and is always reaped. Whatever it creates (namespaces, mounts, filters) is its
own and vanishes with it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox import libc

PROBE_TIMEOUT = 5.0
"""Seconds a probe child may take before it is killed."""


@dataclass
class Outcome:
    """What a probe child reported."""

    ok: bool
    value: Any = None
    error: str = ""
    errno: int | None = None


class ProbeFailed(Exception):
    """Raised inside a probe child to report a failure with a plain message."""


def error_text(e: BaseException) -> str:
    if isinstance(e, ProbeFailed):
        return str(e)
    if isinstance(e, OSError) and e.errno is not None:
        name = errno.errorcode.get(e.errno, str(e.errno))
        text = e.strerror or os.strerror(e.errno)
        where = f" ({e.filename})" if e.filename else ""
        # libc wrappers put the call in strerror already ("unshare: Operation ...").
        return f"{text}{where} [{name}]"
    return f"{type(e).__name__}: {e}"


def probe(fn: Callable[[], Any], timeout: float = PROBE_TIMEOUT) -> Outcome:
    """Run ``fn`` in a forked child and return what it returned or raised.

    The child reports over a pipe as JSON and always leaves with ``os._exit``.
    It gets SIGKILL if this process dies (PDEATHSIG) or if it outlives
    ``timeout``; it is always reaped before this returns.
    """
    parent = os.getpid()
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        return Outcome(False, error=f"fork: {error_text(e)}", errno=e.errno)
    if pid == 0:  # child: never return, never raise
        try:
            os.close(r)
            libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() not in (parent, 0):  # 0: we are PID 1 of a new pid namespace
                os._exit(2)
            try:
                msg = {"ok": True, "value": fn()}
            except BaseException as e:
                msg = {"ok": False, "error": error_text(e), "errno": getattr(e, "errno", None)}
            data = json.dumps(msg, default=str).encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(0)

    os.close(w)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    status: int | None = None
    timed_out = False
    poller = select.poll()  # not select(): a busy server may hold fds beyond FD_SETSIZE
    poller.register(r, select.POLLIN)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if not poller.poll(max(1, int(remaining * 1000))):
                timed_out = True
                break
            chunk = os.read(r, 65536)
            if not chunk:  # EOF: the child (and anything it forked) closed the pipe
                break
            chunks.append(chunk)
        while not timed_out:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid:
                status = st
                break
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.002)
    except ChildProcessError:  # someone else reaped it (SIGCHLD ignored): trust the pipe
        status = 0
    finally:
        os.close(r)
        if status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    if timed_out:
        return Outcome(False, error=f"probe did not finish within {timeout:g}s and was killed")
    try:
        msg = json.loads(b"".join(chunks))
    except ValueError:
        if status is not None and os.WIFSIGNALED(status):
            sig = signal.Signals(os.WTERMSIG(status)).name
            return Outcome(False, error=f"probe was killed by {sig}")
        return Outcome(False, error="probe exited without reporting")
    return Outcome(bool(msg.get("ok")), msg.get("value"), msg.get("error", ""), msg.get("errno"))


def write_proc(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())  # id maps must be written in a single write(2)
    finally:
        os.close(fd)


def enter_userns(extra: int = 0) -> None:
    """unshare(CLONE_NEWUSER | extra), then map our own uid and gid to 0 (size-1 maps)."""
    uid, gid = os.geteuid(), os.getegid()  # before unshare: afterwards they read as overflow ids
    libc.unshare(libc.CLONE_NEWUSER | extra)
    with contextlib.suppress(FileNotFoundError):  # no such file before Linux 3.19
        write_proc("/proc/self/setgroups", "deny")
    write_proc("/proc/self/uid_map", f"0 {uid} 1")
    write_proc("/proc/self/gid_map", f"0 {gid} 1")
    if os.getuid() != 0 or os.getgid() != 0:
        raise ProbeFailed(f"uid/gid map written but ids inside are {os.getuid()}/{os.getgid()}")
