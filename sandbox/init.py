"""What a cell's init is told: what the cell is made of (Birth), and each run
(Launch). The init itself is C, an executable of its own (sandbox/init.c: its
life, from the namespaces to the last run); sandbox/wire.py writes these in
the form it reads, and making.py spawns it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import mounts, spawn, userns


@dataclass(frozen=True)
class Birth:
    """What a cell needs from its first instant: known before any run is (a warm
    cell is made from it ahead of time), and the key of the warm pool. The id
    map is a template: each cell gets a slot of its own (userns.hold_ids)."""

    plan: mounts.RootPlan
    idmap: userns.IdMap


@dataclass
class Launch:
    """One run, sent to a made cell's init (channel.send_launch, as
    wire.launch_record writes it) with its fds in this order: stdin, stdout,
    stderr, cgroup.procs fds, the cgroup dir, copy-ins."""

    program: spawn.ProgramStart
    copy_in: list[tuple[str, int]]  # (path under /box, mode), one fd each
    readonly: tuple[str, ...]
    copy_out: tuple[str, ...]
    file_size: int
    cgroup_fds: int  # how many cgroup.procs fds
    cgroup_dir: bool  # whether a cgroup dir fd follows them
    recycle: bool = False  # after the run, renew the cell and wait for another (warm.py)
