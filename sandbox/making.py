"""How a cell's init comes to be: cloned into new namespaces (by the caller, or
by the cell maker for it), or, for a multi-threaded caller, forked by an outer
process that unshared them; its ids mapped from outside; then it lives its
life (init.run_init). MadeCell is the caller's handle on one.

A caller with several threads cannot clone safely (a lock another thread holds
in glibc would stay held in the child), so for it an outer process forks,
unshares the namespaces and forks the init; the cell is the same.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from . import libc, mounts, userns
from .channel import Channel
from .init import Birth, note_command_line, report_error, run_init

NAMESPACES = (
    libc.CLONE_NEWUSER
    | libc.CLONE_NEWNS
    | libc.CLONE_NEWPID
    | libc.CLONE_NEWNET
    | libc.CLONE_NEWIPC
    | libc.CLONE_NEWUTS
)
SETUP_TIMEOUT = 20.0  # seconds for the namespaces and mounts; they take milliseconds


@dataclass
class MadeCell:
    """A cell whose init is running (building its root, or waiting for a launch).

    Made by this process (the init is our child) or by the cell maker (maker.py:
    the init is the maker's child, which the maker reaps; we kill it, if we
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
        if not self.by_maker:
            _kill_quietly(self.pid)
        elif self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
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


_EXITING: list[int] = []  # first processes (init or outer) of finished cells, not reaped yet


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


_clone_refused = False  # set once clone() into namespaces was refused here


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


def clone_cell(birth: Birth) -> MadeCell:
    """Start a cell's init in new namespaces and map its ids; it builds its root
    and then waits for a launch."""
    note_command_line()
    ids = userns.hold_ids(birth.idmap)
    host, cell = Channel.pair()
    try:
        # Single-threaded, we clone the init straight into new namespaces; a
        # threaded caller cannot clone safely (glibc's locks, see
        # libc.clone_process), so an outer process forks, unshares every
        # namespace and forks the init.
        global _clone_refused
        cloned = not _clone_refused and libc.single_threaded()
        if cloned:
            try:
                pid = libc.clone_process(NAMESPACES)
            except PermissionError:
                # A seccomp profile that allows unshare but not clone with
                # namespace flags (cellblock's own Docker worker profile, by
                # design): the outer process's way, from now on.
                _clone_refused = cloned = False
            else:
                if pid == 0:
                    _cloned_init(birth, cell, host)  # never returns
        if not cloned:
            supervisor = os.getpid()
            pid = os.fork()
            if pid == 0:
                _outer(birth, cell, host, supervisor)  # never returns
    except BaseException:
        ids.release()
        raise
    finally:
        cell.close()
    made = MadeCell(pid, host, ids)
    try:
        # Map ids of the new user namespace from outside, as only we may (a
        # cloned init's namespace exists already; an outer process says when
        # it has unshared).
        host.sock.settimeout(SETUP_TIMEOUT)
        if not cloned:
            host.expect("unshared")
        userns.write_idmap(pid, ids.idmap)
        host.send("mapped")
    except BaseException:
        made.discard()
        raise
    return made


def can_clone_cells() -> bool:
    """Whether this process may clone into new namespaces (the cell maker asks
    before it says it is up: Docker's worker profile refuses it)."""
    try:
        pid = libc.clone_process(NAMESPACES)
    except PermissionError:
        return False
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return True


def make_init(
    birth: Birth, idmap: userns.IdMap, cell: Channel, host: Channel, own_pidfd: int
) -> int:
    """In the cell maker (single-threaded): clone an init for the caller that
    sent both ends of its channel, map its ids (`idmap`: the range the caller
    holds for it), tell the caller the init's pid and a pidfd. Returns the
    init's pid, for the maker to reap."""
    note_command_line()
    pid = libc.clone_process(NAMESPACES)
    if pid == 0:
        _cloned_init(birth, cell, host, own_pidfd)  # never returns
    try:
        userns.write_idmap(pid, idmap)
        host.send("mapped")
        # The caller's launch must come after "mapped", so the caller hears of
        # the cell only now; before this, the init can only have said "error".
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


def _outer(birth: Birth, cell: Channel, host: Channel, supervisor: int) -> None:
    """Unshare the namespaces, wait for the id maps, fork the init, wait for it."""
    code = 1
    gc.disable()  # no finalizer of the supervisor's garbage may run here
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != supervisor:
            return  # the supervisor died before PDEATHSIG was armed
        host.close()
        _keep_only_fds([cell.fileno()])
        libc.unshare(NAMESPACES)
        layers = mounts.open_layers(birth.plan.image)  # with our own rights, still
        cell.send("unshared")
        cell.expect("mapped")
        userns.become_cell_root(birth.idmap)
        # The init must not outlive us; this pipe tells it whether we are still here.
        alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
        init_pid = os.fork()
        if init_pid == 0:
            os.close(alive_w)
            run_init(birth, cell, alive_r, layers)  # never returns
        os.close(alive_r)
        cell.close()
        _, status = os.waitpid(init_pid, 0)
        code = os.waitstatus_to_exitcode(status) & 0xFF
    except BaseException as error:  # noqa: BLE001 - report anything, then die
        report_error(cell, f"outer: {error}")
    finally:
        os._exit(code)


def _cloned_init(
    birth: Birth, cell: Channel, host: Channel, parent_pidfd: int | None = None
) -> None:
    """Born PID 1 of the new namespaces (clone_process): wait for the id maps.
    `parent_pidfd` (the cell maker's own) says whether our parent is still there."""
    gc.disable()  # no finalizer of the supervisor's garbage may run here
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent_pidfd is not None and select.select([parent_pidfd], [], [], 0)[0]:
            os._exit(1)  # the maker died before PDEATHSIG was armed
        host.close()
        _keep_only_fds([cell.fileno()])
        # EOF here if the supervisor that cloned us died before PDEATHSIG was
        # armed (a maker's cell: see above; the caller holds the host end).
        cell.expect("mapped")
        layers = mounts.open_layers(birth.plan.image)  # with our own rights, still
        userns.become_cell_root(birth.idmap)
    except BaseException as error:  # noqa: BLE001 - report anything, then die
        report_error(cell, f"init: {error}")
        os._exit(1)
    run_init(birth, cell, None, layers)


def _keep_only_fds(keep: list[int]) -> None:
    """Close every descriptor but `keep` (those of the supervisor: sockets, logs)."""
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            if fd > low:
                libc.close_range(low, fd - 1)
            low = fd + 1
    libc.close_range(low)


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def exiting(pid: int) -> None:
    """The cell whose first process (init or outer) is `pid` has reported: it is
    exiting; reap it without waiting when it is done (reap_exiting)."""
    with _EXITING_LOCK:
        _EXITING.append(pid)
