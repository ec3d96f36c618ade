"""Facts of the host the checks read: files under /proc and /sys, who asks, the kernel."""

from __future__ import annotations

import os

# Who asks and on which kernel: the same answers the cgroup discovery uses.
from sandbox.cgroups.common import is_root, kernel_version, sudo, user_name

__all__ = ["in_container", "is_root", "kernel_version", "read", "read_int", "sudo", "user_name"]


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def read_int(path: str) -> int | None:
    text = read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def in_container() -> bool:
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return True
    return bool(os.environ.get("container"))  # noqa: SIM112 (systemd's name)
