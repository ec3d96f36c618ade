"""Helpers of the service tests: a real redis-server, real workers, a real HTTP server.

Nothing is mocked: Redis is Debian's redis-server on a unix socket in a temp
dir (no TCP port, so parallel test runs never collide), workers are
`cellblock worker` processes (as the unprivileged test user: the rootless
path is the main one), and the API is uvicorn serving api.app on a free
loopback port in a thread of the test process (the API never forks cells).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("CELLBLOCK_VENV", "/opt/cellblock/venv"))

# Short leases so that recovery tests take seconds, not minutes.
FAST_TIMING = {
    "CELLBLOCK_LEASE": "4",
    "CELLBLOCK_LEASE_RENEW": "1",
    "CELLBLOCK_REAP_INTERVAL": "1",
    "CELLBLOCK_LIMBO": "4",
    "CELLBLOCK_SELFCHECK_INTERVAL": "3600",
}


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server on a unix socket (or also TCP on given addresses)."""

    def __init__(
        self,
        directory: Path,
        bind: tuple[str, ...] = (),
        port: int = 0,
        appendfsync: str = "always",
    ) -> None:
        self.dir = directory
        self.appendfsync = appendfsync
        self.socket = directory / "redis.sock"
        self.bind = bind
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # the workers run as another user
        lines = [
            f"port {self.port if self.bind else 0}",
            f"unixsocket {self.socket}",
            "unixsocketperm 777",
            f"dir {self.dir}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            'save ""',
            "daemonize no",
            f"logfile {self.dir / 'redis.log'}",
        ]
        if self.bind:
            lines += [f"bind {' '.join(self.bind)}", "protected-mode no"]
        (self.dir / "redis.conf").write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            ["redis-server", str(self.dir / "redis.conf")],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        wait_for(self._ready, 10, "redis-server")
        return self

    def _ready(self) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):
            return bool(self.client().ping())
        return False

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), db=db)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def worker_command(url: str, cells: int, user: str | None) -> list[str]:
    """`cellblock worker` from this checkout, as `user` (placed in its cgroup) or as root."""
    python = str(VENV / "bin" / "python") if user else sys.executable
    command = [
        python,
        "-c",
        "import sys; from cellblock.cli import main; sys.exit(main())",
        "worker",
        "--redis-url",
        url,
        "--cells",
        str(cells),
        "--grace",
        "3",
        "--log-level",
        "warning",
    ]
    if user is None:
        return command
    from conftest import as_user

    return as_user(
        user,
        [
            "env",
            f"PYTHONPATH={REPO}",
            "CELLBLOCK_DIE_WITH_PARENT=1",
            *[f"{k}={v}" for k, v in FAST_TIMING.items()],
            *command,
        ],
    )


class Workers:
    """A `cellblock worker` supervisor with `cells` worker processes."""

    def __init__(
        self,
        url: str,
        cells: int = 1,
        user: str | None = None,
        prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        environment = {
            **os.environ,
            **FAST_TIMING,
            "PYTHONPATH": str(REPO),
            "CELLBLOCK_DIE_WITH_PARENT": "1",
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [*(prefix or []), *worker_command(url, cells, user)],
            cwd="/",
            env=environment,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.url = url

    def worker_pids(self) -> list[int]:
        """The worker processes (the supervisor's python children, whoever started it)."""
        return [p for p in descendants(self.process.pid) if _is_rq_worker(p)]

    def stop(self) -> None:
        if self.process.poll() is None:
            # The supervisor is the last process of the runuser/sh chain; signal the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _die_with_parent() -> None:
    """If pytest dies, so does the chain that runs the workers (they follow it)."""
    from sandbox import libc

    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)


def _is_rq_worker(pid: int) -> bool:
    try:
        return b"worker.rq_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (through /proc/*/task/*/children)."""
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        for task in (
            Path(f"/proc/{current}/task").glob("*")
            if Path(f"/proc/{current}/task").exists()
            else []
        ):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    frontier.append(int(child))
    return found


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Host:
    """A "machine": a network namespace joined to the root namespace by a veth pair
    (198.18.<index>.1 outside, where Redis listens; 198.18.<index>.2 inside). Root only."""

    def __init__(self, index: int) -> None:
        tag = f"{os.getpid() % 100000}{index}"
        self.ns = f"cbscale-{tag}"
        self.outer, self.inner = f"cbh{tag}", f"cbn{tag}"
        self.redis_address = f"198.18.{index}.1"
        self.address = f"198.18.{index}.2"

    def create(self) -> Host:
        ip("netns", "add", self.ns)
        ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        ip("link", "set", self.inner, "netns", self.ns)
        ip("addr", "add", f"{self.redis_address}/24", "dev", self.outer)
        ip("link", "set", self.outer, "up")
        ip("-n", self.ns, "addr", "add", f"{self.address}/24", "dev", self.inner)
        ip("-n", self.ns, "link", "set", self.inner, "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        return self

    def prefix(self) -> list[str]:
        """A command prefix that runs a process on this host. `nsenter --net`, not `ip netns
        exec`: that also remounts /sys, hiding /sys/fs/cgroup from the workers' cells."""
        return ["nsenter", f"--net=/run/netns/{self.ns}"]

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.outer], check=False, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """uvicorn serving `app` on 127.0.0.1:<free port>, in a thread of this process."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "uvicorn")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def scratch(prefix: str) -> Path:
    """A short temp dir (unix socket paths are limited to 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def scratch_redis(prefix: str):
    """A redis-server of its own in a scratch directory, removed afterwards."""
    directory = scratch(prefix)
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()
        remove(directory)


@contextlib.contextmanager
def live_service(prefix: str, user: str, timing, **settings: object):
    """A whole service for a test module: its own Redis, two workers as `user`,
    and the API (Settings.from_env(**settings)) once both workers are live.
    Yields the ApiServer, with `redis_url` set (for a second API on the queue)."""
    from api.app import create_app
    from api.settings import Settings
    from worker.store import Store

    directory = scratch(prefix)
    server = RedisServer(directory).start()
    workers = Workers(server.url, cells=2, user=user)
    api = ApiServer(create_app(Settings.from_env(redis_url=server.url, **settings), timing))
    try:
        api.start()
        store = Store.from_url(server.url, timing)
        wait_for(lambda: len(store.workers()) == 2, 60, "two live workers")
        api.redis_url = server.url  # type: ignore[attr-defined]
        yield api
    finally:
        api.stop()
        workers.stop()
        server.stop()
        remove(directory)
