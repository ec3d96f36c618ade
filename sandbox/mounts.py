"""The plan of a cell's root (RootPlan): built by the cell's init in C
(sandbox/mounts.c, which says how: an overlay of the image's layers over a
skeleton, the host directories' read-only views, a minimal /dev, the cell's
own /proc, pivot_root).
"""

from __future__ import annotations

from dataclasses import dataclass

from .images import Image


@dataclass(frozen=True)
class RootPlan:
    image: Image
    tmpfs_size: int
    tmpfs_inodes: int
    box_uid: int
    box_gid: int
    # (host dir, entries beneath it) the program may not see: where it runs as
    # the caller's own host uid, what only the caller may read (images.py).
    hidden: tuple[tuple[str, tuple[str, ...]], ...] = ()
