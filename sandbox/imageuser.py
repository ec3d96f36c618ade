"""Who a pulled image's program runs as: its config's `User`, where a cell can say it.

`User` is `USER[:GROUP]`, each a number or a name. A name is looked up in the
image's own /etc/passwd and /etc/group (never the host's), read from the
top-most layer that has the file as the overlay would show it: a layer that
deletes it (a whiteout, or /etc made opaque without it) hides the layers
below. Each file is opened beneath its layer's directory (openat2 with
RESOLVE_BENEATH and no symlinks: an image cannot point the read at a host
file) and read only if it is a regular file of at most MAX_ID_FILE bytes.
A user without a group gets the primary group /etc/passwd gives it, else
the cell's group.

What the program may become (SECURITY.md rule 30): ids 1..65535, and only
where the cell's id map has room for them (userns.IdMap.running_as: every
one when root starts the cell, any one in place of the program's single
subordinate id when a user with a range does, none but the cell's own
in a size-1 map). Root (uid or gid 0, by number or by name) is never granted:
cell root is the init's identity, the owner of the cell's namespaces and
mounts, so a program asking for it runs as the cell's unprivileged program
ids instead, as for an image with no `User`.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass

from . import libc
from .spec import SpecError
from .userns import MAX_RUN_ID, IdMap

MAX_ID_FILE = 1 << 20  # bytes of /etc/passwd or /etc/group read at most

_RESOLVE = (
    libc.RESOLVE_BENEATH
    | libc.RESOLVE_NO_SYMLINKS
    | libc.RESOLVE_NO_MAGICLINKS
    | libc.RESOLVE_NO_XDEV
)


@dataclass(frozen=True)
class ImageUser:
    """An image's `User` as cell ids; None: the cell's own program id."""

    uid: int | None
    gid: int | None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(f"/proc/self/fd/{fd}", "user.overlay.opaque") == b"y"
    except OSError:
        return False


def _lookup(layer: str, parts: tuple[str, ...]) -> tuple[str, bytes | None]:
    """What `layer` says of the path `parts`: ('found', data), ('hidden', None)
    (deleted here: lower layers do not count) or ('absent', None) (look lower)."""
    root = os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    opened = [root]
    try:
        fd = root
        for depth, part in enumerate(parts):
            try:
                fd = libc.openat2(fd, part, os.O_PATH | os.O_CLOEXEC, _RESOLVE)
            except OSError as error:
                if error.errno == errno.ENOENT:
                    # Not in this directory: an opaque one hides the layers below.
                    return ("hidden" if depth and _opaque(opened[-1]) else "absent"), None
                if error.errno == errno.ELOOP:
                    raise SpecError(
                        f"image user: /{'/'.join(parts[: depth + 1])} is a symlink in a layer "
                        "of the image; give its User as numbers (uid:gid)"
                    ) from None
                raise
            opened.append(fd)
            st = os.fstat(fd)
            if _is_whiteout(st):
                return "hidden", None
            last = depth == len(parts) - 1
            if not last and not stat.S_ISDIR(st.st_mode):
                return "hidden", None  # a file where a directory is: nothing beneath
        if not stat.S_ISREG(st.st_mode):
            raise SpecError(f"image user: /{'/'.join(parts)} is not a regular file")
        if st.st_size > MAX_ID_FILE:
            raise SpecError(
                f"image user: /{'/'.join(parts)} is {st.st_size} bytes (at most {MAX_ID_FILE})"
            )
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            data = os.read(reader, MAX_ID_FILE + 1)
        finally:
            os.close(reader)
        if len(data) > MAX_ID_FILE:
            raise SpecError(f"image user: /{'/'.join(parts)} is over {MAX_ID_FILE} bytes")
        return "found", data
    finally:
        for descriptor in opened:
            os.close(descriptor)


def read_image_file(layers: tuple[str, ...], path: str) -> bytes | None:
    """A file of the image as its merged root shows it (layers top first), or None."""
    parts = tuple(p for p in path.split("/") if p)
    for layer in layers:
        what, data = _lookup(layer, parts)
        if what == "found":
            return data
        if what == "hidden":
            return None
    return None


def _entries(data: bytes | None) -> list[list[str]]:
    if data is None:
        return []
    text = data.decode("utf-8", errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 10 else None


@functools.lru_cache(maxsize=64)  # layers are stored by digest: their files never change
def parse_user(user: str, layers: tuple[str, ...]) -> ImageUser:
    """`User` as cell ids (None where the cell's own applies: no group
    given or found, or root), names looked up in the image."""
    name, _, group = user.partition(":")
    if not name or (":" in user and not group):
        raise SpecError(f"image user: {user!r} is not USER[:GROUP]")
    passwd: list[list[str]] | None = None

    def users() -> list[list[str]]:
        nonlocal passwd
        if passwd is None:
            passwd = [e for e in _entries(read_image_file(layers, "etc/passwd")) if len(e) >= 4]
        return passwd

    uid = _number(name)
    gid: int | None = None
    if uid is None:
        found = [e for e in users() if e[0] == name]
        if not found or _number(found[0][2]) is None:
            raise SpecError(f"image user: no user {name!r} in the image's /etc/passwd")
        uid, gid = _number(found[0][2]), _number(found[0][3])
    elif not group:
        try:
            found = [e for e in users() if _number(e[2]) == uid]
        except SpecError:  # a numeric uid needs no /etc/passwd: the cell's group then
            found = []
        gid = _number(found[0][3]) if found else None
    if group:
        gid = _number(group)
        if gid is None:
            groups = [e for e in _entries(read_image_file(layers, "etc/group")) if len(e) >= 3]
            match = [e for e in groups if e[0] == group]
            if not match or _number(match[0][2]) is None:
                raise SpecError(f"image user: no group {group!r} in the image's /etc/group")
            gid = _number(match[0][2])
    for what, value in (("uid", uid), ("gid", gid)):
        if value is not None and value > MAX_RUN_ID:
            raise SpecError(
                f"image user: {user!r}: {what} {value} is above {MAX_RUN_ID}, "
                "more than any cell maps"
            )
    # Root is the init's: never the program's (the module's docstring).
    return ImageUser(uid or None, gid or None)


def run_as(user: str, layers: tuple[str, ...], idmap: IdMap, image: str) -> IdMap:
    """`idmap` with the program running as the image's `User`, or a
    SpecError saying why the cell cannot express it."""
    wanted = parse_user(user, layers)
    uid = wanted.uid if wanted.uid is not None else idmap.run_uid
    gid = wanted.gid if wanted.gid is not None else idmap.run_gid
    try:
        return idmap.running_as(uid, gid)
    except ValueError as error:
        raise SpecError(f"image {image!r}: User {user!r}: {error}") from None
