"""Warm cells (sandbox/warm.py): made ahead of time, each used by exactly one run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, children_of_this_process, process_stat, python_as, settle

import sandbox
from sandbox import SpecError, run, userns, warm


@pytest.fixture
def warm_cells():
    sandbox.keep_warm()
    sandbox.recycle_cells(False)  # each run a fresh warm cell (test_recycle.py: recycled)
    yield
    sandbox.recycle_cells(None)
    sandbox.keep_warm(False)


_our_children = children_of_this_process


def test_each_run_gets_a_fresh_cell(warm_cells):
    # Whatever one run leaves in its cell (files, processes) is not in the next.
    for n in range(6):
        result = run(
            ["sh", "-c", "echo $$; ls -A /tmp | wc -l; ls /box; echo x > /tmp/left; sleep 60 &"],
            copy_in={f"in{n}": b"%d" % n},
            copy_out=[f"in{n}"],
        )
        assert result.status == "OK", result.message
        assert result.stdout.split() == ["2", "0", f"in{n}"], result.stdout
        assert result.files == {f"in{n}": b"%d" % n}
    assert len(warm._ready) == 1


def test_turning_it_off_leaves_no_process_or_fd():
    sandbox.keep_warm(False)  # from nothing of warm cells (the tests before had them)
    fds_before = len(os.listdir("/proc/self/fd"))
    sandbox.keep_warm()
    try:
        for _ in range(20):
            assert run(["true"]).status == "OK"
        assert len(_our_children()) >= 1  # the cell maker (and a waiting init of ours)
    finally:
        sandbox.keep_warm(False)
    assert settle(lambda: not _our_children()), _our_children()
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_a_dead_warm_cell_is_replaced(warm_cells):
    assert run(["true"]).status == "OK"
    (waiting,) = warm._ready.values()
    waiting.confirm()  # made by the cell maker: its pid comes as its first message
    os.kill(waiting.pid, signal.SIGKILL)
    settle(lambda: warm._has_news(waiting))
    result = run(["echo", "still here"])
    assert result.status == "OK" and result.stdout == "still here\n", result.message


def test_a_warm_cell_that_dies_as_it_is_taken_is_replaced(warm_cells, monkeypatch):
    # The race the check in take() cannot close: the init dies between the
    # check and the launch. The launch fails, and a new cell runs the program.
    assert run(["true"]).status == "OK"
    (waiting,) = warm._ready.values()
    waiting.confirm()  # made by the cell maker: its pid comes as its first message
    os.kill(waiting.pid, signal.SIGKILL)
    assert settle(lambda: warm._has_news(waiting))
    monkeypatch.setattr(warm, "_has_news", lambda cell: False)
    result = run(["echo", "still here"])
    assert result.status == "OK" and result.stdout == "still here\n", result.message


def test_each_birth_gets_its_own_cell_and_the_oldest_goes(warm_cells):
    # The tmpfs size is part of what a cell is born with: each size its own cell.
    sizes = []
    for size in (32, 96, 32, 96, 48):
        result = run(["df", "-k", "/tmp"], tmpfs_size=f"{size}M")
        assert result.status == "OK", result.message
        sizes.append(int(result.stdout.splitlines()[1].split()[1]) // 1024)
    assert sizes == [32, 96, 32, 96, 48], sizes
    kept = sorted(birth.plan.tmpfs_size // 2**20 for birth in warm._ready)
    assert kept == [48, 96], kept


def test_a_forked_child_never_uses_its_parents_cell(warm_cells):
    assert run(["true"]).status == "OK"
    (parents,) = warm._ready.values()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through its exit status
        code = 1
        try:
            result = run(["echo", "child"])
            own = all(cell is not parents for cell in warm._ready.values())
            code = 0 if result.stdout == "child\n" and own else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's cell was untouched by the child: it still serves the parent.
    assert not warm._has_news(parents)
    assert run(["echo", "parent"]).stdout == "parent\n"


def test_unprivileged_caller_with_warm_cells(test_user):
    script = textwrap.dedent("""
        import sandbox
        sandbox.keep_warm()
        outs = [sandbox.run(["sh", "-c", "echo $$ $(id -u)"]).stdout for _ in range(5)]
        print(len(set(outs)), outs[0].strip())
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
    assert done.stdout.split() == ["1", "2", "1000"], done.stdout


# A caller script in a fresh interpreter: it records, run by run, whether the
# run took a warm cell, and prints what it saw as JSON.
_RECORDING_CALLER = """
import json, os, sys
sys.path.insert(0, "tests")
from conftest import children_of_this_process
import sandbox
from sandbox import maker, warm
from sandbox.making import reap_finished
took = []
real_take = warm.take
def take(birth):
    cell = real_take(birth)
    took.append(cell is not None)
    return cell
warm.take = take
def runs(n):
    for _ in range(n):
        result = sandbox.run(["true"])
        assert result.status == "OK", result.message
def children():
    reap_finished()
    return children_of_this_process()
"""


def _caller(
    script: str, warm_setting: str | None = None, recycle_setting: str | None = None
) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CELLBLOCK_WARM", "CELLBLOCK_RECYCLE")}
    if warm_setting is not None:
        env["CELLBLOCK_WARM"] = warm_setting
    if recycle_setting is not None:
        env["CELLBLOCK_RECYCLE"] = recycle_setting
    done = subprocess.run(
        [sys.executable, "-c", _RECORDING_CALLER + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return json.loads(done.stdout)


def test_by_default_a_processs_second_run_turns_warm_cells_on():
    seen = _caller(
        """
        import time
        runs(1)
        after_one = {"enabled": warm.enabled(), "maker": maker._maker is not None,
                     "waiting": len(warm._ready), "children": children()}
        runs(4)
        maker_after_five = maker._maker is not None
        runs(5)
        while maker.current() is None:  # started by the tenth run
            time.sleep(0.02)
        runs(2)
        (waiting,) = warm._ready.values()
        print(json.dumps({"after_one": after_one, "maker_after_five": maker_after_five,
                          "took": took, "enabled": warm.enabled(),
                          "by_maker": waiting.by_maker, "maker": maker._maker.process.pid}))
    """,
        recycle_setting="0",
    )  # fresh warm cells; the recycled default: the next test
    # One run (cellblock run's case) starts nothing and leaves nothing.
    assert seen["after_one"] == {"enabled": False, "maker": False, "waiting": 0, "children": []}
    # The second run is cold and makes the third's cell; from then on every run is warm.
    assert seen["took"] == [False, False] + [True] * 10
    assert seen["enabled"] is True
    # The cell maker (a fixed cost) comes only once the process has run ten cells.
    assert seen["maker_after_five"] is False and seen["by_maker"] is True
    # It ends with the caller.
    assert settle(lambda: (process_stat(seen["maker"]) or ["X"])[0] in ("Z", "X"))


def test_by_default_cells_are_recycled_once_a_process_has_run_ten():
    script = """
        runs(9)
        after_nine = warm.recycling()
        runs(1)
        after_ten = warm.recycling()
        pids = []
        for _ in range(3):
            runs(1)
            (waiting,) = warm._ready.values()
            pids.append(waiting.pid)
        print(json.dumps({"after_nine": after_nine, "after_ten": after_ten,
                          "cells": len(set(pids))}))
    """
    # From the eleventh run on, one cell is renewed after each run and serves the next.
    assert _caller(script) == {"after_nine": False, "after_ten": True, "cells": 1}
    # Turned off, from outside or by the process: a fresh cell for every run.
    fresh = {"after_nine": False, "after_ten": False, "cells": 3}
    assert _caller(script, recycle_setting="0") == fresh
    assert _caller("\n        sandbox.recycle_cells(False)" + script) == fresh
    # Turned on: from the first run (warm cells with it), whatever the count.
    on = _caller("\n        sandbox.recycle_cells()" + script)
    assert on == {"after_nine": True, "after_ten": True, "cells": 1}
    assert _caller(script, recycle_setting="1") == on


def test_a_caller_that_says_no_never_gets_warm_cells():
    script = """
        runs(5)
        print(json.dumps({"took": took, "maker": maker._maker is not None,
                          "children": children()}))
    """
    never = {"took": [False] * 5, "maker": False, "children": []}
    assert _caller(script, warm_setting="0") == never
    assert _caller("\n        sandbox.keep_warm(False)" + script) == never


def test_the_choice_can_be_made_and_taken_back():
    seen = _caller("""
        sandbox.keep_warm()  # on from the first run
        runs(2)
        sandbox.keep_warm(False)
        off = {"maker": maker._maker is not None, "waiting": len(warm._ready),
               "children": children()}
        runs(2)
        sandbox.keep_warm(None)  # automatic again: this process has run cells before
        runs(2)
        print(json.dumps({"took": took, "off": off, "enabled": warm.enabled()}))
    """)
    assert seen["off"] == {"maker": False, "waiting": 0, "children": []}
    assert seen["took"] == [False, True, False, False, False, True]
    assert seen["enabled"] is True
    assert _caller("runs(2)\nprint(json.dumps(took))", warm_setting="1") == [False, True]


def test_the_environment_variable():
    code = "import sandbox.warm as w; print(w.setting(), w.enabled())"
    for value, expected in (("1", "True True"), ("0", "False False"), ("", "None False")):
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "CELLBLOCK_WARM": value},
            cwd=REPO,
            check=True,
        )
        assert done.stdout.strip() == expected


def test_a_warm_cell_outlives_the_thread_that_made_it(warm_cells, monkeypatch):
    # PR_SET_PDEATHSIG follows the thread that spawned the init, and a caller's
    # thread (a pool's, a request's) may end while the warm cell it made waits:
    # the init's outer process watches the caller's process instead.
    import threading

    from sandbox import cell

    monkeypatch.setattr(cell, "_maker", lambda: None)  # every cell spawned by its caller
    for _ in range(2):  # the second run's cell is the first thread's refill
        done: list = []
        runner = threading.Thread(target=lambda done=done: done.append(run(["true"])))
        runner.start()
        runner.join()
        assert done[0].status == "OK", done[0].message
    (waiting,) = warm._ready.values()
    assert not waiting.by_maker

    def ended() -> bool:
        stat = process_stat(waiting.pid)
        return stat is None or stat[0] == "Z"

    assert not settle(ended, timeout=0.5)  # its thread has ended; it has not
    # ... and it serves the next run, from this thread.
    assert run(["true"]).status == "OK"
    assert all(cell is not waiting for cell in warm._ready.values())


def _id_locks() -> list[str]:
    """Our descriptors of id-range locks (userns.hold_ids): one per live cell."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(userns.SLOT_LOCKS_ROOT):
            found.append(target)
    return found


@pytest.mark.needs_root  # root's id ranges
def test_a_run_refused_before_its_launch_ends_the_cell_it_took(warm_cells):
    # The run takes its cell before it is prepared; one that then fails for
    # the caller's reasons ends that cell, its ids released.
    assert run(["true"]).status == "OK"
    assert len(warm._ready) == 1 and len(_id_locks()) == 1
    with pytest.raises(SpecError):
        run(["true"], copy_in={"x": "/nonexistent/cellblock-test-input"})
    assert len(warm._ready) == 0 and _id_locks() == []
    assert run(["true"]).status == "OK"
