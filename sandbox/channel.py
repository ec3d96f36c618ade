"""Messages between the supervisor (host side) and the cell's init.

A SOCK_SEQPACKET socketpair keeps message boundaries, so a message is one
datagram: a one-byte kind then the payload. `J` carries a JSON object (events
and requests), `D` a chunk of a copied-out file. Nothing here trusts the other
side beyond the framing: the host side only ever receives from code of ours
that runs after the untrusted program is dead.

One message goes the other way, once, before any untrusted code exists in the
cell: the run's launch (`send_launch`), a pickled object in a memfd plus the
run's descriptors (SCM_RIGHTS, `F` messages when there are more than fit in
one). The host side refuses those kinds: it never unpickles anything.

A cell made by the cell maker (maker.py) starts with one more message to the
host, from the maker: `M`, the init's pid and a pidfd (`send_made`).
"""

from __future__ import annotations

import array
import json
import os
import socket
from typing import Any

CHUNK = 64 * 1024
_MAX_DATAGRAM = CHUNK + 1
_FDS_PER_MESSAGE = 250  # the kernel's limit is 253 (SCM_MAX_FD)


class ChannelClosed(EOFError):
    """The other end is gone (it exited or was killed)."""


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, kind: str, **fields: Any) -> None:
        fields["kind"] = kind
        self.sock.sendall(b"J" + json.dumps(fields).encode())

    def send_data(self, chunk: bytes) -> None:
        for start in range(0, len(chunk), CHUNK):
            self.sock.sendall(b"D" + chunk[start : start + CHUNK])

    def send_launch(self, record: bytes, fds: list[int]) -> None:
        """Host to init: a run's launch (`record`, sandbox/wire.py) in a memfd,
        and `fds`, which arrive in that order."""
        memfd = os.memfd_create("cellblock-launch", os.MFD_CLOEXEC)
        try:
            os.write(memfd, record)
            first, rest = fds[: _FDS_PER_MESSAGE - 1], fds[_FDS_PER_MESSAGE - 1 :]
            self._send_fds(b"P", [memfd, *first])
            for start in range(0, len(rest), _FDS_PER_MESSAGE):
                self._send_fds(b"F", rest[start : start + _FDS_PER_MESSAGE])
        finally:
            os.close(memfd)

    def send_made(self, pid: int, pidfd: int) -> None:
        """Cell maker to host: the init's pid, and a pidfd to kill it by."""
        self._send_fds(b"M" + json.dumps({"pid": pid}).encode(), [pidfd])

    def receive_made(self) -> tuple[int, int]:
        """Host side, first message of a maker's cell: (pid, pidfd); CellError
        if the maker or the init failed first."""
        data, fds, _, _ = socket.recv_fds(self.sock, _MAX_DATAGRAM, 1, socket.MSG_CMSG_CLOEXEC)
        if data[:1] == b"M" and len(fds) == 1:
            return json.loads(data[1:])["pid"], fds[0]
        for fd in fds:
            os.close(fd)
        if not data:
            raise ChannelClosed("the cell maker closed the channel")
        if data[:1] == b"J":
            raise CellError(json.loads(data[1:]).get("message", "the cell maker failed"))
        raise ValueError(f"expected the made message, got {data[:1]!r}")

    def _send_fds(self, kind: bytes, fds: list[int]) -> None:
        self.sock.sendmsg([kind], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])

    def receive(self) -> dict[str, Any] | bytes:
        """The next message: a dict for an event, bytes for a data chunk."""
        try:
            datagram = self.sock.recv(_MAX_DATAGRAM)
        except ConnectionResetError:
            # The other end closed with a message of ours unread (a kill request
            # that crossed its exit). Linux reports that once, *before* the
            # messages still queued for us, so read on: they or EOF come next.
            datagram = self.sock.recv(_MAX_DATAGRAM)
        if not datagram:
            raise ChannelClosed("the cell closed its channel")
        if datagram[:1] == b"J":
            return json.loads(datagram[1:])
        if datagram[:1] == b"D":
            return datagram[1:]
        # P and F (launches) go host to init only: never unpickle what the cell sends.
        raise ValueError(f"unknown message kind {datagram[:1]!r}")

    def expect(self, kind: str) -> dict[str, Any]:
        """Wait for an event of one kind; an `error` event raises CellError instead."""
        message = self.receive()
        if isinstance(message, bytes):
            raise ValueError(f"expected {kind!r}, got a data chunk")
        if message.get("kind") == "error":
            raise CellError(message.get("message", "the cell failed to start"))
        if message.get("kind") != kind:
            raise ValueError(f"expected {kind!r}, got {message.get('kind')!r}")
        return message


class CellError(RuntimeError):
    """The cell could not be built or run: an internal error (status IE)."""
