"""Seccomp and Landlock: a filter and a ruleset installed for real in a probe child."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
import sys
from typing import Any

from sandbox import landlock, libc

from .host import read, sudo
from .probe import ProbeFailed, probe
from .report import Check

ALLOW_ALL_BPF = struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000)


def _probe_seccomp_filter() -> int:
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    libc.seccomp_set_filter(ALLOW_ALL_BPF)
    mode = libc.prctl(libc.PR_GET_SECCOMP)
    if mode != 2:
        raise ProbeFailed(f"filter installed but PR_GET_SECCOMP reports mode {mode}, not 2")
    return mode


def _probe_pyseccomp() -> dict[str, Any]:
    try:
        import pyseccomp
    except ImportError as e:
        return {"missing": "pyseccomp", "error": str(e)}
    except RuntimeError as e:  # pyseccomp raises this when libseccomp.so is missing
        return {"missing": "libseccomp", "error": str(e)}
    from sandbox import seccomp

    data = seccomp.compile_profile("default")  # the cells' own profile, as a run compiles it
    if not data or len(data) % 8:
        raise ProbeFailed(f"libseccomp exported {len(data)} bytes, not a BPF program")
    return {
        "library": getattr(pyseccomp, "_libseccomp_path", None) or "libseccomp",
        "version": getattr(pyseccomp, "__version__", "?"),
        "instructions": len(data) // 8,
    }


def check_seccomp() -> Check:
    name = "seccomp"
    status = read("/proc/self/status") or ""
    m = re.search(r"^Seccomp:\s*(\d+)", status, re.M)
    if not m:
        return Check(
            name,
            False,
            "the kernel has no seccomp (no Seccomp field in /proc/self/status)",
            "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y",
        )
    own_mode = int(m.group(1))
    kernel = probe(_probe_seccomp_filter)
    if not kernel.ok:
        return Check(
            name,
            False,
            f"installing a seccomp filter fails: {kernel.error}",
            "use a kernel built with CONFIG_SECCOMP_FILTER=y",
        )
    lib = probe(_probe_pyseccomp)
    missing = lib.value.get("missing") if lib.ok else "libseccomp"
    if missing:
        error = lib.value["error"] if lib.ok else lib.error
        if missing == "pyseccomp":
            fix = f"{sys.executable} -m pip install pyseccomp"
        else:
            fix = f"{sudo()}apt-get install -y libseccomp2"
        detail = f"the kernel accepts filters, but {missing} is unusable: {error}"
        return Check(name, False, detail, fix)
    inherited = " (this process already runs under a seccomp filter)" if own_mode == 2 else ""
    return Check(
        name,
        True,
        f"the kernel accepts seccomp filters (no_new_privs + allow-all program) and "
        f"{os.path.basename(str(lib.value['library']))} compiles the cells' default profile "
        f"({lib.value['instructions']} instructions; pyseccomp {lib.value['version']}){inherited}",
    )


def _probe_landlock() -> int:
    abi = libc.syscall(
        libc.SYS_landlock_create_ruleset,
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(libc.LANDLOCK_CREATE_RULESET_VERSION),
        what="landlock_create_ruleset",
    )
    # The cell's own ruleset for this ABI (its rights and scopes), enforced here:
    # what the kernel refuses of it, a cell would meet.
    ruleset = landlock.ruleset_for(abi)
    if ruleset is None:
        raise ProbeFailed(f"the kernel reports Landlock ABI {abi}")
    attr = ctypes.create_string_buffer(ruleset.attr, len(ruleset.attr))
    fd = libc.syscall(
        libc.SYS_landlock_create_ruleset,
        attr,
        ctypes.c_size_t(len(ruleset.attr)),
        ctypes.c_uint32(0),
        what="landlock_create_ruleset",
    )
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    libc.syscall(
        libc.SYS_landlock_restrict_self,
        ctypes.c_int(fd),
        ctypes.c_uint32(0),
        what="landlock_restrict_self",
    )
    os.close(fd)
    return abi


def _lsm_list() -> str | None:
    text = read("/sys/kernel/security/lsm")
    if text is not None:
        return text.strip()
    m = re.search(r"(?:^|\s)lsm=(\S+)", read("/proc/cmdline") or "")
    return m.group(1) if m else None


def check_landlock() -> Check:
    name = "landlock"
    out = probe(_probe_landlock)
    if out.ok:
        return Check(
            name,
            True,
            f"Landlock ABI {out.value}: the cells' ruleset is created and enforced (a cell's "
            "program opens nothing outside its cell, even through a descriptor)",
            required=False,
        )
    lsm = _lsm_list()
    if out.errno == errno.EOPNOTSUPP:
        why = "built into the kernel but not enabled at boot"
        if lsm is not None and "landlock" not in lsm.split(","):
            why += f" (the lsm list is {lsm}, without landlock)"
        fix = (
            f"add lsm=landlock,{lsm or '<current list>'} to the kernel command line "
            "(GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot)"
        )
    elif out.errno == errno.ENOSYS:
        why = "the kernel has no Landlock (needs ≥ 5.13 with CONFIG_SECURITY_LANDLOCK=y)"
        fix = "use a kernel ≥ 5.13 with CONFIG_SECURITY_LANDLOCK=y, booted with lsm=landlock,..."
    else:
        why = out.error
        fix = "add lsm=landlock,... to the kernel command line"
        if lsm is not None and "landlock" not in lsm.split(","):
            why += f" (the lsm list is {lsm}, without landlock)"
    return Check(
        name,
        False,
        f"unavailable, cells run without Landlock (a host file given to a program as a "
        f"descriptor can be reopened through /proc/self/fd): {why}",
        fix,
        required=False,
    )
