"""The watchdog reads a cell's CPU time when the limit could have been reached.

The cell here is a stand-in (a channel and two pipes, answered by a thread),
and its CPU meter a clock that runs `rate` times the wall clock: what is
tested is when the watchdog reads it and how late it ends a cell that passed
its limit. The real cells' CPU limit (a busy loop, threads on every CPU) is
tested in test_limits.py.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from sandbox import watchdog
from sandbox.channel import Channel
from sandbox.watchdog import CPU_POLL_INTERVAL, watch

pytestmark = pytest.mark.userland  # no cell, no kernel mechanism: not repeated in the VM

# What a check may take beyond its due time here (the loop, a busy machine);
# the control's lateness (0.3 s) stays well beyond it.
SLACK = 0.15


class Clock(watchdog.CpuMeter):
    """CPU seconds that grow `rate` times as fast as the wall clock."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.reads = 0

    def cpu_seconds(self) -> float:
        self.reads += 1
        return self.rate * (time.monotonic() - self.start)

    def kill(self) -> None:
        pass


def _watch(meter: Clock, cpu_limit: float, runs_for: float | None) -> tuple[str | None, float]:
    """Watch a stand-in cell that ends by itself after `runs_for` s (None:
    only when told to kill); the kill reason and the wall time it took."""
    host, cell = Channel.pair()
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)

    def the_cell() -> None:
        if runs_for is None:
            assert cell.receive() == {"kind": "kill"}
        else:
            time.sleep(runs_for)
        os.close(out_w)
        os.close(err_w)
        cell.send("exited", wait_status=0)

    thread = threading.Thread(target=the_cell)
    thread.start()
    try:
        seen = watch(host, out_r, err_r, time.monotonic(), 30.0, cpu_limit, 1 << 16, meter)
    finally:
        thread.join()
        for fd in (out_r, err_r):
            os.close(fd)
        host.close()
        cell.close()
    return seen.kill_reason, time.monotonic() - meter.start


@pytest.mark.parametrize("rate", [1.0, watchdog.MACHINE_CPUS])
def test_a_cell_over_its_cpu_limit_is_ended_within_the_poll_interval(rate: float) -> None:
    """Whatever the rate (one CPU busy, or every CPU), the cell ends within
    CPU_POLL_INTERVAL (and the slack) of the moment it passed its limit."""
    meter = Clock(rate)
    reason, took = _watch(meter, cpu_limit=0.4, runs_for=None)
    assert reason == "cpu"
    assert took < 0.4 / rate + CPU_POLL_INTERVAL + SLACK
    # About log2(0.4 / rate / interval) readings before the fixed beat, and the beat's.
    assert meter.reads < 20


def test_a_short_run_reads_the_cpu_meter_once() -> None:
    meter = Clock(1.0)
    reason, _ = _watch(meter, cpu_limit=10.0, runs_for=0.1)
    assert reason is None
    assert meter.reads == 1


def test_control_a_bound_of_fewer_cpus_than_the_cell_uses_ends_it_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: the readings are only as early as the bound is true. Told
    the cell can use one CPU while it uses four, the watchdog first reads the
    meter at the limit's full length, four times too late."""
    monkeypatch.setattr(watchdog, "MACHINE_CPUS", 1)
    meter = Clock(4.0)
    reason, took = _watch(meter, cpu_limit=0.4, runs_for=None)
    assert reason == "cpu"
    assert took >= 0.4 - 0.01 > 0.4 / 4 + CPU_POLL_INTERVAL + SLACK + 0.1
