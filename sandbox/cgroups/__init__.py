"""One fresh cgroup per run: limits, a kill switch and the run's true figures.

Two backends behind one interface: `v2` (the unified hierarchy) and `v1`
(one hierarchy per controller). `find()` picks the one this host has and the
subtree that belongs to cellblock for this user; `CellCgroup` is one run's
cgroup:

    group = hierarchy.create(limits)     # before the cell starts
    fds = group.open_procs()             # the program writes "0" to each: it joins
    ... group.cpu_seconds(), group.kill() while it runs (the watchdog's meter)
    usage = group.usage()                # after the last process is gone
    group.remove()

Layout (`cellblock setup --user USER` makes the unprivileged ones):

    v2  /sys/fs/cgroup/cellblock/                  root's runs
        /sys/fs/cgroup/cellblock/USER/             USER's, delegated (chowned)
        or this process's own cgroup when it was delegated to it (systemd Delegate=)
    v1  /sys/fs/cgroup/<controller>/cellblock/     root's runs
        /sys/fs/cgroup/<controller>/cellblock/USER/  USER's, owned by USER

Each run's cgroup is `run-<pid namespace>-<supervisor pid>-<n>`; those of a
dead supervisor of our PID namespace are removed by the next one that starts
(`Hierarchy.clean_stale`). The namespace is part of the name because two
containers may share a subtree, and a pid means nothing in the other one.
"""

from __future__ import annotations

import os

from .. import mountinfo
from . import v1, v2
from .common import (
    CGROUP_ROOT,
    CONTROLLERS,
    REMOVE_TIMEOUT,
    RUN_NAME,
    SUBTREE,
    CellCgroup,
    CgroupError,
    Hierarchy,
    Placement,
    PolledFile,
    Usage,
    is_v2_host,
    kill_procs,
    parse_keyed,
    read_keyed,
    read_text,
    remove_dir,
    run_name,
    run_prefix,
    stale_runs,
    user_name,
)

__all__ = [
    "CGROUP_ROOT",
    "CONTROLLERS",
    "REMOVE_TIMEOUT",
    "RUN_NAME",
    "SUBTREE",
    "CellCgroup",
    "CgroupError",
    "Hierarchy",
    "Placement",
    "PolledFile",
    "Usage",
    "find",
    "inspect",
    "is_v2_host",
    "kill_procs",
    "parse_keyed",
    "read_keyed",
    "read_text",
    "remove_dir",
    "run_name",
    "run_prefix",
    "stale_runs",
    "user_name",
]

_found: tuple[int, Hierarchy | None, str] | None = None


def find() -> tuple[Hierarchy | None, str]:
    """This process's hierarchy, or None and the reason there is none.

    Decided once per process (and again after a fork: a child is another
    supervisor with its own runs).
    """
    global _found
    if _found is not None and _found[0] == os.getpid():
        return _found[1], _found[2]
    hierarchy: Hierarchy | None = None
    try:
        hierarchy = v2.locate() if is_v2_host() else v1.locate()
        hierarchy.clean_stale()
        reason = ""
    except CgroupError as error:
        hierarchy, reason = None, str(error)
    _found = (os.getpid(), hierarchy, reason)
    return hierarchy, reason


def inspect() -> Placement:
    """Where this process's runs would go and what they would get, read
    without creating, enabling or moving anything (`cellblock doctor`): the
    same choice of backend and of base as find()."""
    if is_v2_host():
        return v2.inspect()
    table = mountinfo.mounts()
    if any(m.fstype == "cgroup" for m in table):
        return v1.inspect(table)
    problem = f"no cgroup filesystem at {CGROUP_ROOT}: no memory, pids or CPU limits"
    fix = f"{'' if os.geteuid() == 0 else 'sudo '}mount -t cgroup2 none {CGROUP_ROOT}"
    return Placement(0, "", (), problem, fix, [problem])
