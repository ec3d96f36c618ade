"""A cgroup of one's own from the user's systemd manager (cgroup v2, unprivileged).

A user who logs in and starts cellblock from a shell is in a session scope
that root owns: nothing there is delegated, so cells would run without
memory, pids or CPU limits. Where systemd runs, the user's own manager
(`systemd --user`) can give the process a transient scope with
`Delegate=yes`: a cgroup the user owns, with the memory, pids and cpu
controllers user@.service hands down. Rootless Podman does the same. The
process asks for it once, at start (v2.locate), and then moves itself into a
leaf of it as it does in any delegated cgroup.

The request is one D-Bus method call, StartTransientUnit, with the process's
pid. It goes over the manager's private socket ($XDG_RUNTIME_DIR/systemd/
private: no message bus needed, only the user may connect), or else the
user's session bus. jeepney (pure Python) speaks D-Bus; the unit and the
call are built here. The user manager moves the process itself when it may,
and otherwise asks PID 1 to (AttachProcessesToUnit), which is how a process
in a root-owned session scope gets into the user's tree.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from .common import CgroupError

MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
MANAGER_NAME = "org.freedesktop.systemd1"
# How long the manager may take to start the scope and move the process.
SCOPE_TIMEOUT = 10.0


def manager_addresses() -> list[str]:
    """D-Bus addresses of this user's systemd manager, best first (none: no manager)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    found = []
    private = os.path.join(runtime, "systemd", "private")
    if _is_socket(private):
        found.append(f"unix:path={private}")
    session = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if session:
        found.append(session)
    elif _is_socket(os.path.join(runtime, "bus")):
        found.append(f"unix:path={os.path.join(runtime, 'bus')}")
    return found


def _is_socket(path: str) -> bool:
    try:
        import stat

        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def why_not() -> str:
    """Why no scope can be asked for here ('' when one can)."""
    if os.geteuid() == 0:
        return "root has its own subtree"
    if not manager_addresses():
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        return (
            f"no systemd user manager to ask for a delegated scope ({runtime}/systemd/private "
            "and the session bus are missing: not in a login session, or no systemd)"
        )
    return ""


def start_scope(
    own_cgroup: Callable[[], str], pid: int | None = None, timeout: float = SCOPE_TIMEOUT
) -> str:
    """Ask the user's manager for a transient scope with Delegate=yes holding
    `pid` (this process), wait until the process is in it, and return its
    cgroup path (`own_cgroup()`'s form). Raises CgroupError saying why not."""
    reason = why_not()
    if reason:
        raise CgroupError(reason)
    pid = os.getpid() if pid is None else pid
    # os.urandom, not the secrets module: secrets imports hmac and _hashlib,
    # ~8 ms of every process that imports sandbox (a `cellblock run`).
    unit = f"cellblock-{pid}-{os.urandom(4).hex()}.scope"
    errors = []
    for address in manager_addresses():
        try:
            _call_start_transient_unit(address, unit, pid, timeout)
            break
        except (OSError, ValueError, CgroupError) as error:
            errors.append(f"{address}: {error}")
    else:
        raise CgroupError(f"the systemd user manager gave no scope: {'; '.join(errors)}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = own_cgroup()
        if os.path.basename(path) == unit:
            return path
        time.sleep(0.005)
    raise CgroupError(f"the systemd user manager made {unit} but did not move this process into it")


def _call_start_transient_unit(address: str, unit: str, pid: int, timeout: float) -> None:
    from jeepney import DBusAddress, MessageType, Parser, new_method_call
    from jeepney.bus import get_bus
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import prep_socket

    manager = DBusAddress(MANAGER_PATH, bus_name=MANAGER_NAME, interface=MANAGER_INTERFACE)
    properties = [
        ("PIDs", ("au", [pid])),
        ("Delegate", ("b", True)),
        ("CollectMode", ("s", "inactive-or-failed")),  # gone with its last process
        ("Description", ("s", "cellblock: cells of this process, with their own cgroups")),
    ]
    call = new_method_call(
        manager, "StartTransientUnit", "ssa(sv)a(sa(sv))", (unit, "fail", properties, [])
    )
    sock = prep_socket(get_bus(address), timeout=timeout)  # the address as a socket path
    try:
        sock.settimeout(timeout)
        parser = Parser()
        serial = 1
        if "/systemd/private" not in address:  # a message bus: say Hello first
            sock.sendall(new_method_call(message_bus, "Hello").serialise(serial=serial))
            _reply(sock, parser, serial, MessageType)
            serial += 1
        sock.sendall(call.serialise(serial=serial))
        _reply(sock, parser, serial, MessageType)
    except TimeoutError:
        raise CgroupError(f"no answer in {timeout:g} s") from None
    finally:
        sock.close()


def _reply(sock: socket.socket, parser: object, serial: int, kinds: object) -> object:
    from jeepney.low_level import HeaderFields

    while True:
        message = parser.get_next_message()  # type: ignore[attr-defined]
        if message is None:
            data = sock.recv(65536)
            if not data:
                raise CgroupError("the manager closed the connection")
            parser.add_data(data)  # type: ignore[attr-defined]
            continue
        if message.header.fields.get(HeaderFields.reply_serial) != serial:
            continue  # a signal, or another reply
        if message.header.message_type == kinds.error:  # type: ignore[attr-defined]
            name = message.header.fields.get(HeaderFields.error_name, "error")
            text = message.body[0] if message.body else ""
            raise CgroupError(f"{name}: {text}")
        return message
