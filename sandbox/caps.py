"""Capabilities: the program starts with none, in any set, and cannot regain any.

This module is the policy; spawn.c applies it in the program's process, in an
order that matters: while it still holds CAP_SETPCAP it empties the bounding
set (every capability up to LAST_CAP) and the ambient set and sets SECUREBITS;
then it changes ids, empties the effective, permitted and inheritable sets and
sets no_new_privs.

SECBIT_NOROOT means that even a program running as cell uid 0 (the size-1
map) gets no capabilities from execve, and the _LOCKED bits stop it from
undoing that. no_new_privs makes setuid binaries powerless and is what lets
an unprivileged process install a seccomp filter.
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

# The highest capability this kernel knows (newer kernels add some).
LAST_CAP = libc.cap_last_cap()
