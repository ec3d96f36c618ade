"""Limits: the cgroup a run would get (asked of sandbox.cgroups, which finds
it the same way for a run), the per-user kernel quotas cells share, and the
kernel's count of each thread's wait for a CPU (what tells an overloaded
machine's wall-clock kill from the program's, sandbox/cpuwait.py)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time

from sandbox import cgroups, libc, mountinfo, rlimits, userns
from sandbox.cgroups import dynmods

from .host import read
from .probe import probe
from .report import Check

# How long the probe keeps two processes busy on one CPU.
WAIT_PROBE_SECONDS = 0.05


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


def _probe_cpu_wait() -> float:
    """Seconds this process waited for its CPU while a child kept it busy too
    (both pinned to it): more than 0 wherever the kernel counts the waits."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    parent = os.getpid()
    spinner = os.fork()
    if spinner == 0:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the probe ended before PDEATHSIG was set
            os._exit(0)
        while True:
            pass
    try:
        end = time.monotonic() + WAIT_PROBE_SECONDS
        while time.monotonic() < end:
            pass
        with open("/proc/thread-self/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(spinner, signal.SIGKILL)
        os.waitpid(spinner, 0)


def check_cpu_waits() -> Check:
    """Whether a wall-clock kill on an overloaded machine can be told from the
    program's own (sandbox/cpuwait.py): the kernel's per-thread run-queue wait."""
    name = "CPU waits"
    out = probe(_probe_cpu_wait)
    if out.ok and out.value > 0:
        return Check(
            name,
            True,
            "the kernel counts each thread's wait for a CPU (/proc/<tid>/schedstat): a "
            "wall-clock kill of a program that waited for work outside its cell is IE "
            "(judged again by the service), not TLE",
            required=False,
        )
    why = out.error or "two busy processes on one CPU: no wait counted"
    return Check(
        name,
        False,
        f"no per-thread CPU wait here ({why}): a wall-clock kill on an overloaded machine "
        "is TLE, as if the program had used the time",
        "a kernel built with CONFIG_SCHED_INFO (Debian's is), or keep the cells at most "
        "one per CPU with nothing else busy",
        required=False,
    )
