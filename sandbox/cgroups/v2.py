"""cgroup v2: one directory per run under a subtree that belongs to cellblock.

The rules this follows (Documentation/admin-guide/cgroup-v2.rst):
- No internal processes: a cgroup that hands controllers to its children holds
  no processes itself. The supervisor therefore never sits in the subtree's
  base once runs exist there; when the base is its own (delegated) cgroup, its
  processes move to a `supervisor` leaf first.
- Moving a process needs write access to cgroup.procs of the common ancestor
  of where it is and where it goes, checked with the credentials of whoever
  opened the file. The supervisor opens the run's cgroup.procs; the program
  writes "0" to it just before execve, so the pages Python touches between
  fork and exec stay charged to the supervisor's cgroup, not the cell's.
- `cgroup.kill` (5.14) kills every process of the cell at once, forks racing
  with it included; `memory.peak` (5.19) is the peak, `memory.events`
  oom_kill the OOM killer's count.
"""

from __future__ import annotations

import contextlib
import errno
import os

from ..spec import Limits
from . import systemd
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
    kernel_version,
    parse_keyed,
    read_ids,
    read_keyed,
    read_text,
    remove_dir,
    run_name,
    stale_runs,
    user_name,
    writable,
    write_text,
)

SUPERVISOR_LEAF = "supervisor"
CPU_PERIOD_US = 100_000
PEAK_KERNEL = (5, 19)  # memory.peak; before it the peak is sampled


def own_cgroup(root: str = CGROUP_ROOT) -> str:
    """This process's cgroup as a path under `root`."""
    for line in read_text("/proc/self/cgroup").splitlines():
        if line.startswith("0::"):
            return os.path.join(root, line[3:].strip().lstrip("/")).rstrip("/")
    raise CgroupError("this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")


def _inside(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor + "/")


def choose_base(root: str = CGROUP_ROOT) -> tuple[str, str]:
    """Where this process's runs go, and why there, changing nothing; raises
    CgroupError naming the cause and the fix. In order: CELLBLOCK_CGROUP;
    root's subtree; the user's delegated subtree (`cellblock setup --user`)
    when this process is inside it; this process's own cgroup when it was
    delegated to it (systemd Delegate=, a container's cgroup namespace)."""
    own = own_cgroup(root)
    explicit = os.environ.get("CELLBLOCK_CGROUP")
    if explicit:
        if _inside(explicit, root):
            return explicit, "CELLBLOCK_CGROUP"
        return os.path.join(root, explicit.lstrip("/")), "CELLBLOCK_CGROUP"
    if is_root():
        return os.path.join(root, SUBTREE), "root's subtree, made on first use"
    user = user_name()
    delegated = os.path.join(root, SUBTREE, user)
    if _inside(own, delegated):
        return delegated, "cellblock setup"
    if writable(own) and writable(os.path.join(own, "cgroup.procs")):
        base = own if os.path.basename(own) != SUPERVISOR_LEAF else os.path.dirname(own)
        return base, "this process's delegated cgroup"
    if os.path.isdir(delegated):
        # A process moves only through a common ancestor it may write: from
        # outside, it cannot enter the subtree that was delegated to it.
        raise CgroupError(
            f"cgroup v2: {delegated} is delegated to {user}, but this process is outside it "
            f"({own}) and cannot move itself in: start it inside (a systemd unit with "
            f"Delegate=yes, `systemd-run --user --scope -p Delegate=yes`, or root writing "
            f"its pid to {delegated}/{SUPERVISOR_LEAF}/cgroup.procs)"
        )
    raise CgroupError(
        f"cgroup v2, but nothing is delegated to {user}: {delegated} does not exist and "
        f"this process's own cgroup ({own}) is not writable"
    )


def locate() -> V2Hierarchy:
    """The base this process's runs go under, made ready to hold them. An
    unprivileged process with nothing delegated to it asks the user's systemd
    manager for a scope of its own first (systemd.py)."""
    try:
        base, source = choose_base()
    except CgroupError as error:
        if is_root() or os.environ.get("CELLBLOCK_CGROUP"):
            raise
        try:
            systemd.start_scope(own_cgroup)
        except CgroupError as no_scope:
            raise CgroupError(f"{error}; {no_scope}") from None
        base, source = choose_base()
    if is_root() and source != "CELLBLOCK_CGROUP":
        _enable_down_to(base)
    if not os.path.isdir(base):
        raise CgroupError(f"{base} does not exist (run `cellblock setup --user {user_name()}`)")
    if own_cgroup() == base:
        _move_processes_to_leaf(base)
    controllers = _enable_for_children(base)
    return V2Hierarchy(base, controllers)


def inspect(root: str = CGROUP_ROOT) -> Placement:
    """What locate() would find and what it would lack, read only."""
    user = "root" if is_root() else user_name()
    fix = (
        f"give this host or container the {', '.join(CONTROLLERS)} controllers and a "
        f"writable {root} (Docker: --cgroupns=private on a cgroup v2 host)"
        if is_root()
        else f"sudo cellblock setup --user {user}"
    )
    try:
        base, source = choose_base(root)
    except CgroupError as error:
        if not is_root() and not systemd.why_not():
            detail = (
                f"{error}; cellblock asks the user's systemd manager for a scope with "
                "Delegate=yes when it starts, and runs its cells there"
            )
            return Placement(2, "", CONTROLLERS, detail)
        problem = str(error) if is_root() else f"{error}; {systemd.why_not()}"
        return Placement(2, "", (), problem, fix, [problem])
    # Root makes its subtree on first use: until then its parent is what counts.
    probe = (
        root
        if is_root() and not os.path.isdir(base) and base == os.path.join(root, SUBTREE)
        else base
    )
    problems = []
    if not os.path.isdir(probe):
        problems.append(f"{base} does not exist")
        usable: list[str] = []
    else:
        files = [probe, f"{probe}/cgroup.procs", f"{probe}/cgroup.subtree_control"]
        locked = [path for path in files if not (os.path.exists(path) and writable(path))]
        if locked:
            problems.append(f"not writable by {user}: {', '.join(locked)}")
        available = _words(f"{probe}/cgroup.controllers")
        enabled = _words(f"{probe}/cgroup.subtree_control")
        can_enable = writable(f"{probe}/cgroup.subtree_control")
        usable = [c for c in CONTROLLERS if c in enabled or (c in available and can_enable)]
        missing = [c for c in CONTROLLERS if c not in usable]
        if missing:
            how = "available" if is_root() else "delegated"
            problems.append(f"controllers not {how}: {', '.join(missing)}")
    if problems:
        detail = f"cgroup v2: {base} ({source}) is not usable by {user}: {'; '.join(problems)}"
        return Placement(2, base, tuple(usable), detail, fix, problems)
    detail = f"cgroup v2: {', '.join(usable)} usable by {user} in {base} ({source})"
    if kernel_version() < PEAK_KERNEL:
        detail += "; note: no memory.peak before Linux 5.19, peak memory is sampled"
    return Placement(2, base, tuple(usable), detail)


def _words(path: str) -> list[str]:
    try:
        return read_text(path).split()
    except OSError:
        return []


def _enable_down_to(base: str) -> None:
    """As root: create the subtree and hand the controllers down to it."""
    relative = os.path.relpath(base, CGROUP_ROOT)
    current = CGROUP_ROOT
    for part in relative.split("/"):
        _enable_for_children(current)
        current = os.path.join(current, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(current)


def _enable_for_children(path: str) -> tuple[str, ...]:
    """Enable what a run needs in path's subtree_control; return what is enabled."""
    available = read_text(os.path.join(path, "cgroup.controllers")).split()
    wanted = [c for c in CONTROLLERS if c in available]
    enabled = set(read_text(os.path.join(path, "cgroup.subtree_control")).split())
    missing = [c for c in wanted if c not in enabled]
    if missing:
        control = os.path.join(path, "cgroup.subtree_control")
        request = " ".join(f"+{c}" for c in missing)
        try:
            try:
                write_text(control, request)
            except OSError as error:
                if error.errno != errno.EBUSY:
                    raise
                # Processes sit in it (a container's namespace root, a delegated
                # scope): they move to a leaf, as the no-internal-process rule wants.
                _move_processes_to_leaf(path)
                write_text(control, request)
        except OSError as error:
            raise CgroupError(
                f"cannot enable {', '.join(missing)} in {path}: {error.strerror}"
            ) from None
    return tuple(c for c in CONTROLLERS if c in wanted)


def _move_processes_to_leaf(base: str) -> None:
    """Empty the base into its `supervisor` leaf, so controllers can go to children."""
    leaf = os.path.join(base, SUPERVISOR_LEAF)
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf)
    for _ in range(10):  # processes may fork while we move them
        pids = read_text(os.path.join(base, "cgroup.procs")).split()
        if not pids:
            return
        for pid in pids:
            try:
                write_text(os.path.join(leaf, "cgroup.procs"), pid)
            except ProcessLookupError:
                continue
            except OSError as error:
                raise CgroupError(
                    f"cannot move process {pid} to {leaf}: {error.strerror}"
                ) from None
    raise CgroupError(f"{base} keeps gaining processes; cannot empty it")


class V2Hierarchy(Hierarchy):
    version = 2

    def __init__(self, base: str, controllers: tuple[str, ...]) -> None:
        self.base = base
        self.controllers = controllers

    def create(self, limits: Limits) -> V2Cell:
        path = os.path.join(self.base, run_name())
        try:
            os.mkdir(path)
        except FileExistsError:  # left by an earlier process that had our pid
            _remove(path)
            os.mkdir(path)
        except OSError as error:
            raise CgroupError(f"cannot create {path}: {error.strerror}") from None
        cell = V2Cell(path, self.controllers)
        try:
            cell.apply(limits)
        except BaseException:
            cell.remove()
            raise
        return cell

    def clean_stale(self) -> None:
        for path in stale_runs(self.base):
            with contextlib.suppress(OSError):
                _remove(path)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        write_text(os.path.join(path, "cgroup.kill"), "1")
    remove_dir(path, kill_members=False)


class V2Cell(CellCgroup):
    def __init__(self, path: str, controllers: tuple[str, ...]) -> None:
        self.path = path
        self.controllers = controllers
        self._removed = False
        self._cpu_stat = PolledFile(self._file("cpu.stat"))

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def apply(self, limits: Limits) -> None:
        settings: list[tuple[str, str]] = []
        if "memory" in self.controllers:
            settings += [
                ("memory.max", str(limits.memory)),
                ("memory.swap.max", "0"),
                # The OOM killer ends the whole cell, not one process of it.
                ("memory.oom.group", "1"),
            ]
        if "pids" in self.controllers:
            settings.append(("pids.max", str(limits.pids)))
        if "cpu" in self.controllers and limits.cpus is not None:
            quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
            settings.append(("cpu.max", f"{quota} {CPU_PERIOD_US}"))
        for name, value in settings:
            try:
                write_text(self._file(name), value)
            except FileNotFoundError:
                if name != "memory.swap.max":  # no swap accounting: no swap to limit
                    raise CgroupError(f"{self._file(name)} is missing") from None
            except OSError as error:
                raise CgroupError(f"cannot set {self._file(name)}: {error.strerror}") from None

    def open_procs(self) -> list[int]:
        return [os.open(self._file("cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)]

    def open_dir(self) -> int | None:
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def cpu_seconds(self) -> float:
        return parse_keyed(self._cpu_stat.read()).get("usage_usec", 0) / 1e6

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            write_text(self._file("cgroup.kill"), "1")

    def threads(self) -> list[int]:
        return read_ids(self._file("cgroup.threads"))

    def usage(self) -> Usage:
        peak: int | None = None
        oom_kills = 0
        if "memory" in self.controllers:
            with contextlib.suppress(FileNotFoundError):  # before 5.19
                peak = int(read_text(self._file("memory.peak")))
            oom_kills = read_keyed(self._file("memory.events")).get("oom_kill", 0)
        return Usage(self.cpu_seconds(), peak, oom_kills)

    def remove(self) -> None:
        self._cpu_stat.close()
        if not self._removed:
            self._removed = True
            _remove(self.path)
