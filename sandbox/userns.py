"""The user namespace: who the cell's processes are, inside and on the host.

The program never runs as a host uid that another live cell's program, the
caller (the worker) or host root has. Three ways to map ids, chosen by who
starts the cell:

- started as root: cell ids 0..65535 map to an unprivileged host range of its
  own, never to host root: one of the RANGE_SIZE-id ranges of the
  `cellblock-cells` entry of /etc/subuid (else of DEFAULT_ROOT_RANGE, 1024
  ranges). The init is
  cell root; the program runs as cell uid 1000.
- started unprivileged by a user with a subordinate id range (/etc/subuid and
  /etc/subgid; `cellblock setup --user` adds one, Debian's useradd makes one
  for normal users): cell root is the caller, as in rootless Podman, and cell
  uid/gid 1000, which the program runs as, is one id of that range: a slot of
  its own. newuidmap/newgidmap (setuid helpers) write the maps, since only
  they may map ids the caller does not own; a warm cell's maps are written
  before its run is known, off the run's path.
- started unprivileged without a range (or with CELLBLOCK_SUBUID=0): a size-1
  map of the caller's uid/gid to cell root, setgroups denied. The program is
  cell root without capabilities, and on the host it is the caller's own uid:
  every result says so (`degraded`), and `cellblock doctor` names the command
  that adds a range. What the program could then reach of the caller's is cut
  elsewhere: prlimit64 on other processes (seccomp), the caller's private files
  under the host image's /etc (hidden: images.py), per-user quotas (below).

A range or a slot is held by a lock file named by its first host uid in a
directory only its owner may write (root: SLOT_LOCKS_ROOT; a user:
/run/lock/cellblock-UID, see slot_lock_dir), for as long as the cell lives, so
that no two live cells hold the same host ids, whichever of the owner's
processes made them.

The maps are written by the parent after the child has called
unshare(CLONE_NEWUSER): only a process outside the namespace with CAP_SETUID
there may map other ids, and until the map exists the child cannot create files.

What a cell consumes of per-user kernel quotas (inotify, queued signals,
processes, ...) is charged, on the host, to the user that owns its user
namespace: the caller, whatever the program's own uid. So each cell's share is
capped: the limits of its own user namespace (CELL_NAMESPACE_LIMITS, written by
the init) and the program's rlimits (rlimits.py).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import stat
from dataclasses import dataclass, replace
from functools import cache

from .libc import CLONE_NEWUSER, PR_GET_NO_NEW_PRIVS, prctl, unshare, write_file

RANGE_SIZE = 65536  # ids of a root-started cell
RUN_ID = 1000  # the program's uid and gid inside a cell that has ids of its own
# The highest cell id a program may be given instead (an image's `User`,
# imageuser.py): what every cell with ids of its own can map.
MAX_RUN_ID = RANGE_SIZE - 1
# Far above any uid a distribution hands out, below 2^31 so no tool sees it as
# negative: 1024 ranges, one per live cell started as root.
DEFAULT_ROOT_RANGE = (1_500_000_000, 1024 * RANGE_SIZE)
# Root's own pool in /etc/subuid and /etc/subgid, if an admin gives one: a name
# no user has (a user's own range, say a worker named `cellblock`, serves that
# user's cells; root's must not overlap it).
SUBID_OWNER = "cellblock-cells"
SLOT_LOCKS_ROOT = "/run/cellblock/id-ranges"  # root-started cells: one lock file per range
# A user's cells: one lock file per slot of its range, in the first of these
# directories that every user may make a directory in (sticky, world-writable):
# the same one for every process of the machine, whatever its environment.
SLOT_LOCKS_USER_PARENTS = ("/run/lock", "/dev/shm", "/tmp")
SLOT_LOCKS_USER = "cellblock-{uid}"
SUBID_FIRST = 100_000  # where Debian's useradd starts handing out subordinate ids
SUBID_COUNT = 65536  # the size of the range `cellblock setup --user` adds


@dataclass(frozen=True)
class IdMap:
    """How cell ids map to host ids, and which cell ids the program runs as.

    A template may be moved to any of `slots` places (`in_slot`): its lines
    from `fixed_lines` on shift by `slot_size` host ids per slot."""

    uid_lines: tuple[tuple[int, int, int], ...]  # (inside, outside, count)
    gid_lines: tuple[tuple[int, int, int], ...]
    run_uid: int
    run_gid: int
    deny_setgroups: bool
    use_newidmap: bool
    slots: int = 1
    slot_size: int = 0
    fixed_lines: int = 0

    def in_slot(self, index: int) -> IdMap:
        """The same map moved to its index-th slot (a concrete map: one slot)."""
        shift = index * self.slot_size

        def moved(lines: tuple[tuple[int, int, int], ...]) -> tuple[tuple[int, int, int], ...]:
            return lines[: self.fixed_lines] + tuple(
                (a, b + shift, c) for a, b, c in lines[self.fixed_lines :]
            )

        return replace(
            self,
            uid_lines=moved(self.uid_lines),
            gid_lines=moved(self.gid_lines),
            slots=1,
            slot_size=0,
        )

    def running_as(self, uid: int, gid: int) -> IdMap:
        """This map with the program as cell `uid` and `gid` (an image's
        `User`): kept as it is where a line maps them (root's cells map
        1..MAX_RUN_ID), else put in place of the program's own single id (a
        user's range gives each cell one host id, whatever its number inside);
        ValueError where the map has no room (a size-1 map: cell root only)."""
        return replace(
            self,
            uid_lines=_run_line(self.uid_lines, self.run_uid, uid, "uid"),
            gid_lines=_run_line(self.gid_lines, self.run_gid, gid, "gid"),
            run_uid=uid,
            run_gid=gid,
        )

    @property
    def cell_root_is_caller(self) -> bool:
        """Rootless: cell root is the caller's own uid (not a uid of a range)."""
        return self.uid_lines[0][:2] == (0, os.geteuid())

    @property
    def program_host_uid(self) -> int:
        """The host uid the program runs as (of this concrete map)."""
        for inside, outside, count in self.uid_lines:
            if inside <= self.run_uid < inside + count:
                return outside + self.run_uid - inside
        raise ValueError(f"cell uid {self.run_uid} is not mapped")

    @property
    def program_is_caller(self) -> bool:
        """The size-1 map: the program runs as the caller's own host uid."""
        return self.program_host_uid == os.geteuid() and os.geteuid() != 0

    @property
    def description(self) -> str:
        inside, outside, count = self.uid_lines[-1]
        if count == 1 and inside == 0:
            return f"cell root = host uid {outside} (size-1 map)"
        if count == 1:
            return f"cell root = host uid {self.uid_lines[0][1]}, cell uid {inside} = {outside}"
        return f"cell uids {inside}..{inside + count - 1} = host {outside}..{outside + count - 1}"


def _subid_entries(path: str) -> list[tuple[str, int, int]]:
    """(owner, start, count) of every well-formed line of /etc/subuid or /etc/subgid."""
    entries = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                    entries.append((fields[0], int(fields[1]), int(fields[2])))
    except OSError:
        pass
    return entries


def _read_subid(path: str, names: tuple[str, ...], minimum: int) -> tuple[int, int] | None:
    """(start, count) of the first entry for `names` with at least `minimum` ids."""
    for owner, start, count in _subid_entries(path):
        if owner in names and count >= minimum:
            return start, count
    return None


def _user_names(uid: int) -> tuple[str, ...]:
    """How /etc/subuid may name this user: by name or by number."""
    try:
        return (pwd.getpwuid(uid).pw_name, str(uid))
    except KeyError:
        return (str(uid),)


def subordinate_range(uid: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The user's first subordinate uid range and gid range, if it has both."""
    names = _user_names(uid)
    uids = _read_subid("/etc/subuid", names, 1)
    gids = _read_subid("/etc/subgid", names, 1)
    return (uids, gids) if uids and gids else None


def no_new_privs() -> bool:
    """Whether this process has no_new_privs: setuid helpers then gain nothing
    (newuidmap could not map the subordinate ids)."""
    return prctl(PR_GET_NO_NEW_PRIVS) == 1


def id_helpers() -> dict[str, str | None]:
    """Where newuidmap and newgidmap are (None: not installed)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/bin"])
    return {name: shutil.which(name, path=search) for name in ("newuidmap", "newgidmap")}


def _run_line(
    lines: tuple[tuple[int, int, int], ...], current: int, wanted: int, what: str
) -> tuple[tuple[int, int, int], ...]:
    """`lines` with cell id `wanted` mapped where the program's `current` is."""
    if wanted == current:
        return lines
    if not 0 < wanted <= MAX_RUN_ID:
        raise ValueError(f"{what} {wanted} is not one a cell gives a program (1..{MAX_RUN_ID})")
    if any(inside <= wanted < inside + count for inside, _, count in lines):
        return lines
    for index, (inside, outside, count) in enumerate(lines):
        if inside == current and count == 1 and inside != 0:
            return lines[:index] + ((wanted, outside, 1),) + lines[index + 1 :]
    raise ValueError(
        f"this cell maps no {what} but {current} (cell root: its caller has no subordinate "
        "ids; `cellblock setup --user` adds a range)"
    )


def choose_idmap() -> IdMap:
    """The id map template of this process's cells (hold_ids gives each its slot).
    Chosen once per set of credentials: a process that took no_new_privs since
    (a forked child, say) can no longer use the setuid helpers."""
    return _choose_idmap(os.geteuid(), os.getegid(), no_new_privs())


@cache
def _choose_idmap(euid: int, egid: int, without_setuid: bool) -> IdMap:
    if euid == 0:
        uid_range = _read_subid("/etc/subuid", (SUBID_OWNER,), RANGE_SIZE) or DEFAULT_ROOT_RANGE
        gid_range = _read_subid("/etc/subgid", (SUBID_OWNER,), RANGE_SIZE) or DEFAULT_ROOT_RANGE
        return IdMap(
            uid_lines=((0, uid_range[0], RANGE_SIZE),),
            gid_lines=((0, gid_range[0], RANGE_SIZE),),
            run_uid=RUN_ID,
            run_gid=RUN_ID,
            deny_setgroups=False,
            use_newidmap=False,
            slots=min(uid_range[1], gid_range[1]) // RANGE_SIZE,
            slot_size=RANGE_SIZE,
        )
    subids = subordinate_range(euid)
    if (
        os.environ.get("CELLBLOCK_SUBUID") != "0"
        and subids is not None
        and all(id_helpers().values())
        and not without_setuid
    ):
        (uid_start, uid_count), (gid_start, gid_count) = subids
        return IdMap(
            uid_lines=((0, euid, 1), (RUN_ID, uid_start, 1)),
            gid_lines=((0, egid, 1), (RUN_ID, gid_start, 1)),
            run_uid=RUN_ID,
            run_gid=RUN_ID,
            deny_setgroups=False,
            use_newidmap=True,
            slots=min(uid_count, gid_count),
            slot_size=1,
            fixed_lines=1,
        )
    return IdMap(
        uid_lines=((0, euid, 1),),
        gid_lines=((0, egid, 1),),
        run_uid=0,
        run_gid=0,
        deny_setgroups=True,
        use_newidmap=False,
    )


@cache
def why_shared(idmap: IdMap) -> str | None:
    """For a result's `degraded`: why the program's host uid is the caller's (a
    size-1 map), or None."""
    if not idmap.program_is_caller:
        return None
    name = _user_names(os.geteuid())[0]
    if os.environ.get("CELLBLOCK_SUBUID") == "0":
        why = "CELLBLOCK_SUBUID=0"
    elif subordinate_range(os.geteuid()) is None:
        why = f"{name} has no subordinate id range; sudo cellblock setup --user {name} adds one"
    elif no_new_privs():
        why = (
            "this process runs with no_new_privs (a container's or a service's "
            "NoNewPrivileges=), which voids the setuid newuidmap/newgidmap"
        )
    else:
        why = "newuidmap/newgidmap are not installed (Debian package uidmap)"
    return f"program shares the worker's uid ({why})"


class HeldIds:
    """The id map of one cell, and the lock that keeps its slot its own."""

    def __init__(self, idmap: IdMap, lock_fd: int | None, shared: str | None = None) -> None:
        self.idmap = idmap
        self.shared = shared  # why the program's host uid may not be its own, or None
        self._lock_fd = lock_fd

    def release(self) -> None:
        """The cell's processes are gone: its slot may serve another cell."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def hold_ids(template: IdMap) -> HeldIds:
    """A slot of `template` that no live cell holds (a template of one slot,
    the size-1 map, is the caller's own uid: nothing to hold)."""
    if template.slots <= 1:
        shared = why_shared(template)
        if shared is None and not template.use_newidmap and os.geteuid() == 0:
            shared = (
                "program may share its host uid with other cells (root's id pool has "
                f"room for one cell: give {SUBID_OWNER} more in /etc/subuid)"
            )
        return HeldIds(template, None, shared)
    try:
        directory = slot_lock_dir()
    except OSError as error:
        # No place for the locks (a read-only /run, a directory of another
        # user's): every cell takes the first slot. `cellblock doctor` says so
        # ("subordinate ids"), and so does every result.
        return HeldIds(
            template.in_slot(0), None, f"program may share its host uid with other cells ({error})"
        )
    for index in range(template.slots):
        concrete = template.in_slot(index)
        fd = os.open(
            f"{directory}/{concrete.program_host_uid}",
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return HeldIds(concrete, fd)
    raise OSError(f"all {template.slots} id slots are held by live cells")


def slot_lock_dir() -> str:
    """The directory of this user's slot locks, made if missing; refused unless
    it is the user's own and only it may write there (a lock file another user
    could hold or replace would hand out a slot twice)."""
    euid = os.geteuid()
    path = SLOT_LOCKS_ROOT if euid == 0 else user_slot_lock_dir(euid)
    try:
        os.makedirs(path, 0o700, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling link: refused below
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != euid or st.st_mode & 0o022:
        raise OSError(f"{path} is not a directory of uid {euid}'s that only it may write")
    return path


def user_slot_lock_dir(uid: int) -> str:
    """Where a user's slot locks are: in the first of SLOT_LOCKS_USER_PARENTS
    that is a sticky directory every user may write (/run/lock on Debian)."""
    for parent in SLOT_LOCKS_USER_PARENTS:
        try:
            st = os.stat(parent)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o1777 == 0o1777:
            return f"{parent}/{SLOT_LOCKS_USER.format(uid=uid)}"
    return f"{SLOT_LOCKS_USER_PARENTS[0]}/{SLOT_LOCKS_USER.format(uid=uid)}"


def add_subordinate_range(user: str) -> str | None:
    """As root (`cellblock setup --user`): give `user` a range of SUBID_COUNT
    subordinate uids and gids that overlaps nobody's, unless it has one.
    Returns what was done, or None."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise OSError(f"no such user: {user!r}") from None
    if subordinate_range(entry.pw_uid) is not None:
        return None
    taken = [
        (start, start + count)
        for path in ("/etc/subuid", "/etc/subgid")
        for _, start, count in _subid_entries(path)
    ]
    taken.append((DEFAULT_ROOT_RANGE[0], DEFAULT_ROOT_RANGE[0] + DEFAULT_ROOT_RANGE[1]))
    start = SUBID_FIRST
    for low, high in sorted(taken):  # the first gap of SUBID_COUNT ids
        if start + SUBID_COUNT <= low:
            break
        start = max(start, high)
    ids = f"{start}-{start + SUBID_COUNT - 1}"
    import subprocess  # `cellblock setup` only

    subprocess.run(
        ["usermod", "--add-subuids", ids, "--add-subgids", ids, user],
        check=True,
        capture_output=True,
    )
    return f"subordinate uids and gids {ids} added for {user} (/etc/subuid, /etc/subgid)"


def enter_holding_namespace(template: IdMap) -> IdMap:
    """In the cell maker of a rootless caller with subordinate ids: move into a
    user namespace of our own that maps the caller's uid and gid and the whole
    subordinate ranges (as rootless Podman's pause process does); newuidmap
    and newgidmap write its maps once. In there we may map any of those ids
    ourselves, so each cell's maps are written without a setuid helper: the
    helpers' cost (~5 ms a cell) leaves the warm cells' path. Returns our own
    map, for `seen_from`. The caller is single-threaded (the maker)."""
    (uid_line, gid_line) = (template.uid_lines[-1], template.gid_lines[-1])
    holding = replace(
        template,
        uid_lines=((0, os.geteuid(), 1), (1, uid_line[1], template.slots)),
        gid_lines=((0, os.getegid(), 1), (1, gid_line[1], template.slots)),
        slots=1,
        slot_size=0,
        fixed_lines=0,
    )
    parent = os.getpid()
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:  # still in the caller's user namespace: the helpers work from here
        code = 1
        try:
            os.close(go_w)
            if os.read(go_r, 1) == b"1":
                write_idmap(parent, holding)
                code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    try:
        unshare(CLONE_NEWUSER)
        os.write(go_w, b"1")
    finally:
        os.close(go_w)
        _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError("newuidmap/newgidmap could not map the cell maker's user namespace")
    return holding


def seen_from(idmap: IdMap, holding: IdMap) -> IdMap:
    """A cell's map (in host ids) as written from inside the holding namespace,
    whose own map is `holding`: the same host ids, by their numbers in there."""

    def inside(
        lines: tuple[tuple[int, int, int], ...], own: tuple[tuple[int, int, int], ...]
    ) -> tuple[tuple[int, int, int], ...]:
        moved = []
        for cell_id, host_id, count in lines:
            for own_inside, own_host, own_count in own:
                if own_host <= host_id and host_id + count <= own_host + own_count:
                    moved.append((cell_id, own_inside + host_id - own_host, count))
                    break
            else:
                raise ValueError(f"host id {host_id} is not mapped in the holding namespace")
        return tuple(moved)

    return replace(
        idmap,
        uid_lines=inside(idmap.uid_lines, holding.uid_lines),
        gid_lines=inside(idmap.gid_lines, holding.gid_lines),
        use_newidmap=False,
        deny_setgroups=False,
    )


def write_idmap(pid: int, idmap: IdMap) -> None:
    """Map ids of the user namespace that process `pid` has just unshared."""
    if idmap.use_newidmap:
        # Imported here: a cell that needs no setuid helper (root's, the maker's)
        # never pays for the module (~3 ms at a process's start).
        import subprocess

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


# Per-user kernel quotas of the cell's own user namespace (/proc/sys/user). What a
# cell uses of them is charged, level by level, up to the host's user namespace,
# where it counts against the user who owns the cell's namespace: the caller. So
# each cell gets a small share: at the host's defaults (fs.inotify.
# max_user_instances 128; max_user_watches grows with the memory, 8192 at the
# least) 16 cells at their quota leave the worker half of its inotify instances
# (`cellblock doctor` says how many fit). fanotify is refused by the default
# seccomp profile as well. No user namespace may be made inside a cell, whatever
# its seccomp profile allows: its root may lower these limits, and nothing in the
# cell may raise them again.
CELL_NAMESPACE_LIMITS = {
    "max_user_namespaces": 0,
    "max_inotify_instances": 4,
    "max_inotify_watches": 4096,
    "max_fanotify_groups": 0,  # Linux 5.13+
    "max_fanotify_marks": 0,
}
