"""A wall-clock kill on a machine too loaded to give the program a CPU is IE,
not TLE (sandbox/cpuwait.py); a program cannot make its own wall-clock kill
look like one.

The machine is overloaded for real: busy processes outside the cell, pinned
to the CPU the cell's caller (and so the cell) is pinned to, as root and as an
unprivileged user. The control is the same program on that CPU without them
(TLE), and the rule itself is shown to turn the starved run's figures into IE
and nothing else into it. The attacks: a program whose own processes wait for
each other, and one that pins itself to a CPU other work keeps busy.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from conftest import REPO, busy_processes, needs_root, python_as, python_in

from sandbox import cpuwait
from sandbox.spec import Limits, Status
from sandbox.verdict import Facts, decide

BUSY = "while :; do :; done"


def _run_on(cpus: set[int], script: str, user: str | None, wall: float = 1) -> dict:
    """`sh -c script` in a cell (CPU limit 10 s, wall-clock `wall` s) made by
    a process (as `user`, or this one's) pinned to `cpus`: its status, CPU
    time and message."""
    code = (
        f"import json, os; os.sched_setaffinity(0, {cpus!r}); import sandbox; "
        f"r = sandbox.run(['sh', '-c', {script!r}], time=10, wall_time={wall}); "
        "print(json.dumps({'status': str(r.status), 'time': r.time, 'message': r.message}))"
    )
    if user is None:
        return json.loads(python_in(REPO, code).stdout)
    done = subprocess.run(python_as(user, code), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.fixture(params=["root", "user"])
def user(request: pytest.FixtureRequest) -> str | None:
    needs_root("it runs cells as root and as a test user")
    return None if request.param == "root" else request.getfixturevalue("test_user").pw_name


@pytest.fixture
def cpu() -> int:
    return min(os.sched_getaffinity(0))


@pytest.fixture
def load(cpu: int) -> Iterator[None]:
    """Four busy processes outside any cell, on `cpu`."""
    with busy_processes(cpu):
        yield


def test_a_busy_program_killed_at_the_wall_clock_on_a_quiet_cpu_is_tle(
    cpu: int, user: str | None
) -> None:
    """The control: alone on its CPU it runs the whole second, and TLE is its verdict."""
    result = _run_on({cpu}, BUSY, user)
    assert result["status"] == "TLE", result
    assert "wall-time limit" in result["message"]
    assert result["time"] > 0.8


def test_a_program_starved_by_work_outside_its_cell_is_ie_not_tle(
    cpu: int, load: None, user: str | None
) -> None:
    result = _run_on({cpu}, BUSY, user)
    assert result["status"] == "IE", result
    assert "overloaded" in result["message"] and "not the program's verdict" in result["message"]
    assert result["time"] < 0.75  # the hogs took its CPU


def test_a_recycled_cell_serves_on_after_a_starved_run(cpu: int, load: None) -> None:
    """A starved run's IE is the machine's, not the cell's: the cell is renewed
    for the next run as after any verdict (the same user namespace before the
    starved run and after it; the starved program itself may not get the CPU
    to say which it is in before its second is up, in a slow VM)."""
    code = (
        f"import json, os; os.sched_setaffinity(0, {{{cpu}}}); import sandbox; "
        "sandbox.for_many_runs(); "
        "before = sandbox.run(['readlink', '/proc/self/ns/user']); "
        f"first = sandbox.run(['sh', '-c', {BUSY!r}], time=10, wall_time=1); "
        "second = sandbox.run(['readlink', '/proc/self/ns/user']); "
        "print(json.dumps([str(first.status), before.stdout, second.stdout]))"
    )
    first, first_ns, second_ns = json.loads(python_in(REPO, code).stdout)
    assert first == "IE" and first_ns.startswith("user:["), (first, first_ns)
    assert second_ns == first_ns


def test_a_program_whose_own_processes_wait_for_each_other_stays_tle(
    cpu: int, user: str | None
) -> None:
    """The attack: two busy processes on the cell's one CPU, each waiting for
    the other half the time, to pass a wall-clock kill off as the machine's.
    Their waits are each other's CPU time: TLE."""
    result = _run_on({cpu}, f"{BUSY} & {BUSY}", user)
    assert result["status"] == "TLE", result
    assert result["time"] > 0.8


def test_a_program_that_pins_itself_to_a_busy_cpu_stays_tle(cpu: int, load: None) -> None:
    """The attack: a cell that may use every CPU, its program pinned by itself
    to the one the hogs keep busy: it waits for them, by its own choice: TLE."""
    result = _run_on(os.sched_getaffinity(0), f"exec taskset -c {cpu} sh -c '{BUSY}'", None)
    assert result["status"] == "TLE", result


def test_a_sleeping_program_on_a_loaded_cpu_stays_tle(cpu: int, load: None) -> None:
    """Waiting for nothing is not waiting for a CPU. (A wall-clock limit of 3 s:
    the shell's own start on the loaded CPU, 0.15 s of CPU in a VM without KVM,
    waits for the hogs too, and must stay under a quarter of the wall time.)"""
    result = _run_on({cpu}, "sleep 10", None, wall=3)
    assert result["status"] == "TLE", result


def _facts(kill_reason: str, cpu_time: float, wait: cpuwait.CpuWait | None) -> Facts:
    return Facts(
        wait_status=9,  # killed by SIGKILL
        cpu_time=cpu_time,
        wall_time=1.0,
        oom_killed=False,
        output_truncated=False,
        kill_reason=kill_reason,
        cpu_wait=wait,
    )


STARVED = cpuwait.CpuWait(waited=0.8, thread_cpu=0.2, cpus=1, elapsed=1.0, cpu_time=0.2)


@pytest.mark.userland
def test_the_rule_gives_ie_only_for_a_wall_clock_kill_of_a_starved_run() -> None:
    limits = Limits.build(time=10, wall_time=1)
    assert decide(_facts("wall", 0.2, STARVED), limits)[0] == Status.IE
    # Without the reading (no cgroup, or the mechanism off) the same run is TLE.
    assert decide(_facts("wall", 0.2, None), limits)[0] == Status.TLE
    # A CPU time over the limit is the program's own, however loaded the machine.
    assert decide(_facts("cpu", 10.5, STARVED), limits)[0] == Status.TLE
    # A run with a CPU quota throttles its own threads: not judged.
    quota = Limits.build(time=10, wall_time=1, cpus=0.5)
    assert decide(_facts("wall", 0.2, STARVED), quota)[0] == Status.TLE


@pytest.mark.userland
def test_the_cells_own_cpu_time_takes_a_threads_wait_back() -> None:
    # Two threads on one CPU, each waiting for the other: nothing from outside.
    each_other = cpuwait.CpuWait(waited=0.5, thread_cpu=0.5, cpus=1, elapsed=1.0, cpu_time=1.0)
    assert each_other.outside == pytest.approx(0.0)
    assert not cpuwait.starved(each_other, None)
    # Three threads on two CPUs: the cell used both CPUs the whole time.
    three = cpuwait.CpuWait(waited=1 / 3, thread_cpu=2 / 3, cpus=2, elapsed=1.0, cpu_time=2.0)
    assert not cpuwait.starved(three, None)
    # A lone thread that waited a quarter of the time: outsiders had its CPU.
    assert cpuwait.starved(
        cpuwait.CpuWait(waited=0.25, thread_cpu=0.75, cpus=2, elapsed=1.0, cpu_time=0.75), None
    )
    assert not cpuwait.starved(
        cpuwait.CpuWait(waited=0.2, thread_cpu=0.8, cpus=2, elapsed=1.0, cpu_time=0.8), None
    )


@pytest.mark.userland
def test_measure_reads_the_threads_that_are_alive_on_every_cpu_of_the_cell() -> None:
    mine = os.sched_getaffinity(0)
    gone = 2**22 + 1  # beyond any pid_max
    here = cpuwait.measure([os.getpid(), gone], mine, elapsed=1.0, cpu_time=0.0)
    assert here is not None and here.cpus == len(mine)
    assert here.thread_cpu > 0
    assert cpuwait.measure([gone], mine, elapsed=1.0, cpu_time=0.0) is None
    # A thread kept from a CPU the cell started with is not counted.
    wider = mine | {max(mine) + 1}
    assert cpuwait.measure([os.getpid()], wider, elapsed=1.0, cpu_time=0.0) is None
