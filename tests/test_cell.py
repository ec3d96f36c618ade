"""Properties of a cell, seen from inside, started as root and unprivileged."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, VENV, as_user, parent_of, settle, under_a_refusing_profile

from sandbox import SpecError, run
from sandbox.spec import BASE_ENV


def test_process_tree_is_the_cells_own(cell):
    result = cell.run(["sh", "-c", "echo $$ $PPID; ls /proc | grep -E '^[0-9]+$' | sort -n"])
    assert result.status == "OK", result.message
    first, *pids = result.stdout.split()
    assert first == "2" or first.startswith("2 ")
    own, parent = result.stdout.splitlines()[0].split()
    assert (own, parent) == ("2", "1")  # the program is PID 1's child
    # Only the cell's processes exist (the init may be hidden by hidepid).
    assert all(int(p) < 10 for p in pids[1:]), pids


def test_hostname_and_network(cell):
    result = cell.run(["sh", "-c", "hostname; cat /proc/net/dev"])
    lines = result.stdout.splitlines()
    assert lines[0] == "cellblock"
    interfaces = [line.split(":")[0].strip() for line in lines[3:] if ":" in line]
    assert interfaces == ["lo"]
    # Loopback is up: a server and a client inside the cell talk over 127.0.0.1.
    echo = (
        "import socket\n"
        "s = socket.create_server(('127.0.0.1', 0)); port = s.getsockname()[1]\n"
        "c = socket.create_connection(('127.0.0.1', port)); a, _ = s.accept()\n"
        "c.sendall(b'ping'); print(a.recv(4).decode())\n"
    )
    assert cell.run(["python3", "-c", echo]).stdout == "ping\n"


def test_no_capabilities_no_new_privs_seccomp(cell):
    status = cell.run(["cat", "/proc/self/status"]).stdout
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    for capability_set in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[capability_set], 16) == 0, capability_set
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"


def test_ids_inside_and_outside(cell):
    result = cell.run(["sh", "-c", "id -u; id -g; cat /proc/self/uid_map"])
    uid, gid, *mapping = result.stdout.splitlines()
    lines = [tuple(int(x) for x in line.split()) for line in mapping]
    if cell.mode == "root":
        # Cell root is an unprivileged host uid from a dedicated range; the program is 1000.
        assert (uid, gid) == ("1000", "1000")
        ((inside, outside, count),) = lines
        assert inside == 0 and outside >= 100000 and count == 65536
    elif cell.mode == "user":
        # Cell root is the caller; the program, 1000, one of its subordinate ids.
        from sandbox.userns import subordinate_range

        (first, size), _ = subordinate_range(cell.uid)
        assert (uid, gid) == ("1000", "1000")
        assert lines[0] == (0, cell.uid, 1)
        assert lines[1][0] == 1000 and first <= lines[1][1] < first + size and lines[1][2] == 1
        assert result.degraded == []
    else:  # no subordinate ids: the program is cell root, the caller's own uid
        assert (uid, gid) == ("0", "0")
        assert lines == [(0, cell.uid, 1)]
        assert any("program shares the worker's uid" in d for d in result.degraded)


def test_mount_table(cell):
    mounts = cell.run(["cat", "/proc/self/mounts"]).stdout.splitlines()
    table = {line.split()[1]: line.split() for line in mounts}
    assert table["/"][2] == "overlay" and "userxattr" in table["/"][3]
    for host_dir in ("/usr", "/etc"):
        options = table[host_dir][3].split(",")
        assert {"ro", "nosuid", "nodev"} <= set(options), (host_dir, options)
    assert table["/proc"][2] == "proc"
    assert table["/dev"][2] == "tmpfs" and "ro" in table["/dev"][3].split(",")
    assert table["/dev/shm"][2] == "tmpfs"
    assert not any(path.startswith("/sys") for path in table)
    assert not any(path.startswith(("/work", "/root", "/home", "/opt")) for path in table)
    listing = cell.run(["ls", "/dev"]).stdout.split()
    assert set(listing) == {
        "fd",
        "full",
        "null",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "urandom",
        "zero",
    }
    assert cell.run(["ls", "/sys"]).status == "RE"


def test_image_is_read_only_and_writes_vanish(cell):
    marker = f"cellblock-{uuid.uuid4().hex}"
    write = cell.run(
        [
            "sh",
            "-c",
            f"touch /usr/{marker} 2>/dev/null && echo usr-written; "
            f"echo x > /etc/{marker} 2>/dev/null && echo etc-written; "
            f"echo x > /box/{marker} && echo x > /tmp/{marker} && echo ok",
        ]
    )
    assert write.stdout.strip() == "ok", write.stdout
    assert not Path(f"/usr/{marker}").exists() and not Path(f"/tmp/{marker}").exists()
    again = cell.run(["sh", "-c", f"ls /box/{marker} /tmp/{marker} 2>&1 | wc -l; ls -A /box"])
    lines = again.stdout.split()
    assert lines[0] == "2" and lines[1:] == [], again.stdout  # two errors, empty /box


def test_image_in_a_directory_only_its_owner_may_enter(cell, scratch_dir):
    """A root filesystem beneath a directory only the caller may enter (as the
    layer store is: mode 0700) runs: its layers are opened by the process that
    makes the cell and handed to the init, which runs as the cell's ids."""
    top = scratch_dir / f"private-{uuid.uuid4().hex}"
    rootfs = top / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "usr").mkdir()
    (rootfs / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (rootfs / "bin" / "busybox").chmod(0o755)
    (rootfs / "bin" / "sh").symlink_to("busybox")
    (rootfs / "etc" / "motd").write_text("from the image\n")
    owner = (0, 0) if cell.user is None else (cell.user.pw_uid, cell.user.pw_gid)
    for path in [top, *top.rglob("*")]:
        os.chown(path, *owner, follow_symlinks=False)
    top.chmod(0o700)
    result = cell.run(["/bin/sh", "-c", "cat /etc/motd; ls /usr"], image=str(rootfs))
    assert result.status == "OK", result.message
    assert result.stdout == "from the image\n"


def test_environment_is_fixed(cell, monkeypatch):
    monkeypatch.setenv("CELLBLOCK_WORKER_SECRET", "do-not-leak")
    result = cell.run(["env"], env={"EXTRA": "1"})
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    env.pop("PWD", None)  # set by nothing of ours: env(1) does not add it; tolerate shells
    assert env == {**BASE_ENV, "EXTRA": "1"}


def test_inherited_fds_are_closed(cell, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("secret")
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        result = cell.run(["ls", "/proc/self/fd"])
    finally:
        os.close(fd)
    assert result.stdout.split() == ["0", "1", "2", "3"]  # 3 is ls's own directory fd


def test_a_threaded_caller_gets_the_same_cell():
    # A caller with threads: posix_spawn (CLONE_VM|CLONE_VFORK, then execve)
    # is safe there, where a fork of the caller would not be (glibc's locks).
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    try:
        result = run(["sh", "-c", "echo $$ $PPID; hostname; cat /proc/self/status"])
    finally:
        stop.set()
        helper.join()
    assert result.status == "OK", result.message
    lines = result.stdout.splitlines()
    assert lines[0] == "2 1" and lines[1] == "cellblock"
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", result.stdout, re.M))
    assert int(fields["CapEff"], 16) == 0 and fields["Seccomp"] == "2"


def test_a_profile_that_refuses_clone_into_namespaces_is_worked_around():
    # cellblock's Docker worker profile allows unshare but not clone with
    # namespace flags: the init unshares its namespaces, so it is the same cell.
    from sandbox import libc

    def two_runs() -> str:
        results = [run(["sh", "-c", "echo $$; hostname"]) for _ in range(2)]
        return "|".join(f"{r.status}:{r.stdout.split()}" for r in results)

    report = under_a_refusing_profile({"clone": libc.CLONE_NEWUSER}, two_runs)
    assert report == "OK:['2', 'cellblock']|OK:['2', 'cellblock']", report


def test_a_profile_that_refuses_the_new_mount_api_still_gets_readonly_files():
    # The same profile refuses open_tree and move_mount (it allows mount_setattr):
    # read-only copy-ins are then bound with mount(2), and hold just the same.
    def probe() -> str:
        result = run(
            ["python3", "-c", _READONLY_PROBE],
            copy_in={"prog": b"#!/bin/sh\necho prog-ran\n", "data": b"payload", "free": b"free"},
            readonly=("prog", "data"),
        )
        return f"{result.status}|{result.message}|{result.stdout}"

    report = under_a_refusing_profile({"open_tree": None, "move_mount": None}, probe)
    status, message, stdout = report.split("|", 2)
    assert status == "OK", (message, report)
    seen = dict(line.split(" ", 1) for line in stdout.splitlines())
    assert seen["write"] == "EROFS" and seen["truncate"] == "EROFS", seen
    assert seen["unlink"] in ("EBUSY", "EROFS"), seen
    assert seen["ran"] == "prog-ran" and seen["free"] == "free+", seen


def test_program_starts_with_default_signals_and_an_empty_mask(cell):
    # The init ignores and handles signals of its own; none of that may carry over.
    status = cell.run(["cat", "/proc/self/status"]).stdout
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    assert int(fields["SigBlk"], 16) == 0 and int(fields["SigIgn"], 16) == 0, fields


def test_profile_that_forbids_execve_is_reported_exactly(cell, scratch_dir):
    # The filter is installed right before execve, so nothing can be written
    # anywhere after it: the failure still comes back, with its errno.
    profile = scratch_dir / "no-exec.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["execve", "execveat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
                ],
            }
        )
    )
    profile.chmod(0o644)
    result = cell.run(["true"], seccomp=str(profile))
    assert result.status == "RE", result
    assert result.message == "cannot execute 'true': Permission denied", result.message


def test_stdin_stdout_stderr_and_exit_code(cell):
    result = cell.run(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"hello\n")
    assert result.stdout == "hello\n" and result.stderr == "err\n"
    assert result.status == "RE" and result.exit_code == 3 and result.signal is None


def test_stderr_into_stdout_keeps_the_order_written(cell):
    script = "echo one; echo two >&2; echo three; echo four >&2"
    result = cell.run(["sh", "-c", script], stderr_to_stdout=True)
    assert result.status == "OK", result
    assert result.stdout == "one\ntwo\nthree\nfour\n" and result.stderr == ""
    assert cell.run(["sh", "-c", script]).stdout == "one\nthree\n"  # the control


def test_death_by_signal(cell):
    result = cell.run(["sh", "-c", "kill -SEGV $$"])
    assert result.status == "RE" and result.signal == 11 and result.exit_code is None


def test_wall_time_limit(cell):
    result = cell.run(["sleep", "10"], time=1, wall_time=0.5)
    assert result.status == "TLE" and "wall" in result.message
    assert 0.4 < result.wall_time < 3


def test_cpu_time_limit_backstop(cell):
    result = cell.run(["sh", "-c", "while :; do :; done"], time=0.5, wall_time=10)
    assert result.status == "TLE" and "CPU" in result.message


def test_output_limit(cell):
    result = cell.run(["sh", "-c", "yes"], output_limit="64K", wall_time=10)
    assert result.status == "OLE" and result.stdout_truncated
    assert len(result.stdout) == 65536


def test_file_size_limit(cell):
    # dd keeps SIGXFSZ's default action (Python ignores it and sees EFBIG instead).
    result = cell.run(["dd", "if=/dev/zero", "of=big", "bs=1M", "count=2"], file_size="1M")
    assert result.status == "OLE" and "file-size" in result.message


def test_copy_in_and_out(cell):
    script = b"#!/bin/sh\nmkdir -p out/deep && cat data > out/deep/copy && echo done > result\n"
    result = cell.run(
        ["./tool.sh"],
        copy_in={"tool.sh": script, "data": b"payload"},
        copy_out=("result", "out/deep/copy", "missing"),
    )
    assert result.status == "OK", (result.message, result.stderr)
    assert result.files == {"result": b"done\n", "out/deep/copy": b"payload"}


_READONLY_PROBE = """
import errno, os, subprocess
def attempt(name, action):
    try:
        action()
        print(name, "done")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
def chmod_then_write():
    os.chmod("prog", 0o777)
    open("prog", "a").write("x")
attempt("write", lambda: open("prog", "a").write("x"))
attempt("truncate", lambda: os.truncate("data", 0))
attempt("chmod+write", chmod_then_write)
open("new", "w").write("planted")
attempt("rename-over", lambda: os.rename("new", "prog"))
attempt("unlink", lambda: os.unlink("data"))
print("ran", subprocess.run(["./prog"], capture_output=True, text=True).stdout.strip())
print("read", open("data").read())
open("free", "a").write("+")
print("free", open("free").read())
"""


def test_readonly_copy_in(cell):
    """A readonly copy-in is the program's own file, yet it cannot change it."""
    result = cell.run(
        ["python3", "-c", _READONLY_PROBE],
        copy_in={"prog": b"#!/bin/sh\necho prog-ran\n", "data": b"payload", "free": b"free"},
        copy_out=("prog", "free"),
        readonly=("prog", "/box/data"),
    )
    assert result.status == "OK", (result.message, result.stderr)
    seen = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert seen["write"] in ("EROFS", "EPERM"), seen
    assert seen["truncate"] in ("EROFS", "EPERM"), seen
    assert seen["chmod+write"] in ("EROFS", "EPERM"), seen
    assert seen["rename-over"] in ("EBUSY", "EROFS", "EPERM"), seen
    assert seen["unlink"] in ("EBUSY", "EROFS", "EPERM"), seen
    assert seen["ran"] == "prog-ran" and seen["read"] == "payload", seen
    assert seen["free"] == "free+", seen  # a copy-in not named stays writable
    assert result.files.get("free") == b"free+"


def test_command_not_found(cell):
    result = cell.run(["definitely-not-a-command"])
    assert result.status == "RE" and result.exit_code == 127
    assert "No such file" in result.message


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.needs_root  # it reads the inits' /proc files
def test_the_init_shows_no_command_line_of_the_caller(warm):
    # The init is a copy of the caller (or of the cell maker), and a caller's
    # command line may name secrets. The cell's /proc hides the init from the
    # program (hidepid, not dumpable); this is the second line, seen from the host.
    import sandbox

    marker = f"cellblock-cmdline-{uuid.uuid4().hex}"
    sandbox.keep_warm(warm)
    try:
        for _ in range(3):  # warm: the last run's cell is the maker's
            runner = threading.Thread(target=run, args=(["sh", "-c", f"sleep 1; : {marker}"],))
            runner.start()
            try:
                deadline = time.monotonic() + 10
                while not (found := _processes_with(marker)) and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert found, "the program never showed up"
                init = parent_of(found[0])
                cmdline = Path(f"/proc/{init}/cmdline").read_bytes()
            finally:
                runner.join()
            assert cmdline.rstrip(b"\0") == b"cellblock-init", cmdline
    finally:
        sandbox.keep_warm(False)


def test_nothing_outlives_the_run(cell):
    # A daemon (its own session, reparented to the init) that says it is up by
    # writing its pid, then sleeps with a duration unique to this test: the
    # program checks it is alive, and afterwards no process on the host has that
    # duration in its command line. (Counting the processes whose command line
    # holds a marker raced with the shells' own short-lived forks.)
    duration = f"300.{uuid.uuid4().int % 10**9:09d}"
    result = cell.run(
        [
            "sh",
            "-c",
            "setsid sh -c 'echo $$ > /tmp/pid.new && mv /tmp/pid.new /tmp/pid && "
            f"exec sleep {duration}' & "
            "while [ ! -e /tmp/pid ]; do sleep 0.01; done; "
            'kill -0 "$(cat /tmp/pid)" && echo daemon alive',
        ]
    )
    assert result.stdout == "daemon alive\n", (result.stdout, result.stderr)
    assert not _processes_with(duration)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"time": -1}, "time"),
        ({"time": "abc"}, "time"),
        ({"time": float("nan")}, "time"),
        ({"wall_time": 1e9}, "wall_time"),
        ({"memory": "1T"}, "memory"),
        ({"memory": "lots"}, "memory"),
        ({"pids": 0}, "pids"),
        ({"cpus": 0}, "cpus"),
        ({"cpus": 5000}, "cpus"),
        ({"cpus": "half"}, "cpus"),
        ({"output_limit": "-5"}, "output_limit"),
        ({"image": "no-such-image"}, "image"),
        ({"seccomp": "no-such-profile"}, "no-such-profile"),
        ({"copy_out": ("../etc/passwd",)}, "file path"),
        ({"copy_in": {"/etc/x": b""}}, "file path"),
        ({"bogus": 1}, "bogus"),
        ({"copy_in": {"a": b""}, "readonly": ("b",)}, "readonly: 'b' is not a copy-in"),
        ({"readonly": ("a",)}, "readonly: 'a'"),
        ({"copy_in": {"a": b""}, "readonly": "a"}, "readonly"),
        ({"copy_in": {"a": b""}, "readonly": ("../a",)}, "file path"),
    ],
)
def test_bad_options_are_clear_errors(options, fragment):
    with pytest.raises(SpecError, match=re.escape(fragment)):
        run(["true"], **options)


def test_empty_command_is_an_error():
    with pytest.raises(SpecError, match="nothing to run"):
        run([])


def test_malformed_profile_is_an_error(tmp_path):
    profile = tmp_path / "broken.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [')
    with pytest.raises(SpecError, match="broken.json"):
        run(["true"], seccomp=str(profile))


def test_unreadable_profile_is_a_clear_error(test_user, tmp_path):
    # tmp_path is under root's private pytest directory: the user cannot stat it.
    profile = tmp_path / "mine.json"
    profile.write_text("{}")
    done = subprocess.run(
        as_user(
            test_user.pw_name,
            [str(VENV / "bin" / "cellblock"), "run", "--seccomp", str(profile), "--", "true"],
        ),
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    assert done.returncode == 2, done
    assert "cannot read" in done.stderr and "Traceback" not in done.stderr, done.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellblock", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["run"],
        ["run", "--"],
        ["run", "--time", "-3", "--", "true"],
        ["run", "--memory", "1T", "--", "true"],
        ["run", "--image", "nope", "--", "true"],
        ["run", "--seccomp", "nope", "--", "true"],
        ["run", "--copy-in", "/nonexistent/file:x", "--", "true"],
        ["run", "--stdin", "/nonexistent/file", "--", "true"],
        ["run", "--env", "NOEQUALS", "--", "true"],
        ["run", "--readonly", "x", "--", "true"],
    ],
)
def test_cli_bad_input(args):
    done = _cli(*args)
    assert done.returncode == 2, done
    assert "error" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_cli_json_and_exit_codes(tmp_path):
    done = _cli("run", "--json", "--", "sh", "-c", "echo hi; exit 4")
    import json

    data = json.loads(done.stdout)
    assert done.returncode == 0 and data["status"] == "RE" and data["exit_code"] == 4
    assert data["stdout"] == "hi\n"
    human = _cli("run", "--", "sh", "-c", "echo hi; exit 4")
    assert human.returncode == 4 and human.stdout == "hi\n" and "RE" in human.stderr
    slow = _cli("run", "--wall-time", "0.3", "--", "sleep", "5")
    assert slow.returncode == 124


def test_runs_from_several_threads_at_once():
    # A harness may call sandbox.run from a thread pool: the bookkeeping of
    # finished cells must hold (two threads once reaped the same pid: IE).
    from concurrent.futures import ThreadPoolExecutor

    from sandbox import run

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run(["sh", "-c", f"echo {i}"]), range(40)))
    assert [r.status for r in results] == ["OK"] * 40, [r.message for r in results]
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(40)]


def test_channel_survives_a_request_crossing_the_inits_exit():
    # The host asks for a kill just as the init reports and exits: the report
    # must still be read (the run once came back IE: "Connection reset by peer").
    from sandbox.channel import Channel, ChannelClosed

    host, init = Channel.pair()
    init.send("exited", wait_status=0)
    host.send("kill")
    init.close()
    assert host.receive() == {"kind": "exited", "wait_status": 0}
    with pytest.raises(ChannelClosed):
        host.receive()
    host.close()


@pytest.mark.needs_root
def test_a_root_started_cell_holds_its_id_range_only_while_it_lives():
    # Each live cell started as root has a host id range of its own (userns.hold_ids):
    # held by a lock while the cell waits or runs, free for the next cell after.
    import fcntl

    import sandbox
    from sandbox import userns

    def held() -> list[str]:
        busy = []
        for name in sorted(os.listdir(userns.SLOT_LOCKS_ROOT)):
            fd = os.open(f"{userns.SLOT_LOCKS_ROOT}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy.append(name)
            finally:
                os.close(fd)
        return busy

    from sandbox import warm

    sandbox.keep_warm(False)
    # One after the other, cells reuse the first free range: each run's lock is
    # gone when the run is (a moment later at most: the cell releases it once
    # its init has reported).
    maps = {" ".join(run(["cat", "/proc/self/uid_map"]).stdout.split()) for _ in range(3)}
    assert len(maps) == 1, maps
    _, outside, count = maps.pop().split()
    assert count == "65536"
    used = str(int(outside) + userns.RUN_ID)  # a lock is named by the program's host uid
    assert settle(lambda: used not in held()), held()
    sandbox.keep_warm()
    assert run(["true"]).status == "OK"
    (waiting,) = warm._ready.values()  # the warm cell, made for the next run
    mine = str(waiting.ids.idmap.program_host_uid)
    assert mine in held()  # held while it waits
    sandbox.keep_warm(False)
    assert settle(lambda: mine not in held()), held()


# A worker whose own seccomp filter has a listener (some container runtimes
# supervise calls so): the cell's filter can have none (EBUSY), and every call
# it sends to the init would fail with ENOSYS. Sockets must still work there.
UNDER_A_LISTENER = """
import sys
sys.path.insert(0, {repo!r})
import sandbox
from sandbox import libc, seccomp
from sandbox.doctor.confinement import ALLOW_ALL_BPF
libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
listener = libc.seccomp_set_filter(ALLOW_ALL_BPF, new_listener=True)
if sys.argv[1] == "control":  # the cell's filter as it is, sockets sent to nobody
    seccomp.caller_filtered = lambda: False
program = (
    "import errno, fcntl, socket\\n"
    "try:\\n"
    "    socket.socket(); socket.socketpair(); print('sockets')\\n"
    "except OSError as e:\\n"
    "    print(errno.errorcode[e.errno])\\n"
    "try:\\n"
    "    fcntl.lockf(open('/tmp/f', 'w'), fcntl.LOCK_EX); print('locked')\\n"
    "except OSError as e:\\n"
    "    print(errno.errorcode[e.errno])\\n"
)
result = sandbox.run(["/usr/bin/python3", "-c", program])
print(result.status, *result.stdout.split(), "|", *result.degraded)
"""


@pytest.mark.parametrize("variant", ["control", "fallback"])
def test_sockets_work_under_a_caller_whose_filter_has_a_listener(variant):
    script = UNDER_A_LISTENER.format(repo=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", script, variant],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    status, sockets, lock, _, degraded = done.stdout.strip().split(" ", 4)
    assert status == "OK", done.stdout
    # Byte-range locks are refused (nothing can answer them), and the run says so.
    assert lock == "ENOSYS" and "byte-range locks are refused (ENOSYS)" in degraded, done.stdout
    assert sockets == ("ENOSYS" if variant == "control" else "sockets"), done.stdout


def _in_a_fresh_interpreter(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter that imports this tree's sandbox."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )


def test_a_caller_that_ignores_sigchld_still_gets_its_verdict():
    # An ignored signal stays ignored across execve: the init resets every
    # disposition it inherits, or a caller ignoring SIGCHLD would leave it no
    # child to wait for (its children reaped by the kernel).
    code = (
        "import signal, sandbox\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        "sandbox.keep_warm(False)\n"
        "r = sandbox.run(['sh', '-c', 'echo hi; exit 3'], wall_time=10)\n"
        "print(r.status, r.exit_code, r.stdout.strip())\n"
    )
    done = _in_a_fresh_interpreter(code)
    assert done.stdout.split() == ["RE", "3", "hi"], (done.stdout, done.stderr)


def test_a_caller_s_umask_is_not_the_cell_s():
    # A service's umask 077 would make the cell's own directories (its root
    # among them) 0700, closed to the program: the init sets 022.
    code = (
        "import os, sandbox\n"
        "os.umask(0o077)\n"
        "sandbox.keep_warm(False)\n"
        "r = sandbox.run(['sh', '-c', 'umask; ls -d / /box /tmp'], wall_time=10)\n"
        "print(r.status, r.stdout.split())\n"
    )
    done = _in_a_fresh_interpreter(code)
    assert done.stdout.strip() == "OK ['0022', '/', '/box', '/tmp']", (done.stdout, done.stderr)


def test_a_cell_that_dies_after_its_launch_is_an_internal_error(monkeypatch):
    # Its init gone before the program started (killed, OOM-killed on the
    # host): the run's channel ends, and the run is an IE, never an exception.
    import signal

    import sandbox
    from sandbox import cell as cell_module

    sandbox.keep_warm(False)
    real_finish = cell_module._finish_cell

    def finish_then_kill(starting, birth):
        made = real_finish(starting, birth)
        send = made.host.send_launch

        def send_and_kill(record, fds):
            send(record, fds)
            os.kill(made.pid, signal.SIGKILL)

        made.host.send_launch = send_and_kill
        return made

    monkeypatch.setattr(cell_module, "_finish_cell", finish_then_kill)
    for _ in range(5):
        result = run(["true"])
        assert result.status == "IE" and "sandbox failure" in result.message, result
