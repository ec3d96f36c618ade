"""Landlock: the program opens nothing but its own cell's files, enforced per process.

The mount namespace already decides what the cell can see by path. Landlock is
the second wall (SECURITY.md rule 15, best effort by ABI), applied by the program's process
itself (spawn.c) after no_new_privs and before the seccomp filter, so it covers
the program and everything it starts, and nothing of the init. One rule: every
right beneath the cell's root "/" (the root stays as writable as the contract
says: /box, /tmp, /dev/shm, and for cell root the overlay's root), but making
device nodes. Anything not beneath that root is refused, whatever way the
program reaches it: a host file it was given as a descriptor and reopens
through /proc/self/fd (to read what was there, or truncate it), or the files
beneath a host directory that a descriptor leak handed it (SECURITY.md rule 4 is the first
wall against that; this is the second). Pipes and memfds (its stdin, stdout and
stderr) are internal files Landlock always allows, and descriptors the program
was given stay usable as they are: Landlock checks opens. With ABI 6, abstract
unix sockets and signals are scoped to the program's own processes too.

The kernel's ABI decides what can be handled; a kernel without Landlock (or
a seccomp profile around the worker that refuses its calls) leaves the cell
as it is without it, and `cellblock doctor` says so.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from . import libc

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2: link or rename across directories
TRUNCATE = 1 << 14  # ABI 3
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6


@dataclass(frozen=True)
class Ruleset:
    attr: bytes  # struct landlock_ruleset_attr, as long as the ABI knows it
    rules: tuple[tuple[str, int], ...]  # (path in the cell, allowed access)


def handled_access(abi: int) -> int:
    """Every filesystem right this ABI can restrict (IOCTL_DEV, ABI 5, is left
    alone: seccomp decides ioctls)."""
    handled = (MAKE_SYM << 1) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        handled |= REFER
    if abi >= 3:
        handled |= TRUNCATE
    return handled


def ruleset_for(abi: int) -> Ruleset | None:
    """The cell's ruleset for a kernel of Landlock ABI `abi` (None: no Landlock)."""
    if abi < 1:
        return None
    handled = handled_access(abi)
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    # The struct grew with the ABI (8, 16, 24 bytes); the kernel refuses
    # fields it does not know unless they are zero, so send what it knows.
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    attr = struct.pack("=QQQ", handled, 0, scoped)[:size]
    return Ruleset(attr, (("/", handled & ~(MAKE_CHAR | MAKE_BLOCK)),))


@functools.cache
def cell_ruleset() -> Ruleset | None:
    """The ruleset for this kernel (asked and built once per process)."""
    return ruleset_for(libc.landlock_abi_version())
