"""Limits: the cgroup a run would get (asked of sandbox.cgroups, which finds
it the same way for a run) and the per-user kernel quotas cells share."""

from __future__ import annotations

import os
import resource

from sandbox import cgroups, mountinfo, rlimits, userns
from sandbox.cgroups import dynmods

from .host import read
from .report import Check


def check_cgroups() -> Check:
    """What this process's runs would get, as the cgroup discovery decides it."""
    placement = cgroups.inspect()
    return Check("cgroups", placement.ok, placement.detail, placement.fix)


def check_cgroup_moves() -> Check:
    """Whether moving a program into its cgroup waits for an RCU grace period
    (sandbox/cgroups/dynmods.py): latency after idle, never a verdict."""
    name = "cgroup moves"
    table = mountinfo.mounts()
    if dynmods.favored(table):
        return Check(
            name,
            True,
            f"a cgroup root is mounted {dynmods.FLAG}: moving a program into its cgroup "
            "does not wait for an RCU grace period",
            required=False,
        )
    if not dynmods.moves_wait(table):
        return Check(
            name,
            True,
            "cgroup v2: a program is born in its cgroup (CLONE_INTO_CGROUP), nothing is "
            f"moved; where the kernel refuses that, the move waits (set {dynmods.FLAG})",
            required=False,
        )
    mount = dynmods.cgroup2_mount(table)
    remount = (
        f"or `mount -o remount,{dynmods.FLAG} {mount.mountpoint}` keeping its options"
        if mount
        else f"or `mount -t cgroup2 -o {dynmods.FLAG} none /sys/fs/cgroup/unified`"
    )
    return Check(
        name,
        False,
        f"cgroup v1 without {dynmods.FLAG}: a run whose move into its cgroup comes a grace "
        "period after the last one (the first after a pause, most of a busy service's) waits "
        "10-30 ms for an RCU grace period to move its program (latency, not counted in its "
        "wall time; a service judges fewer submissions a second)",
        f"as root: cellblock setup --user USER ({remount})",
        required=False,
    )


def check_quotas() -> Check:
    """How many cells at their share of per-user kernel quotas (userns.py,
    rlimits.py) the caller's own quotas hold, half of them left to the caller."""
    name = "per-user quotas"
    share = userns.CELL_NAMESPACE_LIMITS
    instances = int(read("/proc/sys/fs/inotify/max_user_instances") or 0)
    watches = int(read("/proc/sys/fs/inotify/max_user_watches") or 0)
    signals = resource.getrlimit(resource.RLIMIT_SIGPENDING)[0]
    if signals == resource.RLIM_INFINITY:
        signals = 1 << 62
    fit = (
        min(
            instances // share["max_inotify_instances"],
            watches // share["max_inotify_watches"],
            signals // rlimits.PENDING_SIGNALS,
        )
        // 2
    )
    wanted = 2 * (os.cpu_count() or 1)
    detail = (
        f"a cell takes at most {share['max_inotify_instances']} inotify instances, "
        f"{share['max_inotify_watches']} watches and {rlimits.PENDING_SIGNALS} queued "
        f"signals of the worker's own (fs.inotify.max_user_instances={instances}, "
        f"max_user_watches={watches}, RLIMIT_SIGPENDING={signals}): {fit} cells at "
        "their quotas leave the worker half"
    )
    if fit >= wanted:
        return Check(name, True, detail, required=False)
    need_instances = 2 * wanted * share["max_inotify_instances"]
    need_watches = 2 * wanted * share["max_inotify_watches"]
    return Check(
        name,
        False,
        f"{detail}, fewer than the {wanted} cells this machine's cores may run at once",
        f"sysctl -w fs.inotify.max_user_instances="
        f"{max(instances, need_instances)} fs.inotify.max_user_watches="
        f"{max(watches, need_watches)}",
        required=False,
    )
