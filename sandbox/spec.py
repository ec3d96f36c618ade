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
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


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


PHYSICAL = -1  # as a high bound: the machine's memory


def _limit(
    default: object, kind: str, low: float, high: float, help: str, shown: str | None = None
) -> Any:
    """A field of Limits with what every surface needs to know of it: how its
    value is read (kind: seconds, cores, size or count), its bounds, a help text,
    and its default as people read it (`shown`, for a default that is not a value)."""
    return field(
        default=default,
        metadata={"kind": kind, "low": low, "high": high, "help": help, "shown": shown},
    )


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run: the one definition of each limit. The CLI's
    flags, the judge's options, the HTTP API's and the batch's `limits` are made
    from these fields (`limit_fields`); a judged test has defaults of its own
    (worker/request.py).

    `wall_time` defaults to `2 * time + 1` seconds: enough for a program that
    waits on I/O now and then, short enough that a sleeping one is caught.
    """

    time: float = _limit(
        10.0,
        "seconds",
        0,
        MAX_SECONDS,
        "CPU time of the whole cell: every process and thread together",
    )
    wall_time: float | None = _limit(
        None, "seconds", 0, MAX_SECONDS, "wall-clock time", "2 * time + 1"
    )
    memory: int = _limit(
        512 << 20,
        "size",
        MIN_MEMORY,
        PHYSICAL,
        "memory of the whole cell (its memory cgroup; swap is never used)",
    )
    pids: int = _limit(64, "count", 1, MAX_PIDS, "processes and threads alive at once")
    output_limit: int = _limit(
        16 << 20, "size", 0, MAX_OUTPUT, "captured stdout, and captured stderr, each"
    )
    file_size: int = _limit(
        64 << 20, "size", 0, MAX_FILE_SIZE, "the largest file the program may write"
    )
    open_files: int = _limit(256, "count", 1, 1 << 20, "open file descriptors per process")
    # Deep recursion runs into MLE, not a stack overflow.
    stack: int | None = _limit(
        None, "size", 64 << 10, PHYSICAL, "stack of each process", "the memory limit"
    )
    tmpfs_size: int | None = _limit(
        None,
        "size",
        1 << 20,
        PHYSICAL,
        "the cell's writable files (/box, /tmp, the root's writes)",
        "the memory limit",
    )
    tmpfs_inodes: int = _limit(16384, "count", 1, 1 << 24, "files the cell may make")
    # A CPU quota (cgroup cpu.max); None: unthrottled.
    cpus: float | None = _limit(
        None, "cores", 0.01, MAX_CPUS, "a CPU quota, in cores (0.5: half of one)", "none"
    )

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
        """Validated limits from user-facing option values (strings or numbers);
        None is the default."""
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise SpecError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            f.name: read_limit(f, options[f.name])
            for f in fields(cls)
            if options.get(f.name) is not None
        }
        return cls(**values)


def limit_fields() -> tuple[Field[Any], ...]:
    """Every limit, with its metadata (kind, low, high, help, shown)."""
    return fields(Limits)


def show_default(limit: Field[Any], default: object = MISSING) -> str:
    """A limit's default as people read it: "10", "512M", "2 * time + 1"."""
    value: Any = limit.default if default is MISSING else default
    if value is None:
        return str(limit.metadata["shown"])
    if limit.metadata["kind"] == "size":
        return format_size(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


_METAVAR = {"seconds": "S", "cores": "N", "size": "SIZE", "count": "N"}


def limit_flag(limit: Field[Any], default: object = MISSING) -> tuple[str, str, str]:
    """(--flag, metavar, help) of a limit, for a command line; `default` when
    the command's differs from a run's (the judge's)."""
    help_text = f"{limit.metadata['help']} (default {show_default(limit, default)})"
    return "--" + limit.name.replace("_", "-"), _METAVAR[limit.metadata["kind"]], help_text


def format_size(size: int) -> str:
    """512M, 64K, 1G, or plain bytes."""
    for suffix, unit in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def read_limit(limit: Field[Any], raw: object) -> float | int:
    """One limit's value from what a user gave (a string or a number), checked."""
    name, kind = limit.name, limit.metadata["kind"]
    low, high = limit.metadata["low"], limit.metadata["high"]
    if high == PHYSICAL:
        high = _physical_memory()
    if kind in ("seconds", "cores"):
        number = parse_seconds(raw, name)  # type: ignore[arg-type]
        inside = low < number <= high if kind == "seconds" else low <= number <= high
        if not inside:
            left = "(" if kind == "seconds" else "["
            unit = " s" if kind == "seconds" else ""
            raise SpecError(f"{name}: {number:g}{unit} is out of range {left}{low:g}, {high:g}]")
        return number
    if kind == "size":
        size = parse_size(raw, name)  # type: ignore[arg-type]
        if not low <= size <= high:
            raise SpecError(
                f"{name}: {size} bytes is out of range [{low}, {high}]"
                + (" (the machine's memory)" if limit.metadata["high"] == PHYSICAL else "")
            )
        return size
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise SpecError(f"{name}: expected a whole number, got {raw!r}")
    try:
        count = int(raw)
    except ValueError:
        raise SpecError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= count <= high:
        raise SpecError(f"{name}: {count} is out of range [{low}, {high}]")
    return count


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
    # Extension: the program's stderr is its stdout (one pipe, so the two keep
    # the order they were written in); the result's stderr is then empty.
    stderr_to_stdout: bool = False

    def __post_init__(self) -> None:
        if not self.argv and self.image == "host":  # another image may have its own command
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
