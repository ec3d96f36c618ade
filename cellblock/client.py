"""`cellblock run`'s side of the hand-off: the run goes to a run server if one is up.

    cellblock run-server &                 # once (cellblock/server.py)
    cellblock run -- /bin/true             # handed over: no sandbox import, a warm cell

What costs a process that runs one cell is starting: the interpreter, the
sandbox's imports, a cold cell. A run server has all three paid already, so the
CLI only parses its options, opens its input files, sends them over the
socket (cellblock/protocol.py) and prints what comes back: exactly what the
in-process path prints (both come from cellblock/runcmd.py), with the same
exit code. If no server is up, or the hand-off fails before the server has
taken the run, the run is made in-process as before, silently. Anything this
module is not sure of (an option it does not know exactly as argparse reads
it, a file it cannot open, a relative --seccomp path, an --out-dir that is not
a directory) goes the in-process way, which says what is wrong exactly as
always. CELLBLOCK_HANDOFF=0 turns the hand-off off.

Imports only os, sys and cellblock's light modules: argparse (~5 ms), json and
socket (~5 ms each) would cost the client more than its whole hand-off.
"""

from __future__ import annotations

import _socket
import os
import stat
import sys

from cellblock import protocol
from cellblock.output import deliver
from cellblock.protocol import ProtocolError, Reply, Request, RunOptions

# Every option of `cellblock run` (cellblock/cli.py's parser; tests/test_handoff.py
# checks the two agree). Limits are sandbox.spec.Limits' fields, by name.
LIMIT_FLAGS = {
    "--time": "time",
    "--wall-time": "wall_time",
    "--memory": "memory",
    "--pids": "pids",
    "--output-limit": "output_limit",
    "--file-size": "file_size",
    "--open-files": "open_files",
    "--stack": "stack",
    "--tmpfs-size": "tmpfs_size",
    "--tmpfs-inodes": "tmpfs_inodes",
    "--cpus": "cpus",
}
REPEATED_FLAGS = {
    "--copy-in": "copy_in",
    "--copy-out": "copy_out",
    "--readonly": "readonly",
    "--env": "env",
}
SINGLE_FLAGS = {
    "--stdin": "stdin",
    "--out-dir": "out_dir",
    "--image": "image",
    "--seccomp": "seccomp",
}
SWITCH_FLAGS = {"--json": "json", "--stderr-to-stdout": "stderr_to_stdout"}
EXIT_INTERNAL = 125  # cellblock/runcmd.py's: the run was the server's, and it was lost

_tried = False  # one attempt per process: argparse's path must not ask again


def parse(argv: list[str]) -> RunOptions | None:
    """The options of `cellblock run ARGV` as argparse would read them, for the
    common spellings only (`--flag VALUE`, `--flag=VALUE`, then `--` or the
    command); anything else (help, an abbreviation, a value that starts with
    '-', a missing command) is None, and argparse reads it."""
    values: dict[str, object] = {"limits": {}}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):
            break
        flag, equals, value = arg.partition("=")
        if flag in SWITCH_FLAGS and not equals:
            values[SWITCH_FLAGS[flag]] = True
            i += 1
            continue
        if flag not in LIMIT_FLAGS and flag not in REPEATED_FLAGS and flag not in SINGLE_FLAGS:
            return None
        if not equals:
            if i + 1 == len(argv):
                return None
            value = argv[i + 1]
            i += 1
        if not value or value.startswith("-"):  # argparse has rules of its own for these
            return None
        i += 1
        if flag in LIMIT_FLAGS:
            values["limits"][LIMIT_FLAGS[flag]] = value  # type: ignore[index]
        elif flag in REPEATED_FLAGS:
            values.setdefault(REPEATED_FLAGS[flag], []).append(value)  # type: ignore[attr-defined]
        else:
            values[SINGLE_FLAGS[flag]] = value
    command = argv[i:]
    if not command or command == ["--"]:
        return None
    return RunOptions(command, **values)  # type: ignore[arg-type]


def hand_off(options: RunOptions) -> int | None:
    """Run it through a run server and print what it says: the exit code; None
    if no server took the run (nothing ran: run it in-process)."""
    global _tried
    if _tried or os.environ.get("CELLBLOCK_HANDOFF") == "0":
        return None
    _tried = True
    if not _local_only(options):
        return None
    directory = protocol.open_directory(protocol.socket_directory())
    if directory is None:
        return None
    opened = _open_inputs(options)
    if opened is None:
        os.close(directory)
        return None
    fds = opened
    sock = None
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        sock.connect(protocol.through(directory, protocol.SOCKET_NAME))
        if protocol.peer_uid(sock) != os.geteuid():
            # A socket nobody but we should have made: not ours to talk to.
            raise ProtocolError("the server is another user's")
        request = Request(
            options,
            stdin_fd=options.stdin is not None,
            copy_in_fds=len(options.copy_in),
            package=protocol.package(),
            environment=protocol.environment(),
        )
        protocol.send(sock, request.to_wire(), fds)
        for fd in fds:
            os.close(fd)
        fds = []
        if _reply(sock).kind != "accepted":
            sock.close()
            return None  # refused: nothing ran
    except (OSError, ProtocolError):
        # No server (ENOENT; ECONNREFUSED: a stale socket), or it went away before
        # it took the run.
        if sock is not None:
            sock.close()
        return None
    finally:
        os.close(directory)
        for fd in fds:
            os.close(fd)
    try:
        # From here the run is the server's: a lost server is not a reason to run it twice.
        done = _reply(sock)
        if done.kind != "done":
            raise ProtocolError(f"{done.kind!r} where the result was due")
    except (OSError, ProtocolError) as error:
        print(
            f"cellblock run: error: the run server was lost during the run: {error}",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        sock.close()
    deliver(options.out_dir, done.files, done.stdout, done.stderr)
    return done.code


def exit_now(code: int) -> None:
    """End the process with `code` once the output is out: a handed-off run
    leaves nothing of ours to clean up (no sandbox was imported, no cell is
    ours), and the interpreter's teardown would cost ~2 ms of a ~15 ms
    command. If the output cannot be flushed (a closed pipe), the
    interpreter's own exit says so as it always did."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def _local_only(options: RunOptions) -> bool:
    """Whether the run means the same in the server, whose working directory
    is not ours: a relative --seccomp path would be read from there. (--stdin
    and --copy-in are opened here; --image takes no relative path.)"""
    if "/" in options.seccomp and not options.seccomp.startswith("/"):
        return False
    if options.copy_out and not os.path.isdir(options.out_dir):
        return False  # in-process says so, in its place among the other checks
    return 1 + len(options.copy_in) <= protocol.MAX_FDS


def _open_inputs(options: RunOptions) -> list[int] | None:
    """--stdin's and each --copy-in's file, opened here with this process's
    rights; None if one cannot be (in-process says why)."""
    paths = [options.stdin] if options.stdin is not None else []
    for item in options.copy_in:
        source, sep, dest = item.rpartition(":")
        if not sep or not source or not dest:
            return None
        paths.append(source)
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            if not stat.S_ISREG(os.fstat(fds[-1]).st_mode):
                raise IsADirectoryError(path)  # or a FIFO, a device: not a regular file
    except OSError:
        for fd in fds:
            os.close(fd)
        return None
    return fds


def _reply(sock: _socket.socket) -> Reply:
    data, fds = protocol.receive(sock)
    for fd in fds:  # replies carry none
        os.close(fd)
    return Reply.from_wire(data)
