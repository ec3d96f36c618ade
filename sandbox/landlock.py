"""Landlock: what the program may open in its cell, enforced by the kernel per process.

The mount namespace already decides what the cell can see. Landlock is the
second wall (rule 15, best effort by ABI), applied by the program's process
itself (spawn.c) after no_new_privs and before the seccomp filter, so it
covers the program and everything it starts, and nothing of the init:

- everywhere in the cell's root: read files, list directories, execute;
- /box, /tmp and /dev/shm (the places a program writes): everything but
  making device nodes;
- the five devices (/dev/null ...): write and truncate too (a shell's
  `> /dev/null` opens with O_TRUNC).

So nothing outside those three may be written, made, removed or renamed: not
the overlay's root (writable by cell root in a size-1 map), not /proc (a
process's own /proc/self/mem, comm, attr...), not a file of the host's that
reaches the program as a descriptor and is reopened through /proc/self/fd
(outside every rule: read or write, refused). Descriptors the program was
given stay usable: Landlock checks opens, not reads and writes on open files,
and pipes and memfds (its stdin, stdout and stderr) are internal files it
always allows. With ABI 6, abstract unix sockets and signals are scoped to
the program's own processes too.

The kernel's ABI decides what can be handled; a kernel without Landlock (or
a seccomp profile around the worker that refuses its calls) leaves the cell
as it is without it, and `cellblock doctor` says so.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import libc
from .mounts import DEVICES

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

WRITABLE = ("/box", "/tmp", "/dev/shm")
READ = EXECUTE | READ_FILE | READ_DIR


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
    writable = handled & ~(MAKE_CHAR | MAKE_BLOCK)
    rules = [("/", READ)]
    rules += [(path, writable) for path in WRITABLE]
    rules += [(f"/dev/{name}", handled & (WRITE_FILE | TRUNCATE)) for name in DEVICES]
    return Ruleset(attr, tuple(rules))


_abi: int | None = None


def cell_ruleset() -> Ruleset | None:
    """The ruleset for this kernel (its ABI asked once per process)."""
    global _abi
    if _abi is None:
        _abi = libc.landlock_abi_version()
    return ruleset_for(_abi)
