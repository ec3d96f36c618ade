"""Where a cell's root filesystem comes from.

An image is a stack of read-only lower layers for the overlay root plus
read-only views of host directories. The default image `host` has no layer of
its own: its root is a generated skeleton (mount points and the merged-usr
symlinks) and the host's /usr, /bin, /sbin, /lib*, /etc appear read-only on
top, each through an overlay of its own (mounts.py: the program never holds a
host inode). Any other image is a root filesystem directory (debootstrap, an
exported container) named under the images directory or given by absolute path.

Where the program runs as the caller's own host uid (a rootless caller without
subordinate ids), permissions cannot keep it from what only the caller may
read: those entries of PRIVATE_SCAN are hidden from its view (private_entries).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .spec import SpecError

# Host directories the `host` image shows. Absent ones are skipped; symlinks
# (merged /usr: /bin -> usr/bin) are recreated as symlinks, not bound.
HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")

# Directories every cell root has, whatever the image.
MOUNT_POINTS = ("box", "tmp", "dev", "proc")

# Host directories searched for the caller's private entries (private_entries):
# /etc is where a host's configuration and secrets are; /usr and /lib* hold what
# packages installed (and walking them takes seconds).
PRIVATE_SCAN = ("/etc",)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def images_dir() -> Path:
    return Path(os.environ.get("CELLBLOCK_IMAGES", "/var/lib/cellblock/images"))


@dataclass(frozen=True)
class Image:
    name: str
    layers: tuple[str, ...]  # overlay lower dirs on the host, top first; () = skeleton only
    host_dirs: tuple[str, ...]  # host dirs shown read-only at the same path in the cell
    symlinks: tuple[tuple[str, str], ...]  # (cell path, target)


def _host_image() -> Image:
    host_dirs: list[str] = []
    symlinks: list[tuple[str, str]] = []
    for name in HOST_DIRS:
        path = "/" + name
        if os.path.islink(path):
            symlinks.append((name, os.readlink(path)))
        elif os.path.isdir(path):
            host_dirs.append(path)
    return Image("host", (), tuple(host_dirs), tuple(symlinks))


def private_entries(directory: int) -> list[str]:
    """In a cell's init whose root is the caller (a size-1 map: the caller's
    uid and gid are 0 here, and every other owner is unmapped), the entries
    beneath the directory open at fd `directory` that the caller may read only
    as their owner or group: not readable by others (a directory: not
    searchable by others). Paths relative to it; nothing beneath them is
    listed. Directories the caller cannot enter are not walked (the program
    could not enter them either)."""
    hidden: list[str] = []
    for path, dirs, files, fd in os.fwalk(".", dir_fd=directory):
        for name in [*dirs, *files]:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            other = stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else stat.S_IROTH
            if (st.st_uid == 0 or st.st_gid == 0) and not stat.S_ISLNK(st.st_mode) and \
                    not st.st_mode & other:
                hidden.append(os.path.normpath(os.path.join(path, name)))
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(path, d)) not in hidden]
    return hidden


def available_images() -> list[str]:
    names = ["host"]
    with contextlib.suppress(OSError):
        names += sorted(p.name for p in images_dir().iterdir() if p.is_dir())
    return names


def resolve_image(name: str) -> Image:
    if name == "host":
        return _host_image()
    if name.startswith("/"):
        path = Path(name)
    elif _NAME_RE.match(name):
        path = images_dir() / name
    else:
        raise SpecError(f"image: {name!r} is neither an image name nor an absolute path")
    if not path.is_dir():
        raise SpecError(
            f"image: no image {name!r} (looked for {path}); available: "
            + ", ".join(available_images())
        )
    if not (path / "usr").is_dir() and not (path / "bin").exists():
        raise SpecError(f"image: {path} does not look like a root filesystem (no /usr or /bin)")
    return Image(name, (str(path.resolve()),), (), ())
