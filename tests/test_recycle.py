"""Recycled cells (sandbox.recycle_cells, init.renew): one cell serves runs one
after another, and nothing one run leaves is seen by the next.

Each attack is a program that leaves something behind in run A (files in every
writable place, SysV IPC objects, a daemon, a used-up PID counter, network
state) and a run B in the same cell (the same init: asserted) that looks for
it. The control is the same look from within run A, after the leaving process
has exited: the primitive works, and only the cell's renewal between runs
stops it."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import python_as

import sandbox
from sandbox import seccomp, warm

PYTHON = "/usr/bin/python3"


@pytest.fixture
def recycled(monkeypatch):
    sandbox.keep_warm(False)  # no cell an earlier test left (of another image, say)
    sandbox.recycle_cells()
    # One cell for all of a test's runs, however slow the machine (an emulated
    # VM); the lifetime's own test sets its own.
    monkeypatch.setattr(warm, "RECYCLED_LIFETIME", 3600.0)
    yield
    sandbox.recycle_cells(None)
    sandbox.keep_warm(False)


def _cell_pid() -> int:
    (cell,) = warm._ready.values()
    return cell.pid


def _python(source: str, **options) -> sandbox.RunResult:
    result = sandbox.run([PYTHON, "-c", textwrap.dedent(source)], **options)
    assert result.status == "OK", (result.message, result.stderr)
    return result


def _two_runs(leave: str, look: str) -> tuple[str, str]:
    """Run `leave` then `look` in one recycled cell; their outputs."""
    _python("pass")  # the cell, in the pool from now on
    cell = _cell_pid()
    left = _python(leave).stdout
    assert _cell_pid() == cell
    seen = _python(look).stdout
    assert _cell_pid() == cell  # the same init served both runs
    return left, seen


def _leave_then_look(source: str) -> tuple[sandbox.RunResult, sandbox.RunResult]:
    """Run `source` with the argument "leave", then "look", in one recycled cell."""
    _python("pass")  # the cell, in the pool from now on
    cell = _cell_pid()
    left = sandbox.run([PYTHON, "-c", textwrap.dedent(source), "leave"])
    seen = sandbox.run([PYTHON, "-c", textwrap.dedent(source), "look"])
    assert _cell_pid() == cell  # the same init served both runs
    return left, seen


FILES = ["/tmp/left", "/box/left", "/dev/shm/left", "/var/tmp/left"]
WRITE_FILES = f"""
    import os, subprocess
    for path in {FILES!r}:
        if os.path.isdir(os.path.dirname(path)) and os.access(os.path.dirname(path), os.W_OK):
            open(path, "w").write("secret")
    # Control: a later process of the same run reads them.
    print(subprocess.run(["cat", *[p for p in {FILES!r} if os.path.exists(p)]],
                         capture_output=True, text=True).stdout)
"""
LOOK_FILES = f"""
    import os
    print([p for p in {FILES!r} if os.path.exists(p)])
"""


def test_files_a_run_writes_are_gone_in_the_next(recycled):
    left, seen = _two_runs(WRITE_FILES, LOOK_FILES)
    assert left.count("secret") >= 3  # /tmp, /box, /dev/shm at least
    assert seen.strip() == "[]"


SYSV = """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    KEY, IPC_CREAT = 0x0CE11B10C, 0o1000
    if sys.argv[1:] == ["leave"]:
        pid = os.fork()
        if pid == 0:  # a process that makes the objects and exits
            libc.shmget(KEY, 4096, IPC_CREAT | 0o666)
            libc.semget(KEY, 1, IPC_CREAT | 0o666)
            libc.msgget(KEY, IPC_CREAT | 0o666)
            os._exit(0)
        os.waitpid(pid, 0)
    print(libc.shmget(KEY, 0, 0) >= 0, libc.semget(KEY, 0, 0) >= 0, libc.msgget(KEY, 0) >= 0)
"""


def test_sysv_ipc_objects_do_not_survive_their_run(recycled):
    left, seen = _leave_then_look(SYSV)
    assert left.stdout.split() == ["True", "True", "True"], left.stderr  # control
    assert seen.stdout.split() == ["False", "False", "False"], seen.stderr


HOST_FILE_LOCK = """
    import fcntl, subprocess, sys, time
    if sys.argv[1:] == ["leave"]:
        subprocess.Popen(["flock", "-x", "/etc/passwd", "sleep", "1000"], start_new_session=True)
        time.sleep(0.3)
    try:  # Control (leave): the lock of the process started above is seen.
        fcntl.flock(open("/etc/passwd"), fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("locked")
"""


def test_a_lock_on_a_host_file_ends_with_its_run(recycled):
    # The host's directories are one read-only overlay for all of a cell's
    # runs (mounts.hold): a run's lock on one of its files is on an inode the
    # next run shares, so it must end with the run's processes.
    left, seen = _leave_then_look(HOST_FILE_LOCK)
    assert left.stdout.strip() == "locked", left.stderr
    assert seen.stdout.strip() == "free", seen.stderr


def test_a_file_the_host_replaces_reaches_a_recycled_cell_within_its_lifetime(
    recycled, monkeypatch
):
    # The cell's one overlay of the host's /etc keeps the names its runs looked
    # up: a file replaced by rename (as a package upgrade does) is the old one
    # for as long as the cell lives, so a recycled cell lives RECYCLED_LIFETIME.
    host_file = Path(f"/etc/cellblock-test-replaced-{uuid.uuid4().hex[:8]}")
    host_file.write_text("old\n")
    host_file.chmod(0o644)

    def replace_and_look(lifetime: float) -> tuple[str, str]:
        monkeypatch.setattr(warm, "RECYCLED_LIFETIME", 3600.0)
        host_file.write_text("old\n")
        first = sandbox.run(["cat", str(host_file)]).stdout  # looked up, and kept
        cell = _cell_pid()
        new = host_file.with_suffix(".new")
        new.write_text("new\n")
        new.chmod(0o644)
        new.rename(host_file)
        # The lifetime is set only now, so however long the first run took (an
        # emulated VM), the cell was kept after it.
        monkeypatch.setattr(warm, "RECYCLED_LIFETIME", lifetime)
        time.sleep(0.3)
        later = sandbox.run(["cat", str(host_file)]).stdout
        assert (_cell_pid() == cell) == (lifetime > 1), "the cell was (not) recycled"
        return first, later

    try:
        # Control: a cell that lives on still shows the file it looked up.
        assert replace_and_look(3600.0) == ("old\n", "old\n")
        # A cell past its lifetime is not used again; the next cell sees the new file.
        assert replace_and_look(0.2) == ("old\n", "new\n")
    finally:
        host_file.unlink()


DAEMON = """
    import os, subprocess, time
    subprocess.Popen(["sleep", "1000"], start_new_session=True)
    time.sleep(0.2)
    # Control: the daemon is there, outliving nothing yet but alive.
    print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
"""
LOOK_PROCESSES = """
    import os
    print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
"""


def test_no_process_of_a_run_lives_on_into_the_next(recycled):
    left, seen = _two_runs(DAEMON, LOOK_PROCESSES)
    assert len(eval(left)) >= 2  # the program and its daemon
    assert eval(seen) == [2]  # only the program itself (hidepid hides the init)


FORKS = """
    import os
    pids = []
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        pids.append(pid)
    print(os.getpid(), pids[-1])
"""


def test_the_pid_counter_tells_nothing_of_the_run_before(recycled):
    left, seen = _two_runs(FORKS, "import os; print(os.getpid())")
    me, last_child = map(int, left.split())
    assert last_child >= me + 50  # control: forks advance the counter within a run
    assert int(seen) == me  # the next run starts where the first did


HELD = """
    import errno
    seen = []
    for path in (
        "/dev/shm/left",  # control: a run writes where it may
        "/dev/left",
        "/proc/sys/kernel/ns_last_pid",
        "/proc/sys/user/max_user_namespaces",
    ):
        try:
            with open(path, "w") as f:
                f.write("9")
            seen.append("wrote " + path)
        except OSError as error:
            seen.append(errno.errorcode[error.errno])
    seen.append(open("/proc/sys/user/max_user_namespaces").read().strip())
    print(seen)
"""


def test_what_a_recycled_cell_keeps_of_its_root_no_run_can_change(recycled):
    # A cell's skeleton, /dev (but its shm) and procfs are made once and bound
    # into each of its roots (mounts.hold), and the limits of its user
    # namespace are set once. Every run finds them as the first did.
    left, seen = _two_runs(HELD, HELD)
    assert eval(left) == ["wrote /dev/shm/left", "EROFS", "EROFS", "EROFS", "0"]
    assert seen == left


NETWORK = """
    import socket
    server = socket.socket(); server.bind(("127.0.0.1", 5000)); server.listen()
    client = socket.create_connection(("127.0.0.1", 5000))
    peer, _ = server.accept()
    client.close(); peer.close()  # the client closed first: its end waits in TIME_WAIT
    abstract = socket.socket(socket.AF_UNIX); abstract.bind("\\0cellblock-left")
    states = [line.split()[3] for line in open("/proc/net/tcp").readlines()[1:]]
    print("06" in states)  # control: TIME_WAIT is there, in this network namespace
"""
LOOK_NETWORK = """
    import socket
    states = [line.split()[3] for line in open("/proc/net/tcp").readlines()[1:]]
    socket.socket().bind(("127.0.0.1", 5000))
    socket.socket(socket.AF_UNIX).bind("\\0cellblock-left")
    print(states)
"""


def test_network_state_of_a_run_is_not_in_the_next(recycled):
    left, seen = _two_runs(NETWORK, LOOK_NETWORK)
    assert left.strip() == "True"
    assert seen.strip() == "[]"


def _network_namespace() -> str:
    return _python("import os; print(os.readlink('/proc/self/ns/net'))").stdout.strip()


def test_only_a_run_that_made_a_socket_gets_the_next_run_a_new_network_namespace(recycled):
    # Making a network namespace and tearing it down is the dearest part of a
    # renewal: a run the init saw make no socket (the filter sends it every
    # socket and socketpair call) leaves its namespace to the next run.
    _python("pass")
    cell = _cell_pid()
    first = _network_namespace()
    assert _network_namespace() == first
    _python("import socket; socket.socket(socket.AF_INET6)")
    after_socket = _network_namespace()
    assert after_socket != first
    _python("import socket; socket.socketpair()")
    # (An inode number is reused once its namespace is gone: only the one
    # before can be told apart.)
    assert _network_namespace() != after_socket
    assert _cell_pid() == cell


def _profile_with_socket_action(directory: Path, action: str) -> str:
    """The default profile with `action` for the socket and socketpair calls it
    sends to the init."""
    profile = json.loads(seccomp.resolve_profile("default").read_text())
    for entry in profile["syscalls"]:
        if entry["names"] in (["socket"], ["socketpair"]) and entry["action"] == "SCMP_ACT_NOTIFY":
            entry["action"] = action
    path = directory / "sockets-unseen.json"
    path.write_text(json.dumps(profile))
    return str(path)


LOOK_NETWORK_QUIETLY = """
    states = [line.split()[3] for line in open("/proc/net/tcp").readlines()[1:]]
    print(states)
"""


def test_network_state_reaches_the_next_run_unless_the_init_sees_every_socket(
    recycled, tmp_path, monkeypatch
):
    unseen = _profile_with_socket_action(tmp_path, "SCMP_ACT_ALLOW")
    real_check = seccomp.supervises_sockets

    def leave_then_look() -> str:
        _python("pass")
        cell = _cell_pid()
        _python(NETWORK, seccomp=unseen)
        seen = _python(LOOK_NETWORK_QUIETLY, seccomp=unseen).stdout
        assert _cell_pid() == cell
        return seen

    # Control: an init that believes it sees every socket, under a profile that
    # lets sockets through unseen, keeps the namespace: the connection's
    # TIME_WAIT is in the next run.
    monkeypatch.setattr(seccomp, "supervises_sockets", lambda bpf: True)
    assert "06" in leave_then_look()
    # The filter is read as it is (seccomp.supervises_sockets): this profile
    # lets sockets through unseen, so every run gets a new namespace.
    monkeypatch.setattr(seccomp, "supervises_sockets", real_check)
    sandbox.keep_warm(False)  # a new cell: that one's namespace has the TIME_WAIT
    sandbox.recycle_cells()
    assert leave_then_look().strip() == "[]"


def test_a_run_that_goes_wrong_ends_its_cell(recycled):
    _python("pass")
    cell = _cell_pid()
    # Over its wall-clock limit: killed by the host; the cell is still renewed.
    assert sandbox.run(["sleep", "10"], wall_time=0.2).status == "TLE"
    assert _cell_pid() == cell
    assert sandbox.run(["true"]).status == "OK"
    assert _cell_pid() == cell


@pytest.mark.parametrize("when", ["renewing", "renewed"])
def test_a_recycled_cell_whose_init_died_gives_its_run_to_a_new_cell(recycled, when):
    """The launch goes to a recycled cell while its init renews it (the caller
    reads its "ready" after sending): an init killed during the renewal, or
    after it, costs the run nothing but a new cell. The control is the first
    assertion: the pool still holds the dead cell, so the run must notice."""
    import os
    import signal

    _python("pass")
    (cell,) = warm._ready.values()
    if when == "renewed":
        cell.ready()
    os.kill(cell.pid, signal.SIGKILL)
    time.sleep(0.05)  # the init and its PID namespace go with the spawned process
    assert _cell_pid() == cell.pid  # still in the pool
    assert _python("print(6 * 7)").stdout == "42\n"
    new = _cell_pid()
    assert new != cell.pid
    assert not os.path.exists(f"/proc/{cell.pid}")  # the dead one was reaped
    _python("pass")
    assert _cell_pid() == new  # the new cell serves on


def test_an_unprivileged_caller_recycles_too(test_user):
    script = textwrap.dedent(f"""
        import sandbox, textwrap
        from sandbox import seccomp, warm
        sandbox.recycle_cells()
        warm.RECYCLED_LIFETIME = 3600.0  # one cell for the three runs, however slow
        sandbox.run(["true"])
        (cell,) = warm._ready.values()
        first = cell.pid
        left = sandbox.run([{PYTHON!r}, "-c", textwrap.dedent({WRITE_FILES!r})]).stdout
        seen = sandbox.run([{PYTHON!r}, "-c", textwrap.dedent({LOOK_FILES!r})]).stdout
        (cell,) = warm._ready.values()
        print(left.count("secret") >= 3, seen.strip(), cell.pid == first)
        sandbox.keep_warm(False)
    """)
    import subprocess

    done = subprocess.run(
        python_as(test_user.pw_name, script), capture_output=True, text=True, cwd="/", timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "[]", "True"], done.stdout
