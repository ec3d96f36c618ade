"""What the cell's init is told (sandbox/wire.py writes it, sandbox/wire.c reads
it): the two sides agree on every tag, and the init refuses a malformed record
with a clear error instead of building a cell from half a message."""

from __future__ import annotations

import os
import re
import socket
import struct
from pathlib import Path

import pytest

from sandbox import making, wire
from sandbox.channel import Channel

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.userland


def test_the_tags_are_the_same_on_both_sides() -> None:
    header = (REPO / "sandbox" / "init.h").read_text()
    in_c = {name: int(value) for name, value in re.findall(r"\bT_(\w+) = (\d+),", header)}
    in_python = {tag.name: int(tag) for tag in wire.Tag}
    assert in_c == in_python


def _birth_error(record: bytes) -> tuple[str | None, bytes]:
    """Spawn the init with `record` as its Birth: the error it reports on its
    channel (None if none), and what it said on its set-up socket."""
    host, cell = Channel.pair()
    setup, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    memfd = os.memfd_create("birth", os.MFD_CLOEXEC)
    os.write(memfd, record)
    high = [making._high(fd) for fd in (cell.fileno(), memfd, theirs.fileno())]
    pid = os.posix_spawn(
        making.init_path(),
        ["cellblock-init"],
        {},
        file_actions=[(os.POSIX_SPAWN_DUP2, fd, n) for fd, n in zip(high, (3, 4, 5), strict=True)],
    )
    for fd in (*high, memfd):
        os.close(fd)
    theirs.close()
    cell.close()
    setup.settimeout(10)
    said = setup.recv(64)
    setup.close()  # EOF where it waits for its maps: it exits
    host.sock.settimeout(10)
    try:
        message = host.receive()
    except Exception:  # noqa: BLE001 - EOF: it said nothing
        message = None
    host.close()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    error = message.get("message") if isinstance(message, dict) else None
    return error, said


def _record(tag: int, data: bytes) -> bytes:
    return struct.pack("<HI", tag, len(data)) + data


def test_a_well_formed_birth_gets_as_far_as_the_namespaces() -> None:
    # The control: the same path with a good record says "unshared".
    error, said = _birth_error(_record(wire.Tag.TMPFS_SIZE, struct.pack("<Q", 1 << 20)))
    assert said == b"unshared" and error is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_record(99, b"x"), "unknown birth record 99"),
        (_record(wire.Tag.LAYER, b"/a")[:4], "truncated record header"),
        (struct.pack("<HI", wire.Tag.LAYER, 100) + b"/short", "overruns its message"),
        (_record(wire.Tag.LAYER, b"/a\0b"), "a NUL byte in a string"),
        (_record(wire.Tag.TMPFS_SIZE, b"1234"), "a number of 4 bytes"),
        (_record(wire.Tag.SYMLINK, _record(99, b"x")), "unknown field 99"),
    ],
)
def test_a_malformed_birth_is_refused_with_its_reason(record: bytes, reason: str) -> None:
    error, said = _birth_error(record)
    assert said == b"", said  # it never reached its namespaces
    assert error is not None and reason in error, error
