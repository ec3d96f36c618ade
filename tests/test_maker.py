"""The cell maker (sandbox/maker.py): warm cells cloned by a small process of the
caller's, never by the caller itself; it dies with the caller, stops cleanly,
and a maker that is gone is never a dead end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import REPO, VENV, as_user, children_of_this_process

import sandbox
from sandbox import maker, run, warm


def _settle(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def warm_with_maker():
    sandbox.keep_warm()
    result = run(["true"])  # starts the maker (in the background)
    assert result.status == "OK", result.message
    assert _settle(lambda: maker.current() is not None), "the cell maker never came up"
    yield maker.current()
    sandbox.keep_warm(False)


def _waiting_cell():
    (waiting,) = warm._ready.values()
    waiting.confirm()
    return waiting


def test_warm_cells_come_from_the_maker(warm_with_maker):
    for n in range(4):
        result = run(["sh", "-c", "echo $$; ls -A /box /tmp"], copy_in={f"f{n}": b"x"})
        assert result.status == "OK", result.message
        assert result.stdout.split() == ["2", "/box:", f"f{n}", "/tmp:"], result.stdout
    waiting = _waiting_cell()
    assert waiting.by_maker
    assert _parent_of(waiting.pid) == warm_with_maker.process.pid != os.getpid()
    # The caller's only child is the maker: it cloned no init itself.
    assert children_of_this_process() == [warm_with_maker.process.pid]


def test_turning_warm_cells_off_stops_the_maker_and_leaves_nothing(warm_with_maker):
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        result = run(["true"])
        assert result.status == "OK", result.message
    maker_pid, init_pid = warm_with_maker.process.pid, _waiting_cell().pid
    sandbox.keep_warm(False)
    assert children_of_this_process() == []  # the maker was waited for
    assert _gone(maker_pid) and _settle(lambda: _gone(init_pid))
    assert len(os.listdir("/proc/self/fd")) == fds_before - 2  # its control socket, the pidfd


def test_a_killed_maker_is_not_a_dead_end(warm_with_maker):
    assert run(["true"]).status == "OK"
    waiting = _waiting_cell()
    os.kill(warm_with_maker.process.pid, signal.SIGKILL)
    # Its inits die with it (PDEATHSIG); the runs go on, on cells of our own.
    assert _settle(lambda: _gone(waiting.pid))
    for _ in range(3):
        result = run(["echo", "still here"])
        assert result.status == "OK" and result.stdout == "still here\n", result.message
    assert maker.current() is None
    assert not _waiting_cell().by_maker


def test_the_maker_and_its_cells_die_with_the_caller():
    script = textwrap.dedent("""
        import sys, time
        import sandbox
        from sandbox import maker, warm
        sandbox.keep_warm()
        sandbox.run(["true"])
        while maker.current() is None:
            time.sleep(0.02)
        sandbox.run(["true"])
        (waiting,) = warm._ready.values()
        waiting.confirm()
        print(maker.current().process.pid, waiting.pid, flush=True)
        time.sleep(600)
    """)
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        maker_pid, init_pid = map(int, caller.stdout.readline().split())
        assert not _gone(maker_pid) and not _gone(init_pid)
    finally:
        caller.kill()
        caller.wait()
        caller.stdout.close()
    assert _settle(lambda: _gone(maker_pid) and _gone(init_pid))


def test_a_threaded_caller_gets_the_makers_cells(warm_with_maker):
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    try:
        for _ in range(3):
            assert run(["true"]).status == "OK"
        waiting = _waiting_cell()
        assert waiting.by_maker and _parent_of(waiting.pid) == warm_with_maker.process.pid
    finally:
        stop.set()
        busy.join()


def test_a_forked_child_starts_its_own_maker(warm_with_maker):
    assert run(["true"]).status == "OK"
    parents = warm_with_maker.process.pid
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through its exit status
        code = 1
        try:
            outputs = [run(["echo", "child"]).stdout for _ in range(3)]
            code = 0 if outputs == ["child\n"] * 3 and maker._maker is not None else 2
            if maker._maker is not None and maker._maker.process.pid == parents:
                code = 3
            sandbox.keep_warm(False)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert maker.current() is warm_with_maker  # ours still serves us
    assert run(["echo", "parent"]).stdout == "parent\n"


def test_unprivileged_caller_gets_the_makers_cells(test_user):
    script = textwrap.dedent("""
        import os, time
        import sandbox
        from sandbox import maker, warm
        sandbox.keep_warm()
        sandbox.run(["true"])
        while maker.current() is None:
            time.sleep(0.02)
        outs = [sandbox.run(["sh", "-c", "echo $$ $(id -u)"]).stdout for _ in range(4)]
        (waiting,) = warm._ready.values()
        waiting.confirm()
        print(len(set(outs)), outs[0].strip(), waiting.by_maker)
        sandbox.keep_warm(False)
    """)
    done = subprocess.run(
        as_user(test_user.pw_name, ["env", f"PYTHONPATH={REPO}", str(VENV / "bin" / "python"),
                                    "-c", script]),
        capture_output=True, text=True, cwd="/", check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "2", "0", "True"], done.stdout
