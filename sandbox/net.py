"""The network namespace: nothing but a loopback interface, brought up.

A fresh network namespace has only `lo`, and it is down. One RTM_NEWLINK
request over a raw netlink socket brings it up. The message is fixed (32
bytes), so it is packed here with struct rather than by pyroute2: importing
pyroute2 costs 250 ms and 23 MB resident, and every cell's processes are
forked copies of the supervisor, so that memory would make each fork slower.
(pyroute2 builds the veth pairs of the multi-host tests, where it earns its keep.)
"""

from __future__ import annotations

import errno
import socket
import struct

LOOPBACK_INDEX = 1  # the first device of every network namespace
RTM_NEWLINK = 16
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
IFF_UP = 0x1

# struct nlmsghdr {u32 len; u16 type; u16 flags; u32 seq; u32 pid}
# struct ifinfomsg {u8 family; u8 pad; u16 type; i32 index; u32 flags; u32 change}
_HEADER = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BBHiII")


def loopback_up() -> None:
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, LOOPBACK_INDEX, IFF_UP, IFF_UP)
    header = _HEADER.pack(_HEADER.size + len(body), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as sock:
        sock.sendto(header + body, (0, 0))
        reply = sock.recv(4096)
    # The ack is an NLMSG_ERROR message whose error field is 0.
    _, kind, _, _, _ = _HEADER.unpack_from(reply)
    (error,) = struct.unpack_from("=i", reply, _HEADER.size)
    if kind != NLMSG_ERROR or error != 0:
        code = -error if error < 0 else errno.EPROTO
        name = errno.errorcode.get(code)
        raise OSError(code, f"bringing up the loopback interface failed: {name}")
