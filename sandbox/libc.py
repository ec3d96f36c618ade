"""Thin ctypes bindings for the kernel calls Python 3.11 does not expose.

Python 3.11 has no os.unshare or mount, so the Python parts of this package
that use them (the doctor's probes, the cell maker's holding namespace, the
image tools) call libc, or the raw syscall where glibc 2.36 has no wrapper; the
cell's init is C (sandbox/init.c). Every wrapper raises OSError with errno set,
like the os module does. x86_64 only: the syscall numbers below are that ABI's.
"""

from __future__ import annotations

import ctypes
import os

if os.uname().machine != "x86_64":  # pragma: no cover - the numbers below are x86_64's
    raise ImportError("cellblock's sandbox supports x86_64 Linux only")

_libc = ctypes.CDLL(None, use_errno=True)

# Syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_unshare = 272
SYS_seccomp = 317
SYS_openat2 = 437
SYS_mount_setattr = 442
SYS_landlock_create_ruleset = 444
SYS_landlock_restrict_self = 446

# unshare(2) / clone(2) namespace flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOSYMFOLLOW = 256
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_PRIVATE = 1 << 18


# prctl(2).
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# securebits (linux/securebits.h): make uid 0 carry no capabilities, for good.
SECBIT_NOROOT = 1 << 0
SECBIT_NOROOT_LOCKED = 1 << 1
SECBIT_NO_SETUID_FIXUP = 1 << 2
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
SECBIT_NO_CAP_AMBIENT_RAISE = 1 << 6
SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 1 << 7

# seccomp(2).
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3

# openat2(2) resolve flags.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _path(p: str | bytes | None) -> bytes | None:
    if p is None:
        return None
    return os.fsencode(p)


def syscall(number: int, *args: object, what: str = "syscall") -> int:
    return _check(_libc.syscall(ctypes.c_long(number), *args), what)


def unshare(flags: int) -> None:
    syscall(SYS_unshare, ctypes.c_int(flags), what="unshare")


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    result = _libc.mount(_path(source), _path(target), _path(fstype), flags, _path(data))
    _check(result, f"mount {fstype or ''} {source or ''} on {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(bpf: bytes, new_listener: bool = False) -> int:
    """Install a classic-BPF seccomp program (an array of 8-byte sock_filter);
    with `new_listener`, the fd its user notifications arrive on (else 0)."""
    if len(bpf) % 8 or not bpf:
        raise ValueError("a seccomp program is a non-empty array of 8-byte instructions")
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    return syscall(
        SYS_seccomp,
        ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(SECCOMP_FILTER_FLAG_NEW_LISTENER if new_listener else 0),
        ctypes.byref(prog),
        what="seccomp",
    )


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags, mode, resolve)
    return syscall(
        SYS_openat2,
        ctypes.c_int(dirfd),
        _path(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
        what=f"openat2 {path}",
    )


LANDLOCK_CREATE_RULESET_VERSION = 1


IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# inotify events (<sys/inotify.h>).
IN_ATTRIB = 0x4
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000


def inotify_init(flags: int) -> int:
    return _check(_libc.inotify_init1(flags), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return _check(
        _libc.inotify_add_watch(fd, _path(path), ctypes.c_uint32(mask)), f"inotify_add_watch {path}"
    )


def landlock_abi_version() -> int:
    """The Landlock ABI the running kernel offers, 0 when it has none."""
    try:
        return syscall(
            SYS_landlock_create_ruleset,
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
            what="landlock_create_ruleset",
        )
    except OSError:
        return 0


def cap_last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def write_file(path: str, text: str) -> None:
    """Write a kernel control file (/proc, cgroupfs) with exactly one write(2):
    such files act on each write, so a buffered writer's split writes would not do."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
