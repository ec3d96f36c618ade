"""Seccomp profiles: which file a profile names, and its compiled classic-BPF filter.

    bpf = compile_profile("default")      # in the supervisor, once per profile
    # spawn.c installs it in the program's child, after no_new_privs, right
    # before execve: seccomp(SECCOMP_SET_MODE_FILTER, 0, bpf)

A profile is a bare name (`default` means profiles/seccomp/default.json) or a
path to the user's own JSON file (anything containing "/"). The format is
Docker's: defaultAction, defaultErrnoRet, architectures/archMap, and syscalls[]
entries of names (or name), action, errnoRet, args[] {index, value, valueTwo,
op}, includes/excludes {arches, caps, minKernel} and free "comment" keys; how
its entries become a filter is sandbox/seccomp_compiler.py.

A program is compiled once per content, not once per process: compile_profile
asks, in order, this process's memo (by path, mtime and size), the on-disk
cache (sandbox/seccomp_cache.py, keyed by everything the program depends on:
the file's bytes, the compiler's source, libseccomp's version, the machine, the
running kernel), and only then the compiler. A run served from either cache
never imports pyseccomp (ldconfig subprocesses, ~14 ms of compiling).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import stat
import struct
import sys
import threading
from pathlib import Path

from profiles import SECCOMP_DIR
from sandbox import seccomp_cache, seccomp_paths
from sandbox.spec import SpecError

__all__ = [
    "ProfileError",
    "available_profiles",
    "caller_filtered",
    "compile_profile",
    "notifies",
    "resolve_profile",
    "supervises_sockets",
]


class ProfileError(SpecError):
    """A seccomp profile is missing, unreadable or wrong; the message says which and why."""


_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_MAX_PROFILE_BYTES = 1 << 20  # Docker's default profile is ~20 KB
_COMPILER = Path(__file__).with_name("seccomp_compiler.py")


class _Profile:
    """Context for messages: every error names the profile and where in it."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

    def error(self, where: str, problem: str) -> ProfileError:
        label = repr(self.name) if str(self.path) == self.name else f"{self.name!r} ({self.path})"
        at = f"{where}: " if where else ""
        return ProfileError(f"seccomp profile {label}: {at}{problem}")


# ---------------------------------------------------------------------------
# Finding profiles


def available_profiles() -> list[str]:
    """The bare names that resolve_profile() accepts (profiles/seccomp/*.json)."""
    try:
        return sorted(p.stem for p in SECCOMP_DIR.glob("*.json") if p.is_file())
    except OSError:
        return []


@functools.cache
def _our_profiles() -> Path:
    return SECCOMP_DIR.resolve()


def resolve_profile(name: str) -> Path:
    """The JSON file a profile name means: a bare name is one of ours, a path is the user's."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ProfileError(f"seccomp profile {name!r}: not a profile name or path")

    def names() -> str:  # for error messages only: a directory listing per run is waste
        return ", ".join(available_profiles()) or "none"

    if "/" in name:
        hint = "the available profiles are: {names}"
        try:
            path = Path(name).expanduser().resolve()
        except (OSError, RuntimeError) as e:  # symlink loops
            raise ProfileError(f"seccomp profile {name!r}: cannot resolve {name}: {e}") from None
    elif _NAME_RE.match(name):
        # Our own directory, resolved once: resolving a path on every run
        # (a realpath: one lstat per component) cost a run 0.05-0.1 ms.
        path = _our_profiles() / f"{name}.json"
        hint = f"the available profiles are: {{names}} (for a file of yours, give a path: ./{name})"
    else:
        raise ProfileError(
            f"seccomp profile {name!r}: not a profile name ([A-Za-z0-9_.-]+) nor a path "
            f"(which contains '/'); the available profiles are: {names()}"
        )
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ProfileError(
            f"seccomp profile {name!r}: no such file {path}; {hint.format(names=names())}"
        ) from None
    except OSError as e:  # EACCES on a directory above it, ENOTDIR, ...
        raise ProfileError(f"seccomp profile {name!r}: cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ProfileError(f"seccomp profile {name!r}: {path} is not a regular file")
    return path


# ---------------------------------------------------------------------------
# Compiling, once per content


# One entry per profile path (and variant): (mtime_ns, size) it was compiled
# from, and the BPF. A long-lived worker compiles each profile once; an edited
# file is recompiled.
_cache: dict[tuple[str, bool], tuple[tuple[int, int], bytes]] = {}
_cache_lock = threading.Lock()


def compile_profile(name: str, sockets_to_init: bool = True) -> bytes:
    """The BPF program (an array of 8-byte struct sock_filter) for a profile.

    Without `sockets_to_init`: the variant for a caller whose own filter has a
    listener (caller_filtered), where the cell's filter can have none and the
    calls it sends to the init fail with ENOSYS: its socket and socketpair
    rules allow instead (byte-range locks are still refused, as the run says).

    Raises ProfileError for anything wrong with the profile. Cached in-process
    by (resolved path, mtime_ns, size), and on disk by content (seccomp_cache).
    """
    path = resolve_profile(name)
    try:
        st = path.stat()
    except OSError as e:
        raise ProfileError(f"seccomp profile {name!r}: cannot stat {path}: {e.strerror}") from None
    key = (str(path), sockets_to_init)
    stamp = (st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    # Compile outside the lock: it takes milliseconds and is deterministic, so
    # two threads racing on one profile just both produce the same bytes.
    prof = _Profile(name, path)
    raw = _read(prof, st.st_size)
    # The key is made from the very bytes compiled below: an edit between the
    # two cannot file one content's program under another's key.
    cache_key = _cache_key(raw, sockets_to_init)
    directory = seccomp_cache.open_directory() if cache_key is not None else None
    try:
        bpf = None
        if directory is not None and cache_key is not None:
            bpf = seccomp_cache.load(directory, cache_key)
        if bpf is None:
            from sandbox import seccomp_compiler  # pyseccomp: only on a miss

            bpf = seccomp_compiler.compile_json(prof, raw, sockets_to_init)
            if directory is not None and cache_key is not None:
                seccomp_cache.store(directory, cache_key, bpf)
    finally:
        if directory is not None:
            os.close(directory)
    with _cache_lock:
        _cache[key] = (stamp, bpf)
    return bpf


# SECCOMP_RET_USER_NOTIF (linux/seccomp.h), libseccomp's SCMP_ACT_NOTIFY: spelled
# out here so that asking needs no pyseccomp (tests/test_seccomp_cache.py
# checks it is the library's value).
RET_USER_NOTIF = 0x7FC00000
_RET_USER_NOTIF = struct.pack("<HBBI", 0x06, 0, 0, RET_USER_NOTIF)  # BPF_RET|BPF_K, USER_NOTIF


@functools.cache
def notifies(bpf: bytes) -> bool:
    """Whether the filter sends some call to a supervisor (it must be loaded with
    a listener, which the program's process hands to the init: spawn.c, locks.py)."""
    return any(bpf[i : i + 8] == _RET_USER_NOTIF for i in range(0, len(bpf), 8))


@functools.cache
def caller_filtered() -> bool:
    """Whether this process runs under a seccomp filter of its own (a container
    runtime's): one that has a listener makes the cell's filter unable to have
    one (EBUSY), and then the calls it sends to the init fail (ENOSYS); spawn.c
    loads compile_profile(name, sockets_to_init=False) instead. Read once: a
    process gains a filter at its start (from its runtime), not later."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"Seccomp:"):
                return line.split()[1] != b"0"
    return False


# Every way a process of the cell can ask for a new socket, as (arch, number):
# socket and socketpair in the x86_64 and x32 ABIs, and in the i386 one
# (where socketcall multiplexes them too). accept needs a socket to start from.
_SOCKET_CALLS = (
    (seccomp_paths.AUDIT_ARCH_X86_64, 41),  # socket
    (seccomp_paths.AUDIT_ARCH_X86_64, 53),  # socketpair
    (seccomp_paths.AUDIT_ARCH_X86_64, seccomp_paths.X32_SYSCALL_BIT | 41),
    (seccomp_paths.AUDIT_ARCH_X86_64, seccomp_paths.X32_SYSCALL_BIT | 53),
    (seccomp_paths.AUDIT_ARCH_I386, 102),  # socketcall
    (seccomp_paths.AUDIT_ARCH_I386, 359),  # socket
    (seccomp_paths.AUDIT_ARCH_I386, 360),  # socketpair
)
# The filter's returns (SECCOMP_RET_ACTION_FULL) after which the call was not
# made: killed, trapped, refused, or handed to the init, which sees it.
_RET_ACTION_FULL = 0xFFFF0000
_RETURNS_THAT_STOP = frozenset({0x80000000, 0x00000000, 0x00030000, 0x00050000, RET_USER_NOTIF})


@functools.cache
def supervises_sockets(bpf: bytes) -> bool:
    """Whether no process under the filter can make a socket unseen: every
    path of every socket-making call ends in a refusal or a notification to
    the init (the default profile's socket rules are SCMP_ACT_NOTIFY). Then a
    run the init saw make no socket left its network namespace as it found it
    (init.c, renew)."""
    for arch, nr in _SOCKET_CALLS:
        returns = seccomp_paths.reachable_returns(bpf, arch, nr)
        if returns is None or any(r & _RET_ACTION_FULL not in _RETURNS_THAT_STOP for r in returns):
            return False
    return True


def _read(prof: _Profile, size: int) -> bytes:
    if size > _MAX_PROFILE_BYTES:
        raise prof.error("", f"the file is {size} bytes, over the limit of {_MAX_PROFILE_BYTES}")
    try:
        raw = prof.path.read_bytes()
    except OSError as e:
        raise prof.error("", f"cannot read the file: {e.strerror}") from None
    if len(raw) > _MAX_PROFILE_BYTES:  # it grew since the stat
        raise prof.error(
            "", f"the file is {len(raw)} bytes, over the limit of {_MAX_PROFILE_BYTES}"
        )
    return raw


def _cache_key(raw: bytes, sockets_to_init: bool) -> str | None:
    """The on-disk cache's key for a profile's bytes: everything the compiled
    program depends on. None (compile, do not cache) when one of them is unknown.

    The running kernel's release is always in it, not only for profiles with a
    minKernel condition: a JSON key can be spelled with escapes a byte search
    would miss, and a kernel update costs one compile.
    """
    compiler = _compiler_source()
    library = _libseccomp_version()
    if compiler is None or library is None:
        return None
    uname = os.uname()
    return seccomp_cache.make_key(
        b"profile",
        raw,
        b"compiler",
        compiler,
        b"libseccomp",
        library.encode(),
        b"machine",
        uname.machine.encode(),
        b"kernel",
        uname.release.encode(),
        b"python",
        sys.implementation.cache_tag.encode(),
        b"sockets",
        b"to init" if sockets_to_init else b"allowed",
    )


@functools.cache
def _compiler_source() -> bytes | None:
    """The compiler's own source: a cellblock update that changes how profiles
    compile must not be served programs the old one made."""
    try:
        return _COMPILER.read_bytes()
    except OSError:
        return None


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


@functools.cache
def _libseccomp_version() -> str | None:
    """The version of the libseccomp pyseccomp would load (by the same soname,
    through the dynamic loader: no ldconfig), or None if there is none."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        version = lib.seccomp_version().contents
    except (OSError, AttributeError, ValueError):
        return None
    return f"{version.major}.{version.minor}.{version.micro}"
