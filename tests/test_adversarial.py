"""Adversarial corpus: each test is one attack, shown to work on the bare host and
to fail inside the cell, as root (in-process API) and unprivileged (the CLI).

The attack programs are in tests/programs/adv_*.c; each prints one clear line
per attempt: "ESCAPED ..." when the attack worked, "blocked errno=N" when the
kernel (or the seccomp filter, with an errno action) refused it. A seccomp kill
shows up as status SV (death by SIGSYS) instead of output.

Bare runs happen as root or as the unprivileged test user (`runuser`), whichever
makes the attack meaningful; anything they leave behind on the host is removed.
SECURITY.md has the rules these attacks test ("The rules").
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from sandbox.libc import landlock_abi_version

REPO = Path(__file__).resolve().parent.parent
TEST_USER = os.environ.get("CELLBLOCK_TEST_USER", "cellblock-test")  # made by conftest
VENV = Path(os.environ.get("CELLBLOCK_VENV", "/opt/cellblock/venv"))
SIGSYS = int(signal.SIGSYS)
# A host uid nobody uses, for the bare fork bomb: its RLIMIT_NPROC then caps the
# bomb alone (outside the range cells started as root map to, 1.5e9..+65536).
BOMB_UID = 1_999_999_901
HIDDEN = (errno.ENOENT, errno.EACCES, errno.EPERM)  # "cannot see or reach it"


# --- helpers ------------------------------------------------------------------


def lines(text: str) -> dict[str, str]:
    """'PATH: rest' lines of adv_paths and friends as {PATH: rest}."""
    result = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(": ")
        if sep:
            result[key] = rest
    return result


def errno_of(text: str) -> int:
    match = re.search(r"blocked errno=(\d+)", text)
    assert match, f"no 'blocked errno=' in {text!r}"
    return int(match.group(1))


def processes_with(*needles: str) -> list[int]:
    """Host pids whose command line contains one of `needles` (not ours)."""
    found = []
    wanted = [n.encode() for n in needles]
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if any(n in cmdline for n in wanted):
            found.append(int(entry))
    return found


def wait_until_gone(*needles: str, within: float) -> list[int]:
    deadline = time.monotonic() + within
    while (left := processes_with(*needles)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def assert_killed_by_seccomp(result) -> None:
    assert result.status == "SV", (result.status, result.message, result.stdout, result.stderr)
    assert result.signal == SIGSYS and result.exit_code is None
    assert "ESCAPED" not in result.stdout


def cli_as_user(
    user,
    scratch: Path,
    argv: list[str],
    *,
    copy_in: Mapping[str, bytes],
    copy_out: tuple[str, ...] = (),
    pass_fds: tuple[int, ...] = (),
) -> tuple[dict, Path, Path]:
    """`cellblock run --json` as the test user, like conftest's runner, but keeping the
    --out-dir for inspection and letting the caller pass descriptors to the CLI.
    Returns (RunResult JSON, out dir, work dir); the caller removes the work dir."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    out = work / "out"
    out.mkdir()
    for path in (work, out):
        os.chown(path, user.pw_uid, user.pw_gid)
    args = ["--json", "--out-dir", str(out)]
    for index, (dest, data) in enumerate(copy_in.items()):
        src = work / f"in{index}"
        src.write_bytes(data)
        src.chmod(0o755)
        args += ["--copy-in", f"{src}:{dest}"]
    for path in copy_out:
        args += ["--copy-out", path]
    readable = (
        subprocess.run(
            ["runuser", "-u", user.pw_name, "--", "test", "-r", str(REPO / "cellblock" / "cli.py")],
            check=False,
        ).returncode
        == 0
    )
    if readable:
        command = ["env", f"PYTHONPATH={REPO}", str(VENV / "bin" / "python"), "-m", "cellblock"]
    else:
        command = [str(VENV / "bin" / "cellblock")]
    done = subprocess.run(
        ["runuser", "-u", user.pw_name, "--", *command, "run", *args, "--", *argv],
        capture_output=True,
        cwd="/",
        pass_fds=pass_fds,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return json.loads(done.stdout), out, work


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts whatever the test waits on."""

    def expired(signum, frame):
        raise TimeoutError(f"hung for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def kernel_config(option: str) -> bool | None:
    """Whether the running kernel was built with `option`; None if unknown."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            config = f.read()
    except OSError:
        return None
    return f"\n{option}=y" in config


def read_sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


# --- 1. network -----------------------------------------------------------------


def test_network_host_loopback_unreachable(cell, program, bare):
    binary = program("adv_connect")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = str(listener.getsockname()[1])

        done = bare.run(binary, port, as_user=True)
        assert done.stdout.strip() == f"ESCAPED connected to 127.0.0.1:{port}", done

        result = cell.run(
            ["sh", "-c", './prog "$1"; cat /proc/net/dev', "sh", port], copy_in={"prog": binary}
        )
    assert result.status == "OK", (result.message, result.stderr)
    first, *net_dev = result.stdout.splitlines()
    assert first == f"blocked errno={errno.ECONNREFUSED}", result.stdout
    interfaces = [line.split(":")[0].strip() for line in net_dev if ":" in line]
    assert interfaces == ["lo"], result.stdout


def test_host_abstract_unix_socket_unreachable(cell, program, bare):
    binary = program("adv_abstract")
    name = f"cellblock-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(b"\0" + name.encode())
        listener.listen(16)
        done = bare.run(binary, name, as_user=True)
        assert done.stdout.strip() == f"ESCAPED connected to @{name}", done
        result = cell.run(["./prog", name], copy_in={"prog": binary})
    assert result.status == "OK", (result.message, result.stderr)
    assert result.stdout.strip() == f"blocked errno={errno.ECONNREFUSED}", result.stdout


def test_host_sysv_shared_memory_unreachable(cell, program, bare):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    key = 0x0CB00000 + os.getpid() % 0x10000
    segment = libc.shmget(key, 4096, 0o1000 | 0o644)  # IPC_CREAT, readable by all
    assert segment >= 0, os.strerror(ctypes.get_errno())
    try:
        address = libc.shmat(segment, None, 0)
        ctypes.memmove(address, b"host-secret", 11)
        libc.shmdt(ctypes.c_void_p(address))
        binary = program("adv_sysv")
        done = bare.run(binary, str(key), as_user=True)
        assert done.stdout.strip() == "ESCAPED read host-secret", done
        result = cell.run(["./prog", str(key)], copy_in={"prog": binary})
    finally:
        libc.shmctl(segment, 0, None)  # IPC_RMID
    assert result.status == "OK", (result.message, result.stderr)
    assert result.stdout.strip() == f"blocked errno={errno.ENOENT}", result.stdout


# --- 2. reading host files --------------------------------------------------------


def test_host_files_invisible(cell, program, bare):
    binary = program("adv_paths")
    secret_dir = Path(tempfile.mkdtemp(prefix="cellblock-adv-secret-", dir="/tmp"))
    try:
        secret_dir.chmod(0o755)
        secret = secret_dir / "secret.txt"
        token = f"cellblock-secret-{uuid.uuid4().hex}"
        secret.write_text(token + "\n")
        secret.chmod(0o644)
        dirs = ["/root", "/home", "/work", str(REPO), "/opt/cellblock"]
        dirs = [d for d in dirs if os.path.lexists(d)]
        assert str(REPO) in dirs and "/opt/cellblock" in dirs

        done = bare.run(binary, "read", str(secret), as_user=True)
        assert f"ESCAPED read {len(token) + 1} bytes: {token}" in done.stdout, done
        done = bare.run(binary, "stat", *dirs)  # as root: the checkout may be private
        assert all(v == "ESCAPED exists" for v in lines(done.stdout).values()), done.stdout
        assert len(lines(done.stdout)) == len(dirs)

        result = cell.run(["./prog", "read", str(secret)], copy_in={"prog": binary})
        assert result.status == "OK", (result.message, result.stderr)
        assert token not in result.stdout
        assert lines(result.stdout) == {str(secret): f"blocked errno={errno.ENOENT}"}

        result = cell.run(["./prog", "stat", *dirs], copy_in={"prog": binary})
        assert result.status == "OK", (result.message, result.stderr)
        assert lines(result.stdout) == {d: f"blocked errno={errno.ENOENT}" for d in dirs}
    finally:
        shutil.rmtree(secret_dir)


# --- 3. writing host files ----------------------------------------------------------


def test_host_file_writes_stay_in_cell(cell, program, bare):
    binary = program("adv_paths")
    name = f"cellblock-adv-marker-{uuid.uuid4().hex}"
    # Those the host lets root write (in the VM of scripts/vm-test, / and /usr are
    # a read-only share): the control must show each write landing.
    host_targets = [
        p
        for p in (f"/tmp/{name}", f"/{name}", f"/usr/bin/{name}", f"/etc/{name}")
        if os.access(os.path.dirname(p), os.W_OK)
    ]
    cell_targets = [f"/tmp/{name}", f"/box/{name}", f"/{name}", f"/usr/bin/{name}", f"/etc/{name}"]
    assert not any(os.path.lexists(p) for p in [*host_targets, f"/box/{name}"])

    # Bare, as root: every one of these writes lands on the host.
    try:
        done = bare.run(binary, "write", *host_targets)
        assert lines(done.stdout) == {p: "written" for p in host_targets}, done
        assert all(os.path.isfile(p) for p in host_targets)
    finally:
        for path in host_targets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    result = cell.run(["./prog", "write", *cell_targets], copy_in={"prog": binary})
    assert result.status == "OK", (result.message, result.stderr)
    seen = lines(result.stdout)
    assert set(seen) == set(cell_targets), result.stdout
    for path in cell_targets[:2]:  # the cell's own writable dirs: fine, and gone afterwards
        assert seen[path] == "written", result.stdout
    # The cell's / belongs to cell root: writable by the program only when it runs as
    # cell root (unprivileged mode); as cell uid 1000 (started as root) EACCES.
    assert seen[f"/{name}"] in ("written", f"blocked errno={errno.EACCES}"), result.stdout
    for path in cell_targets[3:]:
        assert errno_of(seen[path]) in (errno.EROFS, errno.EACCES), result.stdout
    leftovers = [p for p in [*host_targets, f"/box/{name}"] if os.path.lexists(p)]
    assert leftovers == []


# --- 4. leaked descriptors ------------------------------------------------------------


def test_leaked_fds_closed(cell, program, bare, scratch_dir):
    binary = program("adv_fds")
    secret_dir = Path(tempfile.mkdtemp(prefix="cellblock-adv-fd-", dir="/tmp"))
    secret = secret_dir / "secret.txt"
    token = f"fdsecret-{uuid.uuid4().hex}"
    secret.write_text(token)
    secret.chmod(0o644)
    secret_fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(secret_fd, True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.set_inheritable(True)
    leaked = (secret_fd, sock.fileno())
    work = None
    try:
        assert all(3 <= fd <= 64 for fd in leaked)
        done = bare.run(binary, pass_fds=leaked, as_user=True)
        assert f"ESCAPED fd={secret_fd} -> {secret}: {token}" in done.stdout, done
        assert f"ESCAPED fd={sock.fileno()} -> socket:" in done.stdout, done

        if cell.mode == "root":  # the descriptors are open and inheritable in this process
            result = cell.run(["./prog"], copy_in={"prog": binary})
            stdout, status = result.stdout, result.status
        else:  # hand them to the CLI, the supervisor of an unprivileged run
            data, _, work = cli_as_user(
                cell.user, scratch_dir, ["./prog"], copy_in={"prog": binary}, pass_fds=leaked
            )
            stdout, status = data["stdout"], data["status"]
    finally:
        os.close(secret_fd)
        sock.close()
        shutil.rmtree(secret_dir)
        if work is not None:
            shutil.rmtree(work)
    assert status == "OK", stdout
    assert "ESCAPED" not in stdout and token not in stdout
    listing = re.search(r"^listing: ([\d ]+) \(own=(\d+)\)$", stdout, re.M)
    assert listing, stdout
    assert sorted(listing.group(1).split(), key=int) == ["0", "1", "2", listing.group(2)]
    assert "closed: 61" in stdout.splitlines()  # every fd in 3..64 but the listing's own


# --- 4b. Landlock: nothing outside the cell's own tree opens, even through a descriptor --


LANDLOCK_ABI = landlock_abi_version()
needs_landlock = pytest.mark.skipif(LANDLOCK_ABI == 0, reason="this kernel has no Landlock")


def _run_with_host_stdout(binary: bytes, fd: int, script: str):
    """In-process, with `fd` (a host file or directory) as the program's stdout:
    what a caller's sandbox.RunSpec(stdout_fd=...) does, or a leak would."""
    import sandbox
    from sandbox.spec import Limits, RunSpec

    result = sandbox.run_spec(
        RunSpec(
            argv=("sh", "-c", script), limits=Limits.build(), copy_in={"prog": binary}, stdout_fd=fd
        )
    )
    assert result.status == "OK", (result.message, result.stderr)
    return result


@needs_landlock
def test_landlock_refuses_reopening_a_host_file_given_as_stdout(program, tmp_path, monkeypatch):
    # Writing to it is the point; reopening it through /proc/self/fd, to read what
    # was there before or truncate it, must not work.
    from sandbox import landlock

    binary = program("adv_paths")

    def attempt() -> str:
        target = tmp_path / "out.txt"
        target.write_text("host-secret\n")
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        _run_with_host_stdout(
            binary, fd, "./prog read /proc/self/fd/1; ./prog openw /proc/self/fd/1"
        )
        return target.read_text()

    blocked = f"/proc/self/fd/1: blocked errno={errno.EACCES}"
    text = attempt()
    assert text.splitlines() == ["host-secret", blocked, blocked], text
    monkeypatch.setattr(landlock, "cell_ruleset", lambda: None)  # the control
    assert "ESCAPED read 12 bytes: host-secret" in attempt()


@needs_landlock
def test_landlock_refuses_files_beneath_a_leaked_host_directory(program, tmp_path, monkeypatch):
    # SECURITY.md rule 4 closes every inherited descriptor; were a host directory's to reach
    # the program anyway, nothing beneath it may open: openat through it, or a path
    # through its /proc/self/fd link.
    from sandbox import landlock

    binary = program("adv_paths")
    secret = tmp_path / "secret.txt"
    secret.write_text("host-secret\n")
    secret.chmod(0o644)
    tmp_path.chmod(0o755)
    script = "exec 3<&1; ./prog read /proc/self/fd/3/secret.txt >&2"

    def attempt() -> str:
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return _run_with_host_stdout(binary, fd, script).stderr

    assert attempt().strip() == f"/proc/self/fd/3/secret.txt: blocked errno={errno.EACCES}"
    monkeypatch.setattr(landlock, "cell_ruleset", lambda: None)  # the control
    assert "ESCAPED read 12 bytes: host-secret" in attempt()


# --- 5. ptrace and /proc of the init ----------------------------------------------------


@pytest.mark.parametrize("mode", ["traceme", "attach"])
def test_ptrace_killed(cell, program, bare, mode):
    binary = program("adv_ptrace")
    if mode == "traceme":
        done = bare.run(binary, "traceme", as_user=True)
        assert done.stdout.strip() == "ESCAPED traceme", done
        argv = ["./prog", "traceme"]
    else:
        victim = subprocess.Popen(["sleep", "30"])
        try:
            done = bare.run(binary, "attach", str(victim.pid))
            assert done.stdout.strip() == f"ESCAPED attached to {victim.pid}", done
        finally:
            victim.kill()
            victim.wait()
        argv = ["./prog", "attach", "1"]
    assert_killed_by_seccomp(cell.run(argv, copy_in={"prog": binary}))


def test_init_proc_files_unreadable(cell, program, bare):
    binary = program("adv_ptrace")
    victim = subprocess.Popen(["sleep", "30"])
    try:
        done = bare.run(binary, "proc", str(victim.pid))
    finally:
        victim.kill()
        victim.wait()
    seen = lines(done.stdout)
    assert (seen["mem"], seen["root"]) == ("ESCAPED opened", "ESCAPED -> /"), done
    assert seen["environ"].startswith("ESCAPED read "), done

    result = cell.run(["./prog", "proc", "1"], copy_in={"prog": binary})
    assert result.status == "OK", (result.message, result.stderr)
    seen = lines(result.stdout)
    assert set(seen) == {"mem", "environ", "root"}, result.stdout
    for what, outcome in seen.items():
        assert errno_of(outcome) in HIDDEN, (what, result.stdout)


# --- 6. namespaces, mounts, changing the root -------------------------------------------


ESCAPE_MODES = ["mount", "unshare_user", "setns", "chroot", "pivot_root"]


@pytest.mark.parametrize("mode", ESCAPE_MODES)
def test_namespace_and_mount_calls_killed(cell, program, bare, mode):
    binary = program("adv_escape")
    if mode == "mount":  # as root, in a mount namespace of its own
        done = bare.run(binary, mode, prefix=("unshare", "-m", "--propagation", "private"))
    elif mode == "unshare_user":  # what any unprivileged user may do on this host
        done = bare.run(binary, mode, as_user=True)
    elif mode == "pivot_root":  # as root, into a throwaway tmpfs of a new mount namespace
        target = tempfile.mkdtemp(prefix="cellblock-adv-pivot-")
        try:
            done = subprocess.run(
                [
                    "unshare",
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    'mount -t tmpfs cellblock-adv "$1" && cd "$1" && exec "$2" pivot_root',
                    "sh",
                    target,
                    bare.install(binary),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        finally:
            os.rmdir(target)
    else:  # setns into our own namespace, chroot("."): as root
        done = bare.run(binary, mode)
    assert done.stdout.strip() == f"ESCAPED {mode}", done

    assert_killed_by_seccomp(cell.run(["./prog", mode], copy_in={"prog": binary}))


def test_unshare_tool_killed(cell, test_user):
    done = subprocess.run(
        ["runuser", "-u", TEST_USER, "--", "unshare", "-Ur", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done
    assert_killed_by_seccomp(cell.run(["unshare", "-Ur", "true"]))


# --- 7. nested user namespaces through clone and clone3 -----------------------------------


@pytest.mark.parametrize(("mode", "expected"), [("clone", errno.EPERM), ("clone3", errno.ENOSYS)])
def test_nested_userns_refused(cell, program, bare, mode, expected):
    binary = program("adv_nested_userns")
    done = bare.run(binary, mode, as_user=True)
    assert done.stdout.startswith(f"ESCAPED {mode} child="), done

    result = cell.run(["./prog", mode], copy_in={"prog": binary})
    # Refused with an errno, not killed: runtimes probe these and fall back.
    assert result.status == "OK", (result.message, result.stderr)
    assert result.stdout.strip() == f"blocked errno={expected}"


def test_nested_userns_refused_even_where_the_profile_allows_it(
    cell, program, bare, scratch_dir, monkeypatch
):
    # SECURITY.md rule 16, its second half: the cell's own user.max_user_namespaces is 0, so a
    # caller's permissive seccomp profile does not open nested user namespaces.
    profile = scratch_dir / "allow-all.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["acct"], "action": "SCMP_ACT_ERRNO"}],
            }
        )
    )
    profile.chmod(0o644)
    binary = program("adv_nested_userns")
    done = bare.run(binary, "clone", as_user=True)
    assert done.stdout.startswith("ESCAPED clone child="), done

    result = cell.run(["./prog", "clone"], copy_in={"prog": binary}, seccomp=str(profile))
    assert result.status == "OK", (result.message, result.stderr)
    assert result.stdout.strip() == f"blocked errno={errno.ENOSPC}", result.stdout

    if cell.mode == "root":
        # The control: a cold cell (made by this process, from its limits) without it.
        import sandbox
        from sandbox import userns

        sandbox.keep_warm(False)
        without = {
            k: v for k, v in userns.CELL_NAMESPACE_LIMITS.items() if k != "max_user_namespaces"
        }
        monkeypatch.setattr(userns, "CELL_NAMESPACE_LIMITS", without)
        result = cell.run(["./prog", "clone"], copy_in={"prog": binary}, seccomp=str(profile))
        assert result.stdout.startswith("ESCAPED clone child="), result.stdout


# --- 8. io_uring ----------------------------------------------------------------------


def test_io_uring_enosys(cell, program, bare):
    binary = program("adv_io_uring")
    done = bare.run(binary, as_user=True)
    if read_sysctl("/proc/sys/kernel/io_uring_disabled") in (None, "0"):
        assert re.fullmatch(r"ESCAPED fd=\d+", done.stdout.strip()), done
    else:  # the host itself restricts io_uring: the bare call is refused by the kernel
        assert done.stdout.startswith("blocked errno="), done

    result = cell.run(["./prog"], copy_in={"prog": binary})
    assert result.status == "OK", (result.message, result.stderr)
    assert result.stdout.strip() == f"blocked errno={errno.ENOSYS}"


# --- 9. foreign system call ABIs --------------------------------------------------------


@pytest.mark.parametrize("mode", ["int80", "x32"])
def test_foreign_abi_killed(cell, program, bare, mode):
    binary = program("adv_abi")
    done = bare.run(binary, mode, as_user=True)
    works = re.fullmatch(rf"ESCAPED {mode} ret=(\d+) pid=\1", done.stdout.strip())
    if mode == "int80" or kernel_config("CONFIG_X86_X32_ABI"):
        assert works, done
    elif kernel_config("CONFIG_X86_X32_ABI") is False:
        # This kernel has no x32 ABI: the bare call reaches it and gets ENOSYS.
        # The filter must still kill: a kernel with x32 would run it as native.
        assert done.stdout.strip() == f"blocked errno={errno.ENOSYS} ret=-1", done
    else:
        assert works or "errno=38" in done.stdout, done

    assert_killed_by_seccomp(cell.run(["./prog", mode], copy_in={"prog": binary}))


# --- 10. TIOCSTI ------------------------------------------------------------------------


def test_tiocsti_refused(cell, program, bare):
    binary = program("adv_tiocsti")
    legacy = read_sysctl("/proc/sys/dev/tty/legacy_tiocsti")
    for variant in ((), ("high",)):
        done = bare.run(binary, "pty", *variant, as_user=True)
        if legacy in (None, "1"):
            assert done.stdout.strip() == "ESCAPED injected Z", done
        else:  # the host kernel refuses TIOCSTI to the unprivileged
            assert done.stdout.strip() == f"blocked errno={errno.EIO}", done
    # On the bare host the standard descriptors are pipes: the kernel answers ENOTTY.
    done = bare.run(binary, "std", as_user=True)
    assert done.stdout.splitlines() == [
        f"fd={fd} {w} errno={errno.ENOTTY}" for fd in range(3) for w in ("low", "high")
    ], done

    result = cell.run(
        ["sh", "-c", "./prog std; ./prog devs; ./prog pty; ./prog pty high"],
        copy_in={"prog": binary},
    )
    assert result.status == "OK", (result.message, result.stderr)
    # EPERM from the filter, for the plain request and with garbage in its upper half.
    assert result.stdout.splitlines() == [
        *(f"fd={fd} {w} errno={errno.EPERM}" for fd in range(3) for w in ("low", "high")),
        f"/dev/tty: errno={errno.ENOENT}",
        f"/dev/ptmx: errno={errno.ENOENT}",
        f"setup failed errno={errno.ENOENT}",
        f"setup failed errno={errno.ENOENT}",
    ]


# --- 11. copy-out of planted links and FIFOs ----------------------------------------------


PLANT = """
ln -s /etc/passwd out_passwd
ln -s /proc/1/environ out_environ
ln -s /etc out_dir
mkfifo out_fifo
ln /etc/shadow out_shadow 2>/dev/null || echo "hard link refused"
echo regular > out_regular
ls -l
"""
COPY_OUT = ("out_passwd", "out_environ", "out_dir/passwd", "out_fifo", "out_shadow", "out_regular")


def test_copy_out_takes_regular_files_only(cell, scratch_dir, test_user):
    # Bare: the test user plants the same files in a host directory; a naive copier
    # (open by name, as root) follows the links out of it.
    host_dir = Path(tempfile.mkdtemp(dir=scratch_dir))
    try:
        os.chown(host_dir, test_user.pw_uid, -1)
        subprocess.run(
            ["runuser", "-u", TEST_USER, "--", "sh", "-c", PLANT],
            cwd=host_dir,
            capture_output=True,
            check=True,
            timeout=30,
        )
        passwd = Path("/etc/passwd").read_bytes()
        assert (host_dir / "out_passwd").read_bytes() == passwd
        assert (host_dir / "out_dir" / "passwd").read_bytes() == passwd
    finally:
        shutil.rmtree(host_dir)

    with deadline(60):  # a FIFO or a device must not hang the copy-out
        result = cell.run(["sh", "-c", PLANT], copy_out=COPY_OUT)
    assert result.status == "OK", (result.message, result.stderr)
    assert "hard link refused" in result.stdout
    assert result.files == {"out_regular": b"regular\n"}

    if cell.mode != "root":  # and the CLI wrote nothing else into --out-dir
        data, out, work = cli_as_user(
            cell.user, scratch_dir, ["sh", "-c", PLANT], copy_in={}, copy_out=COPY_OUT
        )
        try:
            assert data["status"] == "OK"
            assert os.listdir(out) == ["out_regular"]
            assert not os.path.islink(out / "out_regular")
            assert (out / "out_regular").read_bytes() == b"regular\n"
        finally:
            shutil.rmtree(work)


INIT_FILES = ("status", "maps", "cmdline", "environ", "mountinfo")
REPLACE_BOX = "cd / && rmdir /box && ln -s /proc/1 /box && echo replaced"


def test_copy_out_box_replaced_by_symlink(cell, scratch_dir, test_user):
    """The program swaps /box itself for a link to the init's /proc directory: a copy-out
    that opens "/box" by name (following links) then reads the init's own /proc files,
    which the program cannot read (the init is invisible to it and not dumpable)."""
    # Bare: the test user swaps its dir for a link; a root copier opening it by name
    # follows the link into /proc/1 and reads what it finds there.
    host_dir = Path(tempfile.mkdtemp(dir=scratch_dir))
    try:
        (host_dir / "box").mkdir()
        for path in (host_dir, host_dir / "box"):
            os.chown(path, test_user.pw_uid, -1)
        subprocess.run(
            ["runuser", "-u", TEST_USER, "--", "sh", "-c", "rmdir box && ln -s /proc/1 box"],
            cwd=host_dir,
            check=True,
            timeout=30,
        )
        box = os.open(host_dir / "box", os.O_PATH | os.O_DIRECTORY)
        try:
            status = os.open("status", os.O_RDONLY, dir_fd=box)
            with os.fdopen(status, "rb") as f:
                assert f.read().startswith(b"Name:")
        finally:
            os.close(box)
    finally:
        shutil.rmtree(host_dir)

    result = cell.run(["sh", "-c", REPLACE_BOX], copy_out=INIT_FILES)
    # Started as root the program (cell uid 1000) may not touch / at all; as cell
    # root (unprivileged mode) it may, and then nothing may come out of /proc/1.
    assert result.status in ("OK", "RE"), (result.message, result.stderr)
    leaked = {path: data[:60] for path, data in result.files.items()}
    assert result.files == {}, (result.stdout, result.stderr, leaked)


@pytest.mark.parametrize("replacement", ["", "touch /box", "mkfifo /box"])
def test_box_removed_keeps_verdict(cell, scratch_dir, test_user, replacement):
    """A program that removes (or replaces) /box and fails must get its own verdict
    (RE, exit 1), not IE: a forged "the sandbox failed" hides a wrong answer."""
    # Bare: a supervisor that opens the box by name after the run trips over it.
    host_dir = Path(tempfile.mkdtemp(dir=scratch_dir))
    try:
        (host_dir / "box").mkdir()
        for path in (host_dir, host_dir / "box"):
            os.chown(path, test_user.pw_uid, -1)
        script = f"rmdir box && {replacement.replace('/box', 'box') or ':'}"
        subprocess.run(
            ["runuser", "-u", TEST_USER, "--", "sh", "-c", script],
            cwd=host_dir,
            check=True,
            timeout=30,
        )
        with pytest.raises(OSError):
            os.close(os.open(host_dir / "box", os.O_PATH | os.O_DIRECTORY))
    finally:
        shutil.rmtree(host_dir)

    script = f"cd / && rmdir /box && {replacement or ':'} && echo removed; exit 1"
    result = cell.run(["sh", "-c", script], copy_out=("out",))
    assert (result.status, result.exit_code) == ("RE", 1), (result.status, result.message)
    assert result.files == {}


# --- 12. a daemon that tries to outlive the run ---------------------------------------------


def test_daemon_does_not_outlive_run(cell, program, bare):
    binary = program("adv_daemon")

    def markers() -> tuple[str, str]:
        tag = uuid.uuid4().int % 10**9
        return f"cellblock-adv-daemon-{tag}", f"300.{tag:09d}"

    marker, seconds = markers()
    try:
        done = bare.run(binary, marker, seconds, as_user=True)
        assert done.stdout.startswith("DAEMONIZED pid="), done
        time.sleep(0.1)  # nohup execs sleep
        survivors = processes_with(marker, seconds)
        assert len(survivors) == 2, survivors  # the daemon and its `nohup sleep`
    finally:
        kill_pids(processes_with(marker, seconds))
    assert wait_until_gone(marker, seconds, within=2) == []

    marker, seconds = markers()
    try:
        result = cell.run(["./prog", marker, seconds], copy_in={"prog": binary})
        assert result.status == "OK", (result.message, result.stderr)
        assert result.stdout.startswith("DAEMONIZED pid=")
        assert wait_until_gone(marker, seconds, within=1.0) == []
    finally:
        kill_pids(processes_with(marker, seconds))


# --- 13. signals to the init ----------------------------------------------------------------


def test_signals_to_init_ignored(cell, program, bare, tmp_path):
    binary = program("adv_kill_init")
    signals = ["SIGTERM", "SIGINT", "SIGHUP", "SIGSTOP", "SIGKILL"]
    victim = subprocess.Popen(["sleep", "30"])
    try:
        done = bare.run(binary, str(victim.pid), cwd=tmp_path)
        assert victim.wait(timeout=5) == -signal.SIGTERM
    finally:
        victim.kill()
        victim.wait()
    assert done.stdout.splitlines()[:5] == [f"{name} ret=0 errno=0" for name in signals], done

    result = cell.run(["./prog", "1"], copy_in={"prog": binary}, copy_out=("after",))
    # The run ends with the program's own verdict (exit 3), and the init, still
    # alive (and not stopped), reaped it and copied its file out.
    assert (result.status, result.exit_code, result.signal) == ("RE", 3, None), result
    assert result.wall_time < 2
    sent, last = result.stdout.splitlines()[:5], result.stdout.splitlines()[-1]
    assert last == "still here"
    assert [line.split()[0] for line in sent] == signals, result.stdout
    for line in sent:
        # Refused (EPERM) when the program's uid differs from the init's; "delivered"
        # but ignored when both are cell root: a PID namespace's init ignores signals
        # from inside for which it has no handler, SIGKILL and SIGSTOP included.
        assert line.endswith(("ret=-1 errno=1", "ret=0 errno=0")), result.stdout
    assert result.files == {"after": b"survived\n"}


# --- 14. fork bomb ------------------------------------------------------------------------


BOMB = ":(){ :|:& };:; sleep 10"  # bash; the sleep keeps the main process in the cell


def test_fork_bomb_contained(cell):
    marker = f"cellblock-adv-bomb-{uuid.uuid4().hex}"
    # Bare, as an otherwise unused uid with RLIMIT_NPROC 32: killing the bomb's first
    # process (what a naive supervisor does) leaves the rest running on the host.
    bomb = subprocess.Popen(
        [
            "prlimit",
            "--nproc=32:32",
            "setpriv",
            f"--reuid={BOMB_UID}",
            f"--regid={BOMB_UID}",
            "--clear-groups",
            "bash",
            "-c",
            BOMB,
            marker,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
    )
    try:
        # Until the bomb has spread (slow machines, emulated VMs: no fixed head start).
        spread_deadline = time.monotonic() + 20
        while len(processes_with(marker)) < 4 and time.monotonic() < spread_deadline:
            time.sleep(0.05)
        bomb.kill()
        bomb.wait()
        left_bare = processes_with(marker)
        assert len(left_bare) > 1, left_bare
    finally:
        cleanup_deadline = time.monotonic() + 10
        while processes_with(marker) and time.monotonic() < cleanup_deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bomb.pid, signal.SIGKILL)
            time.sleep(0.05)
    assert processes_with(marker) == []

    marker = f"cellblock-adv-bomb-{uuid.uuid4().hex}"
    start = time.monotonic()
    try:
        result = cell.run(["bash", "-c", BOMB, marker], pids=32, wall_time=3)
        # Ended by its limit; or IE when the machine took part of its wall time
        # (CI saw one of its 30 processes queue for a third of it while the cell
        # used 0.03 s: most likely a stall of the VM; sandbox/cpuwait.py).
        assert result.status in ("TLE", "RE") or (
            result.status == "IE" and "the machine was overloaded" in result.message
        ), (result.status, result.message)
        assert time.monotonic() - start < 60  # not hung (the wall limit is 3 s)
        assert "fork" in result.stderr  # the bomb did run into the limit
        assert wait_until_gone(marker, within=1.0) == []
    finally:
        kill_pids(processes_with(marker))


# --- 15. /sys, /proc/sys, sysrq, hostname ---------------------------------------------------


def test_sys_and_proc_sys_closed(cell, program, bare):
    binary = program("adv_paths")
    hostname_file = "/proc/sys/kernel/hostname"
    done = bare.run(binary, "stat", "/sys")
    assert done.stdout.strip() == "/sys: ESCAPED exists", done
    # As root in a UTS namespace of its own: the host's name is not touched.
    done = bare.run(binary, "write", hostname_file, prefix=("unshare", "-u"))
    assert done.stdout.strip() == f"{hostname_file}: written", done
    done = bare.run(binary, "openw", "/proc/sysrq-trigger")
    if os.path.exists("/proc/sysrq-trigger"):
        assert done.stdout.strip() == "/proc/sysrq-trigger: ESCAPED opened for writing", done
    else:  # a kernel without CONFIG_MAGIC_SYSRQ
        assert done.stdout.strip() == f"/proc/sysrq-trigger: blocked errno={errno.ENOENT}"

    result = cell.run(
        [
            "sh",
            "-c",
            f"./prog stat /sys; ./prog write {hostname_file}; "
            f'./prog openw /proc/sysrq-trigger; echo "hostname: $(cat {hostname_file})"',
        ],
        copy_in={"prog": binary},
    )
    assert result.status == "OK", (result.message, result.stderr)
    seen = lines(result.stdout)
    assert seen["/sys"] == f"blocked errno={errno.ENOENT}", result.stdout
    assert errno_of(seen[hostname_file]) in (errno.EROFS, errno.EACCES, errno.EPERM)
    assert errno_of(seen["/proc/sysrq-trigger"]) in (errno.EROFS, errno.EACCES, errno.ENOENT)
    assert seen["hostname"] == "cellblock"


def test_hostname_change_killed(cell):
    done = subprocess.run(
        ["unshare", "-u", "sh", "-c", "hostname cellblock-adv && hostname"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stdout.strip() == "cellblock-adv", done
    assert_killed_by_seccomp(cell.run(["hostname", "x"]))


# --- 16. the supervisor's environment --------------------------------------------------------


def test_environment_not_leaked(cell, program, bare, monkeypatch):
    binary = program("adv_environ")
    monkeypatch.setenv("CELLBLOCK_TEST_SECRET", "s3cr3t")
    # Bare: the program and its parent carry whatever the supervisor had.
    done = subprocess.run(
        ["sh", "-c", '"$0" "$1"; :', bare.install(binary), "s3cr3t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    seen = lines(done.stdout)
    assert seen["self"] == seen["parent"] == "ESCAPED contains s3cr3t", done

    result = cell.run(["./prog", "s3cr3t"], copy_in={"prog": binary})
    assert result.status == "OK", (result.message, result.stderr)
    seen = lines(result.stdout)
    assert set(seen) == {"self", "parent", "init"}, result.stdout
    assert seen["self"].startswith("clean ("), result.stdout
    for which in ("parent", "init"):  # the parent is the init, PID 1
        assert seen[which].startswith("clean (") or errno_of(seen[which]) in HIDDEN, seen
    assert "ESCAPED" not in result.stdout


# --- 17. one host id range per live cell (cells started as root) --------------------------


@pytest.mark.needs_root
def test_live_cells_never_share_host_ids():
    # SECURITY.md rule 11: two cells alive at once run as different host uids, so a program
    # that got out of its cell with its host uid would own nothing of another's.
    # The attack is made from the host, as the first cell's program's host uid,
    # on the second cell's program: signal 0 (kill's permission check). The
    # control: the same check as the second program's own uid succeeds.
    import threading

    import sandbox

    sandbox.keep_warm(False)  # two cold cells: neither is taken from the other's maker
    markers = ("7.31", "7.32")
    results: dict[str, object] = {}
    threads = [
        threading.Thread(
            target=lambda m=m: results.__setitem__(m, sandbox.run(["sleep", m], wall_time=20))
        )
        for m in markers
    ]
    for thread in threads:
        thread.start()
    try:
        pids = {}
        deadline_at = time.monotonic() + 10
        while len(pids) < 2 and time.monotonic() < deadline_at:
            for m in markers:
                found = processes_with(f"sleep\0{m}")
                if found:
                    pids[m] = found[0]
            time.sleep(0.02)
        assert len(pids) == 2, pids
        uids = {m: os.stat(f"/proc/{pid}").st_uid for m, pid in pids.items()}
        assert uids[markers[0]] != uids[markers[1]], uids
        assert all(uid >= 1_500_000_000 for uid in uids.values()), uids

        def kill_as(uid: int, pid: int) -> str:
            child = os.fork()
            if child == 0:  # pragma: no cover - reports through its exit status
                code = 3
                try:
                    os.setgroups([])
                    os.setresgid(uid, uid, uid)
                    os.setresuid(uid, uid, uid)
                    os.kill(pid, 0)
                    code = 0
                except PermissionError:
                    code = 1
                finally:
                    os._exit(code)
            _, status = os.waitpid(child, 0)
            return {0: "ESCAPED signalled", 1: "blocked"}.get(
                os.waitstatus_to_exitcode(status), "error"
            )

        target = pids[markers[1]]
        assert kill_as(uids[markers[1]], target) == "ESCAPED signalled"  # the control
        assert kill_as(uids[markers[0]], target) == "blocked"
    finally:
        for pid in processes_with(*(f"sleep\0{m}" for m in markers)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for thread in threads:
            thread.join()
