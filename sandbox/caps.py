"""Capabilities: the program starts with none, in any set, and cannot regain any.

Order matters. The bounding set is emptied and the securebits locked while we
still hold CAP_SETPCAP; then the ids change; then the remaining sets are
emptied. SECBIT_NOROOT means that even a program running as cell uid 0 (the
size-1 map) gets no capabilities from execve, and the _LOCKED bits stop it
from undoing that. no_new_privs makes setuid binaries powerless and is what
lets an unprivileged process install a seccomp filter.
"""

from __future__ import annotations

from . import libc

SECUREBITS = (
    libc.SECBIT_NOROOT
    | libc.SECBIT_NOROOT_LOCKED
    | libc.SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc.SECBIT_KEEP_CAPS_LOCKED
    | libc.SECBIT_NO_CAP_AMBIENT_RAISE
    | libc.SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
)

_LAST_CAP = libc.cap_last_cap()


def drop_bounding_set() -> None:
    """Empty the bounding and ambient sets and lock the securebits (needs CAP_SETPCAP)."""
    for cap in range(_LAST_CAP + 1):
        libc.prctl(libc.PR_CAPBSET_DROP, cap)
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    libc.prctl(libc.PR_SET_SECUREBITS, SECUREBITS)


def drop_remaining() -> None:
    """Empty the effective, permitted and inheritable sets; set no_new_privs."""
    libc.capset_zero()
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
