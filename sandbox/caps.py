"""Capabilities: the program starts with none, in any set, and cannot regain any.

Order matters. The init empties the bounding set and locks the securebits
while it still holds CAP_SETPCAP (here); the program's child then changes ids
and empties the remaining sets, then sets no_new_privs (spawn.c).
SECBIT_NOROOT means that even a program running as cell uid 0 (the size-1
map) gets no capabilities from execve, and the _LOCKED bits stop it
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
