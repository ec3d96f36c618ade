"""Warm cells (sandbox/warm.py): made ahead of time, each used by exactly one run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, VENV, as_user, children_of_this_process, settle

import sandbox
from sandbox import run, warm


@pytest.fixture
def warm_cells():
    sandbox.keep_warm()
    yield
    sandbox.keep_warm(False)


_our_children = children_of_this_process


def test_each_run_gets_a_fresh_cell(warm_cells):
    # Whatever one run leaves in its cell (files, processes) is not in the next.
    for n in range(6):
        result = run(["sh", "-c", "echo $$; ls -A /tmp | wc -l; ls /box; echo x > /tmp/left; "
                      "sleep 60 &"], copy_in={f"in{n}": b"%d" % n}, copy_out=[f"in{n}"])
        assert result.status == "OK", result.message
        assert result.stdout.split() == ["2", "0", f"in{n}"], result.stdout
        assert result.files == {f"in{n}": b"%d" % n}
    assert len(warm._ready) == 1


def test_turning_it_off_leaves_no_process_or_fd():
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
        as_user(test_user.pw_name, ["env", f"PYTHONPATH={REPO}", str(VENV / "bin" / "python"),
                                    "-c", script]),
        capture_output=True, text=True, cwd="/", check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "2", "0"], done.stdout


def test_environment_variable_turns_it_on():
    code = "import sandbox.warm as w; print(w.enabled())"
    for value, expected in (("1", "True"), ("0", "False"), ("", "False")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "CELLBLOCK_WARM": value}, cwd=REPO, check=True)
        assert done.stdout.strip() == expected
