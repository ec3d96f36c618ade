"""sandbox/seccomp_cache.py: compiled programs kept on disk, trusted only when safe.

Each rule of the cache has its attack: a program planted (an allow-all filter,
well formed) or damaged, shown to be loaded where the rule does not stand in
the way (the control: the same bytes in a directory and file that are ours)
and refused where it does.
"""

from __future__ import annotations

import os
import pwd
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import seccomp, seccomp_cache

REPO = Path(__file__).resolve().parent.parent
ALLOW_ALL = struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)  # BPF_RET|BPF_K SECCOMP_RET_ALLOW
KEY = seccomp_cache.make_key(b"profile", b"{}")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache directory of this test's own, for compile_profile too; the
    in-process memo emptied so that every compile_profile asks the disk."""
    directory = tmp_path / "cache"
    monkeypatch.setenv(seccomp_cache.ENVIRONMENT, str(directory))
    seccomp._cache.clear()
    yield directory
    seccomp._cache.clear()


def _nobody() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root: makes files owned by another user")
    return pwd.getpwnam("nobody")


def _plant(directory: Path, key: str = KEY, bpf: bytes = ALLOW_ALL) -> Path:
    """A well-formed entry, as store() writes it."""
    fd = seccomp_cache.open_directory(str(directory))
    assert fd is not None
    try:
        seccomp_cache.store(fd, key, bpf)
    finally:
        os.close(fd)
    return directory / f"{key}.bpf"


def _load(directory: Path, key: str = KEY) -> bytes | None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return seccomp_cache.load(fd, key)
    finally:
        os.close(fd)


def test_directory_is_made_owner_only(tmp_path: Path) -> None:
    fd = seccomp_cache.open_directory(str(tmp_path / "a" / "b"))
    assert fd is not None
    os.close(fd)
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700


def test_default_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(seccomp_cache.ENVIRONMENT, raising=False)
    if os.geteuid() == 0:
        assert seccomp_cache.default_directory() == "/var/cache/cellblock/seccomp"
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
        assert seccomp_cache.default_directory() == "/somewhere/cellblock/seccomp"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG spec says
        monkeypatch.setenv("HOME", "/home/x")
        assert seccomp_cache.default_directory() == "/home/x/.cache/cellblock/seccomp"
    monkeypatch.setenv(seccomp_cache.ENVIRONMENT, "")
    assert seccomp_cache.default_directory() is None


def test_miss_then_hit(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = seccomp.compile_profile("default")
    entries = list(cache_dir.iterdir())
    assert len(entries) == 1 and entries[0].name.endswith(".bpf")
    assert entries[0].stat().st_mode & 0o777 == 0o600

    # A hit compiles nothing: the compiler is not even asked.
    from sandbox import seccomp_compiler

    def refuse(*_: object) -> bytes:
        raise AssertionError("compiled on a cache hit")

    monkeypatch.setattr(seccomp_compiler, "compile_json", refuse)
    seccomp._cache.clear()
    assert seccomp.compile_profile("default") == compiled


def test_a_hit_imports_no_pyseccomp_and_runs_no_ldconfig(cache_dir: Path) -> None:
    # In a new process, as `cellblock run` is: the first compiles (and imports
    # pyseccomp, whose import runs ldconfig), the second is served by the cache.
    script = (
        "import sys\n"
        "from sandbox import seccomp\n"
        "seccomp.compile_profile('default')\n"
        "print('pyseccomp' in sys.modules, 'ctypes.util' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def imported() -> str:
        return subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert imported() == "True True"  # control: a miss compiles
    assert imported() == "False False"


def test_a_profile_edit_changes_the_key(cache_dir: Path, tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    text = (REPO / "profiles" / "seccomp" / "default.json").read_text()
    profile.write_text(text)
    seccomp.compile_profile(str(profile))
    profile.write_text(text.replace('"SCMP_ACT_ERRNO"', '"SCMP_ACT_ERRNO" ', 1))  # one space more
    seccomp.compile_profile(str(profile))
    assert len(list(cache_dir.glob("*.bpf"))) == 2
    assert seccomp._cache_key(b"{}", True) != seccomp._cache_key(b"{} ", True)


@pytest.mark.parametrize(
    "part",
    ["_compiler_source", "_libseccomp_version", "machine", "release", "variant"],
)
def test_the_key_covers_what_the_program_depends_on(
    part: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = seccomp._cache_key(b"{}", True)
    if part == "_compiler_source":
        monkeypatch.setattr(seccomp, part, lambda: b"another compiler")
    elif part == "_libseccomp_version":
        monkeypatch.setattr(seccomp, part, lambda: "9.9.9")
    elif part == "variant":  # sockets allowed, for a caller whose filter has a listener
        assert seccomp._cache_key(b"{}", False) not in (before, None)
        return
    else:
        real = os.uname()
        fields = {name: getattr(real, name) for name in ("sysname", "nodename", "release")}
        fields |= {"version": real.version, "machine": real.machine, part: "other"}
        fake = os.uname_result(
            (
                fields["sysname"],
                fields["nodename"],
                fields["release"],
                fields["version"],
                fields["machine"],
            )
        )
        monkeypatch.setattr(os, "uname", lambda: fake)
    assert seccomp._cache_key(b"{}", True) not in (before, None)


def test_the_notify_action_is_the_librarys() -> None:
    import pyseccomp

    assert pyseccomp.NOTIFY == seccomp.RET_USER_NOTIF


# ---------------------------------------------------------------------------
# What is not trusted


def test_a_tampered_entry_is_not_loaded(cache_dir: Path) -> None:
    compiled = seccomp.compile_profile("default")
    (entry,) = cache_dir.glob("*.bpf")
    key = entry.name.removesuffix(".bpf")
    assert _load(cache_dir, key) == compiled  # control: the untampered entry is used

    data = bytearray(entry.read_bytes())
    data[-1] ^= 0xFF  # one bit of one instruction
    entry.write_bytes(bytes(data))
    assert _load(cache_dir, key) is None
    # compile_profile recompiles it, and puts the whole entry back.
    seccomp._cache.clear()
    assert seccomp.compile_profile("default") == compiled
    assert _load(cache_dir, key) == compiled


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-8],  # truncated by one instruction
        lambda data: data[: len(data) // 2],
        lambda data: b"",
        lambda data: data.replace(b"cellblock-seccomp-cache 1", b"cellblock-seccomp-cache 2"),
        lambda data: data + ALLOW_ALL,  # an instruction appended
    ],
)
def test_a_damaged_entry_is_a_miss(cache_dir: Path, damage: object) -> None:
    entry = _plant(cache_dir)
    assert _load(cache_dir) == ALLOW_ALL  # control
    entry.write_bytes(damage(entry.read_bytes()))  # type: ignore[operator]
    assert _load(cache_dir) is None


def test_an_entry_filed_under_another_key_is_not_loaded(cache_dir: Path) -> None:
    other = seccomp_cache.make_key(b"profile", b"another")
    entry = _plant(cache_dir, other)
    assert _load(cache_dir, other) == ALLOW_ALL  # control
    entry.rename(cache_dir / f"{KEY}.bpf")
    assert _load(cache_dir) is None


@pytest.mark.parametrize("mode", [0o720, 0o702, 0o777])
def test_a_directory_writable_by_others_is_not_used(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "cache"
    _plant(directory)
    fd = seccomp_cache.open_directory(str(directory))
    assert fd is not None and seccomp_cache.load(fd, KEY) == ALLOW_ALL  # control
    os.close(fd)
    directory.chmod(mode)
    assert seccomp_cache.open_directory(str(directory)) is None


def test_a_directory_owned_by_another_user_is_not_used(tmp_path: Path) -> None:
    nobody = _nobody()
    directory = tmp_path / "cache"
    _plant(directory)
    fd = seccomp_cache.open_directory(str(directory))
    assert fd is not None  # control
    os.close(fd)
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    assert seccomp_cache.open_directory(str(directory)) is None


def test_a_symlinked_directory_is_not_used(tmp_path: Path) -> None:
    real = tmp_path / "real"
    _plant(real)
    fd = seccomp_cache.open_directory(str(real))
    assert fd is not None  # control: the directory it points to is fine
    os.close(fd)
    (tmp_path / "link").symlink_to(real)
    assert seccomp_cache.open_directory(str(tmp_path / "link")) is None


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_an_entry_writable_by_others_is_not_loaded(tmp_path: Path, mode: int) -> None:
    entry = _plant(tmp_path / "cache")
    assert _load(tmp_path / "cache") == ALLOW_ALL  # control
    entry.chmod(mode)
    assert _load(tmp_path / "cache") is None


def test_an_entry_owned_by_another_user_is_not_loaded(tmp_path: Path) -> None:
    nobody = _nobody()
    entry = _plant(tmp_path / "cache")
    assert _load(tmp_path / "cache") == ALLOW_ALL  # control
    os.chown(entry, nobody.pw_uid, nobody.pw_gid)
    assert _load(tmp_path / "cache") is None


def test_a_symlinked_entry_is_not_loaded(tmp_path: Path) -> None:
    entry = _plant(tmp_path / "cache")
    elsewhere = tmp_path / "elsewhere.bpf"
    entry.rename(elsewhere)
    (tmp_path / "cache" / entry.name).symlink_to(elsewhere)
    assert _load(tmp_path / "cache") is None
    elsewhere.rename(entry)  # control: the same file in its place
    assert _load(tmp_path / "cache") == ALLOW_ALL


def test_a_fifo_in_an_entrys_place_does_not_hang(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    _plant(directory).unlink()
    os.mkfifo(directory / f"{KEY}.bpf", 0o600)
    assert _load(directory) is None


def test_a_cache_not_to_be_used_only_means_compiling(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir.mkdir(mode=0o777)
    cache_dir.chmod(0o777)
    assert seccomp.compile_profile("default")  # compiled, as without a cache
    assert not list(cache_dir.iterdir())  # and nothing written where it is not safe
    monkeypatch.setenv(seccomp_cache.ENVIRONMENT, "")  # off
    seccomp._cache.clear()
    assert seccomp.compile_profile("default")
