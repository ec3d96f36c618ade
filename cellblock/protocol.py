"""The hand-off protocol between `cellblock run` and `cellblock run-server`.

    client                                   server (cellblock/server.py)
    connect(<dir>/run.sock)          ─────▶  accept; SO_PEERCRED uid == its euid?
    Request (+ stdin and copy-in fds) ────▶
                                     ◀─────  Reply "refused" (then run in-process)
                                     ◀─────  Reply "accepted": the run is the server's
                                     ◀─────  Reply "done": what to print, exit code, files

Where: <dir> is $XDG_RUNTIME_DIR/cellblock (when XDG_RUNTIME_DIR is an
absolute path to a directory of the user's own), else /run/cellblock for
root, else /tmp/cellblock-UID. Both sides use it only when it is a directory,
not a symlink, owned by their euid and writable by nobody else (checked on a
descriptor, then used through /proc/self/fd/N, so nothing is swapped in
between); the server makes it 0700 if it is missing. Each side asks the
kernel who the other is (SO_PEERCRED) and talks only to its own euid
(SECURITY.md, rule 26).

A frame is an 8-byte little-endian length and a marshal of plain values
(dict, list, str, bytes, int, bool, None); the fds ride on the first bytes of
the Request as SCM_RIGHTS. marshal rather than json or pickle: it is built into
the interpreter (json imports re, ~5 ms of the client's ~15), it makes no
objects but those plain values (pickle runs code), and only the same euid is
ever on the other end. The messages are plain classes with __slots__ rather
than dataclasses for the same reason: importing dataclasses costs the client
more than its whole hand-off.

This module imports only what a bare interpreter has loaded already, plus
_socket (socket's C core: socket.py's enums cost ~6 ms).
"""

from __future__ import annotations

import _socket
import marshal
import os
import stat
import sys

VERSION = 1
SOCKET_NAME = "run.sock"
LOCK_NAME = "run.lock"
MAX_FDS = 256  # stdin and copy-ins; a request with more runs in-process
MAX_REQUEST = 1 << 20  # the options of one run
_MAX_REPLY = 1 << 40  # two outputs and the copied-out files
_SO_PEERCRED = 17  # asm-generic/socket.h (x86_64)
_UNSAFE_MODE = stat.S_IWGRP | stat.S_IWOTH
# The environment a run reads (cgroup base, subordinate ids, images, ...):
# a request is served only where it is the server's too. CELLBLOCK_WARM,
# CELLBLOCK_RECYCLE and CELLBLOCK_HANDOFF choose how the CLI and the server
# run, not what a run gets (a recycled cell is renewed: SECURITY.md rule 27).
_NOT_COMPARED = ("CELLBLOCK_WARM", "CELLBLOCK_RECYCLE", "CELLBLOCK_HANDOFF")


class ProtocolError(Exception):
    """The other end broke the protocol, or went away."""


# ---------------------------------------------------------------------------
# Where the socket is


def socket_directory() -> str:
    """The directory the server's socket lives in, for this euid."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or ""
    # An XDG_RUNTIME_DIR inherited from another user (runuser keeps it) is not ours.
    if os.path.isabs(runtime) and _owned_dir(runtime):
        return os.path.join(runtime, "cellblock")
    if os.geteuid() == 0:
        return "/run/cellblock"
    return f"/tmp/cellblock-{os.geteuid()}"


def _owned_dir(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def open_directory(path: str, create: bool = False) -> int | None:
    """A descriptor of the socket directory, or None if it is missing or not
    safe: a symlink, not ours, or writable by group or others."""
    try:
        if create:
            os.makedirs(path, 0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and not st.st_mode & _UNSAFE_MODE:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def through(directory: int, name: str) -> str:
    """A path to `name` in the directory behind a descriptor: resolved through
    the descriptor, not the directory's name, which could be replaced."""
    return f"/proc/self/fd/{directory}/{name}"


def peer_uid(sock: _socket.socket) -> int:
    """The euid of the process at the other end, when it connected (SO_PEERCRED)."""
    cred = sock.getsockopt(_socket.SOL_SOCKET, _SO_PEERCRED, 12)  # pid, uid, gid
    return int.from_bytes(cred[4:8], sys.byteorder)


def environment() -> dict[str, str]:
    """The part of this process's environment a run depends on."""
    return {
        key: value
        for key, value in os.environ.items()
        if key.startswith("CELLBLOCK_") and key not in _NOT_COMPARED
    }


def package() -> str:
    """Which cellblock this is: a server serves only clients of its own code."""
    return os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# Messages


class _Flat:
    """A message whose wire form is its slots, as they are."""

    __slots__: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def _fields(cls, data: object, what: str) -> dict[str, object]:
        """`data` if it has exactly our slots (ProtocolError naming `what` if not)."""
        if not isinstance(data, dict) or set(data) != set(cls.__slots__):
            raise ProtocolError(f"malformed {what}")
        return data


class RunOptions(_Flat):
    """`cellblock run`'s options, as its parser gives them (argparse's or the
    client's own): strings as typed, checked only when the run is made
    (cellblock/runcmd.py), so that both paths say the same about a bad one."""

    __slots__ = (
        "command",
        "json",
        "limits",
        "stdin",
        "copy_in",
        "copy_out",
        "readonly",
        "out_dir",
        "image",
        "seccomp",
        "env",
        "stderr_to_stdout",
    )

    def __init__(
        self,
        command: list[str],
        json: bool = False,
        limits: dict[str, str] | None = None,
        stdin: str | None = None,
        copy_in: list[str] | None = None,
        copy_out: list[str] | None = None,
        readonly: list[str] | None = None,
        out_dir: str = ".",
        image: str = "host",
        seccomp: str = "default",
        env: list[str] | None = None,
        stderr_to_stdout: bool = False,
    ) -> None:
        self.command = command  # "--" first if it was typed (argparse.REMAINDER keeps it)
        self.json = json
        self.limits = limits or {}  # limit name (Limits' field) -> value as typed
        self.stdin = stdin
        self.copy_in = copy_in or []  # "SRC:DEST" items
        self.copy_out = copy_out or []
        self.readonly = readonly or []
        self.out_dir = out_dir
        self.image = image
        self.seccomp = seccomp
        self.env = env or []  # "K=V" items
        self.stderr_to_stdout = stderr_to_stdout

    @classmethod
    def from_wire(cls, data: object) -> RunOptions:
        options = cls(**cls._fields(data, "run options"))  # type: ignore[arg-type]
        strings = (options.command, options.copy_in, options.copy_out, options.readonly)
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in strings):
            raise ProtocolError("malformed run options")
        if not isinstance(options.env, list) or not all(isinstance(s, str) for s in options.env):
            raise ProtocolError("malformed run options")
        if not isinstance(options.limits, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in options.limits.items()
        ):
            raise ProtocolError("malformed run options")
        if not all(isinstance(v, str) for v in (options.out_dir, options.image, options.seccomp)):
            raise ProtocolError("malformed run options")
        if not isinstance(options.json, bool) or not isinstance(options.stderr_to_stdout, bool):
            raise ProtocolError("malformed run options")
        if not isinstance(options.stdin, str | None):
            raise ProtocolError("malformed run options")
        return options

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunOptions) and self.to_wire() == other.to_wire()

    def __repr__(self) -> str:
        return f"RunOptions({self.to_wire()!r})"


class Request:
    """One run handed over. The fds sent with it: stdin's (if `stdin_fd`), then
    one per copy-in item, in order, each opened by the client with its rights."""

    __slots__ = ("version", "package", "environment", "options", "stdin_fd", "copy_in_fds")

    def __init__(
        self,
        options: RunOptions,
        stdin_fd: bool,
        copy_in_fds: int,
        version: int = VERSION,
        package: str = "",
        environment: dict[str, str] | None = None,
    ) -> None:
        self.version = version
        self.package = package
        self.environment = environment or {}
        self.options = options
        self.stdin_fd = stdin_fd
        self.copy_in_fds = copy_in_fds

    def to_wire(self) -> dict[str, object]:
        return {
            "version": self.version,
            "package": self.package,
            "environment": self.environment,
            "options": self.options.to_wire(),
            "stdin_fd": self.stdin_fd,
            "copy_in_fds": self.copy_in_fds,
        }

    @classmethod
    def from_wire(cls, data: object) -> Request:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ProtocolError("another version of the protocol")
        environment = data.get("environment")
        if not isinstance(environment, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in environment.items()
        ):
            raise ProtocolError("malformed request")
        stdin_fd, copy_in_fds, package = (
            data.get("stdin_fd"),
            data.get("copy_in_fds"),
            data.get("package"),
        )
        if not isinstance(stdin_fd, bool) or not isinstance(package, str):
            raise ProtocolError("malformed request")
        if not isinstance(copy_in_fds, int) or isinstance(copy_in_fds, bool) or copy_in_fds < 0:
            raise ProtocolError("malformed request")
        return cls(
            RunOptions.from_wire(data.get("options")),
            stdin_fd,
            copy_in_fds,
            VERSION,
            package,
            environment,
        )


class Reply(_Flat):
    """The server's answer: `refused` (nothing ran: the client runs it
    in-process), `accepted` (the run is the server's from here on), or `done`:
    the stdout and stderr text the in-process path would print, its exit code,
    and the files copied out, for the client to write under its --out-dir."""

    __slots__ = ("kind", "reason", "stdout", "stderr", "code", "files")

    def __init__(
        self,
        kind: str,
        reason: str = "",
        stdout: str = "",
        stderr: str = "",
        code: int = 0,
        files: dict[str, bytes] | None = None,
    ) -> None:
        self.kind = kind
        self.reason = reason
        self.stdout = stdout
        self.stderr = stderr
        self.code = code
        self.files = files or {}

    @classmethod
    def from_wire(cls, data: object) -> Reply:
        reply = cls(**cls._fields(data, "reply"))  # type: ignore[arg-type]
        if reply.kind not in ("refused", "accepted", "done"):
            raise ProtocolError(f"unknown reply {reply.kind!r}")
        if not all(isinstance(v, str) for v in (reply.reason, reply.stdout, reply.stderr)):
            raise ProtocolError("malformed reply")
        if not isinstance(reply.code, int) or not isinstance(reply.files, dict):
            raise ProtocolError("malformed reply")
        if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in reply.files.items()):
            raise ProtocolError("malformed reply")
        return reply


# ---------------------------------------------------------------------------
# Frames


def send(sock: _socket.socket, message: dict[str, object], fds: list[int] = []) -> None:  # noqa: B006
    """One frame, with fds (SCM_RIGHTS) on its first bytes."""
    payload = marshal.dumps(message, 4)
    data = memoryview(len(payload).to_bytes(8, "little") + payload)
    if fds:
        ancillary = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, ancillary)])
        data = data[sent:]
    while data:
        data = data[sock.send(data) :]


def receive(sock: _socket.socket, limit: int = _MAX_REPLY) -> tuple[object, list[int]]:
    """One frame and the fds that came with it (close-on-exec); ProtocolError
    on EOF, a frame over `limit`, or bytes that are not a frame."""
    fds: list[int] = []
    try:
        head = b""
        while len(head) < 8:
            chunk, ancillary, flags, _ = sock.recvmsg(
                8 - len(head), _socket.CMSG_SPACE(4 * MAX_FDS), _socket.MSG_CMSG_CLOEXEC
            )
            for level, kind, data in ancillary:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    fds += [
                        int.from_bytes(data[i : i + 4], sys.byteorder, signed=True)
                        for i in range(0, len(data) - len(data) % 4, 4)
                    ]
            if flags & _socket.MSG_CTRUNC:
                raise ProtocolError("too many descriptors")
            if not chunk:
                raise ProtocolError("the other end closed the connection")
            head += chunk
        size = int.from_bytes(head, "little")
        if size > limit:
            raise ProtocolError(f"a frame of {size} bytes, over {limit}")
        body = bytearray(size)
        view = memoryview(body)
        while view:
            got = sock.recv_into(view)
            if not got:
                raise ProtocolError("the other end closed the connection")
            view = view[got:]
        try:
            return marshal.loads(body), fds
        except (EOFError, ValueError, TypeError) as error:
            raise ProtocolError(f"not a frame: {error}") from None
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
