"""sandbox/unpack.py: an image layer cannot write outside its directory (SECURITY.md rule 28).

Every hostile layer is first shown to work without the mechanism: a naive
`tarfile.extractall` (Python 3.11.2's, which has no extraction filters) into a
scratch directory of a throwaway temp tree writes outside that scratch
directory, follows the planted symlink, makes the device. Then `unpack_layer`
refuses the same layer and nothing outside its `dest` has changed. Correct
layers are then stacked as overlay lowers (`userxattr`, in a user namespace,
as cells mount them) to see whiteouts, opaque directories and changed files in
the merged view. Real kernel, no mocks; as root and as an unprivileged user.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import python_as

from sandbox.unpack import DEFAULT_LIMITS, LayerError, Unpacked, UnpackLimits, unpack_layer

MTIME = 1_600_000_000

# -- building layers -----------------------------------------------------------


def _info(name: str, kind: bytes, mode: int = 0o644, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def f(name: str, data: bytes = b"", mode: int = 0o644, **fields: object):
    return _info(name, tarfile.REGTYPE, mode, size=len(data), **fields), data


def d(name: str, mode: int = 0o755, **fields: object):
    return _info(name, tarfile.DIRTYPE, mode, **fields), None


def sym(name: str, target: str):
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def hard(name: str, target: str):
    return _info(name, tarfile.LNKTYPE, linkname=target), None


def fifo(name: str, mode: int = 0o644):
    return _info(name, tarfile.FIFOTYPE, mode), None


def dev(name: str, major: int, minor: int, kind: bytes = tarfile.CHRTYPE):
    return _info(name, kind, 0o666, devmajor=major, devminor=minor), None


def layer(*members, gz: bool = False, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = out.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def unpack(blob: bytes, dest: Path, limits: UnpackLimits = DEFAULT_LIMITS) -> Unpacked:
    dest.mkdir(exist_ok=True)
    return unpack_layer(io.BytesIO(blob), str(dest), limits)


def naive_extract(blob: bytes, scratch: Path) -> BaseException | None:
    """The control: Python 3.11.2's tarfile with no mechanism at all."""
    scratch.mkdir(exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(scratch)
    except Exception as error:  # the control may fail half-way; what it did counts
        return error
    return None


# -- watching the world outside dest -------------------------------------------


def tree(top: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Everything under `top` (but `skip`): kind, mode, size, content, link target."""
    seen: dict[str, tuple] = {}
    for here, dirs, files in os.walk(top):
        if skip is not None and Path(here) == skip:
            dirs[:] = []
            continue
        for name in dirs + files:
            path = Path(here) / name
            if skip is not None and path == skip:
                continue
            st = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            seen[str(path.relative_to(top))] = (st.st_mode, st.st_ino, st.st_nlink, content, target)
    return seen


@pytest.fixture
def world(layer_fs: Path) -> Iterator[Path]:
    """A throwaway tree: `victim/` (a directory and a secret file an attack
    aims at), `dest/` (ours) and `scratch/` (the control's)."""
    top = Path(tempfile.mkdtemp(prefix="cellblock-unpack-", dir=layer_fs))
    (top / "victim").mkdir()
    (top / "victim" / "secret").write_bytes(b"secret\n")
    (top / "victim" / "keep").write_bytes(b"keep\n")
    yield top
    for path in top.rglob("*"):  # modes a layer set (0555, 0000) must not stop the cleanup
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o700)
    shutil.rmtree(top, ignore_errors=True)


def refuse(blob: bytes, top: Path, match: str, limits: UnpackLimits = DEFAULT_LIMITS) -> str:
    """unpack_layer refuses `blob` with LayerError, and nothing outside dest changed."""
    dest = top / "dest"
    dest.mkdir()
    before = tree(top, skip=dest)
    with pytest.raises(LayerError, match=match) as raised:
        unpack(blob, dest, limits)
    assert tree(top, skip=dest) == before, "the layer changed something outside dest"
    return str(raised.value)


# -- hostile layers: control, then refused -------------------------------------


@pytest.mark.userland
def test_absolute_name(world: Path) -> None:
    target = world / "victim" / "planted"
    blob = layer(f(str(target), b"pwned"))
    naive_extract(blob, world / "scratch")
    assert target.read_bytes() == b"pwned", "control: an absolute name writes where it says"
    target.unlink()
    refuse(blob, world, "absolute name")


@pytest.mark.userland
def test_dotdot_traversal(world: Path) -> None:
    blob = layer(f("./../victim/planted", b"pwned"))
    naive_extract(blob, world / "scratch")
    assert (world / "victim" / "planted").read_bytes() == b"pwned", "control: ../ escapes"
    (world / "victim" / "planted").unlink()
    refuse(blob, world, r"'\.\.' component")
    refuse_again = layer(d("a"), f("a/../../victim/planted", b"pwned"))
    shutil.rmtree(world / "dest")
    refuse(refuse_again, world, r"'\.\.' component")


@pytest.mark.parametrize("target", ["absolute", "relative"])
@pytest.mark.userland
def test_symlink_then_write_through(world: Path, target: str) -> None:
    link = str(world / "victim") if target == "absolute" else "../victim"
    blob = layer(sym("a", link), f("a/secret", b"pwned"))
    naive_extract(blob, world / "scratch")
    assert (world / "victim" / "secret").read_bytes() == b"pwned", "control: follows a/"
    (world / "victim" / "secret").write_bytes(b"secret\n")
    message = refuse(blob, world, "goes through a symlink")
    assert "a/secret" in message
    # Deeper: the symlink in the middle of a path, and a missing parent beyond it.
    shutil.rmtree(world / "dest")
    refuse(layer(d("x"), sym("x/l", link), f("x/l/new/file", b"pwned")), world, "symlink")


@pytest.mark.userland
def test_symlink_then_same_name_file_replaces_the_link(world: Path) -> None:
    """A symlink, then a regular file of the same name: the control writes
    through the link; we replace the link (the later entry wins)."""
    blob = layer(sym("a", str(world / "victim" / "secret")), f("a", b"pwned"))
    naive_extract(blob, world / "scratch")
    assert (world / "victim" / "secret").read_bytes() == b"pwned", "control: writes through"
    (world / "victim" / "secret").write_bytes(b"secret\n")
    dest = world / "dest"
    before = tree(world, skip=dest)
    unpack(blob, dest)
    assert tree(world, skip=dest) == before
    assert (dest / "a").read_bytes() == b"pwned" and not (dest / "a").is_symlink()


def test_symlinked_whiteout_and_opaque_are_refused(world: Path) -> None:
    link = str(world / "victim")
    blob = layer(sym("a", link), f("a/.wh.secret"))
    naive_extract(blob, world / "scratch")
    assert (world / "victim" / ".wh.secret").exists(), "control: writes through a/"
    (world / "victim" / ".wh.secret").unlink()
    refuse(blob, world, "symlink")
    shutil.rmtree(world / "dest")
    refuse(layer(sym("a", link), f("a/.wh..wh..opq")), world, "symlink")


def test_whiteout_of_a_directory_does_not_follow_its_symlinks(world: Path) -> None:
    """Removing a directory (a later whiteout wins) never descends a symlink."""
    dest = world / "dest"
    before = tree(world, skip=dest)
    unpack(layer(d("d"), sym("d/l", str(world / "victim")), sym("d/r", "../../victim"),
                 f(".wh.d")), dest)  # fmt: skip
    assert tree(world, skip=dest) == before
    assert stat.S_ISCHR((dest / "d").lstat().st_mode)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "through-symlink"])
@pytest.mark.userland
def test_hardlink_outside_the_layer(world: Path, how: str) -> None:
    secret = world / "victim" / "secret"
    target = {
        "absolute": str(secret),
        "dotdot": "../victim/secret",
        "through-symlink": "l/secret",
    }[how]
    members = [sym("l", str(world / "victim"))] if how == "through-symlink" else []
    # The link, then a regular file of its name: the control writes through the link.
    blob = layer(*members, hard("h", target), f("h", b"pwned"))
    naive_extract(blob, world / "scratch")
    assert secret.read_bytes() == b"pwned", "control: a hardlink to the host's file"
    secret.write_bytes(b"secret\n")
    refuse(blob, world, "hardlink|symlink|component")


@pytest.mark.userland
def test_hardlink_to_a_missing_or_directory_target(world: Path) -> None:
    refuse(layer(hard("h", "nothing")), world, "not an entry of this layer")
    shutil.rmtree(world / "dest")
    refuse(layer(d("dir"), hard("h", "dir")), world, "not a file")
    shutil.rmtree(world / "dest")
    refuse(layer(f("x"), hard("h", "./")), world, "root")


def test_device_nodes(world: Path) -> None:
    blob = layer(dev("null", 1, 3))
    if os.geteuid() == 0:  # the control needs CAP_MKNOD
        naive_extract(blob, world / "scratch")
        st = (world / "scratch" / "null").lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3), "control: mknod"
    refuse(blob, world, "device nodes are refused")
    for member in (dev("disk", 8, 0, tarfile.BLKTYPE), dev("zero", 0, 0)):
        # Even 0/0 is refused as a member: only a .wh. name makes a whiteout.
        shutil.rmtree(world / "dest")
        refuse(layer(member), world, "device nodes are refused")


@pytest.mark.userland
def test_unknown_entry_type(world: Path) -> None:
    refuse(layer((_info("odd", b"Z"), None)), world, "unknown entry type")


def _bomb(zeros: int, shape: str) -> bytes:
    """A gzip'd tar of `zeros` zero bytes, built without holding them: one file
    (its header says how big), files of 1 MiB, or padding after the archive's end."""
    out = io.BytesIO()
    block = bytes(1 << 20)
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        if shape == "one file":
            gz.write(_info("zeros", tarfile.REGTYPE, size=zeros).tobuf(tarfile.PAX_FORMAT))
        for i in range(zeros >> 20):
            if shape == "files":
                gz.write(_info(f"z{i}", tarfile.REGTYPE, size=1 << 20).tobuf(tarfile.PAX_FORMAT))
            elif shape == "padding" and i == 0:
                gz.write(bytes(2 * tarfile.RECORDSIZE))  # the end of the archive, then zeros
            gz.write(block)
        gz.write(bytes(2 * tarfile.RECORDSIZE))
    return out.getvalue()


@pytest.mark.parametrize("shape", ["one file", "files", "padding"])
@pytest.mark.userland
def test_gzip_bomb_stops_at_the_limit(world: Path, shape: str) -> None:
    blob = _bomb(200 << 20, shape)
    assert len(blob) < 1 << 20
    # Control: the small blob really is 200 MB of data.
    expanded, stream = 0, zlib.decompressobj(wbits=31)
    for at in range(0, len(blob), 1 << 16):
        expanded += len(stream.decompress(blob[at : at + (1 << 16)]))
    assert expanded > 200 << 20
    limits = UnpackLimits(max_bytes=4 << 20)
    started = time.monotonic()
    message = "more than 4194304 uncompressed bytes"
    if shape == "one file":  # its header says so: refused before any data is read
        message = "209715200 bytes would pass the limit of 4194304"
    refuse(blob, world, message, limits)
    assert time.monotonic() - started < 2.0
    written = sum(path.stat().st_size for path in (world / "dest").iterdir())
    assert written <= 4 << 20


@pytest.mark.userland
def test_too_many_entries(world: Path) -> None:
    blob = layer(*(f(f"f{i}") for i in range(50)))
    naive_extract(blob, world / "scratch")
    assert len(os.listdir(world / "scratch")) == 50, "control: no limit"
    refuse(blob, world, "more than 10 entries", UnpackLimits(max_entries=10))


@pytest.mark.userland
def test_names_too_long_or_too_deep(world: Path) -> None:
    refuse(
        layer(f("x" * 200 + "/" + "y" * 200)), world, "longer than 300", UnpackLimits(max_path=300)
    )
    shutil.rmtree(world / "dest")
    refuse(layer(f("a/" * 20 + "f")), world, "deeper than 8", UnpackLimits(max_depth=8))


@pytest.mark.userland
def test_nul_and_empty_names(world: Path) -> None:
    # Only a pax header carries a NUL (ustar's fields end at one).
    refuse(layer(f("x", pax_headers={"path": "a\0b/c"})), world, "NUL")
    shutil.rmtree(world / "dest")
    refuse(
        layer((_info("l", tarfile.SYMTYPE, pax_headers={"linkpath": "a\0b"}), None)), world, "NUL"
    )
    shutil.rmtree(world / "dest")
    refuse(layer(f("")), world, "empty name")


@pytest.mark.userland
def test_truncated_stream(world: Path) -> None:
    whole = layer(f("big", os.urandom(100_000)), f("after", b"x"))
    blob = whole[: 512 * 3 + 50_000]  # the header says 100000 bytes; half of them follow
    error = naive_extract(blob, world / "scratch")
    assert isinstance(error, tarfile.ReadError), "control: tarfile's own exception"
    refuse(blob, world, "big|stream")
    shutil.rmtree(world / "dest")
    refuse(whole[:700], world, "stream|big")  # cut inside the pax header
    shutil.rmtree(world / "dest")
    refuse(gzip.compress(whole)[:5000], world, "stream")  # cut inside the gzip stream


def _huge_header(kind: bytes, size: int) -> bytes:
    """A gzip'd tar whose first header (pax or GNU long name) claims `size` bytes."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(_info("././@header", kind, size=size).tobuf(tarfile.GNU_FORMAT))
        block = b"9" * (1 << 20)  # "9999...": one long pax record length, never parsed whole
        for _ in range(size >> 20):
            gz.write(block)
        gz.write(_info("after", tarfile.REGTYPE).tobuf(tarfile.GNU_FORMAT) + bytes(1024))
    return out.getvalue()


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
@pytest.mark.userland
def test_huge_headers_are_not_read_into_memory(world: Path, kind: bytes) -> None:
    """tarfile reads a pax header or a GNU long name whole: bounded by max_header."""
    blob = _huge_header(kind, 64 << 20)

    class Counting(io.BytesIO):
        most = 0

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            Counting.most = max(Counting.most, self.tell())
            return data

    # Control: tarfile reads the whole 64 MiB header before the first member.
    try:
        with tarfile.open(fileobj=Counting(gzip.decompress(blob)), mode="r|") as tar:
            tar.next()
    except tarfile.TarError:
        pass  # a pax header of "999..." is no valid record, but it was read whole first
    assert Counting.most >= 64 << 20
    started = time.monotonic()
    refuse(blob, world, r"a header \(pax, long name, sparse map\) of more than 1048576 bytes")
    assert time.monotonic() - started < 2.0


@pytest.mark.userland
def test_a_file_s_data_is_not_a_header(world: Path) -> None:
    """Data skipped unread (a whiteout's) counts against max_bytes, not max_header."""
    limits = UnpackLimits(max_header=64 << 10)
    result = unpack(
        layer(f(".wh.gone", bytes(1 << 20)), f("big", bytes(1 << 20))), world / "dest", limits
    )
    assert result.entries == 2 and result.size == 1 << 20


def _gnu_tar(world: Path, files: dict[str, list[tuple[int, bytes]]], size: int, fmt: str) -> bytes:
    """A tar made by GNU tar --sparse of files with data at the given offsets."""
    src = world / "sparse-src"
    src.mkdir(exist_ok=True)
    for name, pieces in files.items():
        with open(src / name, "wb") as out:
            out.truncate(size)
            for offset, data in pieces:
                out.seek(offset)
                out.write(data)
    return subprocess.run(
        ["tar", "-C", str(src), "--sparse", f"--format={fmt}", "-cf", "-", *files],
        capture_output=True, check=True,
    ).stdout  # fmt: skip


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
@pytest.mark.userland
def test_sparse_files(world: Path, fmt: str) -> None:
    pieces = [(0, b"start"), (16 << 20, b"middle"), ((32 << 20) - 3, b"end")]
    blob = _gnu_tar(world, {"holes": pieces}, 32 << 20, fmt)
    assert len(blob) < 64 << 10
    result = unpack(blob, world / "dest")
    written = (world / "dest" / "holes").read_bytes()
    assert written == (world / "sparse-src" / "holes").read_bytes()
    assert result.size == 32 << 20
    # A sparse file expands: the data written is bounded like the stream.
    shutil.rmtree(world / "dest")
    refuse(blob, world, "would pass the limit", UnpackLimits(max_bytes=10 << 20))


@pytest.mark.userland
def test_truncated_sparse_header(world: Path) -> None:
    """Cut inside a GNU sparse member's extension blocks (more than 4 pieces)."""
    pieces = [(i << 16, b"x") for i in range(30)]
    blob = _gnu_tar(world, {"many": pieces}, 30 << 16, "gnu")
    # Control: tarfile raises IndexError there, not one of its own errors.
    with pytest.raises(IndexError), tarfile.open(fileobj=io.BytesIO(blob[:512]), mode="r|"):
        pass
    refuse(blob[:512], world, "not a valid tar")


def test_component_longer_than_name_max(world: Path) -> None:
    refuse(layer(f("d/" + "x" * 256)), world, "component longer than 255 bytes")


@pytest.mark.userland
def test_unsupported_compression(world: Path) -> None:
    refuse(b"\x28\xb5\x2f\xfd" + bytes(100), world, "zstd compression is unsupported")
    shutil.rmtree(world / "dest")
    refuse(b"not a tar at all", world, "not a valid tar")


@pytest.mark.userland
def test_dest_must_be_empty(world: Path) -> None:
    (world / "dest").mkdir()
    (world / "dest" / "x").touch()
    with pytest.raises(ValueError, match="not empty"):
        unpack(layer(f("y")), world / "dest")


# -- correct layers --------------------------------------------------------------


def test_entries_modes_mtimes_links(world: Path) -> None:
    dest = world / "dest"
    blob = layer(
        d("./", 0o755),
        d("bin", 0o755),
        f("bin/tool", b"#!/bin/sh\n", 0o4755),
        f("bin/group", b"g", 0o2750),
        d("ro", 0o555),
        f("ro/inside", b"filled after its 0555 parent", 0o444),
        f("implied/parent/file", b"p", 0o600),
        sym("bin/sh", "/bin/dash"),
        sym("dangling", "../../../../nowhere"),
        hard("bin/tool2", "./bin/tool"),
        fifo("pipe", 0o640),
        f("dup", b"first"),
        f("dup", b"second"),
        gz=True,
    )
    result = unpack(blob, dest)
    assert result.entries == 13
    assert result.size == len(b"#!/bin/sh\n") + 1 + len(b"filled after its 0555 parent") + 1 + 5 + 6
    assert result.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()

    def mode(path: str) -> int:
        return stat.S_IMODE((dest / path).lstat().st_mode)

    assert (dest / "bin" / "tool").read_bytes() == b"#!/bin/sh\n" and mode("bin/tool") == 0o4755
    assert mode("bin/group") & 0o777 == 0o750
    if os.geteuid() == 0:  # an unprivileged owner outside the group loses setgid, as chmod(2) says
        assert mode("bin/group") == 0o2750
    assert mode("ro") == 0o555 and (dest / "ro" / "inside").read_bytes().startswith(b"filled")
    assert mode("implied") == 0o755 and mode("implied/parent") == 0o755
    assert os.readlink(dest / "bin" / "sh") == "/bin/dash"
    assert os.readlink(dest / "dangling") == "../../../../nowhere"
    assert (dest / "bin" / "tool2").stat().st_ino == (dest / "bin" / "tool").stat().st_ino
    assert stat.S_ISFIFO((dest / "pipe").lstat().st_mode) and mode("pipe") == 0o640
    assert (dest / "dup").read_bytes() == b"second"
    for path in ("bin", "bin/tool", "ro", "ro/inside", "pipe", "dup", "."):
        assert (dest / path).lstat().st_mtime == MTIME, path
    assert (dest / "bin" / "sh").lstat().st_mtime == MTIME
    owner = 0 if os.geteuid() == 0 else os.geteuid()
    assert (dest / "bin" / "tool").lstat().st_uid == owner


def test_modes_whatever_the_umask(world: Path) -> None:
    """A service's umask 077 must not make a layer's directories 0700."""
    old = os.umask(0o077)
    try:
        unpack(
            layer(f("implied/deeper/file", b"x", 0o644), d("dir", 0o755), fifo("p", 0o644)),
            world / "dest",
        )
    finally:
        os.umask(old)
    for path in ("implied", "implied/deeper", "dir"):
        assert stat.S_IMODE((world / "dest" / path).stat().st_mode) == 0o755, path
    for path in ("implied/deeper/file", "p"):
        assert stat.S_IMODE((world / "dest" / path).lstat().st_mode) == 0o644, path


@pytest.mark.userland
def test_names_that_are_not_utf8(world: Path) -> None:
    """Bytes, not text: a Latin-1 name is made as the same bytes."""
    name = os.fsdecode(b"caf\xe9")
    unpack(
        layer(f(name, b"x"), sym(os.fsdecode(b"l\xff"), name), fmt=tarfile.GNU_FORMAT),
        world / "dest",
    )
    assert sorted(os.listdir(os.fsencode(world / "dest"))) == [b"caf\xe9", b"l\xff"]
    assert os.readlink(os.fsencode(world / "dest") + b"/l\xff") == b"caf\xe9"


@pytest.mark.needs_root
def test_owners_are_kept_as_root(world: Path) -> None:
    dest = world / "dest"
    unpack(layer(d("home", uid=1000, gid=1000), f("home/x", b"x", uid=1234, gid=5678),
                 sym("home/l", "x")), dest)  # fmt: skip
    assert (dest / "home").stat().st_uid == 1000
    assert (dest / "home" / "x").stat()[4:6] == (1234, 5678)


@pytest.mark.userland
def test_diff_id_covers_the_whole_stream(world: Path) -> None:
    blob = layer(f("a", b"a")) + bytes(10240)  # padding past the end-of-archive blocks
    result = unpack(blob, world / "dest")
    assert result.diff_id == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert result.entries == 1 and result.size == 1


@pytest.mark.userland
def test_later_entries_win(world: Path) -> None:
    dest = world / "dest"
    unpack(
        layer(
            d("merged"),
            f("merged/x", b"x"),
            d("merged", 0o700),  # a directory over a directory: merged, its mode the later one
            d("gone"),
            f("gone/y", b"y"),
            sym("gone/l", str(world / "victim")),
            f("gone", b"now a file"),  # a file over a directory: the directory is removed
            f("link", b"first"),
            hard("link2", "link"),
            f("link", b"second"),  # the name is replaced, not written through to link2
        ),
        dest,
    )
    assert (dest / "merged" / "x").read_bytes() == b"x"
    assert stat.S_IMODE((dest / "merged").stat().st_mode) == 0o700
    assert (dest / "gone").read_bytes() == b"now a file"
    assert (dest / "link2").read_bytes() == b"first"
    assert (dest / "link").read_bytes() == b"second"
    assert sorted(os.listdir(world / "victim")) == ["keep", "secret"]


def test_the_tar_s_xattrs_are_not_applied(world: Path) -> None:
    """pax SCHILY.xattr.*: overlayfs's own user.overlay.* would steer the mount."""
    info, data = f("x", b"x")
    info.pax_headers = {
        "SCHILY.xattr.user.overlay.redirect": "/etc",
        "SCHILY.xattr.user.overlay.opaque": "y",
    }
    dest = world / "dest"
    unpack(
        layer((info, data), d("dir", pax_headers={"SCHILY.xattr.user.overlay.opaque": "y"})), dest
    )
    assert os.listxattr(dest / "x") == [] and os.listxattr(dest / "dir") == []


def test_dest_is_not_followed(world: Path) -> None:
    (world / "dest").symlink_to(world / "victim")
    with pytest.raises(OSError):
        unpack_layer(io.BytesIO(layer(f("planted", b"pwned"))), str(world / "dest"))
    assert not (world / "victim" / "planted").exists()


def test_whiteouts_and_opaque(world: Path) -> None:
    dest = world / "dest"
    unpack(
        layer(
            d("etc"),
            f("etc/.wh.old"),
            f("etc/keep", b"k"),
            f("etc/.wh.keep"),  # a later whiteout wins over an earlier file
            d("var"),
            f("var/.wh..wh..opq"),
            f("var/new", b"n"),
            f(".wh..wh.plnk"),  # aufs metadata: skipped
        ),
        dest,
    )
    for path in ("etc/old", "etc/keep"):
        st = (dest / path).lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, path
    assert os.getxattr(dest / "var", "user.overlay.opaque") == b"y"
    assert (dest / "var" / "new").read_bytes() == b"n"
    assert sorted(os.listdir(dest)) == ["etc", "var"]
    assert not any(name.startswith(".wh.") for _, _, names in os.walk(dest) for name in names)


# -- the merged view: layers as overlay lowers, as a cell mounts them -------------

LOWER = layer(
    f("bin/tool", b"v1"),
    f("etc/passwd", b"root:x:0:0\n"),
    f("etc/removed", b"gone soon"),
    d("var/cache"),
    f("var/cache/a", b"a"),
    f("var/cache/b", b"b"),
    gz=True,
)
MIDDLE = layer(
    f("bin/tool", b"v2", 0o755),
    f("etc/.wh.removed"),
    f("var/cache/.wh..wh..opq"),
    f("var/cache/fresh", b"fresh"),
)
UPPER = layer(f("etc/passwd", b"root:x:0:0\nuser:x:1000:1000\n"), f("etc/.wh.missing"))

EXPECTED = {
    "bin/tool": "v2",
    "etc/passwd": "root:x:0:0\nuser:x:1000:1000\n",
    "var/cache/fresh": "fresh",
}

# Lists the merged view of lowers given as arguments (the topmost first), as
# JSON: {path: content} of the regular files, and the directories.
_MERGE = r"""
set -e
mnt=$1; shift
lowers=$(IFS=:; echo "$*")
mount -t overlay overlay -o "lowerdir=$lowers,userxattr" "$mnt"
cd "$mnt"
find . -mindepth 1 \( -type d -printf 'D %P\n' \) -o \( -type f -printf 'F %P\n' \)
"""


def merged_view(top: Path, lowers: list[Path], user: str | None = None) -> dict[str, str]:
    mnt = top / "mnt"
    mnt.mkdir(exist_ok=True)
    command = ["unshare", "-Urm", "sh", "-c", _MERGE, "sh", str(mnt), *map(str, lowers)]
    command = command if user is None else ["runuser", "-u", user, "--", *command]
    listing = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    view: dict[str, str] = {}
    for line in listing.splitlines():
        kind, path = line.split(" ", 1)
        view[path] = "<dir>" if kind == "D" else ""
    return view


def _check_merged(view: dict[str, str]) -> None:
    files = {path for path, kind in view.items() if kind != "<dir>"}
    assert files == set(EXPECTED), view  # removed: whiteout; var/cache/a, b: opaque


def test_layers_stacked_as_overlay_lowers(world: Path) -> None:
    lowers = []
    for i, blob in enumerate((LOWER, MIDDLE, UPPER)):
        unpack(blob, world / f"layer{i}")
        lowers.insert(0, world / f"layer{i}")
    _check_merged(merged_view(world, lowers))
    # The contents, read inside the same namespace.
    mnt = world / "mnt"
    script = _MERGE.replace("find .", "for f in bin/tool etc/passwd; do cat $f; echo; done; #")
    out = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script, "sh", str(mnt), *map(str, lowers)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out == "v2\nroot:x:0:0\nuser:x:1000:1000\n\n"
    # Control: without the whiteouts and the opaque mark, the lower files show.
    plain = world / "plain"
    plain.mkdir()
    (plain / "var" / "cache").mkdir(parents=True)
    view = merged_view(world, [plain, world / "layer0"])
    assert "etc/removed" in view and "var/cache/a" in view


# -- as an unprivileged user ------------------------------------------------------

# Run as the user, in a directory it owns: unpacks the layer files it is given,
# reports each one's outcome, and makes a 0/0 device by hand and a 1/3 one.
_AS_USER = r"""
import json, os, stat, sys
from sandbox.unpack import LayerError, UnpackLimits, unpack_layer
top = sys.argv[1]
report = {}
for name in sorted(os.listdir(os.path.join(top, "blobs"))):
    dest = os.path.join(top, name + ".d")
    os.mkdir(dest)
    try:
        with open(os.path.join(top, "blobs", name), "rb") as blob:
            result = unpack_layer(blob, dest, UnpackLimits(max_bytes=4 << 20))
        report[name] = ["ok", result.entries]
    except LayerError as error:
        report[name] = ["refused", str(error)]
try:
    os.mknod(os.path.join(top, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    report["mknod 1/3"] = "made"
except OSError as error:
    report["mknod 1/3"] = error.errno
os.mknod(os.path.join(top, "whiteout"), stat.S_IFCHR, os.makedev(0, 0))
report["mknod 0/0"] = "made"
print(json.dumps(report))
"""


def test_as_an_unprivileged_user(shared_test_user, layer_fs: Path) -> None:
    user = shared_test_user.pw_name
    top = Path(tempfile.mkdtemp(prefix="cellblock-unpack-user-", dir=layer_fs))
    try:
        top.chmod(0o755)
        (top / "victim").mkdir()
        (top / "victim" / "secret").write_bytes(b"secret\n")
        blobs = top / "blobs"
        blobs.mkdir()
        victim = str(top / "victim")
        hostile = {
            "absolute": layer(f(victim + "/planted", b"pwned")),
            "dotdot": layer(f("../victim/planted", b"pwned")),
            "symlink": layer(sym("a", victim), f("a/secret", b"pwned")),
            "hardlink": layer(hard("h", victim + "/secret"), f("h", b"pwned")),
            "device": layer(dev("null", 1, 3)),
            "bomb": _bomb(64 << 20, "files"),
        }
        good = {"layer0": LOWER, "layer1": MIDDLE, "layer2": UPPER}
        for name, blob in {**hostile, **good}.items():
            (blobs / name).write_bytes(blob)
        for path in [top, *top.rglob("*")]:
            os.chown(path, shared_test_user.pw_uid, shared_test_user.pw_gid, follow_symlinks=False)
        (top / "victim").chmod(0o777)  # writable by the user: only our rules protect it
        (top / "victim" / "secret").chmod(0o666)
        before = tree(top / "victim")
        run = subprocess.run(python_as(user, _AS_USER) + [str(top)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        for name in hostile:
            assert report[name][0] == "refused", (name, report[name])
        for name in good:
            assert report[name][0] == "ok", (name, report[name])
        assert tree(top / "victim") == before
        assert report["mknod 1/3"] == 1  # EPERM: no CAP_MKNOD
        assert report["mknod 0/0"] == "made"  # the whiteout device is anyone's (Linux >= 5.8)
        layer1 = top / "layer1.d"
        assert stat.S_ISCHR((layer1 / "etc" / "removed").lstat().st_mode)
        assert (layer1 / "etc" / "removed").lstat().st_uid == shared_test_user.pw_uid
        assert os.getxattr(layer1 / "var" / "cache", "user.overlay.opaque") == b"y"
        lowers = [top / "layer2.d", top / "layer1.d", top / "layer0.d"]
        (top / "mnt").mkdir()
        os.chown(top / "mnt", shared_test_user.pw_uid, shared_test_user.pw_gid)
        _check_merged(merged_view(top, lowers, user=user))
    finally:
        shutil.rmtree(top, ignore_errors=True)
