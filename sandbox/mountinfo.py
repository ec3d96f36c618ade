"""The mount table as /proc/self/mountinfo gives it, parsed in one place.

Read by the cgroup discovery (where each v1 controller's hierarchy is, whether
/sys/fs/cgroup is cgroup2) and by `cellblock doctor` (submounts under /usr,
paths masked under /proc). Octal escapes (`\\040` for a space) are decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    fstype: str
    source: str
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        before, separator, after = line.partition(" - ")
        if not separator:
            continue
        left, right = before.split(), after.split()
        if len(left) < 5 or len(right) < 3:
            continue
        mounts.append(
            Mount(_unescape(left[4]), right[0], _unescape(right[1]), tuple(right[2].split(",")))
        )
    return mounts


def mounts() -> list[Mount]:
    """This process's mounts, in mount order (empty if /proc is not there)."""
    try:
        with open(MOUNTINFO) as file:
            return parse(file.read())
    except OSError:
        return []


def mounted_beneath(path: str, table: list[Mount] | None = None) -> list[str]:
    """Mount points strictly beneath `path`."""
    prefix = path.rstrip("/") + "/"
    return [m.mountpoint for m in (table or mounts()) if m.mountpoint.startswith(prefix)]
