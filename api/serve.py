"""`cellblock serve`: the API, and (with no REDIS_URL) its own Redis and workers.

The embedded default, one command on one machine:

    cellblock serve [--host 127.0.0.1] [--port 8000] [--cells N] [--pin-cpus] [--run-dir DIR]

starts a private redis-server (Debian's package) listening only on a unix
socket in the run directory (no TCP port; append-only file on, so a restart
loses nothing queued), then `cellblock worker` as a child process (N workers,
one cell each), then the API. On SIGINT/SIGTERM it stops the API, lets the
workers finish their jobs for a short grace, and stops Redis. Every child
gets PDEATHSIG, so even a SIGKILLed `serve` leaves nothing running.

With REDIS_URL set it serves the API alone; workers are `cellblock worker`
processes anywhere that reach the same Redis.

Without API keys the API listens on loopback only (refused otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worker.supervisor import add_pin_argument, cpu_slots, usable_cpus


def default_run_dir() -> Path:
    """Where the embedded Redis keeps its socket and its append-only file."""
    if os.geteuid() == 0:
        return Path("/var/lib/cellblock/serve")
    state = os.environ.get("XDG_STATE_HOME") or (
        os.path.join(os.environ["HOME"], ".local", "state") if os.environ.get("HOME") else ""
    )
    if state:
        path = Path(state) / "cellblock"
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if os.access(path, os.W_OK):
                return path
    # No usable home (system users such as nobody): a private directory in /tmp.
    return Path(tempfile.gettempdir()) / f"cellblock-{os.geteuid()}"


def _pdeathsig(signum: int):
    def arm() -> None:
        from sandbox import libc

        libc.prctl(libc.PR_SET_PDEATHSIG, signum)

    return arm


class EmbeddedRedis:
    """A private redis-server on a unix socket, for the lifetime of `serve`."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.socket = run_dir / "redis.sock"
        self.process: subprocess.Popen | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 15.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        self._lock_fd = os.open(self.dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another `cellblock serve` uses {self.dir} (--run-dir)") from None
        if len(str(self.socket)) > 100:
            raise RuntimeError(f"run directory path too long for a unix socket: {self.dir}")
        config = self.dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",  # no TCP at all
                    f"unixsocket {self.socket}",
                    "unixsocketperm 700",
                    f"dir {self.dir}",
                    "appendonly yes",  # a queued submission survives a restart
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    f"logfile {self.dir / 'redis.log'}",
                    "",
                ]
            )
        )
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.process = subprocess.Popen(
            ["redis-server", str(config)],
            stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig(signal.SIGTERM),  # noqa: PLW1509 - no threads yet
        )
        import redis

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                log = self.dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited ({self.process.returncode}): {tail}")
            with contextlib.suppress(redis.RedisError, OSError):
                if self.socket.exists() and redis.Redis(unix_socket_path=str(self.socket)).ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # Redis flushes its append-only file and exits
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def start_workers(
    url: str, cells: int | None, log_level: str, grace: float, pin_cpus: bool = False
) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env["CELLBLOCK_DIE_WITH_PARENT"] = "1"
    command = [
        sys.executable,
        "-c",
        "import sys; from cellblock.cli import main; sys.exit(main())",
        "worker",
        "--redis-url",
        url,
        "--log-level",
        log_level,
        "--grace",
        str(grace),
    ]
    if cells:
        command += ["--cells", str(cells)]
    if pin_cpus:
        command.append("--pin-cpus")
    return subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig(signal.SIGTERM)
    )  # noqa: PLW1509


def stop_workers(process: subprocess.Popen, grace: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP API (and, without REDIS_URL, its own Redis and workers)",
        description="Serve the HTTP API of docs/contract.md (section 4). Without REDIS_URL it also "
        "starts a private Redis (unix socket, append-only file) and workers, and stops them "
        "on exit; with REDIS_URL it serves the API alone.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; beyond loopback needs CELLBLOCK_API_KEYS)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--cells",
        type=int,
        metavar="N",
        help="embedded workers, one cell each (default: one per CPU this process may use)",
    )
    add_pin_argument(p)
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        help="embedded Redis's directory (default: /var/lib/cellblock/serve as "
        "root, ~/.local/state/cellblock otherwise)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="S",
        help="on exit, seconds running jobs may take to finish (default 10)",
    )
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .settings import Settings

    settings = Settings.from_env()
    if not settings.api_keys and not _loopback(args.host):
        print(
            f"cellblock serve: error: no API keys configured: refusing to listen on "
            f"{args.host}; set CELLBLOCK_API_KEYS (or CELLBLOCK_API_KEYS_FILE), or use "
            "--host 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    embedded: EmbeddedRedis | None = None
    workers: subprocess.Popen | None = None

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(0)

    # uvicorn stops on SIGINT/SIGTERM, restores the handlers it found, then
    # raises the signal again: with these, that unwinds into the `finally`
    # below (stop the workers, then Redis) instead of killing this process.
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    try:
        if settings.redis_url and args.pin_cpus:
            print(
                "cellblock serve: error: --pin-cpus places the embedded workers; with "
                "REDIS_URL there are none here: give it to `cellblock worker`",
                file=sys.stderr,
            )
            return 2
        if not settings.redis_url:
            if args.cells is not None and args.cells < 1:
                print("cellblock serve: error: --cells must be at least 1", file=sys.stderr)
                return 2
            if args.pin_cpus:
                try:
                    cpu_slots(args.cells or usable_cpus())
                except ValueError as error:
                    print(f"cellblock serve: error: {error}", file=sys.stderr)
                    return 2
            embedded = EmbeddedRedis(Path(args.run_dir) if args.run_dir else default_run_dir())
            try:
                embedded.start()
            except (RuntimeError, OSError) as error:
                print(f"cellblock serve: error: {error}", file=sys.stderr)
                return 1
            workers = start_workers(
                embedded.url, args.cells, args.log_level, args.grace, args.pin_cpus
            )
            settings = Settings.from_env(redis_url=embedded.url)
            where = (
                f"its own Redis at {embedded.socket} and {args.cells or usable_cpus()} worker(s)"
            )
        else:
            where = "Redis at REDIS_URL (workers: `cellblock worker`)"
        print(
            f"cellblock serve: http://{args.host}:{args.port} with {where}",
            file=sys.stderr,
            flush=True,
        )
        app = create_app(settings)
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.log_level in ("debug", "info"),
        )
        return 0
    finally:
        if workers is not None:
            stop_workers(workers, args.grace)
        if embedded is not None:
            embedded.stop()
