"""How long a cell's threads waited for a CPU: what tells a program that ran
out of wall-clock time from a machine too loaded to give it a CPU.

A wall-clock limit is the program's verdict when it spent the time running,
sleeping or blocked. On an overloaded machine (more runnable threads than
CPUs: other cells, other work on the host) a program that needs less CPU than
its limit can reach the wall-clock limit only because it waited for a CPU;
TLE would then be the machine's doing, a wrong verdict, and users who train
on verdicts ask that an overloaded sandbox never gives one.

The kernel counts, for every thread, the time it spent on a CPU and the time
it was runnable but waiting on a run queue (/proc/<tid>/schedstat: sched_info's
figures, in ns). When the watchdog ends a cell at its wall-clock limit it
first reads both for every live thread of the run's cgroup, with the CPUs the
thread may run on (its affinity), and the whole cell's CPU time. While a
thread waited, every CPU it may use was busy; the cell's other threads can
have kept them busy for at most the cell's CPU time less the thread's own, so
the rest of its wait was work outside the cell:

    outside = waited - (cell CPU - thread CPU) / CPUs it may use

The run is the machine's (`starved`: the status is IE, which the service runs
again) when some thread's `outside` is STARVED_WAIT of the wall time or more.
A virtual machine's host taking its CPUs (steal time) while a thread of the
cell waited counts the same: the run had less of a machine than its wall time
says.
A program cannot make itself look starved that way: threads that wait for
each other (more of them than the CPUs they may use) keep those CPUs busy,
and their CPU time takes the wait back; a thread the program kept from some
of the CPUs its cell started with (its own affinity: say, pinned to one that
other work keeps busy while another is idle) is not counted, since its wait
was its choice.
A run with a CPU quota (`cpus`) is not judged: its own quota makes its threads
wait too (the kernel throttles the cgroup), and no thread's figures tell the
two apart; its wall-clock kill stays TLE. Threads that ended before the limit
are not counted (their figures end with them): the verdict stays TLE unless a
thread alive at the kill waited. So does a run without a cgroup (no list of
its threads) or on a kernel without sched_info's figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

# A thread that waited this share of the wall time for CPUs busy with work
# outside its cell: the wall-clock limit was the machine's, not the program's.
STARVED_WAIT = 0.25


@dataclass(frozen=True)
class CpuWait:
    """At a wall-clock kill, the live thread of the cell that waited longest for
    work outside the cell, and the cell's figures then."""

    waited: float  # seconds that thread was runnable but not running
    thread_cpu: float  # seconds that thread ran
    cpus: int  # CPUs that thread may run on (its affinity)
    elapsed: float  # the run's wall-clock seconds
    cpu_time: float  # the whole cell's CPU seconds

    @property
    def outside(self) -> float:
        """Seconds of the wait the cell's other threads cannot account for."""
        return self.waited - max(self.cpu_time - self.thread_cpu, 0.0) / self.cpus


def measure(
    threads: Iterable[int], started_on: set[int], elapsed: float, cpu_time: float
) -> CpuWait | None:
    """The figures of the thread (host tid) whose wait was most for work
    outside the cell, of those that may still run on every CPU of
    `started_on` (the cell's affinity when it was made); None when there is
    none (all gone, narrowed, or a kernel without sched_info)."""
    most: CpuWait | None = None
    for tid in threads:
        try:
            with open(f"/proc/{tid}/schedstat", "rb") as stat:
                ran, waited = (int(field) / 1e9 for field in stat.read().split()[:2])
            cpus = os.sched_getaffinity(tid)
        except (OSError, ValueError):  # the thread ended, or no such counter
            continue
        if not cpus >= started_on:  # the program narrowed it: its wait is its own
            continue
        wait = CpuWait(waited, ran, len(cpus), elapsed, cpu_time)
        if most is None or wait.outside > most.outside:
            most = wait
    return most


def starved(wait: CpuWait, cpu_quota: float | None) -> bool:
    """Whether the machine, not the program, kept the run from its CPU time."""
    return cpu_quota is None and wait.outside >= STARVED_WAIT * wait.elapsed
