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
read: those entries of PRIVATE_SCAN are hidden from its view (private_entries,
the plan's `hidden`; mounts.py makes them whiteouts).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import libc
from .spec import SpecError

if TYPE_CHECKING:
    from .imagestore import ImageConfig

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
    config: ImageConfig | None = None  # a pulled image's (imagestore.py); None: no defaults

    def command(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        """What runs: the command given, exactly; with none, the image's own
        (Entrypoint + Cmd). Unlike `docker run`, a command given does not go
        after the Entrypoint: a judge's language says the whole argv, which
        must mean the same in every image."""
        if argv or self.config is None:
            return argv
        return (self.config.entrypoint or ()) + (self.config.cmd or ())

    def environment(self, base: Mapping[str, str], given: Mapping[str, str]) -> dict[str, str]:
        """The program's environment: ours (`base`), under the image's `Env`,
        under what the run gives."""
        env = dict(base)
        if self.config is not None:
            for entry in self.config.env:
                name, _, value = entry.partition("=")
                env[name] = value
        env.update(given)
        return env

    @property
    def working_dir(self) -> str:
        """The program's working directory: the image's WorkingDir, else /box."""
        if self.config is not None and self.config.working_dir:
            return self.config.working_dir
        return "/box"


def _host_image() -> Image:
    host_dirs: list[str] = []
    symlinks: list[tuple[str, str]] = []
    for name in HOST_DIRS:  # one lstat each (asked on every run)
        path = "/" + name
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if stat.S_ISLNK(mode):
            symlinks.append((name, os.readlink(path)))
        elif stat.S_ISDIR(mode):
            host_dirs.append(path)
    return Image("host", (), tuple(host_dirs), tuple(symlinks))


def private_entries(directory: str) -> tuple[str, ...]:
    """The entries beneath host `directory` that the caller may read only as
    their owner or group (its uid or gid, not readable by others; a directory:
    not searchable by others), relative to it; nothing beneath them is listed,
    nor what the caller cannot enter (the program could not either). For a
    program that runs as the caller's own uid (a size-1 map), these are hidden.

    Walking /etc takes ~15 ms: a process walks it once and then watches every
    directory it walked (inotify: an entry made, removed, renamed, chmod-ed or
    chown-ed), and walks again only after a change."""
    return _PRIVATE.get(directory)


class _PrivateEntries:
    """private_entries' walk, cached per process until inotify says /etc changed."""

    # An entry made, removed or renamed in a watched directory, or its (or the
    # directory's) owner or mode changed.
    _CHANGES = (
        libc.IN_ATTRIB
        | libc.IN_MOVED_FROM
        | libc.IN_MOVED_TO
        | libc.IN_CREATE
        | libc.IN_DELETE
        | libc.IN_DELETE_SELF
        | libc.IN_MOVE_SELF
        | libc.IN_Q_OVERFLOW
    )

    def __init__(self) -> None:
        self._watch: int | None = None
        self._cached: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """In a forked child: the watch it inherited is the parent's (reading it
        here would take the parent's events)."""
        if self._watch is not None:
            with contextlib.suppress(OSError):
                os.close(self._watch)
        self._watch = None
        self._cached = {}
        self._lock = threading.Lock()

    def get(self, directory: str) -> tuple[str, ...]:
        with self._lock:
            if self._changed():
                self._cached.clear()
            if directory not in self._cached:
                self._cached[directory] = self._walk(directory)
            return self._cached[directory]

    def _changed(self) -> bool:
        if self._watch is None:
            return True
        changed = False
        try:
            while os.read(self._watch, 65536):
                changed = True
        except BlockingIOError:
            pass
        return changed

    def _walk(self, top: str) -> tuple[str, ...]:
        if self._watch is None:
            try:
                self._watch = libc.inotify_init(libc.IN_NONBLOCK | libc.IN_CLOEXEC)
            except OSError:
                self._watch = None  # no inotify left: walk every time
        uid, gid = os.geteuid(), os.getegid()
        hidden: list[str] = []
        for path, dirs, files, fd in os.fwalk(top):
            # Watched before it is listed: a change during the walk is seen next time.
            if self._watch is not None:
                try:
                    libc.inotify_add_watch(self._watch, path, self._CHANGES)
                except OSError:
                    os.close(self._watch)
                    self._watch = None
            for name in [*dirs, *files]:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                other = stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else stat.S_IROTH
                if (
                    (st.st_uid == uid or st.st_gid == gid)
                    and not stat.S_ISLNK(st.st_mode)
                    and not st.st_mode & other
                ):
                    hidden.append(os.path.relpath(os.path.join(path, name), top))
            dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(path, d), top) not in hidden]
        return tuple(hidden)


_PRIVATE = _PrivateEntries()


def available_images() -> list[str]:
    names = ["host"]
    with contextlib.suppress(OSError):
        names += sorted(p.name for p in images_dir().iterdir() if p.is_dir())
    return names


def resolve_image(name: str) -> Image:
    """`host`; an absolute path to a root directory; a root directory under the
    images directory by name; else an image pulled into the layer store (by
    name, `name@sha256:...` or its id, imagestore.py)."""
    if name == "host":
        return _host_image()
    if name.startswith("/"):
        path = Path(name)
    elif _NAME_RE.match(name) and (images_dir() / name).is_dir():
        path = images_dir() / name
    else:
        return _stored_image(name)
    if not path.is_dir():
        raise SpecError(
            f"image: no image {name!r} (looked for {path}); available: "
            + ", ".join(available_images())
        )
    if not (path / "usr").is_dir() and not (path / "bin").exists():
        raise SpecError(f"image: {path} does not look like a root filesystem (no /usr or /bin)")
    return Image(name, (str(path.resolve()),), (), ())


def _stored_image(ref: str) -> Image:
    """A pulled image: its layers top first, as overlay lowers are listed."""
    from .imagestore import LayerStore

    store = LayerStore()
    if not store.root.exists():  # asking must not make a store
        raise SpecError(
            f"image: no image {ref!r}: nothing pulled yet ({store.root} does not exist; "
            "cellblock image pull REF)"
        )
    try:
        stored = store.resolve(ref)
        layers = tuple(store.layer_dir(diff_id) for diff_id in reversed(stored.layers))
    except OSError as error:  # no store can be made here (no home directory, say)
        raise SpecError(f"image: no image {ref!r}: the image store: {error}") from None
    return Image(ref, layers, (), (), stored.config)
