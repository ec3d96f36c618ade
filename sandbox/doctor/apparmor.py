"""AppArmor's restriction of unprivileged user namespaces (Ubuntu 23.10 and later).

With kernel.apparmor_restrict_unprivileged_userns=1 an unprivileged process
that no profile allows `userns` still gets its namespace, but AppArmor
moves it to a profile that denies every capability in it: the unshare
succeeds and the first mount fails, so no cell can be made. The fix is the
profile cellblock ships (profiles/apparmor/cellblock, as bubblewrap's
package ships one for bwrap), or the sysctl off for the whole machine.

Debian's kernels have no such sysctl: there this check passes as "not
restricted", and only its decisions (not the kernel's behaviour) can be
tested on them.
"""

from __future__ import annotations

from pathlib import Path

from .host import is_root, read, read_int, sudo
from .probe import Outcome, enter_userns, probe
from .report import Check

SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
# The AppArmor label of this process: the newer per-LSM file, then the old one.
CURRENT_LABEL = ("/proc/self/attr/apparmor/current", "/proc/self/attr/current")
PROFILE = Path(__file__).resolve().parent.parent.parent / "profiles" / "apparmor" / "cellblock"


def current_profile(paths: tuple[str, ...] = CURRENT_LABEL) -> str | None:
    """This process's AppArmor profile ('unconfined', 'cellblock', ...), None without AppArmor."""
    for path in paths:
        label = read(path)
        if label is not None and label.strip("\0\n "):
            return label.strip("\0\n ").split(" (")[0]  # "cellblock (unconfined)": its mode
    return None


def _mount_in_userns() -> bool:
    from sandbox import libc

    enter_userns(libc.CLONE_NEWNS)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount("tmpfs", "/tmp", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=64k")
    return True


def fix() -> str:
    return (
        f"{sudo()}install -m 0644 {PROFILE} /etc/apparmor.d/cellblock && "
        f"{sudo()}apparmor_parser -r /etc/apparmor.d/cellblock (it names the interpreter of "
        "/opt/cellblock/venv, made with `python3 -m venv --copies`; edit its path for another "
        f"venv), or for the whole machine: {sudo()}sysctl -w "
        "kernel.apparmor_restrict_unprivileged_userns=0"
    )


def assess(
    restricted: int | None, profile: str | None, root: bool, mounts: Outcome | None
) -> Check:
    """The check from what was read: the sysctl, this process's profile, whether
    it is root, and (when asked) whether a mount in a new user namespace works."""
    name = "apparmor"
    if not restricted:
        state = "absent" if restricted is None else "0"
        return Check(
            name, True, f"user namespaces are not restricted by AppArmor (the sysctl is {state})"
        )
    if root:
        return Check(name, True, "AppArmor restricts unprivileged user namespaces, not root's")
    if profile in (None, "unconfined"):
        return Check(
            name,
            False,
            "kernel.apparmor_restrict_unprivileged_userns=1 and this process has no profile "
            "that allows user namespaces: its namespaces get no capabilities, so mounts "
            "fail and no cell can be made",
            fix(),
        )
    if mounts is not None and mounts.ok:
        return Check(
            name,
            True,
            f"AppArmor restricts unprivileged user namespaces; this process's profile "
            f"{profile!r} allows them (a mount in one works)",
        )
    error = mounts.error if mounts is not None else "not tried"
    return Check(
        name,
        False,
        f"AppArmor restricts unprivileged user namespaces and this process's profile "
        f"{profile!r} does not allow them: a mount in one fails ({error})",
        fix(),
    )


def check_apparmor() -> Check:
    restricted = read_int(SYSCTL)
    profile = current_profile()
    needs_probe = bool(restricted) and not is_root() and profile not in (None, "unconfined")
    return assess(restricted, profile, is_root(), probe(_mount_in_userns) if needs_probe else None)
