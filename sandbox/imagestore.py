"""The layer store: OCI images pulled here, their layers unpacked once, by digest.

Where: `CELLBLOCK_STORE` if set; else `/var/lib/cellblock/store` for root and
`${XDG_DATA_HOME:-~/.local/share}/cellblock/store` for anyone else. The root
is made 0700 and used only while it is a directory of this euid's that nobody
else may enter (a layer may hold setuid files owned by root: no other host
user may reach them; cells get layers through descriptors the worker opens,
never by path). Layout:

    lock                      flock(2): shared to read, exclusive to change
    layers/<hex>/diff/        one layer unpacked (sandbox/unpack.py), <hex> of its
                              diff_id (sha256 of the uncompressed tar); the overlay
                              lower; nothing is ever mounted beneath it
    layers/<hex>/layer.json   {diff_id, digest, media_type, size, entries}
    images/<hex>.json         one image (StoredImage), <hex> of its id: the sha256
                              of its config blob (Docker's "image ID")
    pulls/<hex>.lock          flock(2) of one reference's pull on demand (pull_lock):
                              <hex> of the reference's sha256; never removed
    tmp/<random>/             pulls, and layers being removed, in progress

A layer is unpacked into tmp/ and renamed into layers/ whole (diff/ and
layer.json together), so a layer directory that exists is complete; an image
record is written to tmp/ and renamed over images/<hex>.json. Each tmp/ entry
in use is flock-ed by its owner; one nobody holds is left by a crash and goes
with the next pull or prune.

Names: an image has names (`NAME:TAG`) and repo digests (`NAME@sha256:...`,
the digest of the manifest the source served). A name belongs to one image at
a time: pulled again for another image it moves, and the image it left keeps
its repo digests only for repositories it still has a name in. `remove`
takes references away; an image goes when none is left (its layers stay
until `prune`). `prune` removes records with no reference, layers no record
uses, and what crashed pulls left in tmp/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import SpecError

ROOT_STORE = "/var/lib/cellblock/store"
DEFAULT_TAG = "latest"
MIN_ID_PREFIX = 12  # hex digits of an image id a reference may be shortened to

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PREFIX_RE = re.compile(rf"^(?:sha256:)?([0-9a-f]{{{MIN_ID_PREFIX},64}})$")


class ImageError(SpecError):
    """An image asked for that the store does not have, or cannot take: the
    caller's mistake or the source's, reported clearly."""


class StoreError(ImageError):
    """The store itself is unusable (its directory is not safe, a record is broken)."""


def default_root() -> Path:
    if env := os.environ.get("CELLBLOCK_STORE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path(ROOT_STORE)
    data = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data):  # the XDG spec: a relative path is to be ignored
        data = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "cellblock" / "store"


def check_digest(digest: str, what: str) -> str:
    """`digest` if it is `sha256:` and 64 lower-case hex digits: it becomes a
    path here, so nothing else (no other algorithm, no `../`) gets through."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise ImageError(f"{what}: {digest!r} is not a sha256 digest")
    return digest


def _hex(digest: str) -> str:
    return check_digest(digest, "digest").split(":", 1)[1]


def split_name(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of a docker reference as written:
    `localhost:5000/base:1` -> ('localhost:5000/base', '1', None); a colon in
    the first component is a registry's port, not a tag."""
    digest = None
    if "@" in reference:
        reference, digest = reference.split("@", 1)
    last = reference.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        reference, tag = reference.rsplit(":", 1)
    return reference, tag, digest


def normalize_name(reference: str) -> str:
    """`NAME:TAG`, the tag `latest` if none is written; no digest."""
    repository, tag, _ = split_name(reference)
    if not repository or (tag is not None and not tag):
        raise ImageError(f"image: {reference!r} is not an image name (NAME[:TAG])")
    return f"{repository}:{tag or DEFAULT_TAG}"


def _repository(name: str) -> str:
    return split_name(name)[0]


@dataclass(frozen=True)
class ImageConfig:
    """What of an image's config a cell's program starts with."""

    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    # (key, value) sorted: what the image says of itself (scripts/build-images
    # lists its packages' versions here); pairs, not a dict, to stay hashable
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_oci(cls, config: dict) -> ImageConfig:
        """From the `config` object of an OCI/Docker image config (may be absent)."""

        def strings(value: object) -> tuple[str, ...] | None:
            if value is None:
                return None
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ImageError(f"image config: {value!r} is not a list of strings")
            for item in value:
                string(item)  # no NUL byte: nothing in a process's start can hold one
            return tuple(value)

        def string(value: object) -> str:
            if value is None:
                return ""
            if not isinstance(value, str):
                raise ImageError(f"image config: {value!r} is not a string")
            if "\0" in value:
                raise ImageError(f"image config: a NUL byte in {value!r}")
            return value

        return cls(
            env=strings(config.get("Env")) or (),
            working_dir=string(config.get("WorkingDir")),
            user=string(config.get("User")),
            entrypoint=strings(config.get("Entrypoint")),
            cmd=strings(config.get("Cmd")),
            labels=_labels(config.get("Labels")),
        )


def _labels(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ImageError(f"image config: Labels {value!r} is not an object of strings")
    return tuple(sorted(value.items()))


@dataclass(frozen=True)
class StoredImage:
    """One image of the store (images/<hex>.json)."""

    id: str  # sha256 of the config blob
    layers: tuple[str, ...]  # diff_ids, bottom first
    config: ImageConfig
    size: int  # bytes of the files of its layers
    source: str  # the reference it was last pulled from, as skopeo took it
    pulled: str  # when, ISO 8601 UTC
    names: tuple[str, ...] = ()  # NAME:TAG
    repo_digests: tuple[str, ...] = ()  # NAME@sha256:<manifest digest>

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["config"]["labels"] = dict(self.config.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StoredImage:
        known = {f.name for f in dataclasses.fields(ImageConfig)}
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in data.get("config", {}).items()
            if k in known and k != "labels"
        }
        config = ImageConfig(**values, labels=_labels(data.get("config", {}).get("labels")))
        return cls(
            id=check_digest(data["id"], "image record"),
            layers=tuple(check_digest(d, "image record") for d in data["layers"]),
            config=config,
            size=int(data["size"]),
            source=data["source"],
            pulled=data["pulled"],
            names=tuple(data.get("names", ())),
            repo_digests=tuple(data.get("repo_digests", ())),
        )


@dataclass(frozen=True)
class LayerInfo:
    """One stored layer (layers/<hex>/layer.json)."""

    diff_id: str
    digest: str  # the blob it was unpacked from (another compression has another)
    media_type: str
    size: int  # bytes of file data
    entries: int


@dataclass(frozen=True)
class Removed:
    untagged: tuple[str, ...]  # references taken away
    deleted: str | None  # the image id, if its record went


@dataclass(frozen=True)
class Pruned:
    images: tuple[str, ...]  # ids of records that had no reference
    layers: tuple[str, ...]  # diff_ids no record used
    bytes: int  # file data of those layers
    tmp: int  # entries crashed pulls left in tmp/


@dataclass
class Staged:
    """A pull's work in tmp/: layers unpacked there, waiting for commit()."""

    path: Path
    layers: dict[str, LayerInfo] = field(default_factory=dict)  # diff_id -> info

    def layer_path(self, diff_id: str) -> Path:
        """Where a new layer is unpacked: <path>/layers/<hex>, with diff/ made empty."""
        path = self.path / "layers" / _hex(diff_id)
        (path / "diff").mkdir(parents=True)
        return path


def layers_unsupported(directory: str) -> str | None:
    """Why layers cannot be unpacked in `directory`, or None. A layer's
    whiteouts are 0/0 character devices, which an overlayfs (a container's
    root, say) takes for whiteouts of its own instead of keeping them as
    files; its opaque directories are `user.*` xattrs, which tmpfs has only
    from Linux 6.6. ext4, xfs and btrfs have both."""
    probe = os.path.join(directory, f".probe-{secrets.token_hex(4)}")
    os.mkdir(probe, 0o700)
    try:
        whiteout = os.path.join(probe, "w")
        try:
            os.mknod(whiteout, stat.S_IFCHR, os.makedev(0, 0))
        except OSError as error:
            return f"a whiteout (a 0/0 device) cannot be made: {error.strerror}"
        st = os.lstat(whiteout)
        if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
            return "a whiteout (a 0/0 device) does not stay a file"
        try:
            os.setxattr(probe, "user.overlay.opaque", b"y")
        except OSError as error:
            return f"no user.* xattrs: {error.strerror}"
        return None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _rmtree(path: Path) -> None:
    """Remove a tree that may hold directories without write permission (the
    unpacker gives directories their layer's modes, 0555 and the like): each
    directory is made the owner's to change before it is walked."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    path.chmod(stat.S_IRWXU)
    for parent, dirs, _ in os.walk(path):  # top-down: a child is opened after its chmod
        for name in dirs:
            child = os.path.join(parent, name)
            if not os.path.islink(child):  # chmod follows symlinks: never one
                os.chmod(child, stat.S_IRWXU)
    shutil.rmtree(path)


def _write_json(path: Path, data: object, tmp: Path) -> None:
    """Replace `path` atomically: written in tmp/, fsync-ed, renamed."""
    temporary = tmp / f"{path.name}.{secrets.token_hex(8)}"
    with open(temporary, "w") as file:
        json.dump(data, file, indent=1, sort_keys=True)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.rename(temporary, path)


class LayerStore:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self._ready = False

    # -- the directory and its lock ---------------------------------------------------

    def _prepare(self) -> None:
        """Make the store if absent (0700), and refuse one that is not safe."""
        if self._ready:
            return
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, 0o700)  # the mode, not a later chmod: never readable
        except OSError as error:
            raise StoreError(
                f"image store: cannot make {self.root} ({error.strerror}); "
                "set CELLBLOCK_STORE to a directory of your own"
            ) from None
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"image store: {self.root} is not a directory (a symlink?)")
        if st.st_uid != os.geteuid():
            raise StoreError(
                f"image store: {self.root} belongs to uid {st.st_uid}, not to this user "
                f"({os.geteuid()}); set CELLBLOCK_STORE to a directory of your own"
            )
        if st.st_mode & 0o077:
            raise StoreError(
                f"image store: {self.root} is open to other users "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 700 {self.root}"
            )
        for sub in ("layers", "images", "tmp", "pulls"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root / sub, 0o700)
        self._ready = True

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self._prepare()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def pull_lock(self, reference: str) -> Iterator[None]:
        """Held by whoever pulls `reference` because it was missing (a worker,
        worker/imagepull.py): a second process that needs it waits here, then
        finds it stored, so one pull is made, not one per job. Not the store's
        lock: pulls of other images, and every reader, go on meanwhile."""
        self._prepare()
        key = hashlib.sha256(reference.encode()).hexdigest()
        path = self.root / "pulls" / f"{key}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    # -- reading ----------------------------------------------------------------------

    def _records(self) -> list[StoredImage]:
        records = []
        for path in sorted((self.root / "images").glob("*.json")):
            try:
                records.append(StoredImage.from_dict(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise StoreError(f"image store: broken record {path}: {error}") from None
        return records

    def images(self) -> list[StoredImage]:
        """Every image, the most recently pulled first."""
        with self._locked(exclusive=False):
            records = self._records()
        return sorted(records, key=lambda image: (image.pulled, image.id), reverse=True)

    def resolve(self, reference: str) -> StoredImage:
        with self._locked(exclusive=False):
            return self._resolve(reference, self._records())

    def _kind(self, reference: str, records: list[StoredImage]) -> str:
        """'digest' (`NAME@sha256:DIGEST`, a repo digest), 'id' (`sha256:ID`
        or its first 12+ hex digits, `sha256:` optional unless an image has
        that name) or 'name' (`NAME[:TAG]`)."""
        if not reference:
            raise ImageError("image: empty reference")
        if "@" in reference:
            return "digest"
        if _PREFIX_RE.match(reference) and (
            reference.startswith("sha256:") or not self._named(reference, records)
        ):
            return "id"
        return "name"

    def _resolve(self, reference: str, records: list[StoredImage]) -> StoredImage:
        kind = self._kind(reference, records)
        if kind == "digest":
            repository, _, digest = split_name(reference)
            check_digest(digest or "", f"image {reference!r}")
            wanted = f"{repository}@{digest}"
            found = [r for r in records if wanted in r.repo_digests]
        elif kind == "id":
            prefix = reference.removeprefix("sha256:")
            found = [r for r in records if r.id.split(":", 1)[1].startswith(prefix)]
            if len(found) > 1:
                raise ImageError(
                    f"image: {reference!r} is the start of more than one image id: "
                    + ", ".join(r.id for r in found)
                )
        else:
            found = self._named(reference, records)
        if not found:
            pulled = sorted({n for r in records for n in r.names})
            raise ImageError(
                f"image: no image {reference!r} in the store ({self.root}); "
                + (f"pulled: {', '.join(pulled)}" if pulled else "nothing pulled yet")
                + " (cellblock image pull REF)"
            )
        return found[0]

    @staticmethod
    def _named(reference: str, records: list[StoredImage]) -> list[StoredImage]:
        try:
            name = normalize_name(reference)
        except ImageError:
            return []
        return [r for r in records if name in r.names]

    def layer_dir(self, diff_id: str) -> str:
        """The absolute path of a stored layer's unpacked root (an overlay lower)."""
        path = self.root / "layers" / _hex(diff_id) / "diff"
        if not path.is_dir():
            raise ImageError(f"image store: no layer {diff_id} (pull its image again)")
        return str(path.absolute())

    def layer(self, diff_id: str) -> LayerInfo | None:
        """A stored layer's metadata, None if it is not stored."""
        path = self.root / "layers" / _hex(diff_id) / "layer.json"
        try:
            return LayerInfo(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as error:
            raise StoreError(f"image store: broken layer record {path}: {error}") from None

    # -- pulling: work in tmp/, then one commit ---------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Staged]:
        """A directory of tmp/ for one pull, flock-ed while it is in use (prune
        and the next pull leave it alone) and removed afterwards, whatever
        happened. Stale entries of crashed pulls go first."""
        with self._locked(exclusive=True):
            self._clean_tmp()
            path = self.root / "tmp" / f"pull-{secrets.token_hex(8)}"
            os.mkdir(path, 0o700)
            why = layers_unsupported(str(path))
            if why is not None:
                os.rmdir(path)
                raise StoreError(
                    f"image store: the file system of {self.root} cannot hold image layers "
                    f"({why}); set CELLBLOCK_STORE to a directory on ext4, xfs or btrfs"
                )
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)  # before anyone may look: the store lock is held
        try:
            yield Staged(path)
        finally:
            try:
                _rmtree(path)
            finally:
                os.close(fd)

    def commit(self, staged: Staged, image: StoredImage) -> StoredImage:
        """Move the staged layers into layers/ and write the image record: the
        one step of a pull that changes the store, under the exclusive lock.
        The image's names move to it; an image already stored keeps its
        references and gets the new ones."""
        tmp = self.root / "tmp"
        with self._locked(exclusive=True):
            for diff_id, info in staged.layers.items():
                source = staged.path / "layers" / _hex(diff_id)
                _write_json(source / "layer.json", dataclasses.asdict(info), tmp)
                target = self.root / "layers" / _hex(diff_id)
                if not target.exists():  # else: another pull stored it meanwhile
                    os.rename(source, target)
            missing = [d for d in image.layers if self.layer(d) is None]
            if missing:
                # A prune between this pull's look and now took a layer it meant to reuse.
                raise ImageError(
                    f"image store: layers {', '.join(missing)} were pruned during the pull; "
                    "pull again"
                )
            records = {r.id: r for r in self._records()}
            old = records.get(image.id)
            if old is not None:
                image = dataclasses.replace(
                    image,
                    names=tuple(dict.fromkeys(old.names + image.names)),
                    repo_digests=tuple(dict.fromkeys(old.repo_digests + image.repo_digests)),
                )
            for other in records.values():
                if other.id == image.id or not set(other.names) & set(image.names):
                    continue
                names = tuple(n for n in other.names if n not in image.names)
                _write_json(self._record_path(other.id), self._keep(other, names).to_dict(), tmp)
            _write_json(self._record_path(image.id), image.to_dict(), tmp)
        return image

    def _record_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{_hex(image_id)}.json"

    @staticmethod
    def _keep(image: StoredImage, names: tuple[str, ...]) -> StoredImage:
        """`image` with only `names`, and the repo digests of repositories it
        still has a name in, or that it has no name in at all but was pulled
        from by digest only (those names never existed)."""
        repositories = {_repository(n) for n in names}
        lost = {_repository(n) for n in image.names} - repositories
        digests = tuple(d for d in image.repo_digests if _repository(d) not in lost)
        return dataclasses.replace(image, names=names, repo_digests=digests)

    # -- removing ---------------------------------------------------------------------

    def remove(self, reference: str) -> Removed:
        """Take `reference` away: a name untags (with its repository's digests
        if that was the repository's last name); a digest or an id removes the
        image's every reference. The record goes when none is left; its layers
        stay until prune()."""
        with self._locked(exclusive=True):
            records = self._records()
            image = self._resolve(reference, records)
            kind = self._kind(reference, records)
            if kind == "digest":
                repository = split_name(reference)[0]
                names = tuple(n for n in image.names if _repository(n) != repository)
                kept = self._keep(image, names)
                kept = dataclasses.replace(
                    kept,
                    repo_digests=tuple(
                        d for d in kept.repo_digests if _repository(d) != repository
                    ),
                )
            elif kind == "id":
                kept = dataclasses.replace(image, names=(), repo_digests=())
            else:
                name = normalize_name(reference)
                kept = self._keep(image, tuple(n for n in image.names if n != name))
            untagged = tuple(
                r
                for r in image.names + image.repo_digests
                if r not in kept.names + kept.repo_digests
            )
            if kept.names or kept.repo_digests:
                _write_json(self._record_path(image.id), kept.to_dict(), self.root / "tmp")
                return Removed(untagged, None)
            self._record_path(image.id).unlink()
            return Removed(untagged, image.id)

    def prune(self) -> Pruned:
        """Remove records with no reference, layers no record uses, and what
        crashed pulls left in tmp/. Returns what went."""
        with self._locked(exclusive=True):
            tmp = self._clean_tmp()
            records = self._records()
            images = []
            for image in records:
                if not image.names and not image.repo_digests:
                    self._record_path(image.id).unlink()
                    images.append(image.id)
            used = {d for r in records if r.id not in images for d in r.layers}
            layers, freed = [], 0
            for path in sorted((self.root / "layers").iterdir()):
                diff_id = f"sha256:{path.name}"
                if not _HEX_RE.match(path.name) or diff_id in used:
                    continue
                info = self.layer(diff_id)
                freed += info.size if info else 0
                # Renamed out first: a layer directory that exists is always whole.
                doomed = self.root / "tmp" / f"gone-{path.name}-{secrets.token_hex(4)}"
                os.rename(path, doomed)
                _rmtree(doomed)
                layers.append(diff_id)
        return Pruned(tuple(images), tuple(layers), freed, tmp)

    def _clean_tmp(self) -> int:
        """Remove tmp/ entries nobody holds (crashed pulls, interrupted removals).
        Called with the exclusive lock held: no pull is making one meanwhile."""
        count = 0
        for path in (self.root / "tmp").iterdir():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                fd = None  # a symlink or a vanished entry: nobody's pull
            try:
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a pull in progress
                _rmtree(path)
                count += 1
            finally:
                if fd is not None:
                    os.close(fd)
        return count

    def usage(self) -> int:
        """Bytes of file data of every stored layer, each counted once."""
        with self._locked(exclusive=False):
            return sum(
                info.size
                for path in (self.root / "layers").iterdir()
                if _HEX_RE.match(path.name) and (info := self.layer(f"sha256:{path.name}"))
            )
