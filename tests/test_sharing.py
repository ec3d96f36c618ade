"""What a cell shares with the worker that runs it and with other cells: nothing a
program could use. Each test is one attack, shown to work where the mechanism is
missing (the control: the attack run bare on the host, or in a cell without the
mechanism) and to fail in a cell, in every mode of the `cell` fixture: started
as root (warm and cold), unprivileged with a subordinate id range (the main
path) and unprivileged without one.

- the program's host uid: not the worker's where a subordinate range exists,
  and never another live cell's; the worker's private files stay private;
- per-user kernel quotas (queued signals, POSIX timers, inotify, pipe buffers):
  a cell at its quota leaves the worker its own;
- host inodes: a lock on, or a watch of, a file of the host image neither
  blocks nor observes anything outside the cell;
- kernel memory that no memory cgroup counts (byte-range locks): refused
  beyond a cap.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TEST_USER, CellRunner

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = REPO / "profiles" / "seccomp" / "default.json"


# --- helpers ------------------------------------------------------------------


def as_worker(cell: CellRunner, argv: list[str], **options: object) -> subprocess.CompletedProcess:
    """`argv` run bare on the host as the uid that runs the cells (root, or the user)."""
    if cell.user is not None:
        argv = ["runuser", "-u", cell.user.pw_name, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **options)  # type: ignore[call-overload]


def pids_named(comm: str, in_a_cell: bool) -> list[int]:
    """Live processes named `comm` (not zombies), in a cell (a PID namespace
    other than ours) or on the host."""
    ours = os.readlink("/proc/self/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat.split(") ")[1][0]
                elsewhere = os.readlink(f"/proc/{entry}/ns/pid") != ours
                if name == comm and state != "Z" and elsewhere == in_a_cell:
                    found.append(int(entry))
    return found


def pids_with(needle: str, comm: str | None = None) -> list[int]:
    """Processes whose command line holds `needle` (and whose name is `comm`:
    not the CLI that was given the same command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if needle.encode() in Path(f"/proc/{entry}/cmdline").read_bytes() and (
                    comm is None or Path(f"/proc/{entry}/comm").read_text().strip() == comm
                ):
                    found.append(int(entry))
    return found


def wait_for(find: Callable[[], list[int]], within: float = 30.0) -> list[int]:
    deadline = time.monotonic() + within
    while not (found := find()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert found, "the cell's program never showed up"
    return found


class InBackground:
    """A cell run in a thread: started, then joined with its result."""

    def __init__(self, run: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.result = run()
            except BaseException as error:  # noqa: BLE001 - re-raised in join
                self.error = error

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 120) -> object:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the cell's run did not end"
        if self.error is not None:
            raise self.error
        return self.result


def profile_without(scratch: Path, change: Callable[[dict], None]) -> str:
    """A copy of the default seccomp profile changed by `change`, readable by
    every user (the control: a cell without one rule)."""
    profile = json.loads(DEFAULT_PROFILE.read_text())
    change(profile)
    path = scratch / f"profile-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(profile))
    path.chmod(0o644)
    return str(path)


def _names(entry: dict) -> list[str]:
    return entry.get("names") or [entry.get("name")]


# --- 1. the program's host uid ------------------------------------------------


@pytest.fixture
def worker_secret(cell: CellRunner) -> Iterator[tuple[str, str]]:
    """A 0600 file of the worker's (the uid that runs the cells) in the host's /etc,
    which the `host` image shows: (path, its text)."""
    text = f"worker-secret-{uuid.uuid4().hex}"
    path = Path(f"/etc/cellblock-test-secret-{uuid.uuid4().hex[:8]}")
    path.write_text(f"{text}\n")
    path.chmod(0o600)
    if cell.user is not None:
        os.chown(path, cell.user.pw_uid, cell.user.pw_gid)
    try:
        yield str(path), text
    finally:
        path.unlink()


@pytest.mark.parametrize("how", ["cat", "c-include", "rust-include_str"])
def test_a_file_only_the_worker_may_read_stays_unread(cell, worker_secret, how):
    path, text = worker_secret
    done = as_worker(cell, ["cat", path])  # the control: the worker's uid reads it
    assert done.stdout.strip() == text, done
    if how == "cat":
        result = cell.run(["cat", path])
    elif how == "c-include":  # the compiler prints what it cannot parse
        result = cell.run(
            ["gcc", "-fsyntax-only", "prog.c"],
            copy_in={"prog.c": f'#include "{path}"\n'.encode()},
            time=20,
            memory="512M",
        )
    else:  # compiled in, then printed
        source = f'fn main() {{ print!("{{}}", include_str!("{path}")); }}\n'
        result = cell.run(
            ["sh", "-c", "rustc -o prog prog.rs && ./prog"],
            copy_in={"prog.rs": source.encode()},
            time=30,
            memory="1G",
            pids=256,
        )
    assert result.status == "RE", (result.status, result.message, result.stderr)
    assert text not in result.stdout + result.stderr
    # Unreadable as another uid; invisible where the program is the worker's own uid
    # (covered, where /etc must be bound: a host with mounts beneath it).
    bound = any("host /etc shown by bind mounts" in d for d in result.degraded)
    reason = "No such file" if cell.mode == "user-shared" and not bound else "Permission denied"
    assert reason in result.stderr or "couldn't read" in result.stderr, result.stderr


def test_a_host_directory_with_mounts_beneath_is_bound_and_said(cell, worker_secret):
    """A host directory with a mount beneath it (a container's /etc, with its
    bound /etc/hosts) cannot be an overlay's layer in a user namespace: it is
    bound instead, `degraded` says so, and what the program may not read stays
    unread (covered, where the program is the worker's own uid)."""
    path, text = worker_secret
    submount = Path(f"/etc/cellblock-test-mount-{uuid.uuid4().hex[:8]}")
    submount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "cellblock-test", str(submount)], check=True
    )
    try:
        # Its own memory limit: not a warm cell made before the mount.
        result = cell.run(["cat", path], memory="97M")
    finally:
        subprocess.run(["umount", str(submount)], check=True)
        submount.rmdir()
    assert any("host /etc shown by bind mounts" in d for d in result.degraded), result.degraded
    assert text not in result.stdout + result.stderr
    assert "Permission denied" in result.stderr, result.stderr


def test_a_judged_program_cannot_include_the_worker_s_file(worker_secret_for_judge, scratch_dir):
    """Through the judge, as the main path's worker (CLI, with subordinate ids): the
    secret is neither in a compile error nor in the output of an AC."""
    from judge_support import cli

    path, text = worker_secret_for_judge
    tmp_path = scratch_dir / f"judge-{uuid.uuid4().hex[:8]}"
    tmp_path.mkdir()
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "1.in").write_text("")
    (tests / "1.out").write_text(f"{text}\n")
    source = tmp_path / "sol.c"
    source.write_text(f'#include <stdio.h>\nint main(void) {{ puts("" \n#include "{path}"\n); }}\n')
    for entry in (tmp_path, tests, *tests.iterdir(), source):
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    # The control: compiled and run bare as the worker's uid, it prints the secret.
    compiled = subprocess.run(
        [
            "runuser",
            "-u",
            TEST_USER,
            "--",
            "sh",
            "-c",
            f"gcc -o /tmp/{tmp_path.name} {source} "
            f"&& /tmp/{tmp_path.name}; rm -f /tmp/{tmp_path.name}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compiled.stdout.strip() == text, compiled
    done = cli("judge", str(source), "--tests", str(tests), "--json", user=TEST_USER)
    assert done.stdout, done.stderr
    judged = json.loads(done.stdout)
    assert judged["verdict"] == "CE", judged
    assert text not in done.stdout + done.stderr


@pytest.fixture
def worker_secret_for_judge(test_user) -> Iterator[tuple[str, str]]:
    text = f"worker-secret-{uuid.uuid4().hex}"
    path = Path(f"/etc/cellblock-test-secret-{uuid.uuid4().hex[:8]}")
    path.write_text(f'"{text}"\n')  # a C string literal, if it were ever read
    path.chmod(0o600)
    os.chown(path, test_user.pw_uid, test_user.pw_gid)
    try:
        yield str(path), text
    finally:
        path.unlink()


def test_the_init_s_limits_cannot_be_changed(cell, program, scratch_dir):
    binary = program("adv_prlimit")
    result = cell.run(["./prog", "1"], copy_in={"prog": binary})
    assert result.stdout.strip() == f"blocked errno={errno.EPERM}", result.stdout

    # The control: a profile that lets prlimit64 reach any process. The kernel
    # alone refuses it where the program's host uid is not its init's.
    def allow_prlimit(profile: dict) -> None:
        profile["syscalls"] = [e for e in profile["syscalls"] if "prlimit64" not in _names(e)]
        profile["syscalls"].append({"names": ["prlimit64"], "action": "SCMP_ACT_ALLOW"})

    permissive = profile_without(scratch_dir, allow_prlimit)
    result = cell.run(["./prog", "1"], copy_in={"prog": binary}, seccomp=permissive)
    if cell.mode == "user-shared":
        assert result.stdout.strip() == "ESCAPED set RLIMIT_NOFILE of 1", result.stdout
    else:
        assert result.stdout.strip() == f"blocked errno={errno.EPERM}", result.stdout


@pytest.mark.parametrize("mode", ["user", "user-shared"])
def test_two_live_rootless_cells_never_share_a_host_uid(request, scratch_dir, mode):
    """With subordinate ids, two cells of one user alive at once run as two host
    uids, neither the user's; without, both are the user's own (what `degraded`
    says). The cells started as root: test_adversarial."""
    user = request.getfixturevalue("test_user" if mode == "user" else "shared_test_user")
    runner = CellRunner(mode, user, scratch_dir)
    # Sleeps far longer than two cells take to start in an emulated VM (each is
    # killed once seen): a sleep that ended before its uid was read failed here.
    markers = [f"{100 + n}.{uuid.uuid4().int % 10**6:06d}" for n in range(2)]
    runs = [InBackground(lambda m=m: runner.run(["sleep", m], wall_time=300)) for m in markers]
    try:
        pids = [
            wait_for(lambda m=m: pids_with(f"sleep\0{m}", "sleep"), within=90)[0] for m in markers
        ]
        uids = [os.stat(f"/proc/{pid}").st_uid for pid in pids]
    finally:
        for marker in markers:
            for pid in pids_with(f"sleep\0{marker}", "sleep"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        results = [run.join() for run in runs]
    if mode == "user":
        assert uids[0] != uids[1] and user.pw_uid not in uids, uids
        assert all(r.degraded == [] for r in results), [r.degraded for r in results]
    else:
        assert uids == [user.pw_uid, user.pw_uid]
        assert all("program shares the worker's uid" in r.degraded[0] for r in results)


# --- 2. per-user kernel quotas ------------------------------------------------------


def check_quotas(cell: CellRunner, binary: str) -> dict[str, str]:
    """What the worker's uid can still do: {quota: "ok" or "errno=N" or "size=N"}."""
    done = as_worker(cell, [binary, "check"], cwd="/")
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_a_cell_at_its_quotas_leaves_the_worker_its_own(cell, program, bare):
    binary = program("adv_quotas")
    checker = bare.install(binary)
    everything_left = {
        "sigqueue": "ok",
        "timer_create": "ok",
        "inotify_init1": "ok",
        "inotify_add_watch": "ok",
        "pipe": "size=65536",
    }

    # The control: the hog, bare as the test user, leaves that user nothing.
    hog = subprocess.Popen(
        ["runuser", "-u", TEST_USER, "--", checker, "hog"],
        cwd=bare.dir,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: pids_named("quota-hog", in_a_cell=False))
        drained = dict(
            line.split(" ", 1)
            for line in subprocess.run(
                ["runuser", "-u", TEST_USER, "--", checker, "check"],
                capture_output=True,
                text=True,
                cwd="/",
                check=True,
            ).stdout.splitlines()
        )
    finally:
        hog.kill()
        for pid in pids_named("quota-hog", in_a_cell=False):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        hog.communicate()
    assert drained["sigqueue"] == f"errno={errno.EAGAIN}", drained
    assert drained["timer_create"] == f"errno={errno.EAGAIN}", drained
    assert drained["inotify_init1"] == f"errno={errno.EMFILE}", drained
    assert drained["pipe"] != "size=65536", drained

    # The same hog in a cell: the worker's uid keeps everything.
    run = InBackground(lambda: cell.run(["./prog", "hog"], copy_in={"prog": binary}, wall_time=60))
    try:
        wait_for(lambda: pids_named("quota-hog", in_a_cell=True))
        left = check_quotas(cell, checker)
    finally:
        for pid in pids_named("quota-hog", in_a_cell=True):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        result = run.join()
    took = dict(item.split("=") for item in result.stdout.split()[1:])
    assert int(took["timers"]) + int(took["signals"]) <= 256, took
    assert int(took["inotify"]) <= 4 and int(took["watches"]) <= 4096, took
    if cell.mode == "user-shared":
        # Pipe buffer pages are counted per host uid, and here the program is the
        # worker's: the one quota a cell without subordinate ids still shares.
        left.pop("pipe")
        everything_left.pop("pipe")
    assert left == everything_left, (left, took)


# --- 3. host inodes -----------------------------------------------------------------


class HostContender:
    """Locks (or reads) a host file every 10 ms from a thread until stopped:
    counts the locks the host could not take (or just reads)."""

    def __init__(self, path: str, kind: str | None) -> None:
        self.conflicts = 0
        self.tries = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, args=(path, kind), daemon=True)
        self.thread.start()

    def _loop(self, path: str, kind: str | None) -> None:
        while not self._stop.is_set():
            fd = os.open(path, os.O_RDWR if kind else os.O_RDONLY)
            try:
                if kind is None:
                    os.read(fd, 4096)
                else:
                    self.tries += 1
                    try:
                        if kind == "flock":
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        else:
                            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        self.conflicts += 1
            finally:
                os.close(fd)
            time.sleep(0.01)

    def stop(self) -> HostContender:
        self._stop.set()
        self.thread.join()
        return self


@pytest.fixture
def host_file() -> Iterator[str]:
    """A file of the host image's /etc that every uid may read (and lock)."""
    path = Path(f"/etc/cellblock-test-shared-{uuid.uuid4().hex[:8]}")
    path.write_text("host file\n")
    path.chmod(0o644)
    try:
        yield str(path)
    finally:
        path.unlink()


@pytest.mark.parametrize("kind", ["flock", "posix", "ofd"])
def test_a_lock_on_a_host_file_blocks_nothing_outside(cell, program, bare, host_file, kind):
    binary = program("adv_locks")
    # The control: the same lock taken bare makes the host's own locking fail.
    host = HostContender(host_file, kind)
    try:
        done = bare.run(binary, "hold", kind, host_file, "1.0", as_user=True)
    finally:
        host.stop()
    assert done.stdout.strip() == "locked", done
    assert host.conflicts > 0

    host = HostContender(host_file, kind)
    try:
        result = cell.run(["./prog", "hold", kind, host_file, "1.0"], copy_in={"prog": binary})
    finally:
        host.stop()
    assert result.stdout.strip() == "locked", (result.stdout, result.stderr)
    assert host.tries > 0 and host.conflicts == 0, (host.tries, host.conflicts)


def test_a_watch_on_a_host_file_sees_nothing_outside(cell, program, bare, host_file):
    binary = program("adv_locks")
    # The control: a watch taken bare sees the host read the file.
    host = HostContender(host_file, None)
    try:
        done = bare.run(binary, "watch", host_file, "1.0", as_user=True)
    finally:
        host.stop()
    assert int(done.stdout.split()[1]) > 0, done

    # In a cell, neither the host's reads nor another cell's are seen.
    host = HostContender(host_file, None)
    try:
        reader = InBackground(
            lambda: cell.run(
                [
                    "sh",
                    "-c",
                    f"end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do "
                    f"cat {host_file} > /dev/null; done",
                ],
                wall_time=20,
            )
        )
        result = cell.run(["./prog", "watch", host_file, "1.0"], copy_in={"prog": binary})
    finally:
        host.stop()
    assert reader.join().status == "OK"
    assert result.stdout.strip() == "events 0", (result.stdout, result.stderr)


# --- 4. kernel memory no cgroup counts ---------------------------------------------


def file_locks_in_the_kernel() -> int:
    with open("/proc/slabinfo") as f:
        for line in f:
            if line.startswith("file_lock_cache "):
                return int(line.split()[1])
    raise AssertionError("no file_lock_cache in /proc/slabinfo")


def test_a_flood_of_byte_range_locks_is_refused(cell, program, scratch_dir):
    binary = program("adv_locks")
    result = cell.run(["./prog", "flood", "400000"], copy_in={"prog": binary}, memory="32M")
    assert result.status == "OK", (result.status, result.message, result.stderr)
    made = int(re.search(r"locks (\d+)", result.stdout).group(1))
    assert made <= 8192 and f"refused errno={errno.ENOLCK}" in result.stdout, result.stdout
    assert "byte-range lock requests refused: a cell holds at most 4096" in result.message

    if cell.mode == "root":
        # The control: a cell whose profile lets fcntl lock freely holds them
        # all, as kernel memory its 32 MiB limit never sees.
        def lock_freely(profile: dict) -> None:
            profile["syscalls"] = [
                e for e in profile["syscalls"] if not ("fcntl" in _names(e) and "args" in e)
            ]

        free = profile_without(scratch_dir, lock_freely)
        before = file_locks_in_the_kernel()
        run = InBackground(
            lambda: cell.run(
                ["./prog", "flood", "200000", "300"],
                copy_in={"prog": binary},
                memory="32M",
                seccomp=free,
                open_files=1024,
                time=120,
                wall_time=400,
            )
        )
        try:  # minutes in an emulated VM: each file's locks are a list the kernel walks
            wait_for(lambda: pids_named("lock-flood", in_a_cell=True), within=300)
            during = file_locks_in_the_kernel()
        finally:
            for pid in pids_named("lock-flood", in_a_cell=True):
                os.kill(pid, signal.SIGKILL)
        result = run.join(timeout=420)
        assert "locks 200000" in result.stdout, result.stdout
        assert during - before > 150000 and result.memory < 32 << 20, (during, before)


SQLITE = """
import fcntl, os, sqlite3
db = sqlite3.connect("/box/t.db")
db.execute("create table t(x)")
for i in range(50):
    db.execute("insert into t values (?)", (i,))
    db.commit()
fd = os.open("/box/lock", os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
fcntl.lockf(fd, fcntl.LOCK_UN)
print(db.execute("select count(*) from t").fetchone()[0])
"""


def test_a_program_that_locks_a_little_never_meets_the_cap(cell):
    result = cell.run(["python3", "-c", SQLITE])
    assert (result.status, result.stdout) == ("OK", "50\n"), (result.message, result.stderr)
    assert not any("locks" in d for d in result.degraded), result.degraded


def test_where_the_listener_cannot_be_handed_over_locks_are_refused_and_said(cell, scratch_dir):
    """A profile that supervises locks but refuses sendmsg: the program's process
    cannot hand its seccomp listener to the init. The cell still runs; byte-range
    locks fail (ENOSYS: nothing answers them) and `degraded` says why."""

    def refuse_sendmsg(profile: dict) -> None:
        for entry in profile["syscalls"]:
            if "sendmsg" in _names(entry):
                entry["names"] = [n for n in _names(entry) if n != "sendmsg"]

    profile = profile_without(scratch_dir, refuse_sendmsg)
    script = (
        "import fcntl, os\nfd = os.open('/box/f', os.O_RDWR | os.O_CREAT)\n"
        "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "except OSError as e:\n    print(e.errno)\n"
    )
    result = cell.run(["python3", "-c", script], seccomp=profile)
    assert (result.status, result.stdout.strip()) == ("OK", str(errno.ENOSYS)), result
    assert any("byte-range locks are refused (ENOSYS)" in d for d in result.degraded), (
        result.degraded
    )


def test_the_caller_s_private_entries_are_found_again_after_a_change(tmp_path):
    """A process walks a directory for the caller's private entries once, then
    watches it: a file made private later (created readable, then chmod-ed:
    the usual way to write a secret) is hidden from the next cell."""
    from sandbox import images

    top = tmp_path / "etc"
    (top / "sub").mkdir(parents=True)
    key = top / "sub" / "key"
    key.write_text("x")
    key.chmod(0o644)
    public = top / "public"
    public.write_text("y")
    public.chmod(0o644)
    assert images.private_entries(str(top)) == ()
    key.chmod(0o600)
    assert images.private_entries(str(top)) == ("sub/key",)
    late = top / "late"
    late.write_text("z")
    late.chmod(0o640)
    assert set(images.private_entries(str(top))) == {"sub/key", "late"}
    (top / "sub").chmod(0o700)  # a directory others may not enter hides what is in it
    assert set(images.private_entries(str(top))) == {"sub", "late"}


def test_under_no_new_privs_the_program_shares_the_worker_s_uid_and_it_is_said(test_user):
    """A worker started with no_new_privs (a container's, or a systemd service's
    NoNewPrivileges=) cannot use the setuid newuidmap: its cells fall back to the
    size-1 map, run, and say why, instead of failing."""
    from conftest import VENV

    done = subprocess.run(
        [
            "runuser",
            "-u",
            test_user.pw_name,
            "--",
            "setpriv",
            "--no-new-privs",
            "env",
            f"PYTHONPATH={REPO}",
            str(VENV / "bin" / "python"),
            "-m",
            "cellblock",
            "run",
            "--json",
            "--",
            "id",
            "-u",
        ],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
        timeout=60,
    )
    result = json.loads(done.stdout)
    assert (result["status"], result["stdout"]) == ("OK", "0\n"), (result, done.stderr)
    assert any("no_new_privs" in entry for entry in result["degraded"]), result["degraded"]
