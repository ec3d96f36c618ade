"""cgroup v1: one directory per run in each controller's hierarchy.

Controllers used: memory (limit with memsw so swap cannot extend it, peak,
OOM count), pids, cpuacct (CPU time of every thread) and cpu (the optional
quota). Where two are mounted together (`cpu,cpuacct`) they share a directory.

v1 lets a process move another into a cgroup when the opener of cgroup.procs
may write the file and is root or has the target's uid. The supervisor opens
the files; the program writes "0" to each just before execve (as cell root,
which is the supervisor's uid when unprivileged), so Python's pre-exec pages
stay charged to the supervisor's cgroup. v1 has no cgroup.kill: the cell's
init kills every process of its PID namespace with one kill(-1) (atomic with
respect to fork), and `kill()` below SIGKILLs what cgroup.procs lists.
"""

from __future__ import annotations

import contextlib
import os

from .. import mountinfo
from ..spec import Limits
from .common import (
    CGROUP_ROOT,
    CONTROLLERS,
    SUBTREE,
    CellCgroup,
    CgroupError,
    Hierarchy,
    Placement,
    PolledFile,
    Usage,
    is_root,
    kill_procs,
    read_ids,
    read_keyed,
    read_text,
    remove_dir,
    run_name,
    stale_runs,
    sudo,
    user_name,
    writable,
    write_text,
)

REQUIRED = ("memory", "pids", "cpuacct")  # cpu: only the optional quota needs it
V1_CONTROLLERS = (*REQUIRED, "cpu")
CFS_PERIOD_US = 100_000


def controller_mounts(table: list[mountinfo.Mount] | None = None) -> dict[str, str]:
    """controller → mount point of its v1 hierarchy (the canonical
    /sys/fs/cgroup/<controller> where it is mounted more than once)."""
    where: dict[str, str] = {}
    for mount in mountinfo.mounts() if table is None else table:
        if mount.fstype != "cgroup":
            continue
        for option in mount.super_options:
            canonical = mount.mountpoint == f"{CGROUP_ROOT}/{option}"
            if option in V1_CONTROLLERS and (option not in where or canonical):
                where[option] = mount.mountpoint
    return where


def base_for(mount_point: str, user: str | None) -> str:
    """The cellblock subtree in one hierarchy: root's, or USER's inside it."""
    base = os.path.join(mount_point, SUBTREE)
    return base if user is None else os.path.join(base, user)


def choose_bases(mounts: dict[str, str]) -> dict[str, str]:
    """controller → where its runs go (nothing changed): CELLBLOCK_CGROUP's
    path in every hierarchy, else root's subtree or the user's in it."""
    explicit = os.environ.get("CELLBLOCK_CGROUP")
    user = None if is_root() else user_name()
    return {
        controller: os.path.join(mount_point, explicit.lstrip("/"))
        if explicit
        else base_for(mount_point, user)
        for controller, mount_point in mounts.items()
    }


def locate() -> V1Hierarchy:
    mounts = controller_mounts()
    missing = [c for c in REQUIRED if c not in mounts]
    if missing:
        raise CgroupError(f"cgroup v1 without the {', '.join(missing)} controller(s)")
    bases: dict[str, str] = {}
    for controller, base in choose_bases(mounts).items():
        if is_root():
            os.makedirs(base, exist_ok=True)
        if not writable(base):
            if controller not in REQUIRED:
                continue
            raise CgroupError(
                f"cgroup v1: {base} is missing or not writable by {user_name()} "
                f"(run `cellblock setup --user {user_name()}`)"
            )
        bases[controller] = base
    return V1Hierarchy(bases)


def inspect(table: list[mountinfo.Mount] | None = None) -> Placement:
    """What locate() would find and what it would lack, read only."""
    table = mountinfo.mounts() if table is None else table
    mounts = controller_mounts(table)
    who = "root" if is_root() else user_name()
    kind = "cgroup v1" + _hybrid(table)
    unmounted = [c for c in REQUIRED if c not in mounts]
    if unmounted:
        fix = " && ".join(
            f"{sudo()}mkdir -p {CGROUP_ROOT}/{c} && {sudo()}mount -t cgroup -o {c} cgroup "
            f"{CGROUP_ROOT}/{c}"
            for c in unmounted
        )
        problem = f"controllers not mounted or disabled: {', '.join(unmounted)}"
        return Placement(1, "", (), f"{kind}: {problem}", fix, [problem])
    usable, problems = [], []
    bases = choose_bases(mounts)
    for controller in REQUIRED:
        base = bases[controller]
        if is_root():  # root makes <controller>/cellblock on first use
            where = base if os.path.isdir(base) else mounts[controller]
            if writable(where):
                usable.append(controller)
            else:
                problems.append(f"{where} is read-only")
        elif not os.path.isdir(base):
            problems.append(f"{base} missing")
        elif not (writable(base) and writable(os.path.join(base, "cgroup.procs"))):
            problems.append(f"{base} not writable")
        else:
            usable.append(controller)
    fix = (
        f"mount {CGROUP_ROOT} read-write (Docker: -v {CGROUP_ROOT}:{CGROUP_ROOT}:rw)"
        if is_root()
        else f"sudo cellblock setup --user {who}"
    )
    label = "not usable by root" if is_root() else f"not delegated to {who}"
    swap_note = ""
    if not os.path.exists(f"{mounts['memory']}/memory.memsw.limit_in_bytes"):
        if _swap_on():
            swap_fix = f"{sudo()}swapoff -a (or boot with swapaccount=1)"
            fix = f"{fix} && {swap_fix}" if problems else swap_fix
            if not problems:
                label = "memory limits can be bypassed through swap"
            problems.append("swap is on but memory.memsw.* (swap accounting) is missing")
        else:
            swap_note = "; no swap accounting (memory.memsw.*), harmless while swap is off"
    base = bases["memory"]
    if problems:
        detail = f"{kind}: {label}: {'; '.join(problems)}" + (
            f" (usable: {', '.join(usable)})" if usable else ""
        )
        return Placement(1, base, tuple(usable), detail, fix, problems)
    place = f"{CGROUP_ROOT}/<controller>/{SUBTREE}" + ("" if is_root() else f"/{who}")
    if os.environ.get("CELLBLOCK_CGROUP"):
        place = f"{CGROUP_ROOT}/<controller>/{os.environ['CELLBLOCK_CGROUP'].lstrip('/')}"
    detail = f"{kind}: {', '.join(usable)} usable by {who} under {place}{swap_note}"
    return Placement(1, base, tuple(usable), detail)


def _hybrid(table: list[mountinfo.Mount]) -> str:
    """What a hybrid host's cgroup2 mount holds (a v1 host may have one)."""
    unified = [m.mountpoint for m in table if m.fstype == "cgroup2"]
    if not unified:
        return ""
    try:
        controllers = read_text(f"{unified[0]}/cgroup.controllers").split()
    except OSError:
        controllers = []
    held = f"controllers {', '.join(controllers)}" if controllers else "no controllers"
    used = "" if set(controllers) & set(CONTROLLERS) else ", none of them used"
    return f" (hybrid: {unified[0]} is cgroup2 with {held}{used})"


def _swap_on() -> bool:
    try:
        return len(read_text("/proc/swaps").strip().splitlines()) > 1
    except OSError:
        return False


class V1Hierarchy(Hierarchy):
    version = 1

    def __init__(self, bases: dict[str, str]) -> None:
        self.bases = bases
        self.base = bases["memory"]
        self.controllers = tuple(c for c in ("memory", "pids", "cpu") if c in bases)

    def _directories(self) -> dict[str, str]:
        """One base directory per distinct hierarchy (co-mounted controllers share one)."""
        unique: dict[str, str] = {}
        for controller, base in self.bases.items():
            unique.setdefault(base, controller)
        return {controller: base for base, controller in unique.items()}

    def create(self, limits: Limits) -> V1Cell:
        name = run_name()
        # Joining each hierarchy is one migration, and a migration waits for an
        # RCU grace period (milliseconds): the cpu hierarchy only when a quota asks.
        wanted = {
            c: base
            for c, base in self.bases.items()
            if c != "cpu" or limits.cpus is not None or base == self.bases.get("cpuacct")
        }
        paths = {c: os.path.join(base, name) for c, base in wanted.items()}
        cell = V1Cell(paths, self.controllers)
        try:
            for path in set(paths.values()):
                try:
                    os.mkdir(path)
                except FileExistsError:  # left by an earlier process that had our pid
                    remove_dir(path, kill_members=True)
                    os.mkdir(path)
            cell.apply(limits)
        except OSError as error:
            cell.remove()
            raise CgroupError(f"cannot create the run's cgroups: {error}") from None
        return cell

    def clean_stale(self) -> None:
        for base in self._directories().values():
            for path in stale_runs(base):
                with contextlib.suppress(OSError):
                    remove_dir(path, kill_members=True)


class V1Cell(CellCgroup):
    def __init__(self, paths: dict[str, str], controllers: tuple[str, ...]) -> None:
        self.paths = paths  # controller → this run's directory
        self.controllers = controllers
        self._removed = False
        self._cpuacct_usage = PolledFile(self._file("cpuacct", "cpuacct.usage"))

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self.paths[controller], name)

    def apply(self, limits: Limits) -> None:
        # memsw (memory + swap) must be >= the memory limit, so memory goes first.
        write_text(self._file("memory", "memory.limit_in_bytes"), str(limits.memory))
        with contextlib.suppress(FileNotFoundError):  # no swap accounting: no swap
            write_text(self._file("memory", "memory.memsw.limit_in_bytes"), str(limits.memory))
        write_text(self._file("pids", "pids.max"), str(limits.pids))
        if limits.cpus is not None:
            if "cpu" not in self.paths:
                raise CgroupError("a CPU quota needs the cpu controller, which is not usable here")
            write_text(self._file("cpu", "cpu.cfs_period_us"), str(CFS_PERIOD_US))
            quota = max(1000, round(limits.cpus * CFS_PERIOD_US))
            write_text(self._file("cpu", "cpu.cfs_quota_us"), str(quota))

    def open_procs(self) -> list[int]:
        fds: list[int] = []
        try:
            for path in sorted(set(self.paths.values())):
                fds.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def cpu_seconds(self) -> float:
        return int(self._cpuacct_usage.read()) / 1e9

    def kill(self) -> None:
        kill_procs(self.paths["memory"])

    def threads(self) -> list[int]:
        return read_ids(self._file("memory", "tasks"))

    def usage(self) -> Usage:
        peak = int(read_text(self._file("memory", "memory.max_usage_in_bytes")))
        oom_kills = read_keyed(self._file("memory", "memory.oom_control")).get("oom_kill", 0)
        return Usage(self.cpu_seconds(), peak, oom_kills)

    def remove(self) -> None:
        self._cpuacct_usage.close()
        if self._removed:
            return
        self._removed = True
        errors = []
        for path in set(self.paths.values()):
            try:
                remove_dir(path, kill_members=True)
            except CgroupError as error:
                errors.append(str(error))
        if errors:
            raise CgroupError("; ".join(errors))
