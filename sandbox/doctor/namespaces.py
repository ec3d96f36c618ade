"""User, mount (with an unprivileged overlay), pid and network namespaces:
each made for real in a probe child, as a cell makes them."""

from __future__ import annotations

import errno
import os
import socket

from sandbox import libc, mountinfo

from . import apparmor
from .host import in_container, read_int, sudo
from .probe import PROBE_TIMEOUT, Outcome, ProbeFailed, enter_userns, probe
from .report import Check

USERNS_SYSCTL = "/proc/sys/user/max_user_namespaces"

DEBIAN_USERNS_SYSCTL = "/proc/sys/kernel/unprivileged_userns_clone"

APPARMOR_USERNS_SYSCTL = apparmor.SYSCTL

MIN_USER_NAMESPACES = 64
"""Below this many user namespaces, concurrent cells fail (each holds one; frees are lazy)."""


def _probe_userns() -> int:
    uid = os.geteuid()
    enter_userns()
    return uid


def _probe_overlay(lower: str | None) -> str:
    enter_userns(libc.CLONE_NEWNS)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount("tmpfs", "/tmp", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=4m,mode=0700")
    for d in ("upper", "work", "merged", "lower"):
        os.mkdir(f"/tmp/{d}")
    if lower is None:
        lower = "/tmp/lower"
        with open("/tmp/lower/probe", "w") as f:
            f.write("lower\n")
    opts = f"lowerdir={lower},upperdir=/tmp/upper,workdir=/tmp/work,userxattr"
    libc.mount("overlay", "/tmp/merged", "overlay", libc.MS_NOSUID | libc.MS_NODEV, opts)
    lower_entries = set(os.listdir(lower))
    if not lower_entries <= set(os.listdir("/tmp/merged")):
        raise ProbeFailed("the merged directory does not show the lower layer")
    name = f".cellblock-doctor-{os.getpid()}"
    with open(f"/tmp/merged/{name}", "w") as f:
        f.write("upper\n")
    if os.path.lexists(f"{lower}/{name}"):
        raise ProbeFailed(f"a write through the overlay reached the lower layer {lower}")
    if not os.path.lexists(f"/tmp/upper/{name}"):
        raise ProbeFailed("a write through the overlay did not land in the upper layer")
    return lower


def _pid1_mounts_proc() -> str:
    if os.getpid() != 1:
        raise ProbeFailed(f"first child of the new pid namespace is pid {os.getpid()}, not 1")
    libc.mount("proc", "/proc", "proc", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    seen = os.readlink("/proc/self")
    if seen != "1":
        raise ProbeFailed(f"the new /proc shows this process as {seen}, not 1")
    return seen


def _probe_pidns() -> str:
    enter_userns(libc.CLONE_NEWNS | libc.CLONE_NEWPID)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    out = probe(_pid1_mounts_proc, timeout=PROBE_TIMEOUT / 2)
    if not out.ok:
        raise ProbeFailed(out.error)
    return out.value


def _probe_netns() -> list[str]:
    enter_userns(libc.CLONE_NEWNET)
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        raise ProbeFailed(f"the new network namespace has interfaces {names}, expected only lo")
    _loopback_up()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=1.0):
            pass
    return names


def _loopback_up() -> None:
    """As a cell's init brings it up (sandbox/init.c): IFF_UP by SIOCSIFFLAGS."""
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    ifreq = struct.Struct("16sH22x")  # struct ifreq: the name, then ifr_flags
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _, flags = ifreq.unpack(fcntl.ioctl(sock, siocgifflags, ifreq.pack(b"lo", 0)))
        fcntl.ioctl(sock, siocsifflags, ifreq.pack(b"lo", flags | iff_up))


def _userns_blockers(out: Outcome) -> tuple[list[str], str]:
    """Likely causes of a failed unshare(CLONE_NEWUSER) and the command that lifts them."""
    max_ns = read_int(USERNS_SYSCTL)
    causes, fixes = [], []
    if max_ns is not None and (max_ns < MIN_USER_NAMESPACES or out.errno == errno.ENOSPC):
        causes.append(f"user.max_user_namespaces={max_ns}")
        fixes.append("sysctl -w user.max_user_namespaces=15000")
    if read_int(DEBIAN_USERNS_SYSCTL) == 0:  # Debian < 11 only; None when the file is absent
        causes.append("kernel.unprivileged_userns_clone=0")
        fixes.append("sysctl -w kernel.unprivileged_userns_clone=1")
    if read_int(APPARMOR_USERNS_SYSCTL) == 1:  # Ubuntu ≥ 23.10
        causes.append("AppArmor restricts unprivileged user namespaces (see the apparmor check)")
        fixes.append("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    blocked = not fixes and out.errno == errno.EPERM and in_container()
    if not fixes:
        fixes.append("sysctl -w user.max_user_namespaces=15000")
    fix = " && ".join(sudo() + f for f in fixes)
    if blocked:  # no knob explains an EPERM: the container's seccomp/AppArmor profile does
        causes.append("inside a container whose seccomp/AppArmor profile blocks unshare")
        fix = (
            "run the container with the worker's profile, as docker-compose.yml does: "
            "--security-opt seccomp=docker/worker-seccomp.json --security-opt "
            "systempaths=unconfined (and apparmor=unconfined on AppArmor hosts)"
        )
    return causes, fix


def _failed_at_unshare(out: Outcome) -> bool:
    return out.error.startswith("unshare")


def check_userns() -> Check:
    name = "user namespaces"
    out = probe(_probe_userns)
    max_ns = read_int(USERNS_SYSCTL)
    if out.ok and (max_ns is None or max_ns >= MIN_USER_NAMESPACES):
        return Check(
            name,
            True,
            f"unshare(CLONE_NEWUSER) works for uid {out.value} (size-1 map to 0 inside, "
            f"setgroups denied); user.max_user_namespaces={max_ns}",
        )
    causes, fix = _userns_blockers(out)
    if out.ok:
        detail = (
            f"unshare(CLONE_NEWUSER) works for uid {out.value}, but "
            f"user.max_user_namespaces={max_ns} is too low for concurrent cells"
        )
        return Check(name, False, detail, fix)
    detail = f"unshare(CLONE_NEWUSER) fails for uid {os.geteuid()}: {out.error}"
    if causes:
        detail += f" (likely: {'; '.join(causes)})"
    return Check(name, False, detail, fix)


def check_overlay() -> Check:
    name = "mount namespace + overlay"
    lower: str | None = "/usr"
    note = ""
    if mountinfo.mounted_beneath("/usr"):
        lower = None
        note = "; /usr has submounts, so a tmpfs lower was used (a lower must be submount-free)"
    out = probe(lambda: _probe_overlay(lower))
    if out.ok:
        return Check(
            name,
            True,
            f"an overlay owned by a user namespace (lowerdir={out.value}, tmpfs upper, "
            f"userxattr) mounts, and writes stay in the upper layer{note}",
        )
    release = os.uname().release
    detail = f"an overlay in a user+mount namespace fails on Linux {release}: {out.error}{note}"
    if _failed_at_unshare(out):
        return Check(name, False, detail, _userns_blockers(out)[1])
    if out.errno == errno.ENODEV:
        return Check(name, False, detail, f"{sudo()}modprobe overlay")
    return Check(
        name, False, detail, "needs Linux ≥ 5.11 (unprivileged overlay): upgrade the kernel"
    )


def _proc_overmounts() -> list[str]:
    return sorted(
        m.mountpoint
        for m in mountinfo.mounts()
        if m.mountpoint.startswith("/proc/") and m.fstype != "binfmt_misc"
    )


def check_pidns() -> Check:
    name = "pid namespace + /proc"
    out = probe(_probe_pidns)
    if out.ok:
        return Check(name, True, "a new pid namespace starts at pid 1 and can mount its own /proc")
    masked = _proc_overmounts()
    detail = f"mounting a fresh /proc in a new user+pid namespace fails: {out.error}"
    if masked:
        shown = ", ".join(masked[:6]) + (", ..." if len(masked) > 6 else "")
        detail += f"; the host /proc has masked paths ({shown}), as containers do"
    if _failed_at_unshare(out):
        fix = _userns_blockers(out)[1]
    elif masked or in_container():
        fix = "run the container with docker run --security-opt systempaths=unconfined"
    else:
        fix = "mount /proc without overmounts; the kernel needs CONFIG_PID_NS=y"
    return Check(name, False, detail, fix)


def check_netns() -> Check:
    name = "network namespace"
    out = probe(_probe_netns)
    if out.ok:
        return Check(name, True, "a new network namespace has only lo, and loopback TCP works")
    detail = f"a new user+network namespace with a working loopback fails: {out.error}"
    if _failed_at_unshare(out):
        return Check(name, False, detail, _userns_blockers(out)[1])
    return Check(name, False, detail, "the kernel needs CONFIG_NET_NS=y")
