"""How a cell's init comes to be: spawned as an executable of its own
(`cellblock-init`, sandbox/init.c), by the caller or by the cell maker for it;
its ids mapped from outside; then it lives its life. MadeCell is the caller's
handle on one.

posix_spawn (clone with CLONE_VM|CLONE_VFORK, then execve) copies nothing of
the caller: no page tables, no copy-on-write faults, no copy of the caller's
memory (a worker's secrets) in a process beside the program; and it is safe
in a caller with threads. The spawned process unshares the namespaces and says
so on its set-up socket; whoever spawned it writes its id maps (only a process
outside the new user namespace may) and says "mapped"; it then forks the init,
PID 1 of the new PID namespace, and waits for it. Killing it kills the init
(PR_SET_PDEATHSIG), and with it every process of the cell.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import userns, wire
from .channel import CellError, Channel, ChannelClosed
from .init import Birth

SETUP_TIMEOUT = 20.0  # seconds for the namespaces and mounts; they take milliseconds
# The init's descriptors (init.c): its end of the channel, its Birth, its set-up socket.
_CHANNEL_FD, _BIRTH_FD, _SETUP_FD = 3, 4, 5


class InitUnavailable(RuntimeError):
    """The executable is missing (a source tree never built)."""


# Resolved once (a lstat of every component of this file's path); whether the
# executable is there is still asked on every call.
_INIT = Path(__file__).resolve().with_name("cellblock-init")


def init_path() -> str:
    """Where `cellblock-init` is: built next to this file by scripts/install or pip."""
    path = _INIT
    if not os.access(path, os.X_OK):
        here = path.parent
        raise InitUnavailable(
            f"{path} is missing: build it with scripts/install (or `python3 "
            f"{here.parent}/cellblock/toolchain.py {path}`)"
        )
    return str(path)


@dataclass
class MadeCell:
    """A cell whose init is running (building its root, or waiting for a launch).

    `pid` is the spawned process (the init's parent, outside the cell's PID
    namespace): made by this process (our child) or by the cell maker
    (maker.py: the maker's child, which the maker reaps; we kill it, if we
    must, by a pidfd that comes as the first message on the channel, read by
    `confirm`)."""

    pid: int  # 0 for a maker's cell until confirmed
    host: Channel
    ids: userns.HeldIds  # its id map, and the lock on its host ids
    owner: int = field(default_factory=os.getpid)  # the process that may use it
    by_maker: bool = False
    pidfd: int | None = None
    renewing: bool = False  # recycled: its init renews it, then says "ready"
    first_launch: float | None = None  # time.monotonic() of its first run's launch

    def confirm(self) -> None:
        """Read the maker's answer (CellError if it failed); a no-op for our own."""
        if self.by_maker and self.pid == 0:
            self.host.sock.settimeout(SETUP_TIMEOUT)
            self.pid, self.pidfd = self.host.receive_made()

    def ready(self) -> None:
        """Wait for a recycled cell's init to say it is renewed (CellError if
        it failed); a no-op for a new cell."""
        if self.renewing:
            self.host.sock.settimeout(SETUP_TIMEOUT)
            self.host.expect("ready")
            self.host.sock.settimeout(None)
            self.renewing = False

    def discard(self) -> None:
        """Kill it (the init takes the whole PID namespace along) and reap it.
        A maker's cell not confirmed yet ends itself: its init reads EOF where
        it waits for a launch."""
        # SIGTERM: the spawned process kills the init and reaps it, so the
        # cell's figures reach us (or the maker) with its exit.
        if not self.by_maker:
            _kill_quietly(self.pid, signal.SIGTERM)
        elif self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
        self.host.close()
        self.finished()
        if not self.by_maker:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)

    def finished(self) -> None:
        """The run is over (every process of the cell is dead), the init is
        exiting: its host ids may serve another cell. The maker reaps its own
        inits (ours are reaped by reap_exiting)."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.ids.release()


_EXITING: list[int] = []  # spawned processes of finished cells, not reaped yet


_EXITING_LOCK = threading.Lock()  # callers may run cells from several threads


def reap_exiting(block: bool) -> None:
    with _EXITING_LOCK:
        for pid in list(_EXITING):
            try:
                done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:  # someone else's waitpid(-1) took it
                done = pid
            if done:
                _EXITING.remove(pid)


def reap_finished() -> None:
    """Wait for the inits of finished runs (they exit a moment after reporting)."""
    reap_exiting(block=True)


def ask_maker(birth: Birth, made_by: Any) -> MadeCell | None:
    """A cell asked of the cell maker `made_by` (maker.Maker; None: not up, then
    None), its answer read when the cell is confirmed."""
    if made_by is None:
        return None
    ids = userns.hold_ids(birth.idmap)
    host, cell = Channel.pair()
    try:
        made_by.request((birth, ids.idmap), cell.fileno(), host.fileno())
    except OSError:
        host.close()
        ids.release()
        return None
    finally:
        cell.close()
    return MadeCell(0, host, ids, by_maker=True)


def spawn_cell(birth: Birth) -> MadeCell:
    """Start a cell's init and map its ids; it builds its root and then waits
    for a launch."""
    return start_spawn(birth).finish()


@dataclass
class SpawnedInit:
    """An init spawned whose ids are not mapped yet: spawn_cell in two halves,
    so that the caller's own preparation of a run overlaps the init's start
    (its execve, its namespaces). `finish` or `abandon` it."""

    pid: int
    setup: socket.socket
    host: Channel
    ids: userns.HeldIds

    def finish(self) -> MadeCell:
        try:
            _map_ids(self.pid, self.setup, self.ids.idmap, self.host)
        except BaseException:
            self.host.close()
            self.ids.release()
            raise
        return MadeCell(self.pid, self.host, self.ids)

    def abandon(self) -> None:
        self.setup.close()  # EOF where it waits for its maps: it exits
        _kill_quietly(self.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.host.close()
        self.ids.release()


def start_spawn(birth: Birth) -> SpawnedInit:
    """The first half of spawn_cell: the init spawned, its ids held."""
    ids = userns.hold_ids(birth.idmap)
    host, cell = Channel.pair()
    try:
        pid, setup = _spawn(birth, cell)
    except BaseException:
        host.close()
        ids.release()
        raise
    finally:
        cell.close()
    return SpawnedInit(pid, setup, host, ids)


def spawn_init(birth: Birth, idmap: userns.IdMap, cell: Channel, host: Channel) -> int:
    """Spawn the init with `cell` as its end of the channel, write its id maps
    (`idmap`: what the caller holds for it), tell it "mapped". Returns the
    spawned process's pid (ours to reap)."""
    pid, setup = _spawn(birth, cell)
    _map_ids(pid, setup, idmap, host)
    return pid


def _spawn(birth: Birth, cell: Channel) -> tuple[int, socket.socket]:
    """posix_spawn the init with its descriptors; (its pid, our end of its
    set-up socket)."""
    record = wire.birth_record(birth)
    setup, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    memfd = os.memfd_create("cellblock-birth", os.MFD_CLOEXEC)
    try:
        # Every source fd above the targets first: a dup2 onto 3, 4 or 5 must
        # not overwrite a source still to come.
        sources = [_high(fd) for fd in (cell.fileno(), memfd, theirs.fileno())]
        try:
            os.write(memfd, record)
            pid = os.posix_spawn(
                init_path(),
                ["cellblock-init"],
                {},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, source, target)
                    for source, target in zip(
                        sources, (_CHANNEL_FD, _BIRTH_FD, _SETUP_FD), strict=True
                    )
                ],
            )
        finally:
            for fd in sources:
                os.close(fd)
    except BaseException:
        setup.close()
        raise
    finally:
        os.close(memfd)
        theirs.close()
    return pid, setup


def _map_ids(pid: int, setup: socket.socket, idmap: userns.IdMap, host: Channel) -> None:
    """The second half: wait for the init to say it has unshared, write its id
    maps, tell it so (CellError, after killing it, if it failed first)."""
    with setup:
        try:
            setup.settimeout(SETUP_TIMEOUT)
            said = setup.recv(64)
            if said != b"unshared":
                raise CellError(_why_not(host) or "the cell's init failed before its namespaces")
            userns.write_idmap(pid, idmap)
            setup.send(b"mapped")
        except BaseException:
            _kill_quietly(pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise


def _high(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)


def _why_not(host: Channel) -> str | None:
    """The error the init reported on the channel before it died, if any."""
    try:
        datagram = host.sock.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except OSError:
        return None
    if datagram[:1] != b"J":
        return None
    with contextlib.suppress(ValueError, ChannelClosed):
        message = host.receive()
        if isinstance(message, dict) and message.get("kind") == "error":
            return str(message.get("message"))
    return None


def make_init(birth: Birth, idmap: userns.IdMap, cell: Channel, host: Channel) -> int:
    """In the cell maker: spawn an init for the caller that sent both ends of
    its channel, map its ids (`idmap`: the range the caller holds for it), tell
    the caller the init's pid and a pidfd. Returns the pid, for the maker to reap."""
    pid = spawn_init(birth, idmap, cell, host)
    try:
        # The caller hears of the cell only now; before this, the init can
        # only have said "error".
        pidfd = os.pidfd_open(pid)
        try:
            cell.send_made(pid, pidfd)
        finally:
            os.close(pidfd)
    except BaseException:
        _kill_quietly(pid)
        os.waitpid(pid, 0)
        raise
    return pid


def _kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def exiting(pid: int) -> None:
    """The cell whose spawned process is `pid` has reported: it is exiting;
    reap it without waiting when it is done (reap_exiting)."""
    with _EXITING_LOCK:
        _EXITING.append(pid)
