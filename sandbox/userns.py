"""The user namespace: who the cell's processes are, inside and on the host.

Three ways to map ids, chosen by who starts the cell:

- started as root: cell ids 0..65535 map to a dedicated unprivileged host range
  (the `cellblock` entry of /etc/subuid, else DEFAULT_ROOT_RANGE), never to host
  root. The supervisor (PID 1) is cell root; the program runs as cell uid 1000,
  so it cannot signal or trace its supervisor even in theory.
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

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache

from .libc import write_file

RANGE_SIZE = 65536
RUN_ID_IN_RANGE = 1000
# Far above any uid a distribution hands out, below 2^31 so no tool sees it as negative.
DEFAULT_ROOT_RANGE = (1_500_000_000, RANGE_SIZE)
SUBID_OWNER = "cellblock"


@dataclass(frozen=True)
class IdMap:
    """How cell ids map to host ids, and which cell ids the program runs as."""

    uid_lines: tuple[tuple[int, int, int], ...]  # (inside, outside, count)
    gid_lines: tuple[tuple[int, int, int], ...]
    run_uid: int
    run_gid: int
    deny_setgroups: bool
    use_newidmap: bool

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
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in names:
                    start, count = int(fields[1]), int(fields[2])
                    if count >= RANGE_SIZE:
                        return start, RANGE_SIZE
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
        )
    if os.environ.get("CELLBLOCK_SUBUID") == "1" and shutil.which("newuidmap"):
        names = (pwd.getpwuid(euid).pw_name, str(euid))
        uid_range = _read_subid("/etc/subuid", names)
        gid_range = _read_subid("/etc/subgid", names)
        if uid_range and gid_range:
            size = RANGE_SIZE - 1
            return IdMap(
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


def become_cell_root(idmap: IdMap) -> None:
    """After the maps are written: take cell uid/gid 0 (started as root, our host
    ids are not in the map; the capabilities of the namespace stay with us)."""
    if not idmap.deny_setgroups:
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
