"""The kernel's version, the compiled launcher and the cell maker."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import time

from sandbox import libc
from sandbox.cgroups.v2 import PEAK_KERNEL

from .host import kernel_version
from .probe import PROBE_TIMEOUT, error_text, probe
from .report import Check

MIN_KERNEL = (5, 12)  # mount_setattr(2)


def _probe_mount_setattr() -> int:
    """Whether the mount_setattr syscall exists: anything but ENOSYS for bogus arguments."""
    try:
        libc.syscall(
            libc.SYS_mount_setattr,
            ctypes.c_int(-1),
            None,
            ctypes.c_uint(0),
            None,
            ctypes.c_size_t(0),
            what="mount_setattr",
        )
    except OSError as e:
        if e.errno == errno.ENOSYS:
            raise
        return e.errno or 0
    return 0


def check_kernel() -> Check:
    name = "kernel"
    release = os.uname().release
    version = kernel_version()
    out = probe(_probe_mount_setattr)
    if version < MIN_KERNEL or (not out.ok and out.errno == errno.ENOSYS):
        return Check(
            name,
            False,
            f"Linux {release}: cellblock needs ≥ {MIN_KERNEL[0]}.{MIN_KERNEL[1]} "
            "(mount_setattr for recursive read-only binds)",
            "upgrade to Linux ≥ 5.12 (≥ 5.19 for memory.peak on cgroup v2)",
        )
    if version >= PEAK_KERNEL:
        note = "memory.peak available on cgroup v2"
    else:
        note = "before 5.19 cgroup v2 has no memory.peak, so peak memory is sampled"
    return Check(name, True, f"Linux {release}: mount_setattr present; {note}")


def check_launcher() -> Check:
    """The cell's init (sandbox/cellblock-init, built from sandbox/init.c),
    which makes every cell and starts every program."""
    from sandbox import making

    name = "program launcher"
    try:
        path = making.init_path()
    except making.InitUnavailable as error:
        problem = str(error)
    else:
        return Check(name, True, f"{path} is built")
    return Check(
        name,
        False,
        problem,
        "scripts/install (or: pip install --force-reinstall cellblock, with gcc present; "
        "with musl-tools too, cells start faster)",
    )


def check_maker() -> Check:
    """Whether warm cells can be made by a cell maker (sandbox/maker.py)."""
    from sandbox import maker

    name = "cell maker"
    slower = "warm cells are made by the caller instead (the same cells, ~1 ms slower)"
    if not maker._can_start_interpreter():
        return Check(
            name,
            False,
            f"sys.executable {sys.executable!r} is not a Python to start: {slower}",
            required=False,
        )
    try:
        handle = maker.Maker()
    except OSError as error:
        return Check(
            name, False, f"cannot start one ({error_text(error)}): {slower}", required=False
        )
    try:
        deadline = time.monotonic() + 2 * PROBE_TIMEOUT
        while not handle.usable() and not handle.broken and time.monotonic() < deadline:
            time.sleep(0.02)
        up = handle.usable()
    finally:
        handle.stop()
    if up:
        return Check(
            name,
            True,
            "warm cells are made by a small process of their own, not by the caller",
            required=False,
        )
    return Check(
        name,
        False,
        f"it did not come up (the cell's init is missing, or the rootless id maps failed): "
        f"{slower}",
        required=False,
    )
