"""Unpacking one OCI/Docker image layer so that a hostile layer cannot reach the host.

Theory of operation. A layer is a tar stream (plain or gzip) that anyone who
can name an image controls. The layer store unpacks each layer once into an
empty directory named by its digest; cells later mount those directories as
read-only overlay lowers (`userxattr`, in a user namespace). The unpacker is
the only code that writes what the layer says onto the host's disk, so it must
never create, change or follow anything outside that directory.

Why by hand: Debian 12's Python 3.11.2 `tarfile` has no extraction filters
(PEP 706 arrived in 3.11.4), and its `extractall` follows symlinks planted by
earlier members, honours absolute names and `..`, and makes device nodes. And
whiteouts must be translated anyway: a layer says "deleted" with `.wh.` files,
overlayfs with 0/0 character devices and an `opaque` xattr. So the stream is
read member by member (`mode="r|"`: no seeking, one pass) and every entry is
made by its own system call relative to a directory descriptor:

* each entry's parent is opened with openat2(RESOLVE_BENEATH |
  RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV) from the
  descriptor of `dest`, so a symlink anywhere in the path (planted by an
  earlier member) or a way out of `dest` is an error of the kernel's, not a
  check of ours that a race or an oversight could get wrong; missing parents
  are made one component at a time the same way (mode 0755);
* the entry itself is made with O_CREAT|O_EXCL|O_NOFOLLOW, mkdirat, symlinkat,
  mknodat, linkat without AT_SYMLINK_FOLLOW: nothing follows a final symlink;
* a hardlink's target is resolved the same way beneath `dest`. `dest` starts
  empty, so whatever is found there was made from this layer;
* a name that is there already is replaced (the later entry wins, as in
  tar): a directory is removed through descriptors, its symlinks unfollowed;
* the uncompressed stream is counted (and hashed, for the diff_id) as it is
  read, so a gzip bomb stops at `max_bytes`, not when the disk is full.

Whiteouts (the OCI image spec's, Docker's): `DIR/.wh.NAME` becomes a 0/0
character device at `DIR/NAME` (anyone may make that one device, Linux >=
5.8), `DIR/.wh..wh..opq` the xattr `user.overlay.opaque=y` on DIR (user.*:
cells mount with `userxattr`, Linux >= 5.11; a mount without it would read
trusted.*). Other `.wh..wh.` names are aufs's bookkeeping and are skipped.
xattrs the tar carries (pax SCHILY.xattr.*) are never applied: a layer could
otherwise set overlayfs's own user.overlay.* (redirect, metacopy, origin)
and steer the mount. So the store's file system must hold user.* xattrs and
0/0 devices as files: ext4, xfs, btrfs; not tmpfs before Linux 6.6, not an
overlayfs (it refuses to make a 0/0 device: EPERM).

What is refused raises LayerError naming the entry and the rule; the caller
then deletes `dest`. Nothing outside `dest` has been touched at that point.
The host's own errors (ENOSPC, EIO, EPERM, ...) stay OSError.

Kept from the layer: file modes with their setuid/setgid bits, mtimes, and
(only when unpacking as root) owners. That is safe because cells mount lowers
nosuid and the layer store's directory is 0700 to anyone but its owner; the
store, not this module, guarantees both. Directories are made 0700 and get
their own modes only at the end, so a 0555 directory can still be filled; a
store that removes a layer may therefore meet directories it cannot write
and must chmod them first.

Limits (UnpackLimits, defaults in the MAX_* constants): uncompressed bytes
of the stream, which also bound the file data written (a sparse member
expands: its holes are written as zeros); entries; bytes of a name, and
depth; and `max_header`, what tarfile may read to hand over one member: it
keeps a pax header, a GNU long name or a sparse map in memory whole, so
without it a header claiming gigabytes would cost gigabytes of memory.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import tarfile
import typing
import zlib
from dataclasses import dataclass

from . import libc

# Defaults, in one place. A large image layer has ~100k entries and a few GiB.
MAX_BYTES = 8 << 30  # uncompressed tar stream, headers included
MAX_ENTRIES = 1_000_000
MAX_PATH = 4096  # bytes of a member's name (Linux's PATH_MAX)
MAX_DEPTH = 128  # components of a member's name
MAX_HEADER = 1 << 20  # what tarfile reads whole to make one member: pax records, long names
MAX_COMPONENT = 255  # bytes of one component (NAME_MAX): said as a rule, not as ENAMETOOLONG

_CHUNK = 1 << 20
# tarfile reads ahead of what it parsed by up to one buffer (20 blocks).
_READ_AHEAD = 64 << 10

# Errors of the host, not of the layer: they propagate as OSError.
_HOST_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS, errno.EMFILE,
     errno.ENFILE, errno.EOPNOTSUPP, errno.EACCES, errno.EPERM}
)  # fmt: skip

# Nothing is mounted beneath dest; if something were, it is not the layer's.
_RESOLVE = (
    libc.RESOLVE_BENEATH
    | libc.RESOLVE_NO_SYMLINKS
    | libc.RESOLVE_NO_MAGICLINKS
    | libc.RESOLVE_NO_XDEV
)
# With openat2: no O_NOFOLLOW, so that RESOLVE_NO_SYMLINKS refuses a final
# symlink too (ELOOP) rather than opening the link itself (then ENOTDIR).
_DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_READ = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# With plain openat (dest itself, directories being removed).
_DIR_NOFOLLOW = _DIR_READ | os.O_NOFOLLOW

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTR = "user.overlay.opaque"  # trusted.* without userxattr; cells mount with it

_GZIP_MAGIC = b"\x1f\x8b"
_UNSUPPORTED_MAGIC = {
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
}


class LayerError(Exception):
    """A layer refused: the message names the entry and the rule it broke."""


@dataclass(frozen=True)
class UnpackLimits:
    max_bytes: int = MAX_BYTES
    max_entries: int = MAX_ENTRIES
    max_path: int = MAX_PATH
    max_depth: int = MAX_DEPTH
    max_header: int = MAX_HEADER


DEFAULT_LIMITS = UnpackLimits()


@dataclass(frozen=True)
class Unpacked:
    diff_id: str  # "sha256:<hex>" of the uncompressed stream to its EOF (OCI rootfs.diff_ids)
    entries: int
    size: int  # bytes of file data written


class _Prefixed:
    """`source` with the bytes already read from it (to sniff the format) put back."""

    def __init__(self, prefix: bytes, source: typing.BinaryIO) -> None:
        self._prefix = prefix
        self._source = source

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                head, self._prefix = self._prefix, b""
                rest = size - len(head) if size >= 0 else -1
                return head + (self._source.read(rest) if rest else b"")
            head, self._prefix = self._prefix[:size], self._prefix[size:]
            return head
        return self._source.read(size)


class _Counted:
    """The uncompressed stream: hashed and counted as tarfile reads it.

    The limit is checked on every read, so decompression stops within one
    read of `max_bytes` however well the data compresses. `budget`, when set,
    bounds what tarfile may read before it hands over the next member: it
    keeps a pax header, a GNU long name or a sparse map in memory whole, so a
    header claiming gigabytes would otherwise cost gigabytes of memory.
    """

    def __init__(self, inner: typing.Any, limits: UnpackLimits) -> None:
        self._inner = inner
        self._max = limits.max_bytes
        self._max_header = limits.max_header
        self.total = 0
        self.budget: int | None = None
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > _CHUNK:
            size = _CHUNK  # tarfile asks in small blocks; never decompress unbounded
        try:
            data = self._inner.read(size)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise LayerError(f"layer stream: corrupt compressed data ({e})") from None
        self.total += len(data)
        if self.total > self._max:
            raise LayerError(f"layer stream: more than {self._max} uncompressed bytes")
        if self.budget is not None:
            self.budget -= len(data)
            if self.budget < 0:
                raise LayerError(
                    f"layer stream: a header (pax, long name, sparse map) of more than "
                    f"{self._max_header} bytes"
                )
        self.digest.update(data)
        return data

    def drain(self) -> None:
        """Read to EOF: the diff_id covers the whole stream, padding included."""
        while self.read(_CHUNK):
            pass


def _open_stream(source: typing.BinaryIO, limits: UnpackLimits) -> _Counted:
    head = b""
    while len(head) < 6:
        more = source.read(6 - len(head))
        if not more:
            break
        head += more
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            raise LayerError(f"layer stream: {name} compression is unsupported")
    stream: typing.Any = _Prefixed(head, source)
    if head.startswith(_GZIP_MAGIC):
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    return _Counted(stream, limits)


def _components(name: str, what: str, limits: UnpackLimits) -> list[str]:
    """A member's name as path components beneath dest ([] for dest itself)."""
    if "\0" in name:
        raise LayerError(f"{what} {name!r}: NUL in the name")
    if len(os.fsencode(name)) > limits.max_path:
        raise LayerError(f"{what} {name[:64]!r}...: name longer than {limits.max_path} bytes")
    if name.startswith("/"):
        raise LayerError(f"{what} {name!r}: absolute name")
    if name == "":
        raise LayerError(f"{what}: empty name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"{what} {name!r}: '..' component")
    if any(len(os.fsencode(part)) > MAX_COMPONENT for part in parts):
        raise LayerError(f"{what} {name[:64]!r}...: a component longer than {MAX_COMPONENT} bytes")
    if len(parts) > limits.max_depth:
        raise LayerError(f"{what} {name!r}: deeper than {limits.max_depth} components")
    return parts


def _ns(mtime: float) -> int:
    return int(mtime * 1_000_000_000)


@dataclass(slots=True)
class _DirMeta:
    ino: int  # the directory this was recorded for (a later entry may replace it)
    mode: int
    mtime_ns: int
    uid: int
    gid: int


class _Unpacker:
    def __init__(self, root: int, limits: UnpackLimits) -> None:
        self.root = root
        self.limits = limits
        self.as_root = os.geteuid() == 0
        self.dirs: dict[tuple[str, ...], _DirMeta] = {}
        self.size = 0

    # -- resolving -------------------------------------------------------------

    def _open(self, parts: list[str], flags: int, what: str) -> int:
        """openat2 beneath dest, refusing symlinks anywhere on the way."""
        path = "/".join(parts) or "."
        try:
            return libc.openat2(self.root, path, flags, _RESOLVE)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise LayerError(f"{what}: {path!r} goes through a symlink") from None
            if e.errno == errno.EXDEV:
                raise LayerError(
                    f"{what}: {path!r} leaves the layer's directory or file system"
                ) from None
            if e.errno == errno.ENOTDIR:
                raise LayerError(f"{what}: {path!r} goes through a non-directory") from None
            raise

    def parent(self, parts: list[str], what: str) -> int:
        """An O_PATH descriptor of the entry's parent, made (0755) where missing."""
        try:
            return self._open(parts[:-1], _DIR_PATH, what)
        except FileNotFoundError:
            pass
        fd = self._open([], _DIR_PATH, what)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    child = libc.openat2(fd, part, _DIR_PATH, _RESOLVE)
                except FileNotFoundError:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    child = libc.openat2(fd, part, _DIR_READ, _RESOLVE)
                    # Explicitly, not through mkdir's mode: the caller's umask
                    # (077 in a service, say) must not make a root-owned layer's
                    # directories untraversable for a cell's users.
                    os.fchmod(child, 0o755)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                        os.close(self._open(parts[: i + 1], _DIR_PATH, what))  # says which
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- replacing -------------------------------------------------------------

    def _remove_tree(self, parent: int, name: str) -> None:
        """Remove a directory and all beneath it, through descriptors only."""
        fd = os.open(name, _DIR_NOFOLLOW, dir_fd=parent)
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        self._remove_tree(fd, entry.name)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent)

    def clear(self, parent: int, name: str, parts: list[str], keep_dir: bool) -> bool:
        """Make room for a later entry of the same name: the later one wins.

        Returns whether a directory was kept (a directory entry over an
        existing directory merges into it, as tar does)."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self._remove_tree(parent, name)
            self.dirs.pop(tuple(parts), None)
        else:
            os.unlink(name, dir_fd=parent)
        return False

    # -- metadata --------------------------------------------------------------

    def _owner(self, member: tarfile.TarInfo) -> tuple[int, int]:
        if not (0 <= member.uid < 0xFFFFFFFF and 0 <= member.gid < 0xFFFFFFFF):
            raise LayerError(f"{member.name!r}: owner {member.uid}:{member.gid} out of range")
        return member.uid, member.gid

    def _mtime(self, member: tarfile.TarInfo) -> int:
        try:
            ns = _ns(member.mtime)
        except (OverflowError, ValueError):
            raise LayerError(f"{member.name!r}: mtime {member.mtime!r} out of range") from None
        if not -(1 << 62) < ns < 1 << 62:
            raise LayerError(f"{member.name!r}: mtime {member.mtime!r} out of range")
        return ns

    def _set_meta(self, fd: int, member: tarfile.TarInfo) -> None:
        """Owner, then mode (chown clears setuid/setgid), then mtime, on the open fd."""
        uid, gid = self._owner(member)
        if self.as_root:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, member.mode & 0o7777)
        mtime = self._mtime(member)
        os.utime(fd, ns=(mtime, mtime))

    # -- entries ---------------------------------------------------------------

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        what = repr(member.name)
        parts = _components(member.name, "entry", self.limits)
        if not parts:
            if not member.isdir():
                raise LayerError(f"entry {what}: the layer's root is not a directory")
            self._record_dir([], member)
            return
        leaf = parts[-1]
        if leaf.startswith(_WHITEOUT):
            self.whiteout(parts, what)
            return
        if member.ischr() or member.isblk():
            raise LayerError(f"entry {what}: device nodes are refused")
        if not (
            member.isreg() or member.isdir() or member.issym() or member.islnk() or member.isfifo()
        ):
            raise LayerError(f"entry {what}: unknown entry type {member.type!r}")
        parent = self.parent(parts, f"entry {what}")
        try:
            kept = self.clear(parent, leaf, parts, keep_dir=member.isdir())
            if member.isdir():
                if not kept:
                    os.mkdir(leaf, 0o700, dir_fd=parent)
                self._record_dir(parts, member, parent)
            elif member.isreg():
                self._file(tar, member, parent, leaf)
            elif member.issym():
                self._symlink(member, parent, leaf)
            elif member.islnk():
                self._hardlink(member, parent, leaf)
            else:
                self._fifo(member, parent, leaf)
        finally:
            os.close(parent)

    def _record_dir(self, parts: list[str], member: tarfile.TarInfo, parent: int = -1) -> None:
        """Directories get their metadata at the end, after they were filled."""
        if parts:
            ino = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_ino
        else:
            ino = os.fstat(self.root).st_ino
        uid, gid = self._owner(member)
        self.dirs[tuple(parts)] = _DirMeta(ino, member.mode & 0o7777, self._mtime(member), uid, gid)

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, leaf: str) -> None:
        # The stream's limit bounds the data of plain members; a sparse one
        # expands (its holes are written as zeros), so the data written is
        # bounded by the same figure.
        if member.size > self.limits.max_bytes - self.size:
            raise LayerError(
                f"entry {member.name!r}: {member.size} bytes would pass the limit of "
                f"{self.limits.max_bytes} bytes of data"
            )
        fd = os.open(
            leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
            dir_fd=parent,
        )  # fmt: skip
        try:
            data = tar.extractfile(member)
            assert data is not None  # a regular member always has a reader
            written = 0
            while written < member.size:
                try:
                    chunk = data.read(min(_CHUNK, member.size - written))
                except tarfile.TarError:  # "unexpected end of data": the header lied
                    chunk = b""
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                written += len(chunk)
            if written != member.size:
                raise LayerError(
                    f"entry {member.name!r}: stream ends after {written} of {member.size} bytes"
                )
            self.size += written
            self._set_meta(fd, member)
        finally:
            os.close(fd)

    def _symlink(self, member: tarfile.TarInfo, parent: int, leaf: str) -> None:
        # The target is only data: nothing here ever resolves it.
        if "\0" in member.linkname or not member.linkname:
            raise LayerError(f"entry {member.name!r}: symlink target empty or with NUL")
        os.symlink(member.linkname, leaf, dir_fd=parent)
        uid, gid = self._owner(member)
        if self.as_root:
            os.chown(leaf, uid, gid, dir_fd=parent, follow_symlinks=False)
        mtime = self._mtime(member)
        os.utime(leaf, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, member: tarfile.TarInfo, parent: int, leaf: str) -> None:
        what = f"hardlink {member.name!r} -> {member.linkname!r}"
        target = _components(member.linkname, what + ": target", self.limits)
        if not target:
            raise LayerError(f"{what}: target is the layer's root")
        try:
            source = self._open(target[:-1], _DIR_PATH, what)
        except FileNotFoundError:
            raise LayerError(f"{what}: target is not an entry of this layer") from None
        try:
            try:
                st = os.stat(target[-1], dir_fd=source, follow_symlinks=False)
            except FileNotFoundError:
                raise LayerError(f"{what}: target is not an entry of this layer") from None
            if not (
                stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode)
            ):
                raise LayerError(f"{what}: target is not a file, symlink or FIFO")
            os.link(target[-1], leaf, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source)

    def _fifo(self, member: tarfile.TarInfo, parent: int, leaf: str) -> None:
        os.mkfifo(leaf, 0o600, dir_fd=parent)
        # O_NONBLOCK: opening a FIFO for reading does not wait for a writer.
        fd = os.open(
            leaf, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise LayerError(f"entry {member.name!r}: not the FIFO just made")
            self._set_meta(fd, member)
        finally:
            os.close(fd)

    def whiteout(self, parts: list[str], what: str) -> None:
        """`.wh.NAME` hides NAME of lower layers; `.wh..wh..opq` all of the directory's."""
        leaf = parts[-1]
        if leaf == _OPAQUE:
            parent = self.parent(parts, f"whiteout {what}")
            try:
                fd = libc.openat2(parent, ".", _DIR_READ, _RESOLVE)  # fsetxattr needs a real fd
            finally:
                os.close(parent)
            try:
                os.setxattr(fd, _OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        if leaf.startswith(_WHITEOUT + _WHITEOUT):
            return  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to overlayfs
        name = leaf[len(_WHITEOUT) :]
        if name in ("", ".", ".."):
            raise LayerError(f"whiteout {what}: names no entry")
        target = [*parts[:-1], name]
        parent = self.parent(target, f"whiteout {what}")
        try:
            self.clear(parent, name, target, keep_dir=False)
            # A 0/0 character device: overlayfs's whiteout. The kernel lets
            # anyone make this one device (Linux >= 5.8), no CAP_MKNOD needed.
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        finally:
            os.close(parent)

    def finish(self) -> None:
        """Directories' owners, modes and mtimes, deepest first, each on an fd of
        the directory recorded (one replaced since by a later entry is skipped)."""
        for parts, meta in sorted(self.dirs.items(), key=lambda item: -len(item[0])):
            try:
                fd = self._open(list(parts), _DIR_READ, f"directory {'/'.join(parts)!r}")
            except (FileNotFoundError, LayerError):
                continue
            try:
                if os.fstat(fd).st_ino != meta.ino:
                    continue
                if self.as_root:
                    os.fchown(fd, meta.uid, meta.gid)
                os.fchmod(fd, meta.mode)
                os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))
            finally:
                os.close(fd)


def unpack_layer(
    source: typing.BinaryIO, dest: str, limits: UnpackLimits = DEFAULT_LIMITS
) -> Unpacked:
    """Unpack one layer blob into `dest`, translating whiteouts for overlayfs.

    `source`: the layer blob as stored (plain tar, or gzip, told by its magic
    bytes; zstd, xz and bzip2 are refused as unsupported). `dest`: an existing
    empty directory; the tree is created beneath it. Raises LayerError if the
    layer breaks a rule (the caller deletes `dest`; nothing outside it was
    touched). Setuid/setgid bits are kept: cells mount lowers nosuid, and the
    store keeps its directory 0700.
    """
    root = os.open(dest, _DIR_NOFOLLOW)
    try:
        if os.listdir(root):
            raise ValueError(f"{dest} is not empty")
        stream = _open_stream(source, limits)
        unpacker = _Unpacker(root, limits)
        entries, last = 0, "(none)"
        try:
            stream.budget = limits.max_header + _READ_AHEAD
            # (The ignore: typeshed wants a whole IO object; "r|" only reads.)
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                while True:
                    # What tarfile reads for the next member: the rest of the last
                    # one's data (skipped, not kept) and the next header (kept).
                    stream.budget = (
                        limits.max_header + _READ_AHEAD + max(0, tar.offset - tar.fileobj.tell())
                    )
                    member = tar.next()
                    stream.budget = None
                    if member is None:
                        break
                    entries, last = entries + 1, member.name
                    if entries > limits.max_entries:
                        raise LayerError(
                            f"entry {member.name!r}: more than {limits.max_entries} entries"
                        )
                    try:
                        unpacker.entry(tar, member)
                    except OSError as e:
                        if e.errno in _HOST_ERRNOS:
                            raise
                        # What the layer asked cannot be made (a name too long for
                        # the file system, too many links, ...): the layer's fault.
                        raise LayerError(f"entry {member.name!r}: {e.strerror or e}") from e
        except (tarfile.TarError, ValueError, IndexError, OverflowError, EOFError) as e:
            # tarfile on malformed input: mostly TarError, but a bad number or
            # a header cut short can surface as ValueError or IndexError.
            raise LayerError(
                f"layer stream: not a valid tar after {entries} entries, the last {last!r} ({e})"
            ) from None
        stream.budget = None
        stream.drain()
        unpacker.finish()
    finally:
        os.close(root)
    return Unpacked(f"sha256:{stream.digest.hexdigest()}", entries, unpacker.size)
