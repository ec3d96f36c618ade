"""sandbox/seccomp.py and profiles/seccomp/default.json, on the real kernel.

Every behavioural check runs in a forked child that sets no_new_privs, installs
the compiled default profile (or, for the "without" half of an attack, does
not) and then makes the call or execs the program; the parent looks at how the
child ended and what it printed. No mocks: this is the kernel's verdict.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m` from the project root
    sys.path.insert(0, str(ROOT))

import pyseccomp  # noqa: E402

from profiles import SECCOMP_DIR  # noqa: E402
from sandbox import libc  # noqa: E402
from sandbox import seccomp as sc  # noqa: E402
from sandbox.spec import SpecError  # noqa: E402

PROBE_SOURCE = Path(__file__).resolve().parent / "programs" / "seccomp_probe.c"
IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------------------
# Running things in a filtered child


@dataclass
class Outcome:
    exit_code: int | None
    signal: int | None
    output: str

    @property
    def killed_by_seccomp(self) -> bool:
        return self.signal == signal.SIGSYS

    def result(self) -> tuple[int, int]:
        """(ret, errno) printed by the probe; fails the test if it did not print one."""
        assert self.signal is None, f"killed by signal {self.signal}: {self.output!r}"
        fields = dict(part.split("=", 1) for part in self.output.split() if "=" in part)
        assert "ret" in fields, f"no result from the probe: {self.output!r}"
        return int(fields["ret"]), int(fields["errno"])


class _LetEveryCallGoOn:
    """A thread that answers each call a filter sends to `listener` with
    SECCOMP_USER_NOTIF_FLAG_CONTINUE (the kernel then runs it), until stopped."""

    RECV = 0xC0502100  # SECCOMP_IOCTL_NOTIF_RECV: _IOWR('!', 0, struct seccomp_notif)
    SEND = 0xC0182101  # SECCOMP_IOCTL_NOTIF_SEND: _IOWR('!', 1, struct seccomp_notif_resp)

    def __init__(self, listener: int) -> None:
        self.listener = listener
        self.stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        poller.register(self.stop_r, select.POLLIN)
        while True:
            ready = dict(poller.poll())
            if self.stop_r in ready or not ready.get(self.listener, 0) & select.POLLIN:
                return
            notification = bytearray(80)
            try:
                fcntl.ioctl(self.listener, self.RECV, notification)
                (call_id,) = struct.unpack_from("<Q", notification)
                fcntl.ioctl(self.listener, self.SEND, struct.pack("<QqiI", call_id, 0, 0, 1))
            except OSError:  # the caller died meanwhile (ENOENT)
                continue

    def stop(self) -> None:
        os.write(self.stop_w, b"x")
        self.thread.join()
        os.close(self.stop_r)
        os.close(self.stop_w)


def in_child(
    action: Callable[[], object], *, filtered: bool = True, profile: str = "default"
) -> Outcome:
    """Run `action` in a forked child, under `profile` if filtered; stdout+stderr come back.
    A filter that notifies is answered as the cell's init answers a cell below
    its lock cap (sandbox/locks.c): every call goes on. The child hands its
    listener over before the action, as spawn.c does."""
    bpf = sc.compile_profile(profile) if filtered else b""
    notifies = filtered and sc.notifies(bpf)
    read_end, write_end = os.pipe()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 100
        try:
            ours.close()
            os.close(read_end)
            os.dup2(write_end, 1)
            os.dup2(write_end, 2)
            os.close(write_end)
            # A hung child must not hang the test run; the alarm survives execve.
            signal.alarm(120)
            # A seccomp kill dumps core; the cell sets RLIMIT_CORE=0 and so do we.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
            if filtered:  # what spawn.c does, from Python
                listener = libc.seccomp_set_filter(bpf, new_listener=notifies)
                if notifies:
                    socket.send_fds(theirs, [b"l"], [listener])
                    os.close(listener)
            theirs.close()
            action()
            code = 0
        except BaseException as e:  # report anything, never return into pytest
            with contextlib.suppress(BaseException):
                os.write(2, f"child failed: {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    theirs.close()
    supervisor = None
    if notifies:
        with ours:
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if fds:  # none if the child failed before it had a filter
            supervisor = _LetEveryCallGoOn(fds[0])
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if supervisor is not None:
        supervisor.stop()
        os.close(fds[0])
    ours.close()
    output = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        return Outcome(None, os.WTERMSIG(status), output)
    return Outcome(os.WEXITSTATUS(status), None, output)


def exec_in_child(argv: list[str], *, filtered: bool = True, cwd: str | None = None) -> Outcome:
    def action() -> None:
        if cwd is not None:
            os.chdir(cwd)
        os.execv(argv[0], argv)

    return in_child(action, filtered=filtered)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Outcome]:
    """Run tests/programs/seccomp_probe.c: probe(mode, *args, filtered=True)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    binary = tmp_path_factory.mktemp("seccomp") / "seccomp_probe"
    subprocess.run(
        [gcc, "-O1", "-Wall", "-pthread", "-o", str(binary), str(PROBE_SOURCE)],
        check=True,
        capture_output=True,
    )

    def run(mode: str, *args: object, filtered: bool = True) -> Outcome:
        return exec_in_child([str(binary), mode, *map(str, args)], filtered=filtered)

    return run


# ---------------------------------------------------------------------------
# Attacks: allowed (or a different errno) without the filter, stopped with it


def test_install_puts_the_process_in_filter_mode() -> None:
    out = in_child(lambda: os.write(1, b"%d" % libc.prctl(libc.PR_GET_SECCOMP)))
    assert out.exit_code == 0 and out.output.strip() == "2", out


@pytest.mark.parametrize("mode", ["ptrace", "unshare_user", "keyctl", "bpf", "userfaultfd"])
def test_never_legitimate_syscalls_kill(probe: Callable[..., Outcome], mode: str) -> None:
    without = probe(mode, filtered=False)
    assert without.signal is None, without  # the call itself is harmless to make unfiltered
    if IS_ROOT and mode in ("ptrace", "unshare_user"):
        assert without.result()[0] == 0  # the attack works without the filter
    assert probe(mode).killed_by_seccomp


def test_mount_kills(probe: Callable[..., Outcome]) -> None:
    # Unfiltered, mount gets as far as looking up the (missing) target.
    assert probe("mount", filtered=False).result() == (-1, errno.ENOENT)
    assert probe("mount").killed_by_seccomp


def test_io_uring_is_not_implemented(probe: Callable[..., Outcome]) -> None:
    without = probe("io_uring", filtered=False).result()
    knob = Path("/proc/sys/kernel/io_uring_disabled")
    if IS_ROOT and knob.exists() and knob.read_text().strip() == "0":
        assert without[0] >= 0  # io_uring works here without the filter
    assert probe("io_uring").result() == (-1, errno.ENOSYS)


def test_clone3_is_not_implemented_but_fork_and_threads_work(
    probe: Callable[..., Outcome],
) -> None:
    assert probe("clone3", filtered=False).result()[0] > 0
    assert probe("clone3").result() == (-1, errno.ENOSYS)
    assert probe("fork_threads").result() == (0, 0)
    assert probe("clone_plain").result()[0] > 0


def test_clone_with_a_namespace_flag_is_refused_not_killed(probe: Callable[..., Outcome]) -> None:
    if IS_ROOT:
        assert probe("clone_newns", filtered=False).result()[0] > 0
    assert probe("clone_newns").result() == (-1, errno.EPERM)


def test_i386_int80_kills(probe: Callable[..., Outcome]) -> None:
    # Unfiltered it is i386 getpid (or SIGSEGV on a kernel without IA32 emulation).
    assert not probe("int80", filtered=False).killed_by_seccomp
    assert probe("int80").killed_by_seccomp


def test_x32_syscall_kills(probe: Callable[..., Outcome]) -> None:
    # Unfiltered: x32 getpid, or ENOSYS on a kernel without CONFIG_X86_X32_ABI.
    without = probe("x32", filtered=False).result()
    assert without[0] > 0 or without == (-1, errno.ENOSYS)
    assert probe("x32").killed_by_seccomp


def test_x32_numbers_go_to_the_bad_arch_action() -> None:
    """How libseccomp 2.5 handles x32 in an x86_64 filter: nr >= 0x40000000 jumps to bad-arch."""
    bpf = sc.compile_profile("default")
    insns = [
        (
            int.from_bytes(bpf[i : i + 2], "little"),
            bpf[i + 2],
            bpf[i + 3],
            int.from_bytes(bpf[i + 4 : i + 8], "little"),
        )
        for i in range(0, len(bpf), 8)
    ]
    kill_process = [
        i for i, (code, _, _, k) in enumerate(insns) if code == 0x06 and k == 0x80000000
    ]
    assert insns[1][0] == 0x15 and insns[1][3] == 0xC000003E  # jeq AUDIT_ARCH_X86_64
    assert insns[3][0] == 0x35 and insns[3][3] == 0x40000000  # jge X32_SYSCALL_BIT
    assert 1 + 1 + insns[1][2] in kill_process  # wrong arch -> KILL_PROCESS
    assert 4 + 1 + insns[4][2] in kill_process  # x32 number (not -1) -> KILL_PROCESS


@pytest.mark.parametrize(
    ("family", "sock_type"),
    [(17, 3), (40, 1), (38, 5), (16, 3)],
    ids=["AF_PACKET", "AF_VSOCK", "AF_ALG", "AF_NETLINK"],
)
def test_socket_families_outside_the_allowlist_are_refused(
    probe: Callable[..., Outcome], family: int, sock_type: int
) -> None:
    without = probe("socket", family, sock_type, filtered=False).result()
    if family == 16 or (family == 17 and IS_ROOT):
        assert without[0] >= 0  # these exist on every Linux
    assert probe("socket", family, sock_type).result() == (-1, errno.EAFNOSUPPORT)
    # High garbage in the int argument changes nothing (the kernel ignores it too).
    assert probe("socket", family | 0xDEAD00000000, sock_type).result() == (
        -1,
        errno.EAFNOSUPPORT,
    )


@pytest.mark.parametrize(
    ("family", "sock_type"), [(1, 1), (2, 1), (10, 2), (2 | 0xBEEF00000000, 1)]
)
def test_unix_inet_inet6_sockets_work(
    probe: Callable[..., Outcome], family: int, sock_type: int
) -> None:
    assert probe("socket", family, sock_type).result()[0] >= 0


def test_socketpair_is_unix_only(probe: Callable[..., Outcome]) -> None:
    assert probe("socketpair", 1).result() == (0, 0)
    assert probe("socketpair", 2).result() == (-1, errno.EAFNOSUPPORT)


def test_tiocsti_is_refused_even_with_garbage_in_the_upper_bits(
    probe: Callable[..., Outcome],
) -> None:
    if IS_ROOT:  # root may push input into any terminal: the attack works unfiltered
        assert probe("tiocsti", filtered=False).result() == (0, 0)
        assert probe("tiocsti_high", filtered=False).result() == (0, 0)
    assert probe("tiocsti").result() == (-1, errno.EPERM)
    assert probe("tiocsti_high").result() == (-1, errno.EPERM)
    assert probe("tioclinux", filtered=False).result()[1] != errno.EPERM
    assert probe("tioclinux").result() == (-1, errno.EPERM)


def test_other_ioctls_work(probe: Callable[..., Outcome]) -> None:
    assert probe("tcgets").result() == (0, 0)
    # A request passed as a negative int arrives sign-extended: still allowed.
    assert probe("tiocgptn_signext").result() == (0, 0)


def test_personality(probe: Callable[..., Outcome]) -> None:
    assert probe("personality", 8, filtered=False).result() == (0, 0)  # PER_LINUX32 works...
    assert probe("personality", 8).result() == (-1, errno.EPERM)  # ...but not in a cell
    assert probe("personality", 0x0040000).result() == (-1, errno.EPERM)  # ADDR_NO_RANDOMIZE
    assert probe("personality", 0).result() == (0, 0)
    assert probe("personality", 0xFFFFFFFF).result() == (0, 0)  # the query


def test_unknown_syscalls_are_not_implemented(probe: Callable[..., Outcome]) -> None:
    # modify_ldt is left out on purpose; 1000 is no syscall at all.
    assert probe("syscall", 154, 0, 0, 0).result() == (-1, errno.ENOSYS)
    assert probe("syscall", 1000).result() == (-1, errno.ENOSYS)


# ---------------------------------------------------------------------------
# Programs, runtimes and compilers keep working under the filter


def _python() -> str:
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


PYTHON_WORKOUT = """
import asyncio, multiprocessing, socket, subprocess, tempfile, threading
t = threading.Thread(target=lambda: None); t.start(); t.join()
assert subprocess.run(["/bin/sh", "-c", "exit 3"]).returncode == 3
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); s.close()
with tempfile.TemporaryFile() as f: f.write(b"x")
asyncio.run(asyncio.sleep(0.01))
with multiprocessing.Pool(2) as p: assert p.map(abs, [-1, -2]) == [1, 2]
print("ok")
"""


def test_python_and_sh_run() -> None:
    assert exec_in_child([_python(), "-c", "pass"]).exit_code == 0
    assert exec_in_child(["/bin/sh", "-c", "true"]).exit_code == 0
    out = exec_in_child([_python(), "-c", PYTHON_WORKOUT])
    assert out.exit_code == 0 and "ok" in out.output, out
    bash = shutil.which("bash")
    if bash:
        script = 'x=$(echo hi | cat); sleep 0 & wait; [ "$x" = hi ]'
        assert exec_in_child([bash, "-c", script]).exit_code == 0


def test_pthread_program_runs(probe: Callable[..., Outcome]) -> None:
    assert probe("fork_threads").result() == (0, 0)


def _which_or_skip(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def test_node_runs() -> None:
    node = _which_or_skip("node")
    assert exec_in_child([node, "-e", "1"]).exit_code == 0
    script = (
        "const {Worker} = require('worker_threads');"
        "require('child_process').execSync('true');"
        "require('fs').readFile('/proc/self/stat', () => {});"
        "new Worker('1', {eval: true}).on('exit', () => console.log('ok'));"
    )
    out = exec_in_child([node, "-e", script])
    assert out.exit_code == 0 and "ok" in out.output, out


def test_java_runs() -> None:
    java = _which_or_skip("java")
    # -XX:-UsePerfData: these run on the host, where the JVM would leave
    # /tmp/hsperfdata_USER behind.
    out = exec_in_child([java, "-XX:-UsePerfData", "-version"])
    assert out.exit_code == 0 and "version" in out.output, out


def test_compilers_run(tmp_path: Path) -> None:
    """gcc and g++ fork, vfork, exec and pipe; the programs they build run too."""
    (tmp_path / "a.c").write_text('#include <stdio.h>\nint main(){puts("c ok");}\n')
    (tmp_path / "b.cpp").write_text(
        "#include <iostream>\n#include <thread>\n"
        'int main(){std::thread t([]{}); t.join(); std::cout << "cpp ok\\n";}\n'
    )
    gcc = _which_or_skip("gcc")
    out = exec_in_child([gcc, "-O2", "-o", "a", "a.c"], cwd=str(tmp_path))
    assert out.exit_code == 0, out
    assert "c ok" in exec_in_child([str(tmp_path / "a")]).output
    gxx = shutil.which("g++")
    if gxx:
        out = exec_in_child([gxx, "-O2", "-pthread", "-o", "b", "b.cpp"], cwd=str(tmp_path))
        assert out.exit_code == 0, out
        assert "cpp ok" in exec_in_child([str(tmp_path / "b")]).output


def test_javac_runs(tmp_path: Path) -> None:
    javac = _which_or_skip("javac")
    java = _which_or_skip("java")
    (tmp_path / "Main.java").write_text(
        "public class Main { public static void main(String[] a) throws Exception {"
        " Thread t = new Thread(() -> {}); t.start(); t.join();"
        ' System.out.println("java " + java.util.stream.IntStream.range(0, 1000)'
        ".parallel().sum()); } }"
    )
    out = exec_in_child([javac, "-J-XX:-UsePerfData", "Main.java"], cwd=str(tmp_path))
    assert out.exit_code == 0, out
    out = exec_in_child([java, "-XX:-UsePerfData", "-cp", str(tmp_path), "Main"])
    assert out.exit_code == 0 and "java 499500" in out.output, out


def test_rustc_runs(tmp_path: Path) -> None:
    rustc = shutil.which("rustc") or shutil.which(str(Path.home() / ".cargo/bin/rustc"))
    if rustc is None:
        pytest.skip("rustc is not installed")
    (tmp_path / "m.rs").write_text(
        'fn main() { let h = std::thread::spawn(|| 2); println!("rust {}", h.join().unwrap()); }'
    )
    out = exec_in_child([rustc, "-o", "m", "m.rs"], cwd=str(tmp_path))
    assert out.exit_code == 0, out
    assert "rust 2" in exec_in_child([str(tmp_path / "m")]).output


# ---------------------------------------------------------------------------
# The default profile itself


# Names newer than the libseccomp this was written against (2.5.4): skipped
# today, used by a newer libseccomp. Anything else unknown is a typo.
NEWER_THAN_LIBSECCOMP = {
    "getxattrat",
    "setxattrat",
    "listxattrat",
    "removexattrat",
    "mseal",
    "open_tree_attr",
}


def test_default_profile_names_are_real_syscalls() -> None:
    data = json.loads((SECCOMP_DIR / "default.json").read_text())
    names = {n for entry in data["syscalls"] for n in entry["names"]}
    unknown = {n for n in names if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) < 0}
    assert unknown <= NEWER_THAN_LIBSECCOMP


def test_default_profile_policy() -> None:
    data = json.loads((SECCOMP_DIR / "default.json").read_text())
    assert data["defaultAction"] == "SCMP_ACT_ERRNO" and data["defaultErrnoRet"] == errno.ENOSYS
    assert "comment" in data
    killed = {
        n for e in data["syscalls"] if e["action"] == "SCMP_ACT_KILL_PROCESS" for n in e["names"]
    }
    # fmt: off
    must_kill = [
        "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kexec_load",
        "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
        "swapoff", "acct", "quotactl", "syslog", "mount", "umount2", "pivot_root", "chroot",
        "unshare", "setns", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount",
        "mount_setattr", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
        "userfaultfd", "lookup_dcookie", "nfsservctl", "iopl", "ioperm", "vhangup", "settimeofday",
        "clock_settime", "adjtimex", "clock_adjtime", "sethostname", "setdomainname",
        "name_to_handle_at", "open_by_handle_at",
    ]
    # fmt: on
    assert set(must_kill) <= killed
    allowed = {n for e in data["syscalls"] if e["action"] == "SCMP_ACT_ALLOW" for n in e["names"]}
    assert not allowed & killed


# ---------------------------------------------------------------------------
# Compiler semantics: rule order, includes/excludes, actions


def write_profile(tmp_path: Path, syscalls: list[dict], name: str = "p.json", **top: object) -> str:
    doc = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": syscalls, **top}
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


# Enough for the forked Python child of in_child() to finish its work and exit.
BASICS = [
    {
        # fmt: off
        "names": [
            "exit_group",
            "exit",
            "write",
            "read",
            "close",
            "getpid",
            "brk",
            "mmap",
            "munmap",
            "mremap",
            "madvise",
            "mprotect",
            "rt_sigaction",
            "rt_sigprocmask",
            "futex",
        ],
        # fmt: on
        "action": "SCMP_ACT_ALLOW",
    }
]


def test_exceptions_do_not_depend_on_file_order(tmp_path: Path) -> None:
    allow = {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW"}
    deny = {
        "names": ["ioctl"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": 1,
        "args": [{"index": 1, "value": 0xFFFFFFFF, "valueTwo": 0x5412, "op": "SCMP_CMP_MASKED_EQ"}],
    }
    before = sc.compile_profile(write_profile(tmp_path, [*BASICS, allow, deny], "a.json"))
    after = sc.compile_profile(write_profile(tmp_path, [*BASICS, deny, allow], "b.json"))
    only_allow = sc.compile_profile(write_profile(tmp_path, [*BASICS, allow], "c.json"))
    assert before == after != only_allow


def test_exceptions_to_an_unconditional_rule_hold_for_any_arguments(tmp_path: Path) -> None:
    """Exceptions (conditional ERRNO rules) to an unconditional ALLOW on getppid, which
    ignores its arguments: each call must get a matching exception's errno, or succeed."""
    m = 0xFFFFFFFF
    exceptions = [  # (errno, [(index, op, value, valueTwo)])
        (5, [(1, "SCMP_CMP_MASKED_EQ", 0xFF, 0x12)]),
        (6, [(2, "SCMP_CMP_EQ", 7, 0), (3, "SCMP_CMP_LT", 100, 0)]),
        (7, [(0, "SCMP_CMP_EQ", 3, 0)]),
        (8, [(4, "SCMP_CMP_GT", 1 << 40, 0)]),
        (9, [(0, "SCMP_CMP_MASKED_EQ", m, 0x5412), (5, "SCMP_CMP_NE", 0, 0)]),
        (10, [(3, "SCMP_CMP_LE", 5, 0), (1, "SCMP_CMP_GE", 9, 0)]),
    ]
    ops = {
        "SCMP_CMP_EQ": lambda x, v, _: x == v,
        "SCMP_CMP_NE": lambda x, v, _: x != v,
        "SCMP_CMP_LT": lambda x, v, _: x < v,
        "SCMP_CMP_LE": lambda x, v, _: x <= v,
        "SCMP_CMP_GT": lambda x, v, _: x > v,
        "SCMP_CMP_GE": lambda x, v, _: x >= v,
        "SCMP_CMP_MASKED_EQ": lambda x, v, v2: x & v == v2,
    }
    entries = [*BASICS, {"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}]
    for err, args in exceptions:
        entries.append(
            {
                "names": ["getppid"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": err,
                "args": [
                    {"index": i, "op": op, "value": v, "valueTwo": v2} for i, op, v, v2 in args
                ],
            }
        )
    profile = write_profile(tmp_path, entries)

    rng = random.Random(1234)
    # fmt: off
    interesting = [0, 1, 3, 5, 6, 7, 9, 10, 99, 100, 0x12, 0x112, 0x5412, 1 << 40, (1 << 40) + 1,
                   0xDEAD00005412, 0xFFFFFFFF, (1 << 64) - 1]
    # fmt: on
    calls = [tuple(rng.choice(interesting) for _ in range(6)) for _ in range(400)]

    def expected(call: tuple[int, ...]) -> set[int]:
        hits = {
            err for err, args in exceptions if all(ops[op](call[i], v, v2) for i, op, v, v2 in args)
        }
        return hits or {0}

    def action() -> None:
        import ctypes

        c = ctypes.CDLL(None, use_errno=True)
        c.syscall.restype = ctypes.c_long
        results = []
        for call in calls:
            ctypes.set_errno(0)
            ret = c.syscall(ctypes.c_long(110), *(ctypes.c_ulong(a) for a in call))
            results.append(0 if ret >= 0 else ctypes.get_errno())
        os.write(1, json.dumps(results).encode())

    out = in_child(action, profile=profile)
    assert out.exit_code == 0, out
    results = json.loads(out.output)
    wrong = [
        (c, r, expected(c)) for c, r in zip(calls, results, strict=True) if r not in expected(c)
    ]
    assert not wrong, wrong[:5]


def test_kill_thread_action(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, [*BASICS, {"names": ["getppid"], "action": "SCMP_ACT_KILL"}])
    assert in_child(os.getppid, profile=profile).killed_by_seccomp
    assert in_child(os.getpid, profile=profile).exit_code == 0


@pytest.mark.parametrize(
    ("entry_filter", "applies"),
    [
        ({"includes": {"caps": ["CAP_SYS_ADMIN"]}}, False),
        ({"excludes": {"caps": ["CAP_SYS_ADMIN"]}}, True),
        ({"includes": {"arches": ["arm64", "s390x"]}}, False),
        ({"includes": {"arches": ["amd64", "x32"]}}, True),
        ({"excludes": {"arches": ["amd64"]}}, False),
        ({"includes": {"minKernel": "3.10"}}, True),
        ({"includes": {"minKernel": "99.0"}}, False),
        ({"excludes": {"minKernel": "3.10"}}, False),
        ({"excludes": {"minKernel": "99.1"}}, True),
    ],
)
def test_includes_and_excludes(tmp_path: Path, entry_filter: dict, applies: bool) -> None:
    rule = {"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}
    with_filter = sc.compile_profile(write_profile(tmp_path, [*BASICS, {**rule, **entry_filter}]))
    plain = sc.compile_profile(write_profile(tmp_path, [*BASICS, rule], "plain.json"))
    without = sc.compile_profile(write_profile(tmp_path, BASICS, "without.json"))
    assert with_filter == (plain if applies else without)


def test_unknown_names_are_skipped(tmp_path: Path) -> None:
    extra = {"names": ["no_such_syscall", "socketcall"], "action": "SCMP_ACT_ALLOW"}
    assert sc.compile_profile(write_profile(tmp_path, [*BASICS, extra])) == sc.compile_profile(
        write_profile(tmp_path, BASICS, "plain.json")
    )


def test_name_and_default_action_rules(tmp_path: Path) -> None:
    # "name" (old format) works like "names"; a rule with the default action is a no-op.
    first, *rest = BASICS[0]["names"]
    old = [
        {"name": first, "action": "SCMP_ACT_ALLOW"},
        {"names": rest, "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ]
    assert sc.compile_profile(write_profile(tmp_path, old)) == sc.compile_profile(
        write_profile(tmp_path, BASICS, "plain.json")
    )


# ---------------------------------------------------------------------------
# Bad profiles


def test_profile_error_is_a_spec_error() -> None:
    assert issubclass(sc.ProfileError, SpecError) and issubclass(sc.ProfileError, ValueError)


def test_resolve_profile() -> None:
    assert sc.resolve_profile("default") == SECCOMP_DIR / "default.json"
    assert "default" in sc.available_profiles()
    with pytest.raises(sc.ProfileError, match=r"'nope'.*available profiles are: .*default"):
        sc.resolve_profile("nope")
    with pytest.raises(sc.ProfileError, match=r"no such file .*missing\.json.*default"):
        sc.compile_profile("/nonexistent/missing.json")
    with pytest.raises(sc.ProfileError, match="not a profile name"):
        sc.compile_profile("two words")
    with pytest.raises(sc.ProfileError, match="not a regular file"):
        sc.compile_profile(str(SECCOMP_DIR) + "/")


def test_malformed_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW",\n  "syscalls": [\n}\n')
    with pytest.raises(sc.ProfileError, match=r"bad\.json.*not valid JSON: .* line 4 column 1"):
        sc.compile_profile(str(path))


GOOD_ARG = {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"defaultAction": "SCMP_ACT_FOO"}, r"defaultAction: unknown action 'SCMP_ACT_FOO'"),
        (
            {"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOWW"}]},
            r"syscalls\[0\]\.action: unknown action 'SCMP_ACT_ALLOWW' \(expected one of",
        ),
        (
            {"syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]},
            r"syscalls\[0\]\.action: SCMP_ACT_NOTIFY is for fcntl, socket, socketpair only",
        ),
        (
            {"syscalls": [{"names": ["read"], "action": "SCMP_ACT_TRACE"}]},
            r"SCMP_ACT_TRACE is not supported",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [{**GOOD_ARG, "op": "SCMP_CMP_SIMILAR"}],
                    }
                ]
            },
            r"syscalls\[0\]\.args\[0\]\.op: unknown operator 'SCMP_CMP_SIMILAR'",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [{**GOOD_ARG, "index": 6}],
                    }
                ]
            },
            r"args\[0\]\.index: 6 is not a syscall argument index \(0\.\.5\)",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [{**GOOD_ARG, "value": -1}],
                    }
                ]
            },
            r"args\[0\]\.value: -1 is not an unsigned 64-bit integer",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [GOOD_ARG, {**GOOD_ARG, "value": 2}],
                    }
                ]
            },
            r"argument 0 is compared twice",
        ),
        (
            {"syscalls": [{"names": ["no_such_call", "socketcall"], "action": "SCMP_ACT_ALLOW"}]},
            r"none of its 2 syscall name\(s\) is known to libseccomp",
        ),
        ({"syscalls": []}, r"no rule applies: the list is empty"),
        ({"syscalls": {"read": "allow"}}, r"syscalls: expected a list, got an object"),
        ({"syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]}, r"names: expected a list"),
        ({"syscalls": [{"action": "SCMP_ACT_ALLOW"}]}, r"no syscall named"),
        ({"defaultErrno": 1}, r"unknown key\(s\) 'defaultErrno'"),
        ({"defaultErrnoRet": "EPERM"}, r"defaultErrnoRet: 'EPERM' is not an errno number"),
        (
            {"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]},
            r"errnoRet: only meaningful with action SCMP_ACT_ERRNO",
        ),
        ({"architectures": ["SCMP_ARCH_Z80"]}, r"unknown architecture 'SCMP_ARCH_Z80'"),
        (
            {
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "includes": {"minKernel": "five"},
                    }
                ]
            },
            r"includes\.minKernel: 'five' is not a kernel version",
        ),
        (
            {
                "syscalls": [
                    {"names": ["getppid"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
                ]
            },
            r"syscalls\[1\]: getppid: unconditional action SCMP_ACT_KILL_PROCESS conflicts "
            r"with SCMP_ACT_ALLOW given by syscalls\[0\]",
        ),
        (
            {
                "syscalls": [
                    {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW"},
                    {
                        "names": ["ioctl"],
                        "action": "SCMP_ACT_ERRNO",
                        "errnoRet": 38,
                        "args": [GOOD_ARG],
                    },
                ]
            },
            r"syscalls\[1\]: ioctl: this exception .* default action",
        ),
        (
            {
                "syscalls": [
                    {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW"},
                    {
                        "names": ["ioctl"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{**GOOD_ARG, "op": "SCMP_CMP_GE"}],
                    },
                ]
            },
            r"cannot compare argument 0 with SCMP_CMP_GE/GT",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [
                            {
                                "index": 0,
                                "value": 0xF0,
                                "valueTwo": 0x0F,
                                "op": "SCMP_CMP_MASKED_EQ",
                            }
                        ],
                    }
                ]
            },
            r"can never be true",
        ),
        ({"flags": ["SECCOMP_FILTER_FLAG_LOG"]}, r"flags: filter flags are not supported"),
    ],
)
def test_bad_profiles(tmp_path: Path, doc: dict, message: str) -> None:
    full = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": BASICS, **doc}
    path = tmp_path / "user.json"
    path.write_text(json.dumps(full))
    with pytest.raises(sc.ProfileError, match=r"seccomp profile '.*user\.json'") as info:
        sc.compile_profile(str(path))
    assert info.match(message)


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[]")
    with pytest.raises(sc.ProfileError, match="expected a JSON object at the top, got a list"):
        sc.compile_profile(str(path))


# ---------------------------------------------------------------------------
# Cache


def test_cache_returns_the_same_program_until_the_file_changes(tmp_path: Path) -> None:
    path = write_profile(tmp_path, BASICS)
    first = sc.compile_profile(path)
    assert sc.compile_profile(path) is first
    # Same path by another spelling: still one cache entry.
    assert sc.compile_profile(str(tmp_path / "." / "p.json")) is first

    write_profile(tmp_path, [*BASICS, {"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}])
    second = sc.compile_profile(path)
    assert second != first and sc.compile_profile(path) is second

    # A touch alone (same size, new mtime) also recompiles: the key is (path, mtime_ns, size).
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = sc.compile_profile(path)
    assert third is not second and third == second


def test_default_profile_compiles_to_a_bpf_program() -> None:
    bpf = sc.compile_profile("default")
    assert isinstance(bpf, bytes) and len(bpf) % 8 == 0
    assert len(bpf) // 8 < 4096  # BPF_MAXINSNS
    assert sc.compile_profile("default") is bpf
    # Its byte-range lock requests go to the cell's init (sandbox/locks.py).
    assert sc.notifies(bpf)


def test_a_profile_notifies_only_where_it_says_so(tmp_path: Path) -> None:
    fcntl_allowed = {"names": ["fcntl"], "action": "SCMP_ACT_ALLOW"}
    plain = sc.compile_profile(write_profile(tmp_path, [*BASICS, fcntl_allowed]))
    assert not sc.notifies(plain)
    notify = {
        "names": ["fcntl"],
        "action": "SCMP_ACT_NOTIFY",
        "args": [{"index": 1, "value": 6, "op": "SCMP_CMP_EQ"}],
    }
    locked = sc.compile_profile(write_profile(tmp_path, [*BASICS, fcntl_allowed, notify], "n.json"))
    assert sc.notifies(locked)


# ---------------------------------------------------------------------------
# Whether every socket reaches the init (seccomp.supervises_sockets): the filter
# as the kernel runs it decides whether a recycled cell may keep its network
# namespace (init.renew), so a profile that lets one socket call through unseen,
# by any path, must be answered False.

SOCKET_FAMILY = {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}


def test_the_default_profile_sends_every_socket_to_the_init() -> None:
    assert sc.supervises_sockets(sc.compile_profile("default"))


@pytest.mark.parametrize(
    ("rules", "default", "seen"),
    [
        ([("socket", "SCMP_ACT_NOTIFY", None), ("socketpair", "SCMP_ACT_NOTIFY", None)], "E", True),
        # Neither call exists for the program: nothing to see.
        ([], "SCMP_ACT_ERRNO", True),
        ([("socket", "SCMP_ACT_KILL_PROCESS", None)], "SCMP_ACT_ERRNO", True),
        # One call, or one argument, or the default action, lets a socket through.
        ([("socket", "SCMP_ACT_NOTIFY", None), ("socketpair", "SCMP_ACT_ALLOW", None)], "E", False),
        (
            [("socket", "SCMP_ACT_NOTIFY", None), ("socket", "SCMP_ACT_ALLOW", SOCKET_FAMILY)],
            "E",
            False,
        ),
        ([("socket", "SCMP_ACT_ALLOW", SOCKET_FAMILY)], "SCMP_ACT_ERRNO", False),
        ([("socket", "SCMP_ACT_NOTIFY", None)], "SCMP_ACT_ALLOW", False),
        ([("socket", "SCMP_ACT_LOG", None), ("socketpair", "SCMP_ACT_NOTIFY", None)], "E", False),
    ],
    ids=[
        "both-notified",
        "neither-allowed",
        "killed",
        "socketpair-unseen",
        "one-family-unseen",
        "family-allowed",
        "default-allows",
        "logged",
    ],
)
def test_a_filter_supervises_sockets_only_if_no_path_lets_one_through(
    tmp_path: Path, rules: list[tuple[str, str, dict | None]], default: str, seen: bool
) -> None:
    entries = [
        {"names": [name], "action": action, **({"args": [arg]} if arg else {})}
        for name, action, arg in rules
    ]
    default_action = "SCMP_ACT_ERRNO" if default == "E" else default
    bpf = sc.compile_profile(
        write_profile(tmp_path, [*BASICS, *entries], defaultAction=default_action)
    )
    assert sc.supervises_sockets(bpf) is seen


def test_a_filter_this_reading_does_not_know_supervises_nothing() -> None:
    # BPF_LDX|BPF_W|BPF_MEM then RET_USER_NOTIF: an instruction libseccomp never emits.
    unknown = bytes.fromhex("6100000000000000") + bytes.fromhex("060000000000c07f")
    assert not sc.supervises_sockets(unknown)
    assert not sc.supervises_sockets(b"")
    # A jump out of the program.
    assert not sc.supervises_sockets(bytes.fromhex("0500000005000000"))
