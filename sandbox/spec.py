"""What a run asks for (RunSpec, Limits) and what it got (RunResult, Status).

The names here are the public contract (docs/contract.md, sections 1 and 3): they may be
extended, never renamed.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path


class SpecError(ValueError):
    """A run was asked for with bad options: the caller's mistake, reported clearly."""


class Status(enum.StrEnum):
    OK = "OK"
    RE = "RE"  # non-zero exit or death by signal
    TLE = "TLE"  # CPU or wall limit hit
    MLE = "MLE"  # the kernel's OOM killer acted in the cell
    OLE = "OLE"  # output or file-size limit hit
    SV = "SV"  # killed by the seccomp filter
    IE = "IE"  # the sandbox itself failed

    def __str__(self) -> str:
        return self.value


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: int | str, name: str) -> int:
    """Bytes from an int or a string with an optional binary K/M/G/T suffix."""
    if isinstance(value, bool):
        raise SpecError(f"{name}: expected a size, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match:
            raise SpecError(f"{name}: {value!r} is not a size (examples: 65536, 64K, 256M, 1G)")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    else:
        raise SpecError(f"{name}: expected a size, got {type(value).__name__}")
    return size


def parse_seconds(value: float | int | str, name: str) -> float:
    if isinstance(value, bool):
        raise SpecError(f"{name}: expected seconds, got {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name}: {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds):
        raise SpecError(f"{name}: {value!r} is not a finite number of seconds")
    return seconds


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# Bounds: anything outside is a mistake, not a wish (a 1 TB memory limit on a
# 24 GB machine, a negative time, a week of CPU).
MAX_SECONDS = 24 * 3600.0
MAX_PIDS = 1 << 15
MAX_OUTPUT = 1 << 30
MAX_FILE_SIZE = 1 << 36
MIN_MEMORY = 1 << 20
MAX_CPUS = 1024


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Defaults suit a judged test case.

    `wall_time` defaults to `2 * time + 1` seconds: enough for a program that
    waits on I/O now and then, short enough that a sleeping one is caught.
    """

    time: float = 10.0
    wall_time: float | None = None
    memory: int = 512 << 20
    pids: int = 64
    output_limit: int = 16 << 20
    file_size: int = 64 << 20
    open_files: int = 256
    stack: int | None = None  # default: the memory limit (deep recursion runs into MLE)
    tmpfs_size: int | None = None  # default: the memory limit
    tmpfs_inodes: int = 16384
    cpus: float | None = None  # CPU quota in cores (cgroup cpu.max); None: unthrottled

    @property
    def effective_wall_time(self) -> float:
        return self.wall_time if self.wall_time is not None else 2 * self.time + 1.0

    @property
    def effective_stack(self) -> int:
        return self.stack if self.stack is not None else self.memory

    @property
    def effective_tmpfs_size(self) -> int:
        return self.tmpfs_size if self.tmpfs_size is not None else self.memory

    @classmethod
    def build(cls, **options: object) -> Limits:
        """Validated limits from user-facing option values (strings or numbers)."""
        values: dict[str, object] = {}
        for name in ("time", "wall_time"):
            if options.get(name) is not None:
                seconds = parse_seconds(options[name], name)  # type: ignore[arg-type]
                if not 0 < seconds <= MAX_SECONDS:
                    raise SpecError(f"{name}: {seconds:g} s is out of range (0, {MAX_SECONDS:g}]")
                values[name] = seconds
        if options.get("cpus") is not None:
            cpus = parse_seconds(options["cpus"], "cpus")  # type: ignore[arg-type]
            if not 0.01 <= cpus <= MAX_CPUS:
                raise SpecError(f"cpus: {cpus:g} is out of range [0.01, {MAX_CPUS}]")
            values["cpus"] = cpus
        physical = _physical_memory()
        size_bounds = {
            "memory": (MIN_MEMORY, physical),
            "output_limit": (0, MAX_OUTPUT),
            "file_size": (0, MAX_FILE_SIZE),
            "stack": (64 << 10, physical),
            "tmpfs_size": (1 << 20, physical),
        }
        for name, (low, high) in size_bounds.items():
            if options.get(name) is not None:
                size = parse_size(options[name], name)  # type: ignore[arg-type]
                if not low <= size <= high:
                    raise SpecError(
                        f"{name}: {size} bytes is out of range [{low}, {high}]"
                        + (" (the machine's memory)" if high == physical else "")
                    )
                values[name] = size
        for name, high in (("pids", MAX_PIDS), ("open_files", 1 << 20), ("tmpfs_inodes", 1 << 24)):
            if options.get(name) is not None:
                raw = options[name]
                if isinstance(raw, bool) or not isinstance(raw, int | str):
                    raise SpecError(f"{name}: expected a whole number, got {raw!r}")
                try:
                    number = int(raw)
                except ValueError:
                    raise SpecError(f"{name}: {raw!r} is not a whole number") from None
                if not 1 <= number <= high:
                    raise SpecError(f"{name}: {number} is out of range [1, {high}]")
                values[name] = number
        return cls(**values)  # type: ignore[arg-type]


# The whole environment of a cell, unless the caller adds to it with `env`.
BASE_ENV: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/box",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

CopyInSource = bytes | str | os.PathLike


@dataclass(frozen=True)
class RunSpec:
    """One command to run in a fresh cell."""

    argv: tuple[str, ...]
    limits: Limits = field(default_factory=Limits)
    stdin: bytes | Path | None = None
    copy_in: Mapping[str, CopyInSource] = field(default_factory=dict)
    copy_out: tuple[str, ...] = ()
    image: str = "host"
    seccomp: str = "default"
    env: Mapping[str, str] = field(default_factory=dict)
    # Extension (interactive judging): pipe ends the program gets as its stdin and
    # stdout instead of `stdin` and the captured stdout. The run takes them over:
    # they are closed when it returns, whatever happened.
    stdin_fd: int | None = None
    stdout_fd: int | None = None
    # Extension: copy-in destinations the program may read and execute but not
    # change (a read-only bind of the file onto itself, made before it starts).
    readonly: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.argv:
            raise SpecError("command: nothing to run (give a command after --)")
        if any(not isinstance(a, str) or "\0" in a for a in self.argv):
            raise SpecError("command: arguments must be strings without NUL bytes")
        for key, value in self.env.items():
            if not _ENV_NAME_RE.match(key):
                raise SpecError(f"env: {key!r} is not a valid variable name")
            if "\0" in value:
                raise SpecError(f"env: the value of {key} holds a NUL byte")
        for path in list(self.copy_in) + list(self.copy_out):
            cell_path(path)
        if isinstance(self.readonly, str):
            raise SpecError("readonly: expected a list of paths, not one string")
        copied = {cell_path(path) for path in self.copy_in}
        for path in self.readonly:
            if cell_path(path) not in copied:
                raise SpecError(f"readonly: {path!r} is not a copy-in destination")

    def environment(self) -> dict[str, str]:
        env = dict(BASE_ENV)
        env.update(self.env)
        return env


def cell_path(path: str) -> str:
    """A copy-in/copy-out path, relative to /box, with no way out of it."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise SpecError(f"file path {path!r} is not a usable name")
    relative = path[len("/box/") :] if path.startswith("/box/") else path
    parts = relative.split("/")
    if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise SpecError(
            f"file path {path!r} must name a file under /box (relative, no '..', no '//')"
        )
    return relative


@dataclass
class RunResult:
    """What happened in one run; the attributes are the contract's JSON fields."""

    status: Status
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    time: float = 0.0
    wall_time: float = 0.0
    memory: int = 0
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    message: str = ""
    # Extensions (not in the contract's table, never renamed once added).
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    degraded: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["status"] = self.status.value
        data.pop("files")
        data["files"] = sorted(self.files)
        return data
