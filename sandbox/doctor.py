"""`cellblock doctor`: what this kernel and host allow, what is degraded, how to fix it.

Every kernel feature is probed for real, never inferred from configuration: the
namespace, overlay, seccomp and Landlock probes run in a forked child (which
always leaves through ``os._exit``, so no atexit handler or buffered output of
the parent runs twice), are time-boxed, and are killed if they hang. Whatever
they create (namespaces, mounts, filters) belongs to the child and vanishes with
it, so the doctor leaves no process, mount or file descriptor behind. The
cgroup check only reads (``os.access``, ``stat``, reading files): it never
creates, moves or writes a cgroup.

    report = check_host()
    report.ok            # True only when every required check passes
    report.to_dict()     # for --json
    format_report(report)  # for people

The report is for the *current* user: run it as the user the workers run as.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import pwd
import re
import resource
import select
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox import landlock, libc, userns

PROBE_TIMEOUT = 5.0
"""Seconds a probe child may take before it is killed."""

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_V2_CONTROLLERS = ("memory", "pids", "cpu")
# What a run needs on v1 (sandbox/cgroups/v1.py); cpu only carries the optional quota.
CGROUP_V1_CONTROLLERS = ("memory", "pids", "cpuacct")
CGROUP_SUBTREE = "cellblock"

MIN_KERNEL = (5, 12)  # mount_setattr(2)
PEAK_KERNEL = (5, 19)  # memory.peak on cgroup v2

# A seccomp program of one instruction: BPF_RET|BPF_K SECCOMP_RET_ALLOW.
ALLOW_ALL_BPF = struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000)

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

USERNS_SYSCTL = "/proc/sys/user/max_user_namespaces"
DEBIAN_USERNS_SYSCTL = "/proc/sys/kernel/unprivileged_userns_clone"
APPARMOR_USERNS_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"


# --------------------------------------------------------------------------- report


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only when every required check passes."""
        return all(c.ok for c in self.checks if c.required)

    @property
    def degraded(self) -> list[str]:
        """Names of the required checks that fail."""
        return [c.name for c in self.checks if c.required and not c.ok]

    @property
    def warnings(self) -> list[str]:
        """Names of the optional checks that fail."""
        return [c.name for c in self.checks if not c.required and not c.ok]

    def get(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "degraded": self.degraded,
            "warnings": self.warnings,
            "checks": [asdict(c) for c in self.checks],
        }


def format_report(report: Report) -> str:
    """One line per check (✓ passes, ✗ required and fails, ! optional and fails)."""
    lines = []
    for c in report.checks:
        mark = "✓" if c.ok else ("✗" if c.required else "!")
        lines.append(f"{mark} {c.name} — {c.detail}")
        if c.fix and not c.ok:
            lines.append(f"    fix: {c.fix}")
    if report.ok:
        summary = "ok: cells run with every protection"
        if report.warnings:
            summary += f" (optional hardening missing: {', '.join(report.warnings)})"
    else:
        summary = f"degraded: {', '.join(report.degraded)}"
    lines.append(summary)
    return "\n".join(lines)


def run_doctor(as_json: bool = False) -> tuple[str, int]:
    """The text `cellblock doctor [--json]` prints and its exit code (0 iff report.ok)."""
    report = check_host()
    text = json.dumps(report.to_dict(), indent=2) if as_json else format_report(report)
    return text, 0 if report.ok else 1


def check_host() -> Report:
    report = Report()
    for name, fn in CHECKS:
        try:
            check = fn()
        except Exception as e:  # a bug in one check must not hide the others
            check = Check(name, False, f"internal error while checking: {type(e).__name__}: {e}")
        report.checks.append(check)
    return report


# --------------------------------------------------------------------------- probes


@dataclass
class Outcome:
    """What a probe child reported."""

    ok: bool
    value: Any = None
    error: str = ""
    errno: int | None = None


class ProbeFailed(Exception):
    """Raised inside a probe child to report a failure with a plain message."""


def _error_text(e: BaseException) -> str:
    if isinstance(e, ProbeFailed):
        return str(e)
    if isinstance(e, OSError) and e.errno is not None:
        name = errno.errorcode.get(e.errno, str(e.errno))
        text = e.strerror or os.strerror(e.errno)
        where = f" ({e.filename})" if e.filename else ""
        # libc wrappers put the call in strerror already ("unshare: Operation ...").
        return f"{text}{where} [{name}]"
    return f"{type(e).__name__}: {e}"


def probe(fn: Callable[[], Any], timeout: float = PROBE_TIMEOUT) -> Outcome:
    """Run ``fn`` in a forked child and return what it returned or raised.

    The child reports over a pipe as JSON and always leaves with ``os._exit``.
    It gets SIGKILL if this process dies (PDEATHSIG) or if it outlives
    ``timeout``; it is always reaped before this returns.
    """
    parent = os.getpid()
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        return Outcome(False, error=f"fork: {_error_text(e)}", errno=e.errno)
    if pid == 0:  # child: never return, never raise
        try:
            os.close(r)
            libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() not in (parent, 0):  # 0: we are PID 1 of a new pid namespace
                os._exit(2)
            try:
                msg = {"ok": True, "value": fn()}
            except BaseException as e:
                msg = {"ok": False, "error": _error_text(e), "errno": getattr(e, "errno", None)}
            data = json.dumps(msg, default=str).encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(0)

    os.close(w)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    status: int | None = None
    timed_out = False
    poller = select.poll()  # not select(): a busy server may hold fds beyond FD_SETSIZE
    poller.register(r, select.POLLIN)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if not poller.poll(max(1, int(remaining * 1000))):
                timed_out = True
                break
            chunk = os.read(r, 65536)
            if not chunk:  # EOF: the child (and anything it forked) closed the pipe
                break
            chunks.append(chunk)
        while not timed_out:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid:
                status = st
                break
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.002)
    except ChildProcessError:  # someone else reaped it (SIGCHLD ignored): trust the pipe
        status = 0
    finally:
        os.close(r)
        if status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    if timed_out:
        return Outcome(False, error=f"probe did not finish within {timeout:g}s and was killed")
    try:
        msg = json.loads(b"".join(chunks))
    except ValueError:
        if status is not None and os.WIFSIGNALED(status):
            sig = signal.Signals(os.WTERMSIG(status)).name
            return Outcome(False, error=f"probe was killed by {sig}")
        return Outcome(False, error="probe exited without reporting")
    return Outcome(bool(msg.get("ok")), msg.get("value"), msg.get("error", ""), msg.get("errno"))


def _write_proc(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())  # id maps must be written in a single write(2)
    finally:
        os.close(fd)


def _enter_userns(extra: int = 0) -> None:
    """unshare(CLONE_NEWUSER | extra), then map our own uid and gid to 0 (size-1 maps)."""
    uid, gid = os.geteuid(), os.getegid()  # before unshare: afterwards they read as overflow ids
    libc.unshare(libc.CLONE_NEWUSER | extra)
    with contextlib.suppress(FileNotFoundError):  # no such file before Linux 3.19
        _write_proc("/proc/self/setgroups", "deny")
    _write_proc("/proc/self/uid_map", f"0 {uid} 1")
    _write_proc("/proc/self/gid_map", f"0 {gid} 1")
    if os.getuid() != 0 or os.getgid() != 0:
        raise ProbeFailed(f"uid/gid map written but ids inside are {os.getuid()}/{os.getgid()}")


def _probe_userns() -> int:
    uid = os.geteuid()
    _enter_userns()
    return uid


def _probe_overlay(lower: str | None) -> str:
    _enter_userns(libc.CLONE_NEWNS)
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
    _enter_userns(libc.CLONE_NEWNS | libc.CLONE_NEWPID)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    out = probe(_pid1_mounts_proc, timeout=PROBE_TIMEOUT / 2)
    if not out.ok:
        raise ProbeFailed(out.error)
    return out.value


def _probe_netns() -> list[str]:
    _enter_userns(libc.CLONE_NEWNET)
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        raise ProbeFailed(f"the new network namespace has interfaces {names}, expected only lo")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack_from("16sH", ifr)[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=1.0):
            pass
    return names


def _probe_seccomp_filter() -> int:
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    libc.seccomp_set_filter(ALLOW_ALL_BPF)
    mode = libc.prctl(libc.PR_GET_SECCOMP)
    if mode != 2:
        raise ProbeFailed(f"filter installed but PR_GET_SECCOMP reports mode {mode}, not 2")
    return mode


def _probe_pyseccomp() -> dict[str, Any]:
    try:
        import pyseccomp
    except ImportError as e:
        return {"missing": "pyseccomp", "error": str(e)}
    except RuntimeError as e:  # pyseccomp raises this when libseccomp.so is missing
        return {"missing": "libseccomp", "error": str(e)}
    filt = pyseccomp.SyscallFilter(pyseccomp.ERRNO(errno.EPERM))
    filt.add_rule(pyseccomp.ALLOW, "read")
    r, w = os.pipe()
    with open(w, "wb") as f:
        filt.export_bpf(f)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    if not data or len(data) % 8:
        raise ProbeFailed(f"libseccomp exported {len(data)} bytes, not a BPF program")
    return {
        "library": getattr(pyseccomp, "_libseccomp_path", None) or "libseccomp",
        "version": getattr(pyseccomp, "__version__", "?"),
        "instructions": len(data) // 8,
    }


def _probe_landlock() -> int:
    abi = libc.syscall(
        libc.SYS_landlock_create_ruleset,
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(libc.LANDLOCK_CREATE_RULESET_VERSION),
        what="landlock_create_ruleset",
    )
    attr = ctypes.create_string_buffer(struct.pack("Q", landlock.EXECUTE), 8)
    fd = libc.syscall(
        libc.SYS_landlock_create_ruleset,
        attr,
        ctypes.c_size_t(8),
        ctypes.c_uint32(0),
        what="landlock_create_ruleset",
    )
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    libc.syscall(
        libc.SYS_landlock_restrict_self,
        ctypes.c_int(fd),
        ctypes.c_uint32(0),
        what="landlock_restrict_self",
    )
    os.close(fd)
    return abi


def _probe_mount_setattr() -> int:
    """Whether the mount_setattr syscall exists: anything but ENOSYS for bogus arguments."""
    try:
        libc.syscall(
            libc.SYS_mount_setattr,
            ctypes.c_int(-1),
            None,
            ctypes.c_uint(0),
            None,
            ctypes.c_size_t(0),
            what="mount_setattr",
        )
    except OSError as e:
        if e.errno == errno.ENOSYS:
            raise
        return e.errno or 0
    return 0


# --------------------------------------------------------------------------- host facts


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _is_root() -> bool:
    return os.geteuid() == 0


def _sudo() -> str:
    return "" if _is_root() else "sudo "


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _in_container() -> bool:
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return True
    return bool(os.environ.get("container"))  # noqa: SIM112 (systemd's name)


def _unescape(field_: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


@dataclass
class Mount:
    mountpoint: str
    fstype: str
    source: str
    super_options: list[str]


def _mounts() -> list[Mount]:
    mounts = []
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        pre_f, post_f = pre.split(), post.split()
        if len(pre_f) < 5 or len(post_f) < 3:
            continue
        mounts.append(Mount(_unescape(pre_f[4]), post_f[0], post_f[1], post_f[2].split(",")))
    return mounts


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


# --------------------------------------------------------------------------- checks


MIN_USER_NAMESPACES = 64
"""Below this many user namespaces, concurrent cells fail (each holds one; frees are lazy)."""


def _userns_blockers(out: Outcome) -> tuple[list[str], str]:
    """Likely causes of a failed unshare(CLONE_NEWUSER) and the command that lifts them."""
    max_ns = _read_int(USERNS_SYSCTL)
    causes, fixes = [], []
    if max_ns is not None and (max_ns < MIN_USER_NAMESPACES or out.errno == errno.ENOSPC):
        causes.append(f"user.max_user_namespaces={max_ns}")
        fixes.append("sysctl -w user.max_user_namespaces=15000")
    if _read_int(DEBIAN_USERNS_SYSCTL) == 0:  # Debian < 11 only; None when the file is absent
        causes.append("kernel.unprivileged_userns_clone=0")
        fixes.append("sysctl -w kernel.unprivileged_userns_clone=1")
    if _read_int(APPARMOR_USERNS_SYSCTL) == 1:  # Ubuntu ≥ 23.10
        causes.append("AppArmor restricts unprivileged user namespaces")
        fixes.append("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    blocked = not fixes and out.errno == errno.EPERM and _in_container()
    if not fixes:
        fixes.append("sysctl -w user.max_user_namespaces=15000")
    fix = " && ".join(_sudo() + f for f in fixes)
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
    max_ns = _read_int(USERNS_SYSCTL)
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


def _has_submounts(path: str) -> bool:
    prefix = path.rstrip("/") + "/"
    return any(m.mountpoint.startswith(prefix) for m in _mounts())


def check_overlay() -> Check:
    name = "mount namespace + overlay"
    lower: str | None = "/usr"
    note = ""
    if _has_submounts("/usr"):
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
        return Check(name, False, detail, f"{_sudo()}modprobe overlay")
    return Check(
        name, False, detail, "needs Linux ≥ 5.11 (unprivileged overlay): upgrade the kernel"
    )


def _proc_overmounts() -> list[str]:
    return sorted(
        m.mountpoint
        for m in _mounts()
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
    elif masked or _in_container():
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


def check_seccomp() -> Check:
    name = "seccomp"
    status = _read("/proc/self/status") or ""
    m = re.search(r"^Seccomp:\s*(\d+)", status, re.M)
    if not m:
        return Check(
            name,
            False,
            "the kernel has no seccomp (no Seccomp field in /proc/self/status)",
            "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y",
        )
    own_mode = int(m.group(1))
    kernel = probe(_probe_seccomp_filter)
    if not kernel.ok:
        return Check(
            name,
            False,
            f"installing a seccomp filter fails: {kernel.error}",
            "use a kernel built with CONFIG_SECCOMP_FILTER=y",
        )
    lib = probe(_probe_pyseccomp)
    missing = lib.value.get("missing") if lib.ok else "libseccomp"
    if missing:
        error = lib.value["error"] if lib.ok else lib.error
        if missing == "pyseccomp":
            fix = f"{sys.executable} -m pip install pyseccomp"
        else:
            fix = f"{_sudo()}apt-get install -y libseccomp2"
        detail = f"the kernel accepts filters, but {missing} is unusable: {error}"
        return Check(name, False, detail, fix)
    inherited = " (this process already runs under a seccomp filter)" if own_mode == 2 else ""
    return Check(
        name,
        True,
        f"the kernel accepts seccomp filters (no_new_privs + allow-all program) and "
        f"{os.path.basename(str(lib.value['library']))} compiles them (pyseccomp "
        f"{lib.value['version']}){inherited}",
    )


# cgroups ------------------------------------------------------------------------


def _read_words(path: str) -> list[str] | None:
    text = _read(path)
    return text.split() if text is not None else None


def _own_cgroup_v2() -> str | None:
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _writable(path: str) -> bool:
    return os.access(path, os.W_OK)


@dataclass
class _V2Target:
    path: str
    source: str
    exists: bool = False
    writable: bool = False
    available: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    usable: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _inspect_v2(path: str, source: str, root: str) -> _V2Target:
    t = _V2Target(path, source)
    # Root creates the subtree itself on first use; for it only the parent matters.
    probe_dir = path
    if _is_root() and not os.path.isdir(path) and path == os.path.join(root, CGROUP_SUBTREE):
        probe_dir = root
    t.exists = os.path.isdir(probe_dir)
    if not t.exists:
        t.problems.append(f"{path} does not exist")
        return t
    need = [probe_dir, f"{probe_dir}/cgroup.procs", f"{probe_dir}/cgroup.subtree_control"]
    not_writable = [p for p in need if not (os.path.exists(p) and _writable(p))]
    t.writable = not not_writable
    if not_writable:
        t.problems.append(f"not writable by {_user_name()}: {', '.join(not_writable)}")
    t.available = _read_words(f"{probe_dir}/cgroup.controllers") or []
    t.enabled = _read_words(f"{probe_dir}/cgroup.subtree_control") or []
    can_enable = _writable(f"{probe_dir}/cgroup.subtree_control")
    t.usable = [
        c for c in CGROUP_V2_CONTROLLERS if c in t.enabled or (c in t.available and can_enable)
    ]
    missing = [c for c in CGROUP_V2_CONTROLLERS if c not in t.usable]
    if missing:
        how = "available" if _is_root() else "delegated"
        t.problems.append(f"controllers not {how}: {', '.join(missing)}")
    return t


def _check_cgroup_v2(root: str) -> Check:
    name = "cgroups"
    user = _user_name()
    fix = f"sudo cellblock setup --user {user}"
    own = _own_cgroup_v2()
    env = os.environ.get("CELLBLOCK_CGROUP")
    targets: list[_V2Target] = []
    if env:
        inside = env == root or env.startswith(root + "/")
        path = env if inside else os.path.join(root, env.lstrip("/"))
        targets.append(_inspect_v2(path, "CELLBLOCK_CGROUP", root))
    else:
        # Root's runs go under cellblock/, a user's under cellblock/USER (cellblock setup).
        subtree = os.path.join(root, CGROUP_SUBTREE, *([] if _is_root() else [user]))
        if os.path.isdir(subtree) or _is_root():
            targets.append(_inspect_v2(subtree, "cellblock setup", root))
        if own is not None and own != "/" and not _is_root():
            own_path = os.path.join(root, own.lstrip("/"))
            if _writable(own_path):
                targets.append(_inspect_v2(own_path, "this process's delegated cgroup", root))
    if _is_root():
        fix = (
            f"give this host or container the {', '.join(CGROUP_V2_CONTROLLERS)} controllers "
            f"and a writable {root} (Docker: --cgroupns=private on a cgroup v2 host)"
        )
    chosen = next((t for t in targets if t.ok), targets[0] if targets else None)
    if chosen is None:
        return Check(
            name,
            False,
            f"cgroup v2, but no subtree is delegated to {user}: {root}/{CGROUP_SUBTREE}/{user} is "
            f"missing and this process's cgroup ({own}) is not writable",
            fix,
        )
    if not chosen.ok:
        return Check(
            name,
            False,
            f"cgroup v2: {chosen.path} ({chosen.source}) is not usable by {user}: "
            f"{'; '.join(chosen.problems)}",
            fix,
        )
    notes = []
    if own is not None and not _is_root():
        own_abs = os.path.join(root, own.lstrip("/"))
        inside = own_abs == chosen.path or own_abs.startswith(chosen.path + "/")
        if not inside:
            ancestor = os.path.commonpath([own_abs, chosen.path])
            if not _writable(os.path.join(ancestor, "cgroup.procs")):
                notes.append(
                    f"note: this process ({own}) is outside {chosen.path} and cannot move "
                    "itself in; start workers inside it"
                )
    if _kernel_version() < PEAK_KERNEL:
        notes.append("note: no memory.peak before Linux 5.19, peak memory is sampled")
    who = "root" if _is_root() else user
    detail = (
        f"cgroup v2: {', '.join(chosen.usable)} usable by {who} in {chosen.path} ({chosen.source})"
    )
    if notes:
        detail += "; " + "; ".join(notes)
    return Check(name, True, detail)


def _v1_controller_mounts(mounts: list[Mount]) -> dict[str, str]:
    known = set()
    for line in (_read("/proc/cgroups") or "").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and parts[3] == "1":
            known.add(parts[0])
    where: dict[str, str] = {}
    for m in mounts:
        if m.fstype != "cgroup":
            continue
        for opt in m.super_options:
            # Prefer the canonical /sys/fs/cgroup/<ctrl> location over other mounts.
            if opt in known and (opt not in where or m.mountpoint == f"{CGROUP_ROOT}/{opt}"):
                where[opt] = m.mountpoint
    return where


def _check_cgroup_v1(mounts: list[Mount]) -> Check:
    name = "cgroups"
    user = _user_name()
    where = _v1_controller_mounts(mounts)
    unified = [m.mountpoint for m in mounts if m.fstype == "cgroup2"]
    kind = "cgroup v1"
    if unified:
        ctrls = _read_words(f"{unified[0]}/cgroup.controllers") or []
        useful = [c for c in ctrls if c in CGROUP_V2_CONTROLLERS]
        kind += (
            f" (hybrid: {unified[0]} is cgroup2 with "
            f"{'controllers ' + ', '.join(ctrls) if ctrls else 'no controllers'}"
            f"{'' if useful else ', none of them used'})"
        )
    unmounted = [c for c in CGROUP_V1_CONTROLLERS if c not in where]
    if unmounted:
        mount_cmds = [
            f"{_sudo()}mkdir -p {CGROUP_ROOT}/{c} && "
            f"{_sudo()}mount -t cgroup -o {c} cgroup {CGROUP_ROOT}/{c}"
            for c in unmounted
        ]
        return Check(
            name,
            False,
            f"{kind}: controllers not mounted or disabled: {', '.join(unmounted)}",
            " && ".join(mount_cmds),
        )
    usable, problems, fixes = [], [], []
    for ctrl in CGROUP_V1_CONTROLLERS:
        mp = where[ctrl]
        explicit = os.environ.get("CELLBLOCK_CGROUP")
        if explicit:  # the same relative path in every hierarchy, as the sandbox uses it
            target = os.path.join(mp, explicit.lstrip("/"))
        else:
            target = os.path.join(mp, CGROUP_SUBTREE, *([] if _is_root() else [user]))
        if _is_root():
            # Root creates <ctrl>/cellblock on first use (or uses the existing one).
            probe_dir = target if os.path.isdir(target) else mp
            if _writable(probe_dir):
                usable.append(ctrl)
            else:
                problems.append(f"{probe_dir} is read-only")
        elif not os.path.isdir(target):
            problems.append(f"{target} missing")
        elif not (_writable(target) and _writable(os.path.join(target, "cgroup.procs"))):
            problems.append(f"{target} not writable")
        else:
            usable.append(ctrl)
    if problems:
        if _is_root():
            fixes.append(
                f"mount {CGROUP_ROOT} read-write (Docker: -v {CGROUP_ROOT}:{CGROUP_ROOT}:rw)"
            )
        else:
            fixes.append(f"sudo cellblock setup --user {user}")
    who = "root" if _is_root() else user
    notes = []
    if not os.path.exists(f"{where['memory']}/memory.memsw.limit_in_bytes"):
        swaps = (_read("/proc/swaps") or "").strip().splitlines()[1:]
        if swaps:
            problems.append("swap is on but memory.memsw.* (swap accounting) is missing")
            fixes.append(f"{_sudo()}swapoff -a (or boot with swapaccount=1)")
        else:
            notes.append("no swap accounting (memory.memsw.*), harmless while swap is off")
    if problems:
        if not fixes[0].startswith(f"{_sudo()}swapoff"):
            label = "not usable by root" if _is_root() else f"not delegated to {user}"
        else:
            label = "memory limits can be bypassed through swap"
        return Check(
            name,
            False,
            f"{kind}: {label}: {'; '.join(problems)}"
            + (f" (usable: {', '.join(usable)})" if usable else ""),
            " && ".join(fixes),
        )
    place = f"{CGROUP_ROOT}/<controller>/{CGROUP_SUBTREE}" + ("" if _is_root() else f"/{user}")
    detail = f"{kind}: {', '.join(usable)} usable by {who} under {place}"
    if notes:
        detail += "; " + "; ".join(notes)
    return Check(name, True, detail)


def check_cgroups() -> Check:
    mounts = _mounts()
    root = next((m for m in mounts if m.mountpoint == CGROUP_ROOT), None)
    if root is not None and root.fstype == "cgroup2":
        return _check_cgroup_v2(CGROUP_ROOT)
    if any(m.fstype == "cgroup" for m in mounts):
        return _check_cgroup_v1(mounts)
    v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if v2 is not None:  # cgroup2 mounted somewhere other than /sys/fs/cgroup
        return _check_cgroup_v2(v2.mountpoint)
    return Check(
        "cgroups",
        False,
        "no cgroup filesystem is mounted: no memory, pids or CPU limits",
        f"{_sudo()}mount -t cgroup2 none {CGROUP_ROOT}",
    )


# landlock, subordinate ids, kernel ------------------------------------------------


def _lsm_list() -> str | None:
    text = _read("/sys/kernel/security/lsm")
    if text is not None:
        return text.strip()
    m = re.search(r"(?:^|\s)lsm=(\S+)", _read("/proc/cmdline") or "")
    return m.group(1) if m else None


def check_landlock() -> Check:
    name = "landlock"
    out = probe(_probe_landlock)
    if out.ok:
        return Check(
            name,
            True,
            f"Landlock ABI {out.value}: a ruleset can be created and enforced (a cell's "
            "program opens nothing outside its cell, even through a descriptor)",
            required=False,
        )
    lsm = _lsm_list()
    if out.errno == errno.EOPNOTSUPP:
        why = "built into the kernel but not enabled at boot"
        if lsm is not None and "landlock" not in lsm.split(","):
            why += f" (the lsm list is {lsm}, without landlock)"
        fix = (
            f"add lsm=landlock,{lsm or '<current list>'} to the kernel command line "
            "(GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot)"
        )
    elif out.errno == errno.ENOSYS:
        why = "the kernel has no Landlock (needs ≥ 5.13 with CONFIG_SECURITY_LANDLOCK=y)"
        fix = "use a kernel ≥ 5.13 with CONFIG_SECURITY_LANDLOCK=y, booted with lsm=landlock,..."
    else:
        why = out.error
        fix = "add lsm=landlock,... to the kernel command line"
        if lsm is not None and "landlock" not in lsm.split(","):
            why += f" (the lsm list is {lsm}, without landlock)"
    return Check(
        name,
        False,
        f"unavailable, cells run without Landlock (a host file given to a program as a "
        f"descriptor can be reopened through /proc/self/fd): {why}",
        fix,
        required=False,
    )


def _privileged_helper(path: str | None) -> bool:
    if not path:
        return False
    try:
        if os.stat(path).st_mode & stat.S_ISUID:
            return True
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def check_subids() -> Check:
    """Whether the program runs as a host uid of its own (userns.py)."""
    name = "subordinate ids"
    template = userns.choose_idmap()
    try:
        locks = userns.slot_lock_dir()
        lock_problem = None
    except OSError as error:
        locks, lock_problem = None, str(error)
    if _is_root():
        first = template.uid_lines[0][1]
        if lock_problem:
            return Check(
                name,
                False,
                f"running as root, but the id ranges' locks cannot be kept ({lock_problem}): "
                f"every live cell shares host ids {first}..{first + userns.RANGE_SIZE - 1}",
                f"mkdir -p -m 0700 {userns.SLOT_LOCKS_ROOT} (a writable /run)",
            )
        return Check(
            name,
            True,
            f"running as root: each live cell gets a range of {userns.RANGE_SIZE} host ids of "
            f"its own, one of {template.slots} from {first} (locks in {locks}), never root",
        )
    user, uid = _user_name(), os.geteuid()
    helpers = userns.id_helpers()
    problems, fixes = [], []
    if userns.subordinate_range(uid) is None:
        problems.append(f"no /etc/subuid and /etc/subgid range for {user}")
        fixes.append(f"sudo cellblock setup --user {user}")
    missing = [h for h, p in helpers.items() if not p]
    unprivileged = [h for h, p in helpers.items() if p and not _privileged_helper(p)]
    if missing:
        problems.append(f"{' and '.join(missing)} not installed")
        fixes.append("sudo apt-get install -y uidmap")
    if unprivileged:
        problems.append(f"{' and '.join(unprivileged)} are neither setuid nor file-capable")
        fixes.append("sudo apt-get install --reinstall -y uidmap")
    if os.environ.get("CELLBLOCK_SUBUID") == "0":
        problems.append("CELLBLOCK_SUBUID=0 turns them off")
        fixes.append("unset CELLBLOCK_SUBUID")
    if userns.no_new_privs():
        problems.append(
            "this process runs with no_new_privs, which voids the setuid newuidmap/newgidmap"
        )
        fixes.append("start the worker without no_new_privs (systemd: NoNewPrivileges=no)")
    if problems:
        return Check(
            name,
            False,
            f"{'; '.join(problems)}: each cell's program runs as {user}'s own uid (a size-1 "
            f"map), so it could read files only {user} may read, and shares {user}'s "
            "per-user kernel counts (pipe buffers, file descriptors in flight)",
            " && ".join(fixes),
        )
    if lock_problem:
        return Check(
            name,
            False,
            f"{user} has subordinate ids, but their slots' locks cannot be kept "
            f"({lock_problem}): live cells may share a host uid",
            f"rm -rf {userns.user_slot_lock_dir(uid)} (as its owner), or a /run/lock every "
            "user may write (mode 1777)",
        )
    (first, _), _ = userns.subordinate_range(uid) or ((0, 0), (0, 0))
    return Check(
        name,
        True,
        f"{user} has {template.slots} subordinate ids from {first}: each live cell's "
        f"program runs as one of its own (locks in {locks}); newuidmap/newgidmap map them",
    )


def check_quotas() -> Check:
    """How many cells at their share of per-user kernel quotas (userns.py,
    rlimits.py) the caller's own quotas hold, half of them left to the caller."""
    from . import rlimits

    name = "per-user quotas"
    share = userns.CELL_NAMESPACE_LIMITS
    instances = int(_read("/proc/sys/fs/inotify/max_user_instances") or 0)
    watches = int(_read("/proc/sys/fs/inotify/max_user_watches") or 0)
    signals = resource.getrlimit(resource.RLIMIT_SIGPENDING)[0]
    if signals == resource.RLIM_INFINITY:
        signals = 1 << 62
    fit = (
        min(
            instances // share["max_inotify_instances"],
            watches // share["max_inotify_watches"],
            signals // rlimits.PENDING_SIGNALS,
        )
        // 2
    )
    wanted = 2 * (os.cpu_count() or 1)
    detail = (
        f"a cell takes at most {share['max_inotify_instances']} inotify instances, "
        f"{share['max_inotify_watches']} watches and {rlimits.PENDING_SIGNALS} queued "
        f"signals of the worker's own (fs.inotify.max_user_instances={instances}, "
        f"max_user_watches={watches}, RLIMIT_SIGPENDING={signals}): {fit} cells at "
        "their quotas leave the worker half"
    )
    if fit >= wanted:
        return Check(name, True, detail, required=False)
    need_instances = 2 * wanted * share["max_inotify_instances"]
    need_watches = 2 * wanted * share["max_inotify_watches"]
    return Check(
        name,
        False,
        f"{detail}, fewer than the {wanted} cells this machine's cores may run at once",
        f"sysctl -w fs.inotify.max_user_instances="
        f"{max(instances, need_instances)} fs.inotify.max_user_watches="
        f"{max(watches, need_watches)}",
        required=False,
    )


def check_kernel() -> Check:
    name = "kernel"
    release = os.uname().release
    version = _kernel_version()
    out = probe(_probe_mount_setattr)
    if version < MIN_KERNEL or (not out.ok and out.errno == errno.ENOSYS):
        return Check(
            name,
            False,
            f"Linux {release}: cellblock needs ≥ {MIN_KERNEL[0]}.{MIN_KERNEL[1]} "
            "(mount_setattr for recursive read-only binds)",
            "upgrade to Linux ≥ 5.12 (≥ 5.19 for memory.peak on cgroup v2)",
        )
    if version >= PEAK_KERNEL:
        note = "memory.peak available on cgroup v2"
    else:
        note = "before 5.19 cgroup v2 has no memory.peak, so peak memory is sampled"
    return Check(name, True, f"Linux {release}: mount_setattr present; {note}")


def check_launcher() -> Check:
    """The compiled half of sandbox/spawn.py, which starts every program."""
    from . import spawn

    name = "program launcher"
    problem = spawn.available()
    if problem is None:
        return Check(name, True, "sandbox/spawn.c is built and matches spawn.py")
    return Check(
        name,
        False,
        problem,
        "scripts/install (or: pip install --force-reinstall cellblock, with gcc present)",
    )


def check_maker() -> Check:
    """Whether warm cells can be made by a cell maker (sandbox/maker.py)."""
    from . import maker

    name = "cell maker"
    slower = "warm cells are made by the caller instead (the same cells, ~1 ms slower)"
    if not maker._can_start_interpreter():
        return Check(
            name,
            False,
            f"sys.executable {sys.executable!r} is not a Python to start: {slower}",
            required=False,
        )
    try:
        handle = maker.Maker()
    except OSError as error:
        return Check(
            name, False, f"cannot start one ({_error_text(error)}): {slower}", required=False
        )
    try:
        deadline = time.monotonic() + 2 * PROBE_TIMEOUT
        while not handle.usable() and not handle.broken and time.monotonic() < deadline:
            time.sleep(0.02)
        up = handle.usable()
    finally:
        handle.stop()
    if up:
        return Check(
            name,
            True,
            "warm cells are cloned by a small process of their own, not by the caller",
            required=False,
        )
    return Check(
        name,
        False,
        "it may not clone into new namespaces here (a seccomp profile, "
        "like cellblock's Docker worker profile, refuses clone with namespace flags, "
        f"by design): {slower}",
        required=False,
    )


CHECKS: list[tuple[str, Callable[[], Check]]] = [
    ("program launcher", check_launcher),
    ("user namespaces", check_userns),
    ("mount namespace + overlay", check_overlay),
    ("pid namespace + /proc", check_pidns),
    ("network namespace", check_netns),
    ("seccomp", check_seccomp),
    ("cgroups", check_cgroups),
    ("landlock", check_landlock),
    ("subordinate ids", check_subids),
    ("per-user quotas", check_quotas),
    ("kernel", check_kernel),
    ("cell maker", check_maker),
]
