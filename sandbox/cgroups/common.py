"""What the two cgroup backends share: the interface (Hierarchy, CellCgroup,
Usage), names and paths, and file helpers. The package's find() picks a backend."""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import signal
import time
from dataclasses import dataclass, field

from ..libc import write_file
from ..spec import Limits
from ..watchdog import CpuMeter

CGROUP_ROOT = "/sys/fs/cgroup"
SUBTREE = "cellblock"
CONTROLLERS = ("memory", "pids", "cpu")  # what a run needs; v1 adds cpuacct
RUN_NAME = re.compile(r"^run-(\d+)-(\d+)-\d+$")
REMOVE_TIMEOUT = 2.0  # seconds for an emptied cgroup to become removable


class CgroupError(OSError):
    """The cgroup could not be made or used as the run needs."""


@dataclass
class Usage:
    """What the kernel counted for the whole cell."""

    cpu_time: float  # seconds, every process and thread
    memory_peak: int | None  # bytes; None when the kernel has no peak counter
    oom_kills: int


class CellCgroup(CpuMeter):
    """One run's cgroup (one directory on v2, one per controller on v1)."""

    controllers: tuple[str, ...]

    def open_procs(self) -> list[int]:
        """Write-only fds of the cgroup.procs files the program joins through."""
        raise NotImplementedError

    def open_dir(self) -> int | None:
        """v2: a directory fd for clone3(CLONE_INTO_CGROUP); None where there is none."""
        return None

    def usage(self) -> Usage:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


class Hierarchy:
    """Where this process makes its runs' cgroups, and how."""

    version: int
    base: str  # the cellblock subtree used (on v1: the memory controller's)
    controllers: tuple[str, ...]  # those a run gets

    def create(self, limits: Limits) -> CellCgroup:
        raise NotImplementedError

    def clean_stale(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return f"cgroup v{self.version}: {', '.join(self.controllers)} in {self.base}"


@dataclass
class Placement:
    """Where this process's runs would go and what they would get, found
    without changing anything. `cellblock doctor` shows it; find() acts on the
    same decisions (each backend's choice of base is one function)."""

    version: int  # 2, 1, or 0: no cgroup filesystem
    base: str  # the subtree runs would go under ("" when there is none)
    usable: tuple[str, ...]  # the controllers runs would get
    detail: str  # what a reader needs: the kind, the place, what is wrong
    fix: str | None = None  # the one command (or step) that mends it
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_counter = itertools.count(1)


_namespace: tuple[int, int] | None = None  # (pid, its PID namespace): one stat per process


def _pid_namespace() -> int:
    global _namespace
    if _namespace is None or _namespace[0] != os.getpid():
        _namespace = (os.getpid(), os.stat("/proc/self/ns/pid").st_ino)
    return _namespace[1]


def run_prefix() -> str:
    """The start of the names of this process's run cgroups."""
    return f"run-{_pid_namespace()}-{os.getpid()}-"


def run_name() -> str:
    return f"{run_prefix()}{next(_counter)}"


def is_root() -> bool:
    return os.geteuid() == 0


def writable(path: str) -> bool:
    return os.access(path, os.W_OK)


def sudo() -> str:
    """How a fix is prefixed for the one who reads it."""
    return "" if is_root() else "sudo "


def user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def is_v2_host() -> bool:
    return os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers"))


def read_text(path: str) -> str:
    """A control file's content. With os.read, not open(): a text file object
    costs an fstat, an ioctl and three Python objects, four times the read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


write_text = write_file  # one write(2) per control file


class PolledFile:
    """A control file read every few milliseconds (the CPU counter, by the
    watchdog): opened once, then re-read from offset 0 with pread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> str:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(self._fd, 4096, 0).decode()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def parse_keyed(text: str) -> dict[str, int]:
    """A flat-keyed file's content, such as memory.events or cpu.stat."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def read_keyed(path: str) -> dict[str, int]:
    return parse_keyed(read_text(path))


def remove_dir(path: str, kill_members: bool) -> None:
    """rmdir a cgroup whose processes are gone or going (it is EBUSY until then)."""
    deadline = time.monotonic() + REMOVE_TIMEOUT
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != 16 or time.monotonic() > deadline:  # EBUSY
                raise CgroupError(f"cannot remove {path}: {error.strerror}") from None
        if kill_members:
            kill_procs(path)
        time.sleep(0.005)


def kill_procs(path: str) -> None:
    """SIGKILL every process listed in a cgroup (the v1 way; v2 has cgroup.kill)."""
    for pid in read_ids(os.path.join(path, "cgroup.procs")):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def read_ids(path: str) -> list[int]:
    """The process or thread ids a cgroup file lists (none if it cannot be read)."""
    try:
        return [int(word) for word in read_text(path).split()]
    except OSError:
        return []


def stale_runs(directory: str) -> list[str]:
    """Run cgroups in `directory` whose supervisor, in our PID namespace, is gone."""
    stale = []
    namespace = _pid_namespace()
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            match = RUN_NAME.match(name)
            if match and int(match.group(1)) == namespace and not _alive(int(match.group(2))):
                stale.append(os.path.join(directory, name))
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
