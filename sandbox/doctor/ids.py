"""Who the program is on the host: a subordinate id of its own (asked of sandbox.userns)."""

from __future__ import annotations

import os
import stat

from sandbox import userns

from .host import is_root, user_name
from .report import Check


def _privileged_helper(path: str | None) -> bool:
    if not path:
        return False
    try:
        if os.stat(path).st_mode & stat.S_ISUID:
            return True
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def check_subids() -> Check:
    """Whether the program runs as a host uid of its own (userns.py)."""
    name = "subordinate ids"
    template = userns.choose_idmap()
    try:
        locks = userns.slot_lock_dir()
        lock_problem = None
    except OSError as error:
        locks, lock_problem = None, str(error)
    if is_root():
        first = template.uid_lines[0][1]
        if lock_problem:
            return Check(
                name,
                False,
                f"running as root, but the id ranges' locks cannot be kept ({lock_problem}): "
                f"every live cell shares host ids {first}..{first + userns.RANGE_SIZE - 1}",
                f"mkdir -p -m 0700 {userns.SLOT_LOCKS_ROOT} (a writable /run)",
            )
        return Check(
            name,
            True,
            f"running as root: each live cell gets a range of {userns.RANGE_SIZE} host ids of "
            f"its own, one of {template.slots} from {first} (locks in {locks}), never root",
        )
    user, uid = user_name(), os.geteuid()
    helpers = userns.id_helpers()
    problems, fixes = [], []
    if userns.subordinate_range(uid) is None:
        problems.append(f"no /etc/subuid and /etc/subgid range for {user}")
        fixes.append(f"sudo cellblock setup --user {user}")
    missing = [h for h, p in helpers.items() if not p]
    unprivileged = [h for h, p in helpers.items() if p and not _privileged_helper(p)]
    if missing:
        problems.append(f"{' and '.join(missing)} not installed")
        fixes.append("sudo apt-get install -y uidmap")
    if unprivileged:
        problems.append(f"{' and '.join(unprivileged)} are neither setuid nor file-capable")
        fixes.append("sudo apt-get install --reinstall -y uidmap")
    if os.environ.get("CELLBLOCK_SUBUID") == "0":
        problems.append("CELLBLOCK_SUBUID=0 turns them off")
        fixes.append("unset CELLBLOCK_SUBUID")
    if userns.no_new_privs():
        problems.append(
            "this process runs with no_new_privs, which voids the setuid newuidmap/newgidmap"
        )
        fixes.append("start the worker without no_new_privs (systemd: NoNewPrivileges=no)")
    if problems:
        return Check(
            name,
            False,
            f"{'; '.join(problems)}: each cell's program runs as {user}'s own uid (a size-1 "
            f"map), so it could read files only {user} may read, and shares {user}'s "
            "per-user kernel counts (pipe buffers, file descriptors in flight)",
            " && ".join(fixes),
        )
    if lock_problem:
        return Check(
            name,
            False,
            f"{user} has subordinate ids, but their slots' locks cannot be kept "
            f"({lock_problem}): live cells may share a host uid",
            f"rm -rf {userns.user_slot_lock_dir(uid)} (as its owner), or a /run/lock every "
            "user may write (mode 1777)",
        )
    (first, _), _ = userns.subordinate_range(uid) or ((0, 0), (0, 0))
    return Check(
        name,
        True,
        f"{user} has {template.slots} subordinate ids from {first}: each live cell's "
        f"program runs as one of its own (locks in {locks}); newuidmap/newgidmap map them",
    )
