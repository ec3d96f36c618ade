"""Messages between the supervisor (host side) and the cell's init.

A SOCK_SEQPACKET socketpair keeps message boundaries, so a message is one
datagram: a one-byte kind then the payload. `J` carries a JSON object (events
and requests), `D` a chunk of a copied-out file. Nothing here trusts the other
side beyond the framing: the host side only ever receives from code of ours
that runs after the untrusted program is dead.
"""

from __future__ import annotations

import json
import socket
from typing import Any

CHUNK = 64 * 1024
_MAX_DATAGRAM = CHUNK + 1


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
