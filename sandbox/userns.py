"""The user namespace: who the cell's processes are, inside and on the host.

Three ways to map ids, chosen by who starts the cell:

- started as root: cell ids 0..65535 map to an unprivileged host range of its
  own, never to host root: one of the RANGE_SIZE-id ranges of the `cellblock`
  entry of /etc/subuid (else of DEFAULT_ROOT_RANGE, 1024 ranges), held by a
  lock file under RANGE_LOCKS for as long as the cell lives, so no two live
  cells on the machine share a host uid (rule 11): whatever a program might
  reach of another cell's processes by uid, it does not own. The supervisor
  (PID 1) is cell root; the program runs as cell uid 1000, so it cannot signal
  or trace its supervisor even in theory.
- started unprivileged, default: a size-1 map of the caller's uid/gid to cell
  root, with setgroups denied. The program is cell root without capabilities.
- started unprivileged with CELLBLOCK_SUBUID=1 and a range in /etc/subuid:
  newuidmap/newgidmap map the caller to cell root and the range to 1..N, and
  the program runs as cell uid 1000.

The maps are written by the parent after the child has called
unshare(CLONE_NEWUSER): only a process outside the namespace with CAP_SETUID
there may map other ids, and until the map exists the child cannot create files.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from functools import cache

from .libc import write_file

RANGE_SIZE = 65536
RUN_ID_IN_RANGE = 1000
# Far above any uid a distribution hands out, below 2^31 so no tool sees it as
# negative: 1024 ranges, one per live cell started as root.
DEFAULT_ROOT_RANGE = (1_500_000_000, 1024 * RANGE_SIZE)
SUBID_OWNER = "cellblock"
RANGE_LOCKS = "/run/cellblock/id-ranges"  # root-started cells: lock file N holds range N


@dataclass(frozen=True)
class IdMap:
    """How cell ids map to host ids, and which cell ids the program runs as."""

    uid_lines: tuple[tuple[int, int, int], ...]  # (inside, outside, count)
    gid_lines: tuple[tuple[int, int, int], ...]
    run_uid: int
    run_gid: int
    deny_setgroups: bool
    use_newidmap: bool
    ranges: int = 1  # the outside ids are the first of this many RANGE_SIZE ranges

    def in_range(self, index: int) -> IdMap:
        """The same map moved to the index-th of its ranges."""
        shift = index * RANGE_SIZE
        return IdMap(
            uid_lines=tuple((a, b + shift, c) for a, b, c in self.uid_lines),
            gid_lines=tuple((a, b + shift, c) for a, b, c in self.gid_lines),
            run_uid=self.run_uid, run_gid=self.run_gid,
            deny_setgroups=self.deny_setgroups, use_newidmap=self.use_newidmap)

    @property
    def cell_root_is_caller(self) -> bool:
        """Rootless: cell root is the caller's own uid (not a uid of a range)."""
        return self.uid_lines[0][:2] == (0, os.geteuid())

    @property
    def description(self) -> str:
        inside, outside, count = self.uid_lines[-1]
        if count == 1:
            return f"cell root = host uid {outside} (size-1 map)"
        return f"cell uids {inside}..{inside + count - 1} = host {outside}..{outside + count - 1}"


def _read_subid(path: str, names: tuple[str, ...]) -> tuple[int, int] | None:
    """(start, count) of the first entry for `names` with at least RANGE_SIZE ids."""
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in names:
                    start, count = int(fields[1]), int(fields[2])
                    if count >= RANGE_SIZE:
                        return start, count
    except (OSError, ValueError):
        pass
    return None


@cache
def choose_idmap() -> IdMap:
    euid, egid = os.geteuid(), os.getegid()
    if euid == 0:
        uid_range = _read_subid("/etc/subuid", (SUBID_OWNER,)) or DEFAULT_ROOT_RANGE
        gid_range = _read_subid("/etc/subgid", (SUBID_OWNER,)) or DEFAULT_ROOT_RANGE
        return IdMap(
            uid_lines=((0, uid_range[0], RANGE_SIZE),),
            gid_lines=((0, gid_range[0], RANGE_SIZE),),
            run_uid=RUN_ID_IN_RANGE,
            run_gid=RUN_ID_IN_RANGE,
            deny_setgroups=False,
            use_newidmap=False,
            ranges=min(uid_range[1], gid_range[1]) // RANGE_SIZE,
        )
    if os.environ.get("CELLBLOCK_SUBUID") == "1" and shutil.which("newuidmap"):
        names = (pwd.getpwuid(euid).pw_name, str(euid))
        uid_range = _read_subid("/etc/subuid", names)
        gid_range = _read_subid("/etc/subgid", names)
        if uid_range and gid_range:
            size = RANGE_SIZE - 1
            return IdMap(
                # One range: a user's subordinate ids are usually 65536.
                uid_lines=((0, euid, 1), (1, uid_range[0], size)),
                gid_lines=((0, egid, 1), (1, gid_range[0], size)),
                run_uid=RUN_ID_IN_RANGE,
                run_gid=RUN_ID_IN_RANGE,
                deny_setgroups=False,
                use_newidmap=True,
            )
    return IdMap(
        uid_lines=((0, euid, 1),),
        gid_lines=((0, egid, 1),),
        run_uid=0,
        run_gid=0,
        deny_setgroups=True,
        use_newidmap=False,
    )


class HeldIds:
    """The id map of one cell, and the lock that keeps its range its own."""

    def __init__(self, idmap: IdMap, lock_fd: int | None) -> None:
        self.idmap = idmap
        self._lock_fd = lock_fd

    def release(self) -> None:
        """The cell's processes are gone: its range may serve another cell."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def hold_ids(template: IdMap) -> HeldIds:
    """A range of `template`'s no live cell holds (a map of one range is shared:
    rootless maps, whose outside ids are the caller's own)."""
    if template.ranges <= 1:
        return HeldIds(template, None)
    try:
        directory = range_lock_dir()
    except OSError:
        # No place for the locks (a read-only /run): every cell shares the
        # first range, as a size-1 map shares the caller's uid. `cellblock
        # doctor` says so ("subordinate ids").
        return HeldIds(template.in_range(0), None)
    for index in range(template.ranges):
        fd = os.open(f"{directory}/{index}",
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return HeldIds(template.in_range(index), fd)
    raise OSError(f"all {template.ranges} id ranges are held by live cells")


def range_lock_dir() -> str:
    """RANGE_LOCKS, made if missing; refused unless it is root's own directory
    (a lock file another user could hold or replace would hand out ranges twice)."""
    os.makedirs(RANGE_LOCKS, 0o700, exist_ok=True)
    st = os.lstat(RANGE_LOCKS)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise OSError(f"{RANGE_LOCKS} is not a directory of root's that only root may write")
    return RANGE_LOCKS


def write_idmap(pid: int, idmap: IdMap) -> None:
    """Map ids of the user namespace that process `pid` has just unshared."""
    if idmap.use_newidmap:
        for tool, lines in (("newuidmap", idmap.uid_lines), ("newgidmap", idmap.gid_lines)):
            args = [tool, str(pid)] + [str(n) for line in lines for n in line]
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise OSError(f"{tool} failed: {done.stderr.strip() or done.returncode}")
        return
    if idmap.deny_setgroups:
        write_file(f"/proc/{pid}/setgroups", "deny")
    write_file(f"/proc/{pid}/uid_map", "".join(f"{a} {b} {c}\n" for a, b, c in idmap.uid_lines))
    write_file(f"/proc/{pid}/gid_map", "".join(f"{a} {b} {c}\n" for a, b, c in idmap.gid_lines))


def forbid_nested_user_namespaces(proc: str) -> None:
    """In the init, through the cell's fresh procfs at `proc` (before /proc/sys
    is covered read-only): no user namespace may be made inside the cell, even
    under a seccomp profile that allows it (a caller's own, permissive one):
    user.max_user_namespaces is a limit of the cell's own user namespace, which
    its root may lower and nothing in the cell may raise again (rule 16, the
    second half; the default profile refuses the calls first)."""
    write_file(f"{proc}/sys/user/max_user_namespaces", "0")


def become_cell_root(idmap: IdMap) -> None:
    """After the maps are written: take cell uid/gid 0 (started as root, our host
    ids are not in the map; the capabilities of the namespace stay with us)."""
    if not idmap.deny_setgroups:
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
