"""Whether moving a process into a cgroup waits for an RCU grace period.

Every cgroup-v1 run, and a v2 run where the kernel refuses CLONE_INTO_CGROUP,
moves its program into the run's cgroup (the child writes cgroup.procs, see
sandbox/spawn.c). A move takes the kernel's global cgroup_threadgroup_rwsem
for writing. Unless a cgroup root is mounted `favordynmods`, that lock keeps
its readers (every fork and exit) on a per-CPU fast path and a writer first
waits for a full RCU grace period: 10-30 ms on the 2-core VM of bench/README,
paid by the first run after the machine was idle for a moment (back-to-back
runs find the lock still in writer mode), and by most runs of a steady load
whose moves are further apart than a grace period (a service's workers: its
CPUs sat idle twice as long, and it judged ~10 % fewer submissions a second,
bench/README.md). The program's wall clock starts after it (init.py), so it
never shows in a verdict, but it is latency: a `?wait=true` submission or a
`cellblock run` on a quiet machine waits for it.

`favordynmods` (Linux 6.0, cgroup-v2.rst) keeps the lock in writer-friendly
mode instead; forks and exits take its slow read path, which costs nothing
measurable here (bench/README.md). The flag is global: set on any cgroup root,
it serves every hierarchy. Only root can set it, by remounting the cgroup2
hierarchy: `cellblock setup` does (favor()), `cellblock doctor` says whether it
is set (favored()). A remount does not outlive a reboot; docs/architecture.md
says how to make it permanent.
"""

from __future__ import annotations

from sandbox import libc, mountinfo
from sandbox.cgroups.common import is_v2_host

FLAG = "favordynmods"
# What a remount's data may not carry: the mount's own read-only bit and the
# options mountinfo shows that are not cgroup2 parameters.
_NOT_PARAMETERS = ("rw", "ro")


def favored(table: list[mountinfo.Mount] | None = None) -> bool:
    """True if some cgroup root is mounted with favordynmods."""
    return any(
        m.fstype in ("cgroup", "cgroup2") and FLAG in m.super_options
        for m in (table if table is not None else mountinfo.mounts())
    )


def moves_wait(table: list[mountinfo.Mount] | None = None) -> bool:
    """Whether a run's move of its program into its cgroup may wait for a grace
    period: every run moves on a v1 host, and no cgroup root is favordynmods.
    (On v2 a program is born in its cgroup, CLONE_INTO_CGROUP: nothing moves.)"""
    table = table if table is not None else mountinfo.mounts()
    return not favored(table) and not is_v2_host()


def cgroup2_mount(table: list[mountinfo.Mount] | None = None) -> mountinfo.Mount | None:
    """The first cgroup2 mount (the unified hierarchy has one superblock)."""
    for m in table if table is not None else mountinfo.mounts():
        if m.fstype == "cgroup2":
            return m
    return None


def favor() -> str | None:
    """As root: remount the cgroup2 hierarchy with favordynmods, keeping its
    other options (a remount's data replaces them all: without them systemd's
    nsdelegate and memory_recursiveprot would be dropped). Returns what was
    done, for people to read; None if it was set already. OSError if there is
    no cgroup2 hierarchy to remount (a v1-only machine: cgroup v1 roots cannot
    change their flags on remount) or the kernel refuses (before 6.0)."""
    table = mountinfo.mounts()
    if favored(table):
        return None
    mount = cgroup2_mount(table)
    if mount is None:
        raise OSError(
            "no cgroup2 hierarchy is mounted: mount one with `mount -t cgroup2 -o "
            f"{FLAG} none /sys/fs/cgroup/unified` to set {FLAG}"
        )
    options = [o for o in mount.super_options if o not in _NOT_PARAMETERS]
    libc.mount(None, mount.mountpoint, None, libc.MS_REMOUNT, ",".join([*options, FLAG]))
    return (
        f"cgroup2 at {mount.mountpoint} remounted with {FLAG}: moving a program into "
        "its cgroup no longer waits for an RCU grace period (until reboot)"
    )
