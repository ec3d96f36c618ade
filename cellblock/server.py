"""`cellblock run-server`: a process of the user's own that `cellblock run` hands runs to.

    cellblock run-server [--idle-exit SECONDS]

Docker's model, for one user: a long-lived process that has paid once for
what a process running one cell pays every time (the interpreter, the
sandbox's imports, the seccomp program, a cold cell), and keeps a warm cell
ready (sandbox/warm.py: each run's successor is made while it runs). It is
started explicitly, never by `cellblock run`, and runs in the foreground
until SIGTERM or SIGINT, or --idle-exit seconds without a run.

It listens on <dir>/run.sock (cellblock/protocol.py says where <dir> is, and
checks it: ours, not a symlink, writable by nobody else; made 0700), the
socket itself 0600, and serves a connection only if the kernel says the
process at the other end has its own euid (SO_PEERCRED; SECURITY.md, rule 26):
another user's process is told no and nothing of the request is read. Each
run is made by cellblock/runcmd.py, as the CLI would make it in-process, from
the client's options and the files the client opened (passed as descriptors
and reopened through /proc/self/fd: the very files the client opened, no
path resolved anew), and answered with the exact text to print. One thread
per connection: runs do not wait for each other.

The run is the server's child: its cgroup, nice value and CPU affinity, not
the client's. A client whose CELLBLOCK_* environment differs, or that is
another cellblock (another checkout or venv), is refused and runs in-process.
A client that goes away mid-run does not end the run: it ends at its limits,
and its result is dropped.

At exit it removes its socket and ends its warm cell and cell maker; run.lock
(held while it runs: one server per directory) stays.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType

from cellblock import protocol
from cellblock.protocol import ProtocolError, Reply, Request

_REQUEST_TIMEOUT = 10.0  # a client sends its request at once; one that does not is dropped


class _Stop(Exception):
    """SIGTERM or SIGINT: stop accepting, finish the runs under way, clean up."""


def main(args: argparse.Namespace) -> int:
    if args.idle_exit < 0:
        print("cellblock run-server: error: --idle-exit must be >= 0", file=sys.stderr)
        return 2
    path = protocol.socket_directory()
    directory = protocol.open_directory(path, create=True)
    if directory is None:
        print(
            f"cellblock run-server: error: {path} is not a directory of this user's own that "
            "nobody else may write (or a symlink, or cannot be made); remove it or set "
            "XDG_RUNTIME_DIR",
            file=sys.stderr,
        )
        return 1
    try:
        lock = _lock(directory)
        if lock is None:
            print(
                f"cellblock run-server: error: a server is already running on {path}",
                file=sys.stderr,
            )
            return 1
        try:
            return Server(directory, path, args.idle_exit).serve()
        finally:
            os.close(lock)
    finally:
        os.close(directory)


def _lock(directory: int) -> int | None:
    fd = os.open(
        protocol.LOCK_NAME,
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=directory,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Server:
    def __init__(self, directory: int, path: str, idle_exit: float) -> None:
        self.directory = directory
        self.path = os.path.join(path, protocol.SOCKET_NAME)
        self.idle_exit = idle_exit
        self.euid = os.geteuid()
        self.environment = protocol.environment()
        self.package = protocol.package()
        self.lock = threading.Lock()
        self.running = 0  # connections being served
        self.last = time.monotonic()  # when the last one ended
        self.threads: set[threading.Thread] = set()

    def serve(self) -> int:
        from sandbox import for_many_runs, keep_warm

        # The cell maker, a warm cell for every run after the first, recycled
        # cells (unless CELLBLOCK_RECYCLE=0).
        for_many_runs()
        listener, inode = self._listen()
        previous = {
            number: signal.signal(number, _stop) for number in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self._warm_up()
            print(f"cellblock run-server: serving on {self.path}", file=sys.stderr, flush=True)
            self._accept(listener)
        except _Stop:
            pass
        finally:
            # A second SIGINT or SIGTERM during what follows ends us the usual way
            # (a stale socket is no harm: clients and the next server see it is).
            for number, handler in previous.items():
                signal.signal(number, handler)
            listener.close()
            with contextlib.suppress(OSError):
                if os.stat(protocol.SOCKET_NAME, dir_fd=self.directory).st_ino == inode:
                    os.unlink(protocol.SOCKET_NAME, dir_fd=self.directory)
            for thread in list(self.threads):  # the runs under way end at their limits
                thread.join()
            keep_warm(False)  # end the warm cell and the cell maker
        return 0

    def _listen(self) -> tuple[socket.socket, int]:
        # Not a server's any more if the lock was free: a stale socket.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(protocol.SOCKET_NAME, dir_fd=self.directory)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        mask = os.umask(0o177)  # the socket is born 0600: no moment when others may connect
        try:
            listener.bind(protocol.through(self.directory, protocol.SOCKET_NAME))
        finally:
            os.umask(mask)
        listener.listen(64)
        return listener, os.stat(protocol.SOCKET_NAME, dir_fd=self.directory).st_ino

    def _warm_up(self) -> None:
        """One run with the defaults, so that the first client's run finds a
        warm cell (and the seccomp program compiled) like every later one."""
        from sandbox import run

        with contextlib.suppress(Exception):
            run(["/bin/true"])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self.lock:
                idle = self.running == 0
                left = self.idle_exit - (time.monotonic() - self.last)
            if self.idle_exit and idle and left <= 0:
                return
            listener.settimeout(left if self.idle_exit and idle else (self.idle_exit or None))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            if protocol.peer_uid(conn) != self.euid:
                # Another user's process: refused before one byte of it is read.
                with contextlib.suppress(OSError):
                    conn.settimeout(1.0)
                    protocol.send(conn, Reply("refused", "not this server's user").to_wire())
                conn.close()
                continue
            with self.lock:
                self.running += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._handle(conn)
        except (OSError, ProtocolError):
            pass  # the client went away; its run, if any, has ended at its limits
        finally:
            with self.lock:
                self.running -= 1
                self.last = time.monotonic()
            self.threads.discard(threading.current_thread())

    def _handle(self, conn: socket.socket) -> None:
        from cellblock.runcmd import EXIT_INTERNAL, outcome

        conn.settimeout(_REQUEST_TIMEOUT)
        data, fds = protocol.receive(conn, protocol.MAX_REQUEST)
        try:
            conn.settimeout(None)
            try:
                request = Request.from_wire(data)
            except ProtocolError as error:
                protocol.send(conn, Reply("refused", str(error)).to_wire())
                return
            reason = self._refusal(request, len(fds))
            if reason:
                protocol.send(conn, Reply("refused", reason).to_wire())
                return
            protocol.send(conn, Reply("accepted").to_wire())
            options = request.options
            paths = (f"/proc/self/fd/{fd}" for fd in fds)
            sources = dict(zip(self._sources(request), paths, strict=True))
            try:
                done = outcome(options, sources, check_out_dir=False)
            except Exception as error:  # a bug of ours: said as the in-process path would
                reply = Reply(
                    "done", stderr=f"cellblock run: error: {error!r}\n", code=EXIT_INTERNAL
                )
            else:
                reply = Reply("done", "", done.stdout, done.stderr, done.code, done.files)
            protocol.send(conn, reply.to_wire())
        finally:
            for fd in fds:
                os.close(fd)

    def _refusal(self, request: Request, fds: int) -> str:
        """Why this server will not make this run, or "" (then the client
        makes it in-process: nothing is lost)."""
        if request.package != self.package:
            return f"another cellblock ({request.package}; this server is {self.package})"
        if request.environment != self.environment:
            return "another CELLBLOCK_* environment"
        if request.stdin_fd != bool(request.options.stdin):
            return "no descriptor for --stdin"
        if request.copy_in_fds != len(request.options.copy_in):
            return "no descriptor for each --copy-in"
        if fds != request.stdin_fd + request.copy_in_fds:
            return "descriptors missing"
        return ""

    @staticmethod
    def _sources(request: Request) -> list[str]:
        """The paths as typed that the request's descriptors stand for, in order."""
        options = request.options
        sources = [options.stdin] if request.stdin_fd and options.stdin else []
        return sources + [item.rpartition(":")[0] for item in options.copy_in]


def _stop(number: int, frame: FrameType | None) -> None:
    raise _Stop
