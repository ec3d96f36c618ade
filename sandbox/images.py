"""Where a cell's root filesystem comes from.

An image is a stack of read-only lower layers for the overlay root plus
read-only views of host directories. The default image `host` has no layer of
its own: its root is a generated skeleton (mount points and the merged-usr
symlinks) and the host's /usr, /bin, /sbin, /lib*, /etc appear read-only on
top. Any other image is a root filesystem directory (debootstrap, an exported
container) named under the images directory or given by absolute path.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .spec import SpecError

# Host directories the `host` image shows. Absent ones are skipped; symlinks
# (merged /usr: /bin -> usr/bin) are recreated as symlinks, not bound.
HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")

# Directories every cell root has, whatever the image.
MOUNT_POINTS = ("box", "tmp", "dev", "proc")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def images_dir() -> Path:
    return Path(os.environ.get("CELLBLOCK_IMAGES", "/var/lib/cellblock/images"))


@dataclass(frozen=True)
class Image:
    name: str
    layers: tuple[str, ...]  # overlay lower dirs on the host, top first; () = skeleton only
    binds: tuple[str, ...]  # host dirs shown read-only at the same path in the cell
    symlinks: tuple[tuple[str, str], ...]  # (cell path, target)


def _host_image() -> Image:
    binds: list[str] = []
    symlinks: list[tuple[str, str]] = []
    for name in HOST_DIRS:
        path = "/" + name
        if os.path.islink(path):
            symlinks.append((name, os.readlink(path)))
        elif os.path.isdir(path):
            binds.append(path)
    return Image("host", (), tuple(binds), tuple(symlinks))


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
