"""A cell's Birth and each run's Launch as the init (init.c) reads them.

The init is a small C program, so what it is told comes in a flat form C reads
without a parser of its own: a series of records, each a little-endian u16 tag,
a u32 length and that many bytes. A number is 8 bytes (u64), a string its
bytes (no NUL: the init adds one), a list its tag repeated, and an item of
several fields (a symlink, an rlimit) a nested series. The tags are Tag's;
init.h has the same numbers (tests/test_wire.py compares them).

The init refuses a record it does not know, a record that overruns its
buffer, and a string with a NUL in it: the caller is ours, but a mistake here
must not become a cell built from half a message.
"""

from __future__ import annotations

import os
import struct
from enum import IntEnum
from typing import TYPE_CHECKING

from . import caps, locks, userns
from .images import MOUNT_POINTS
from .spec import cell_path

if TYPE_CHECKING:
    from .init import Birth, Launch

_HEAD = struct.Struct("<HI")
_U64 = struct.Struct("<Q")


class Tag(IntEnum):
    # Birth: what the cell is made of.
    LAYER = 1  # an image layer's directory (host path)
    HOST_DIR = 2  # a host directory the image shows read-only, at the same path
    SYMLINK = 3  # nested: NAME, TARGET (in the root)
    TMPFS_SIZE = 4
    TMPFS_INODES = 5
    BOX_UID = 6
    BOX_GID = 7
    HIDDEN = 8  # nested: NAME (a host directory), TARGET (an entry beneath it), repeated
    DENY_SETGROUPS = 9
    MOUNT_POINT = 10  # a directory of the skeleton (images.MOUNT_POINTS)
    NS_LIMIT = 11  # nested: NAME (under /proc/sys/user), VALUE
    LOCK_CAP = 12  # locks.py
    DENY_RUN = 13
    # Launch: one run.
    ARGV = 20
    ENV = 21  # "NAME=value"
    RLIMIT = 22  # nested: RESOURCE, SOFT, HARD
    RUN_UID = 23
    RUN_GID = 24
    CLEAR_GROUPS = 25
    BPF = 26
    BPF_UNSUPERVISED = 27
    LANDLOCK_ATTR = 28
    LANDLOCK_RULE = 29  # nested: NAME (a path in the cell), VALUE (access)
    NOTIFY = 30
    SOCKETS_NOTED = 31
    CWD = 32
    COPY_IN = 33  # nested: NAME (relative to /box), VALUE (mode)
    READONLY = 34  # relative to /box
    COPY_OUT = 35  # nested: NAME (as asked), TARGET (relative to /box)
    FILE_SIZE = 36
    CGROUP_FDS = 37
    CGROUP_DIR = 38
    RECYCLE = 39
    FD_COUNT = 40
    LAST_CAP = 41
    SECUREBITS = 42
    # Fields of nested items.
    NAME = 60
    TARGET = 61
    VALUE = 62
    RESOURCE = 63
    SOFT = 64
    HARD = 65


class Writer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, tag: Tag, data: bytes) -> None:
        self._parts += (_HEAD.pack(tag, len(data)), data)

    def text(self, tag: Tag, value: str | bytes) -> None:
        data = os.fsencode(value)
        if b"\0" in data:
            raise ValueError(f"a NUL byte in {value!r}")
        self.raw(tag, data)

    def number(self, tag: Tag, value: int) -> None:
        self.raw(tag, _U64.pack(value & 0xFFFF_FFFF_FFFF_FFFF))

    def flag(self, tag: Tag, value: bool) -> None:
        if value:
            self.number(tag, 1)

    def nested(self, tag: Tag, **fields: str | int) -> None:
        inner = Writer()
        for name, value in fields.items():
            field = Tag[name.upper()]
            if isinstance(value, int):
                inner.number(field, value)
            else:
                inner.text(field, value)
        self.raw(tag, inner.data())

    def data(self) -> bytes:
        return b"".join(self._parts)


def birth_record(birth: Birth) -> bytes:
    plan = birth.plan
    out = Writer()
    for layer in plan.image.layers:
        out.text(Tag.LAYER, str(layer))
    for host_dir in plan.image.host_dirs:
        out.text(Tag.HOST_DIR, host_dir)
    for name, target in plan.image.symlinks:
        out.nested(Tag.SYMLINK, name=name, target=target)
    out.number(Tag.TMPFS_SIZE, plan.tmpfs_size)
    out.number(Tag.TMPFS_INODES, plan.tmpfs_inodes)
    out.number(Tag.BOX_UID, plan.box_uid)
    out.number(Tag.BOX_GID, plan.box_gid)
    for host_dir, entries in plan.hidden:
        for entry in entries:
            out.nested(Tag.HIDDEN, name=host_dir, target=entry)
    out.flag(Tag.DENY_SETGROUPS, birth.idmap.deny_setgroups)
    for point in MOUNT_POINTS:
        out.text(Tag.MOUNT_POINT, point)
    for name, value in userns.CELL_NAMESPACE_LIMITS.items():
        out.nested(Tag.NS_LIMIT, name=name, value=value)
    out.number(Tag.LOCK_CAP, locks.LOCK_CAP)
    out.number(Tag.DENY_RUN, locks.DENY_RUN)
    return out.data()


def launch_record(launch: Launch, fd_count: int) -> bytes:
    start = launch.program
    out = Writer()
    for arg in start.argv:
        out.text(Tag.ARGV, arg)
    for key, value in start.env.items():
        out.text(Tag.ENV, f"{key}={value}")
    for resource, soft, hard in start.rlimit_table:
        out.nested(Tag.RLIMIT, resource=resource, soft=soft, hard=hard)
    out.number(Tag.RUN_UID, start.run_uid)
    out.number(Tag.RUN_GID, start.run_gid)
    out.flag(Tag.CLEAR_GROUPS, start.clear_groups)
    for tag, program in ((Tag.BPF, start.bpf), (Tag.BPF_UNSUPERVISED, start.bpf_unsupervised)):
        if len(program) % 8 or len(program) // 8 > 0xFFFF:
            raise ValueError("a seccomp program is an array of at most 65535 8-byte instructions")
        if program:
            out.raw(tag, program)
    if start.landlock is not None:
        out.raw(Tag.LANDLOCK_ATTR, start.landlock.attr)
        for path, access in start.landlock.rules:
            out.nested(Tag.LANDLOCK_RULE, name=path, value=access)
    out.flag(Tag.NOTIFY, start.notify)
    out.flag(Tag.SOCKETS_NOTED, start.sockets_noted)
    out.text(Tag.CWD, start.cwd)
    for path, mode in launch.copy_in:
        out.nested(Tag.COPY_IN, name=path, value=mode)
    for path in launch.readonly:
        out.text(Tag.READONLY, cell_path(path))
    for path in launch.copy_out:
        out.nested(Tag.COPY_OUT, name=path, target=cell_path(path))
    out.number(Tag.FILE_SIZE, launch.file_size)
    out.number(Tag.CGROUP_FDS, launch.cgroup_fds)
    out.flag(Tag.CGROUP_DIR, launch.cgroup_dir)
    out.flag(Tag.RECYCLE, launch.recycle)
    out.number(Tag.FD_COUNT, fd_count)
    out.number(Tag.LAST_CAP, caps.LAST_CAP)
    out.number(Tag.SECUREBITS, caps.SECUREBITS)
    return out.data()
