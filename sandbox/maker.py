"""The cell maker: a small process of the caller's that spawns cells' inits for it.

Making a cell takes a few round trips before its init can build anything: the
init unshares its namespaces, its id maps are written from outside, it is told
so. The maker takes them off the caller's path: the caller only sends it a
request and goes on (a warm cell is made while the caller's run goes on). For
a rootless caller with subordinate ids the maker also saves the setuid helpers
(newuidmap, newgidmap: ~5 ms a cell): it lives in a user namespace that holds
the caller's whole range (userns.enter_holding_namespace) and writes each
cell's maps itself. It is a fresh interpreter that imported the sandbox and
nothing else: single-threaded, small, and idle while the runs go on.

Used with warm cells: sandbox.keep_warm() starts it, and while warm cells are
on it makes every cell of the caller (cell._start_cell, cell._make_warm_cell ask it).
Until it is up (~150 ms of imports, in the background), and wherever it cannot
come up or has died, the caller makes its cells itself. Children forked from
the caller use it too (a service worker's work horses).

One request per cell, on the maker's control socket: a pickled Birth and the
id map the caller holds for the cell (userns.hold_ids), with both
ends of the new cell's channel (SCM_RIGHTS). The maker spawns the init
(making.spawn_init), writes the id maps, tells it "mapped", then hands the host
end the pid of the spawned process and a pidfd (channel `M` message) and closes
its copies: from then on the caller and the init talk as if the caller had
spawned it. The maker reaps what it spawned; the caller kills one, if it must,
by its pidfd (the init dies with it). The maker dies with the caller
(PDEATHSIG), and its inits with it; told to stop, it waits for its inits, which
end with their runs."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_START = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from sandbox.maker import serve; serve(int(sys.argv[2]), int(sys.argv[3]))"
)
_MAX_REQUEST = 1 << 16
# The inits are copies of the maker: nothing of the caller's environment (a
# worker's REDIS_URL, API keys) is in their memory. PATH finds newuidmap.
_ENVIRONMENT = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
_STOP = b"stop"


class Maker:
    """A handle on a maker process: held by the process that started it (the
    owner, which stops it) and by forked children of the owner, which may use
    it too (an RQ worker starts one; each job's work horse, forked from the
    worker, gets its cells from it)."""

    def __init__(self) -> None:
        import subprocess  # here, not at the top: a process that starts no maker never needs it

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    _START,
                    _PACKAGE_PARENT,
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
                env=_ENVIRONMENT,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.control = ours
        self.owner = os.getpid()
        self.ready = False
        self.broken = False
        self.lock = threading.Lock()  # requests from several threads stay whole

    def usable(self) -> bool:
        """Whether requests go here now: up (it said "ready"), not broken."""
        if not self.ready and not self.broken:
            # Peeked, never read: the word stays for every process sharing it.
            try:
                said = self.control.recv(16, socket.MSG_DONTWAIT | socket.MSG_PEEK)
            except BlockingIOError:
                return False  # still importing
            except OSError:
                said = b""
            self.ready = said == b"ready"
            self.broken = not self.ready  # it exited: it cannot make cells here
        return self.ready and not self.broken

    def request(self, birth: Any, cell_end: int, host_end: int) -> None:
        """Ask for a cell; its answer comes on the host end (channel.receive_made)."""
        message = pickle.dumps(birth)
        with self.lock:
            try:
                socket.send_fds(self.control, [message], [cell_end, host_end])
            except OSError:
                self.broken = True
                raise

    def stop(self) -> None:
        """No more requests: the maker exits once its inits have; wait for that.
        Said, not just closed: forked children may hold copies of the socket.
        One still importing has no cells yet: it is killed, not waited for."""
        if not self.usable():
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(OSError):
            self.control.send(_STOP)
        self.control.close()
        self.process.wait()


_maker: Maker | None = None
_maker_lock = threading.Lock()


def start() -> None:
    """Start a maker for this process unless it has one (up, starting, inherited,
    or broken: one that could not come up or died is not started again)."""
    global _maker
    with _maker_lock:
        if _maker is not None or not _can_start_interpreter():
            return
        with contextlib.suppress(OSError):
            _maker = Maker()


def _can_start_interpreter() -> bool:
    """Whether sys.executable is a Python to start: not when embedded (uWSGI's
    own binary, an empty string) or frozen into an application."""
    name = os.path.basename(sys.executable or "")
    return name.startswith("python") and not getattr(sys, "frozen", False)


def current() -> Maker | None:
    """The maker, if one is up: started here or by a process we were forked from."""
    maker = _maker
    return maker if maker is not None and maker.usable() else None


def stop() -> None:
    """Stop this process's maker (warm.release: at exit, or warm cells turned
    off); one inherited from a parent is the parent's to stop."""
    global _maker
    with _maker_lock:
        maker = _maker
        if maker is None or maker.owner != os.getpid():
            return
        _maker = None
    maker.stop()


def _after_fork_in_child() -> None:
    # The maker stays usable here (requests carry everything an answer needs);
    # only locks another thread may have held at the fork are made anew.
    global _maker_lock
    _maker_lock = threading.Lock()
    if _maker is not None:
        _maker.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the maker process ---------------------------------------------------------


def serve(control_fd: int, caller: int) -> None:
    """The maker's main loop (run by a fresh interpreter, see Maker)."""
    from . import libc, making, userns
    from .channel import Channel

    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != caller:
        return  # the caller died before PDEATHSIG was armed
    inits: set[int] = set()

    def reap(*_: object) -> None:  # only our inits: newuidmap is subprocess's to wait for
        for pid in list(inits):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    inits.discard(pid)

    control = socket.socket(fileno=control_fd)
    # A rootless caller with subordinate ids: the maker maps each cell's ids
    # itself, from a user namespace that holds them all (userns.py).
    holding = None
    template = userns.choose_idmap()
    if template.use_newidmap:
        try:
            holding = userns.enter_holding_namespace(template)
        except OSError:
            return  # not usable: the caller makes its cells (with the helpers)
    try:
        making.init_path()
    except making.InitUnavailable:
        return  # EOF for the caller: it makes its cells itself (and says why not)
    signal.signal(signal.SIGCHLD, reap)
    control.send(b"ready")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST, 2, socket.MSG_CMSG_CLOEXEC)
        except ConnectionResetError:
            # The caller closed its end with our "ready" unread (it only ever
            # peeks at it): said once, ahead of anything still queued.
            continue
        if not message or message == _STOP:
            break  # the caller is gone, or stops us
        cell_end, host_end = (Channel(socket.socket(fileno=fd)) for fd in fds)
        try:
            birth, idmap = pickle.loads(message)
            if holding is not None:
                idmap = userns.seen_from(idmap, holding)
            pid = making.make_init(birth, idmap, cell_end, host_end)
            inits.add(pid)
            reap()  # one that ended before it was in the set had its SIGCHLD already
        except Exception as error:  # noqa: BLE001 - the caller hears of it, we go on
            with contextlib.suppress(OSError):
                cell_end.send("error", message=f"cell maker: {error}")
        finally:
            cell_end.close()
            host_end.close()
    control.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for pid in inits:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
