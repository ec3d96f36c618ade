"""Compiled seccomp programs kept on disk, so a new process need not compile them.

    key = make_key(b"profile", raw, b"libseccomp", b"2.5.4", ...)
    directory = open_directory()          # a checked fd, or None: no cache
    bpf = load(directory, key)            # None: a miss, or a file not to trust
    store(directory, key, bpf)

The filter a cell's program gets is only as good as this file, so nothing here
is taken on trust (SECURITY.md, rule 25). A directory or an entry is used only
when it belongs to this process's euid, is not writable by its group or by
others, and is not a symlink (opened with O_NOFOLLOW, checked by fstat on the
descriptor that is then read, so nothing is swapped in between). An entry
names its key and the SHA-256 of its program, both checked on every read: a
corrupt, truncated or misfiled entry is a miss, recompiled and rewritten, never
loaded. Entries are written to a temporary file and renamed into place, so a
reader sees a whole entry or none. Any failure (no home, a read-only disk, a
directory of someone else's) only means compiling, as without a cache.

Where: as root /var/cache/cellblock/seccomp, else
$XDG_CACHE_HOME/cellblock/seccomp or ~/.cache/cellblock/seccomp (made 0700);
CELLBLOCK_SECCOMP_CACHE names another directory, or, empty, turns it off.

SHA-256 comes from the interpreter's built-in module rather than hashlib, whose
import loads OpenSSL (~5 ms, more than the rest of a cache hit).
"""

from __future__ import annotations

import os
import stat

try:
    from _sha256 import sha256  # CPython 3.11's built-in SHA-256: no OpenSSL to load
except ImportError:  # pragma: no cover - other interpreters and versions
    from hashlib import sha256

__all__ = ["default_directory", "load", "make_key", "open_directory", "store"]

_MAGIC = b"cellblock-seccomp-cache 1\n"
_MAX_ENTRY = 1 << 20  # BPF_MAXINSNS (4096) instructions of 8 bytes is 32 KiB
_UNSAFE_MODE = stat.S_IWGRP | stat.S_IWOTH
ENVIRONMENT = "CELLBLOCK_SECCOMP_CACHE"


def make_key(*parts: bytes) -> str:
    """A hex SHA-256 over the parts, each length-prefixed (no two lists of
    parts run together into the same bytes)."""
    digest = sha256()
    for part in parts:
        digest.update(b"%d:" % len(part))
        digest.update(part)
    return digest.hexdigest()


def default_directory() -> str | None:
    """Where this process's cache lives, or None for none."""
    chosen = os.environ.get(ENVIRONMENT)
    if chosen is not None:
        return chosen or None
    if os.geteuid() == 0:
        return "/var/cache/cellblock/seccomp"
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):  # the XDG spec: a relative value is to be ignored
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "cellblock", "seccomp")


def open_directory(path: str | None = None) -> int | None:
    """A descriptor of the cache directory (made 0700 if missing), or None if
    there is none or it is not safe to use: not ours, writable by group or
    others, or a symlink."""
    path = default_directory() if path is None else path
    if path is None:
        return None
    try:
        os.makedirs(path, 0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # ELOOP/ENOTDIR: a symlink; EACCES, EROFS, ENOENT...
        return None
    try:
        if _trusted(os.fstat(fd)):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def load(directory: int, key: str) -> bytes | None:
    """The program stored under key, or None: missing, not trusted, or not whole."""
    try:
        # O_NONBLOCK: even a FIFO in its place cannot hang us (it is then refused).
        fd = os.open(
            _name(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory
        )
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted(st) or st.st_size > _MAX_ENTRY:
            return None
        data = os.read(fd, _MAX_ENTRY + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _unpack(data, key)


def store(directory: int, key: str, bpf: bytes) -> None:
    """Write the entry for key, atomically; a failure leaves no entry behind."""
    temporary = f".{_name(key)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=directory,
        )
    except OSError:
        return
    try:
        try:
            view = memoryview(_pack(key, bpf))
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(temporary, _name(key), src_dir_fd=directory, dst_dir_fd=directory)
    except OSError:
        try:
            os.unlink(temporary, dir_fd=directory)
        except OSError:
            pass


def _trusted(st: os.stat_result) -> bool:
    # Then only this euid (and root, which can change anything anyway) could
    # have put the bytes there: they are ours, as if compiled now.
    return st.st_uid == os.geteuid() and not st.st_mode & _UNSAFE_MODE


def _name(key: str) -> str:
    return f"{key}.bpf"


def _pack(key: str, bpf: bytes) -> bytes:
    return b"%s%s\n%s\n%s" % (_MAGIC, key.encode(), sha256(bpf).hexdigest().encode(), bpf)


def _unpack(data: bytes, key: str) -> bytes | None:
    """The program of a whole entry filed under key, else None."""
    if not data.startswith(_MAGIC):
        return None
    fields = data[len(_MAGIC) :].split(b"\n", 2)
    if len(fields) != 3:
        return None
    stored_key, digest, bpf = fields
    if stored_key != key.encode() or not bpf or len(bpf) % 8:
        return None
    if sha256(bpf).hexdigest().encode() != digest:
        return None
    return bpf
