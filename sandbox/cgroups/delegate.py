"""`cellblock setup --user USER`: give USER a cgroup subtree of its own.

Run once as root. Afterwards USER's workers have every limit:

- cgroup v2: /sys/fs/cgroup/cellblock/USER, with the memory, pids and cpu
  controllers handed down to it and the directory plus its cgroup.procs,
  cgroup.threads and cgroup.subtree_control chowned to USER (the delegation
  model of cgroup-v2.rst). v2 only lets a process move between cgroups when it
  may write cgroup.procs of their common ancestor, so USER's worker must be
  *started* inside the subtree: root writes its pid to USER/supervisor/cgroup.procs
  before dropping to USER (or systemd starts it in a unit with `Delegate=yes`).
- cgroup v1: /sys/fs/cgroup/<controller>/cellblock/USER in each hierarchy,
  owned by USER. v1 has no common-ancestor rule: a process of USER anywhere
  may create run cgroups there and move its own children in.
"""

from __future__ import annotations

import contextlib
import os
import pwd

from .common import (
    CGROUP_ROOT,
    RUN_NAME,
    SUBTREE,
    CgroupError,
    is_v2_host,
    read_text,
    remove_dir,
)

V2_DELEGATED_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")
V1_DELEGATED_FILES = ("cgroup.procs", "tasks")


def delegated_path(user: str) -> list[str]:
    """Where USER's subtree is (one per v1 hierarchy)."""
    if is_v2_host():
        return [os.path.join(CGROUP_ROOT, SUBTREE, user)]
    from .v1 import base_for, controller_mounts

    return sorted({base_for(mount, user) for mount in controller_mounts().values()})


def delegate(user: str) -> list[str]:
    """Create and chown USER's subtree; returns what was done, for people to read."""
    entry = _lookup(user)
    if os.geteuid() != 0:
        raise CgroupError("cellblock setup must run as root")
    done = []
    if is_v2_host():
        from .v2 import SUPERVISOR_LEAF, _enable_down_to

        path = delegated_path(user)[0]
        # The controllers reach USER's directory, but are not enabled *below* it:
        # a cgroup that hands controllers to children may hold no processes, and
        # USER's worker must first be placed in it. The worker then moves itself
        # to a leaf and enables them (as systemd's Delegate=yes leaves it).
        _enable_down_to(path)
        _chown(path, V2_DELEGATED_FILES, entry)
        # Where root (or a service manager) puts USER's workers: a leaf, so
        # that the directory above can hand its controllers down to the runs.
        leaf = os.path.join(path, SUPERVISOR_LEAF)
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf)
        _chown(leaf, V2_DELEGATED_FILES, entry)
        controllers = read_text(os.path.join(path, "cgroup.controllers")).split()
        done.append(
            f"cgroup v2: {path} delegated to {user} (controllers: {', '.join(controllers)})"
        )
        done.append(
            f"start {user}'s workers inside it: as root, `echo $$ > "
            f"{leaf}/cgroup.procs` before switching to {user} (or a systemd unit "
            "with Delegate=yes, which needs no setup)"
        )
    else:
        for path in delegated_path(user):
            os.makedirs(path, exist_ok=True)
            _chown(path, V1_DELEGATED_FILES, entry)
            done.append(f"cgroup v1: {path} owned by {user}")
    return done


def undelegate(user: str) -> list[str]:
    """Remove USER's subtree (its runs must be over)."""
    if os.geteuid() != 0:
        raise CgroupError("cellblock setup must run as root")
    done = []
    for path in delegated_path(user):
        if not os.path.isdir(path):
            continue
        _remove_tree(path)
        done.append(f"removed {path}")
    return done


def _lookup(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise CgroupError(f"no such user: {user!r}") from None


def _chown(path: str, files: tuple[str, ...], entry: pwd.struct_passwd) -> None:
    for target in (path, *(os.path.join(path, name) for name in files)):
        os.chown(target, entry.pw_uid, entry.pw_gid)


def _remove_tree(path: str) -> None:
    """rmdir a cgroup and its children, deepest first. Leftover runs are killed;
    a worker still inside makes it fail (EBUSY) rather than be killed."""
    for name in os.listdir(path):
        child = os.path.join(path, name)
        if os.path.isdir(child):
            _remove_tree(child)
    is_run = RUN_NAME.match(os.path.basename(path)) is not None
    if is_run:
        with contextlib.suppress(OSError), open(os.path.join(path, "cgroup.kill"), "w") as kill:
            kill.write("1")
    remove_dir(path, kill_members=is_run)
