"""The cell maker (sandbox/maker.py): warm cells spawned by a small process of the
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
from pathlib import Path

import pytest
from conftest import (
    REPO,
    children_of,
    children_of_this_process,
    parent_of,
    process_stat,
    python_as,
    settle,
    under_a_refusing_profile,
)

import sandbox
from sandbox import maker, run, warm

# The first lines of a caller script: warm cells on, and the cell maker up.
_WITH_THE_MAKER_UP = """
import sys, time
import sandbox
from sandbox import maker, warm
sandbox.keep_warm()
sandbox.run(["true"])
while maker.current() is None:
    time.sleep(0.02)
"""


def _gone(pid: int) -> bool:
    fields = process_stat(pid)
    return fields is None or fields[0] in ("Z", "X")


@pytest.fixture
def warm_with_maker():
    sandbox.keep_warm()
    # A cell per run, each made by the maker (a recycled one is made once).
    sandbox.recycle_cells(False)
    result = run(["true"])  # starts the maker (in the background)
    assert result.status == "OK", result.message
    assert settle(lambda: maker.current() is not None), "the cell maker never came up"
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
    assert parent_of(waiting.pid) == warm_with_maker.process.pid != os.getpid()
    # The caller's only child is the maker: it spawned no init itself (but for
    # those of the runs before the maker was up, reaped here).
    from sandbox.making import reap_finished

    reap_finished()
    assert children_of_this_process() == [warm_with_maker.process.pid]


@pytest.mark.needs_root  # it reads the inits' /proc files
def test_the_makers_cells_hold_nothing_of_the_callers_environment(monkeypatch):
    # The maker starts with PATH alone, and the cells' processes (an executable
    # of their own, spawned with an empty environment) with nothing: a
    # worker's secrets stay out.
    monkeypatch.setenv("CELLBLOCK_TEST_SECRET", "hunter2")
    sandbox.keep_warm()
    try:
        assert run(["true"]).status == "OK"
        assert settle(lambda: maker.current() is not None)
        assert run(["true"]).status == "OK"
        waiting = _waiting_cell()
        with open(f"/proc/{maker.current().process.pid}/environ", "rb") as f:
            environ = f.read()
        assert b"hunter2" not in environ and b"PATH=" in environ, environ
        assert settle(lambda: len(children_of(waiting.pid)) == 1)  # its init, once forked
        (init,) = children_of(waiting.pid)
        for pid in (waiting.pid, init):
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert f.read() == b""
            assert os.readlink(f"/proc/{pid}/exe").endswith("/cellblock-init")
    finally:
        sandbox.keep_warm(False)


def test_turning_warm_cells_off_stops_the_maker_and_leaves_nothing(warm_with_maker):
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        result = run(["true"])
        assert result.status == "OK", result.message
    maker_pid, init_pid = warm_with_maker.process.pid, _waiting_cell().pid
    sandbox.keep_warm(False)
    assert children_of_this_process() == []  # the maker was waited for
    assert _gone(maker_pid) and settle(lambda: _gone(init_pid))
    # Gone: its control socket, and the waiting cell's channel and id range lock
    # (a root-started cell's, userns.hold_ids).
    assert len(os.listdir("/proc/self/fd")) == fds_before - 3


def test_a_killed_maker_is_not_a_dead_end(warm_with_maker):
    assert run(["true"]).status == "OK"
    waiting = _waiting_cell()
    os.kill(warm_with_maker.process.pid, signal.SIGKILL)
    # Its inits die with it (PDEATHSIG); the runs go on, on cells of our own.
    assert settle(lambda: _gone(waiting.pid))
    for _ in range(3):
        result = run(["echo", "still here"])
        assert result.status == "OK" and result.stdout == "still here\n", result.message
    assert maker.current() is None
    assert not _waiting_cell().by_maker


def test_a_caller_that_exits_leaves_no_maker_and_no_complaint():
    script = _WITH_THE_MAKER_UP + textwrap.dedent("""
        for _ in range(3):
            assert sandbox.run(["true"]).status == "OK"
        print(maker.current().process.pid, flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert _gone(int(done.stdout))


def test_the_maker_and_its_cells_die_with_the_caller():
    script = _WITH_THE_MAKER_UP + textwrap.dedent("""
        sandbox.run(["true"])
        (waiting,) = warm._ready.values()
        waiting.confirm()
        print(maker.current().process.pid, waiting.pid, flush=True)
        time.sleep(600)
    """)
    caller = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        maker_pid, init_pid = map(int, caller.stdout.readline().split())
        assert not _gone(maker_pid) and not _gone(init_pid)
    finally:
        caller.kill()
        caller.wait()
        caller.stdout.close()
    assert settle(lambda: _gone(maker_pid) and _gone(init_pid))


def test_a_threaded_caller_gets_the_makers_cells(warm_with_maker):
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    try:
        for _ in range(3):
            assert run(["true"]).status == "OK"
        waiting = _waiting_cell()
        assert waiting.by_maker and parent_of(waiting.pid) == warm_with_maker.process.pid
    finally:
        stop.set()
        busy.join()


def test_runs_from_several_threads_at_once(warm_with_maker):
    # One maker serves them all; each run still gets a cell of its own.
    outputs: list[str] = []

    def runs(n: int) -> None:
        for i in range(8):
            result = run(["sh", "-c", f"echo $$ {n}-{i} $(ls /box)"], copy_in={f"t{n}": b""})
            outputs.append(f"{result.status} {result.stdout.strip()}")

    threads = [threading.Thread(target=runs, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outputs) == sorted(f"OK 2 {n}-{i} t{n}" for n in range(4) for i in range(8))
    sandbox.keep_warm(False)
    assert children_of_this_process() == []


def test_a_forked_child_shares_the_maker_and_cannot_stop_it(warm_with_maker):
    # An RQ worker starts the maker; each job's work horse is forked from it.
    assert run(["true"]).status == "OK"
    ours = warm_with_maker.process.pid
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through its exit status
        code = 1
        try:
            outputs = [run(["echo", "child"]).stdout for _ in range(3)]
            waiting = _waiting_cell()
            mine = waiting.by_maker and parent_of(waiting.pid) == ours
            sandbox.keep_warm(False)  # ends the child's warm cell, not the maker
            code = 0 if outputs == ["child\n"] * 3 and mine else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert maker.current() is warm_with_maker and not _gone(ours)
    assert run(["echo", "parent"]).stdout == "parent\n"


def test_stopping_does_not_wait_for_children_that_hold_the_maker(warm_with_maker):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - holds its copy of the maker's socket
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    try:
        started = time.monotonic()
        sandbox.keep_warm(False)
        assert time.monotonic() - started < 5
        assert _gone(warm_with_maker.process.pid)
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)


def test_a_miss_is_made_by_the_maker_too(warm_with_maker, monkeypatch):
    from sandbox import making

    spawned = []
    real_spawn = making.spawn_cell
    monkeypatch.setattr(
        making, "spawn_cell", lambda birth: spawned.append(birth) or real_spawn(birth)
    )
    for size in (32, 48, 64):  # each tmpfs size a birth of its own: no warm cell for it
        result = run(["df", "-k", "/tmp"], tmpfs_size=f"{size}M")
        assert result.status == "OK", result.message
        assert int(result.stdout.splitlines()[1].split()[1]) // 1024 == size
    assert spawned == []


def test_an_embedded_interpreter_starts_no_maker(monkeypatch):
    # sys.executable of a Python embedded in another program (uWSGI) is that
    # program: starting it with our arguments could do anything. Cells are
    # then made by the caller.
    sandbox.keep_warm(False)  # no maker yet (the tests before had one)
    monkeypatch.setattr(sys, "executable", "/usr/bin/uwsgi")
    sandbox.keep_warm()
    try:
        for _ in range(3):
            assert run(["echo", "ok"]).stdout == "ok\n"
        assert maker._maker is None and maker.current() is None
    finally:
        sandbox.keep_warm(False)


def test_where_clone_into_namespaces_is_refused_the_maker_still_makes_the_cells():
    # Docker's worker profile refuses clone with namespace flags; the inits
    # the maker spawns unshare theirs, so it comes up and makes the cells.
    from sandbox import libc

    sandbox.keep_warm(False)  # no maker yet (the tests before had one)

    def runs() -> str:
        sandbox.keep_warm()
        sandbox.recycle_cells(False)  # each cell made for its run: the maker's, once it is up
        results = [run(["echo", "ok"])]
        settle(lambda: maker.current() is not None, timeout=10)
        results += [run(["echo", "ok"]) for _ in range(2)]
        state = (maker.current() is not None, _waiting_cell().by_maker)
        sandbox.keep_warm(False)
        sandbox.recycle_cells(None)
        return f"{[str(r.status) for r in results]} {state}"

    report = under_a_refusing_profile({"clone": libc.CLONE_NEWUSER}, runs)
    assert report == "['OK', 'OK', 'OK'] (True, True)", report


def test_unprivileged_caller_gets_the_makers_cells(test_user):
    script = _WITH_THE_MAKER_UP + textwrap.dedent("""
        outs = [sandbox.run(["sh", "-c", "echo $$ $(id -u)"]).stdout for _ in range(4)]
        (waiting,) = warm._ready.values()
        waiting.confirm()
        print(len(set(outs)), outs[0].strip(), waiting.by_maker)
        sandbox.keep_warm(False)
    """)
    done = subprocess.run(
        python_as(test_user.pw_name, script),
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # The program runs as cell uid 1000: one of the user's subordinate ids.
    assert done.stdout.split() == ["1", "2", "1000", "True"], done.stdout


def test_an_unprivileged_maker_maps_each_cell_to_a_subordinate_id_of_its_own(test_user):
    """A rootless caller's maker holds the user's subordinate ids in a user
    namespace of its own and writes each cell's maps itself (no setuid helper
    per cell): two cells it made, alive at once, run as two subordinate ids."""
    from sandbox.userns import subordinate_range

    (first, count), _ = subordinate_range(test_user.pw_uid)
    markers = [f"9.{n}{os.getpid() % 1000:03d}" for n in (1, 2)]
    script = _WITH_THE_MAKER_UP + textwrap.dedent(f"""
        import threading
        sandbox.run(["true"])  # takes the cell made before the maker was up
        runs = [threading.Thread(target=sandbox.run, args=(["sleep", m],),
                                 kwargs={{"wall_time": 30}}) for m in {markers!r}]
        for t in runs: t.start()
        for t in runs: t.join()
        sandbox.keep_warm(False)
    """)
    caller = subprocess.Popen(
        python_as(test_user.pw_name, script),
        cwd="/",
    )
    try:
        found: dict[str, int] = {}
        assert settle(
            lambda: found.update({m: p for m in markers for p in _sleeping(m)}) or len(found) == 2,
            timeout=60,
        ), found
        uids = {m: os.stat(f"/proc/{pid}").st_uid for m, pid in found.items()}
        inits = [parent_of(pid) for pid in found.values()]
        # An init's parent is what the maker spawned (cellblock-init's outer process).
        makers = {
            Path(f"/proc/{parent_of(parent_of(init))}/cmdline").read_bytes() for init in inits
        }
    finally:
        for pid in (p for m in markers for p in _sleeping(m)):
            os.kill(pid, signal.SIGKILL)
        caller.wait(timeout=60)
    assert len(makers) == 1 and b"sandbox.maker" in makers.pop()  # both the maker's
    assert len(set(uids.values())) == 2, uids
    assert all(first <= uid < first + count for uid in uids.values()), uids


def _sleeping(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                    found.append(int(entry))
            except OSError:
                pass
    return found
