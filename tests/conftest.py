"""Shared fixtures: cells started as root and as an unprivileged user.

The rootless path is the main path, so every property test runs twice: once
through the in-process API as root (the test runner), once through the CLI as
an unprivileged user created here. Nothing is mocked: real namespaces, mounts,
seccomp and, where the host has them, cgroups.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Overridable so that two test runs on one machine do not fight over one user.
TEST_USER = os.environ.get("CELLBLOCK_TEST_USER", "cellblock-test")
TEST_USER_SHARED = f"{TEST_USER}-shared"  # no subordinate ids
VENV = Path(os.environ.get("CELLBLOCK_VENV", "/opt/cellblock/venv"))


def pytest_sessionstart(session: pytest.Session) -> None:
    # Warm and recycled cells as a user's process has them by default
    # (automatic); tests that need a setting choose it, and
    # warm_cells_automatic takes it back.
    os.environ.pop("CELLBLOCK_WARM", None)
    os.environ.pop("CELLBLOCK_RECYCLE", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run by anyone, the suite runs what needs no root (pure logic, and cells
    as that user); a test that needs root says so and is skipped. CI runs it
    all as root."""
    if os.geteuid() == 0:
        return
    for item in items:
        if item.get_closest_marker("needs_root"):
            item.add_marker(pytest.mark.skip(reason="needs root (run the suite as root)"))


def needs_root(what: str) -> None:
    """Skip the asking test unless this process is root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {what} (run the suite as root)")


@pytest.fixture(autouse=True)
def warm_cells_automatic() -> Iterator[None]:
    """Every test runs with warm and recycled cells as a user's long-lived
    process has them: automatic, so on (this process has run cells before;
    sandbox/warm.py). A test that chooses (keep_warm, recycle_cells) has its
    choice taken back after it."""
    from sandbox import warm

    yield
    if warm.recycle_setting() is not None:
        warm.recycle_cells(None)
    if warm.setting() is not None:
        warm.keep_warm(None)


def _make_test_user(name: str, subordinate_ids: bool) -> Iterator[pwd.struct_passwd]:
    """A throwaway unprivileged user (a system user: useradd gives it no
    subordinate ids), with a delegated cgroup subtree and, if asked, the range
    `cellblock setup --user` adds; removed at the end."""
    needs_root("it makes unprivileged users of its own")
    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )
        created = True
    from sandbox import userns
    from sandbox.cgroups import CgroupError
    from sandbox.cgroups.delegate import delegate, undelegate

    uid = pwd.getpwnam(name).pw_uid
    range_added = False
    if subordinate_ids:
        range_added = userns.add_subordinate_range(name) is not None
    elif userns.subordinate_range(uid) is not None:
        raise pytest.UsageError(f"test user {name} must have no subordinate id range")
    try:
        delegate(name)
    except CgroupError as error:  # no cgroups on this host: the limit tests will say so
        print(f"no cgroup delegation for {name}: {error}", file=sys.stderr)
    yield pwd.getpwnam(name)
    with contextlib.suppress(CgroupError):
        undelegate(name)
    if range_added:
        (uids, count), (gids, gcount) = userns.subordinate_range(uid)  # type: ignore[misc]
        subprocess.run(
            [
                "usermod",
                "--del-subuids",
                f"{uids}-{uids + count - 1}",
                "--del-subgids",
                f"{gids}-{gids + gcount - 1}",
                name,
            ],
            check=False,
        )
    if created:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="session")
def test_user() -> Iterator[pwd.struct_passwd]:
    """The unprivileged user of the main path, as `cellblock setup --user`
    leaves it: a delegated cgroup subtree and a range of subordinate ids (each
    cell's program runs as one of them)."""
    yield from _make_test_user(TEST_USER, subordinate_ids=True)


@pytest.fixture(scope="session")
def shared_test_user() -> Iterator[pwd.struct_passwd]:
    """An unprivileged user without subordinate ids: its cells' programs run
    as its own uid (the size-1 map), the fallback."""
    yield from _make_test_user(TEST_USER_SHARED, subordinate_ids=False)


def process_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, then the
    parent's pid), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def parent_of(pid: int) -> int:
    fields = process_stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[1])


def settle(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Whether `predicate` comes true within `timeout` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def children_of_this_process() -> list[int]:
    """Every process (zombies included) whose parent is this process, in pid order."""
    return children_of(os.getpid())


def children_of(parent: int) -> list[int]:
    """Every process (zombies included) whose parent is `parent`, in pid order."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := process_stat(entry)) and int(fields[1]) == parent:
            kids.append(int(entry))
    return sorted(kids)


def tree_without_init(into: Path) -> Path:
    """`into`, holding a copy of this checkout's sandbox/ and profiles/ but not
    its built init (cellblock-init): a tree whose init is missing, or is built
    there by the test."""
    for package in ("sandbox", "profiles"):
        shutil.copytree(
            REPO / package,
            into / package,
            ignore=shutil.ignore_patterns("cellblock-init", "__pycache__"),
        )
    return into


def python_in(tree: Path, code: str) -> subprocess.CompletedProcess:
    """`code` run by a fresh interpreter that imports `tree`'s sandbox (its
    output captured; an exit other than 0 raises)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        check=True,
    )


@contextlib.contextmanager
def busy_processes(cpu: int, count: int = 4) -> Iterator[None]:
    """`count` busy processes outside any cell, pinned to `cpu`, for the block:
    an overloaded machine (tests/test_cpuwait.py, test_service_recovery.py)."""
    busy = [
        subprocess.Popen(["taskset", "-c", str(cpu), "sh", "-c", "while :; do :; done"])
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def as_user(user: str, command: list[str]) -> list[str]:
    """`command` run as `user`, started where its workers would be.

    On cgroup v2 a process can only enter a cgroup it could reach through a
    common ancestor it may write, so (as systemd's Delegate=yes would) root
    places the process in the user's delegated subtree before switching to it.
    """
    from sandbox.cgroups import is_v2_host
    from sandbox.cgroups.delegate import delegated_path

    switch = ["runuser", "-u", user, "--", *command]
    if not is_v2_host():
        return switch
    procs = os.path.join(delegated_path(user)[0], "supervisor", "cgroup.procs")
    return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *switch]


def python_as(user: str, script: str) -> list[str]:
    """A Python `script` of this checkout, run by the venv's interpreter as `user`."""
    return as_user(user, ["env", f"PYTHONPATH={REPO}", str(VENV / "bin" / "python"), "-c", script])


def _user_can_read_repo(user: str) -> bool:
    probe = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-r", str(REPO / "sandbox" / "cell.py")],
        check=False,
    )
    return probe.returncode == 0


class CellRunner:
    """Runs cells one way: `root` in-process via sandbox.run (warm cells, as a
    long-lived caller has them by default, or cold ones: each cell made for its
    run), `user` via the CLI (one cold cell per process)."""

    def __init__(self, mode: str, user: pwd.struct_passwd | None, scratch: Path) -> None:
        self.mode = mode
        self.user = user
        self.scratch = scratch
        self.uid = 0 if user is None else user.pw_uid

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        copy_in: Mapping[str, bytes] | None = None,
        copy_out: tuple[str, ...] = (),
        **options: object,
    ) -> types.SimpleNamespace:
        if self.mode == "root":
            from sandbox import run

            result = run(argv, stdin=stdin, copy_in=copy_in, copy_out=copy_out, **options)
            data = result.to_dict()
            data["files"] = result.files
            return types.SimpleNamespace(**data)
        return self._run_as_user(argv, stdin, copy_in or {}, copy_out, options)

    def _run_as_user(self, argv, stdin, copy_in, copy_out, options) -> types.SimpleNamespace:
        assert self.user is not None
        work = Path(tempfile.mkdtemp(dir=self.scratch))
        os.chown(work, self.user.pw_uid, self.user.pw_gid)
        args = ["--json", "--out-dir", str(work / "out")]
        (work / "out").mkdir()
        os.chown(work / "out", self.user.pw_uid, self.user.pw_gid)
        if stdin is not None:
            (work / "stdin").write_bytes(stdin)
            args += ["--stdin", str(work / "stdin")]
        for index, (dest, data) in enumerate(copy_in.items()):
            src = work / f"in{index}"
            src.write_bytes(data)
            if data[:4] == b"\x7fELF" or data[:2] == b"#!":
                src.chmod(0o755)
            args += ["--copy-in", f"{src}:{dest}"]
        for path in copy_out:
            args += ["--copy-out", path]
        for key, value in options.items():
            if key == "env":
                for k, v in value.items():  # type: ignore[attr-defined]
                    args += ["--env", f"{k}={v}"]
            elif isinstance(value, bool):  # a switch
                args += [f"--{key.replace('_', '-')}"] if value else []
            elif isinstance(value, list | tuple):  # a repeatable flag: once per item
                for item in value:
                    args += [f"--{key.replace('_', '-')}", str(item)]
            else:
                args += [f"--{key.replace('_', '-')}", str(value)]
        if _user_can_read_repo(self.user.pw_name):
            command = [str(VENV / "bin" / "python"), "-m", "cellblock"]
            env = {"PYTHONPATH": str(REPO)}
        else:  # the checkout is private: use the copy installed into the venv
            command = [str(VENV / "bin" / "cellblock")]
            env = {}
        done = subprocess.run(
            as_user(
                self.user.pw_name,
                ["env", *[f"{k}={v}" for k, v in env.items()], *command, "run", *args, "--", *argv],
            ),
            capture_output=True,
            cwd="/",
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"cellblock run failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
            )
        data = json.loads(done.stdout)
        data["files"] = {
            p: (work / "out" / p).read_bytes() for p in copy_out if (work / "out" / p).is_file()
        }
        shutil.rmtree(work)
        return types.SimpleNamespace(**data)


@pytest.fixture(scope="session")
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cellblock-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


CELL_MODES = ("root", "root-cold", "user", "user-shared")
# The modes the `cell` fixture runs, all by default. scripts/test's cgroup v2
# VM (emulated, ~10x slower) runs `root` and `user` only: `root-cold` differs
# from `root` in how its cell is made (spawned for the run, not renewed after
# the last) and `user-shared` from `user` in the uid map, neither in what
# cgroup v2 or Debian's kernel is asked to do.
_cell_modes = os.environ.get("CELLBLOCK_TEST_CELL_MODES", ",".join(CELL_MODES)).split(",")
if not _cell_modes or set(_cell_modes) - set(CELL_MODES):
    raise pytest.UsageError(f"CELLBLOCK_TEST_CELL_MODES: a comma-separated subset of {CELL_MODES}")


@pytest.fixture(params=_cell_modes)
def cell(request: pytest.FixtureRequest, scratch_dir: Path) -> CellRunner:
    """A cell runner: as root (in-process API) with recycled cells (what a
    long-lived caller has by default: each renewed by its init after a run,
    sandbox/warm.py) and with cold ones (each spawned by the caller for its
    run), and unprivileged (CLI) with subordinate ids (the main path) and
    without (the program runs as the user's own uid)."""
    if request.param in ("root", "root-cold"):
        needs_root("it runs cells as root")
        import sandbox

        sandbox.keep_warm(request.param == "root")  # taken back after the test
        sandbox.recycle_cells(request.param == "root")
        return CellRunner("root", None, scratch_dir)
    if not (VENV / "bin" / "python").exists():
        pytest.fail(f"no venv at {VENV}: run scripts/install first (scripts/test does)")
    user = request.getfixturevalue("test_user" if request.param == "user" else "shared_test_user")
    return CellRunner(request.param, user, scratch_dir)


@pytest.fixture(scope="session")
def cc(scratch_dir: Path):
    """Compile a C program once per session; returns the binary's bytes."""
    cache: dict[str, bytes] = {}

    def compile_c(source: str, *flags: str) -> bytes:
        key = source + "\0".join(flags)
        if key not in cache:
            src = scratch_dir / f"prog{len(cache)}.c"
            out = scratch_dir / f"prog{len(cache)}"
            src.write_text(source)
            subprocess.run(["gcc", "-O1", "-o", str(out), str(src), *flags], check=True)
            cache[key] = out.read_bytes()
        return cache[key]

    return compile_c


PYTHON = sys.executable


def under_a_refusing_profile(refused: dict[str, int | None], action) -> str:
    """Run `action` in a child whose own seccomp filter answers EPERM to the
    calls in `refused` (name -> a flag of argument 0 that must be set, or None
    for every call): what a container's profile does to a worker."""
    import errno

    import pyseccomp

    from sandbox import libc

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        try:
            libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
            profile = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
            for name, flag in refused.items():
                args = [pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag)] if flag else []
                profile.add_rule(pyseccomp.ERRNO(errno.EPERM), name, *args)
            profile.load()
            os.write(write_end, str(action()).encode())
        except BaseException as error:  # noqa: BLE001 - report it
            os.write(write_end, f"child failed: {error!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    return report


# --- attack programs, and running them bare on the host ------------------------------

PROGRAMS = Path(__file__).resolve().parent / "programs"


@pytest.fixture(scope="session")
def program(cc) -> Callable[[str], bytes]:
    """program("adv_x") -> the compiled bytes of tests/programs/adv_x.c (compiled once)."""

    def build(name: str) -> bytes:
        return cc((PROGRAMS / f"{name}.c").read_text())

    return build


class Bare:
    """Runs an attack program directly on the host, as root or as the test user."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def install(self, binary: bytes) -> str:
        path = self.dir / f"p{hashlib.sha256(binary).hexdigest()[:16]}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(binary)
            tmp.chmod(0o755)
            tmp.rename(path)
        return str(path)

    def run(
        self,
        binary: bytes,
        *args: str,
        as_user: bool | str = False,
        prefix: tuple[str, ...] = (),
        cwd: str | Path | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        command = [*prefix, self.install(binary), *args]
        if as_user:  # True: the test user; or a user's name
            user = TEST_USER if as_user is True else as_user
            command = ["runuser", "-u", user, "--", *command]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=cwd or self.dir,
            pass_fds=pass_fds,
            timeout=30,
            check=False,
        )


@pytest.fixture(scope="session")
def bare(scratch_dir: Path, test_user) -> Bare:
    directory = scratch_dir / "bare"
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    return Bare(directory)


@pytest.fixture(scope="session")
def layer_fs() -> Iterator[Path]:
    """Where tests unpack image layers: the temp directory if its file system
    holds layers (imagestore.layers_unsupported), else (as root) an ext4 image
    mounted on a loop device (scripts/vm-test's /tmp is an overlay; Debian
    12's tmpfs has no user xattrs)."""
    from sandbox.imagestore import layers_unsupported

    base = tempfile.gettempdir()
    why = layers_unsupported(base)
    if why is None:
        yield Path(base)
        return
    needs_root(f"{base} cannot hold layers ({why}) and only root can mount one that can")
    top = Path(tempfile.mkdtemp(prefix="cellblock-layer-fs-"))
    top.chmod(0o755)  # the unprivileged tests' users go through it
    image, mnt = top / "ext4.img", top / "mnt"
    mnt.mkdir()
    with open(image, "wb") as out:
        out.truncate(2 << 30)  # sparse: what the tests write, not 2 GiB
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    # mount(8) does not load the loop driver (a VM's fresh kernel may not have it yet).
    subprocess.run(["modprobe", "loop"], check=False, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        mnt.chmod(0o1777)
        assert layers_unsupported(str(mnt)) is None
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(top, ignore_errors=True)
