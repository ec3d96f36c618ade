"""`cellblock serve`: the embedded default (its own Redis on a unix socket, its own workers)
as an unprivileged user, a clean stop, no strays even when SIGKILLed, and REDIS_URL mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from service_support import (
    FAST_TIMING,
    REPO,
    VENV,
    RedisServer,
    descendants,
    free_port,
    remove,
    scratch,
    wait_for,
)


def serve(
    user: str | None,
    port: int,
    run_dir: Path,
    env: dict[str, str] | None = None,
    cells: int = 1,
    options: tuple[str, ...] = (),
):
    from conftest import as_user

    python = str(VENV / "bin" / "python") if user else sys.executable
    command = [
        "env",
        f"PYTHONPATH={REPO}",
        *[f"{k}={v}" for k, v in FAST_TIMING.items()],
        *[f"{k}={v}" for k, v in (env or {}).items()],
        python,
        "-c",
        "import sys; from cellblock.cli import main; sys.exit(main())",
        "serve",
        "--port",
        str(port),
        "--run-dir",
        str(run_dir),
        "--cells",
        str(cells),
        "--grace",
        "2",
        *options,
    ]
    if user:
        command = as_user(user, command)
    return subprocess.Popen(command, cwd="/", stdin=subprocess.DEVNULL, start_new_session=True)


def serve_pid(launcher: subprocess.Popen) -> int:
    """The `cellblock serve` process itself (below sh/runuser when started as a user)."""

    def find():
        for pid in [launcher.pid, *descendants(launcher.pid)]:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"python" in argv[0] and b"serve" in argv:
                return pid
        return None

    return wait_for(find, 10, "the serve process")


def alive(pids: list[int]) -> list[int]:
    living = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.append(pid)
    return living


def healthy(url: str):
    try:
        response = httpx.get(f"{url}/v1/health", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


@pytest.fixture
def run_dir(test_user):
    directory = scratch("cb-serve-")
    os.chown(directory, test_user.pw_uid, test_user.pw_gid)
    yield directory
    remove(directory)


def test_embedded_serve_as_a_user_judges_and_stops_cleanly(run_dir, test_user):
    port = free_port()
    launcher = serve(test_user.pw_name, port, run_dir / "state")
    url = f"http://127.0.0.1:{port}"
    try:
        health = wait_for(lambda: healthy(url), 60, "the embedded service")
        assert health["workers"]["alive"] == 1 and health["selfcheck"]["contained"]
        response = httpx.post(
            f"{url}/v1/submissions?wait=true",
            timeout=60,
            json={
                "language": "python3",
                "source": "print(sum(map(int, input().split())))",
                "tests": [{"input": "2 3", "output": "5"}],
            },
        )
        assert response.status_code == 200 and response.json()["result"]["verdict"] == "AC"
        # Redis: a unix socket owned by the user, no TCP port, append-only file on.
        socket_path = run_dir / "state" / "redis.sock"
        assert socket_path.stat().st_uid == test_user.pw_uid
        client = redis.Redis(unix_socket_path=str(socket_path))
        assert client.config_get("port")["port"] == "0"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        server = serve_pid(launcher)
        family = descendants(server)
        assert len(family) >= 3  # redis-server, the worker supervisor, its worker
        os.kill(server, signal.SIGTERM)
        wait_for(lambda: not alive([server, *family]), 30, "serve and its children to stop")
    finally:
        stop(launcher)


def test_a_killed_serve_leaves_nothing_running(run_dir, test_user):
    port = free_port()
    launcher = serve(test_user.pw_name, port, run_dir / "state")
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), 60, "the embedded service")
        server = serve_pid(launcher)
        family = descendants(server)
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: not alive(family), 30, "serve's children to follow it")
    finally:
        stop(launcher)


def test_with_redis_url_serve_is_the_api_alone(run_dir):
    server = RedisServer(run_dir / "redis").start()
    port = free_port()
    launcher = serve(None, port, run_dir / "unused", env={"REDIS_URL": server.url})
    try:
        url = f"http://127.0.0.1:{port}"
        response = wait_for(lambda: _get(f"{url}/v1/health"), 30, "the API")
        assert response.status_code == 503  # no worker yet: `cellblock worker` does the work
        assert response.json()["workers"]["alive"] == 0
        children = [
            p
            for p in descendants(launcher.pid)
            if b"redis-server" in Path(f"/proc/{p}/cmdline").read_bytes()
            or b"worker" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert children == []
        assert not (run_dir / "unused").exists()
    finally:
        stop(launcher)
        server.stop()


AFFINITY = "import os; print(*sorted(os.sched_getaffinity(0)))"


def _cpus(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


def _is_worker(pid: int) -> bool:
    """Whether `pid` runs the worker (a child just forked still runs the supervisor)."""
    try:
        return b"worker.rq_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _workers(server: int) -> list[int]:
    """The worker processes: the children of serve's `cellblock worker`
    (their cells' inits may show a worker's command line too)."""
    for pid in descendants(server):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"worker" in argv and b"--redis-url" in argv:
            return sorted(
                int(child)
                for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()
            )
    return []


@pytest.mark.parametrize("pinned", [True, False], ids=["pin-cpus", "control"])
def test_pin_cpus_gives_each_worker_and_its_cells_a_cpu_of_its_own(run_dir, test_user, pinned):
    """--pin-cpus: worker i, its cell maker, its cells' inits and its programs
    run on the i-th usable CPU, and a worker started again in a dead one's
    place gets its CPU. Without it (the control), programs see every CPU."""
    usable = sorted(os.sched_getaffinity(0))
    cells = min(2, len(usable))
    port = free_port()
    options = ("--pin-cpus",) if pinned else ()
    launcher = serve(test_user.pw_name, port, run_dir / "state", cells=cells, options=options)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: (healthy(url) or {}).get("workers", {}).get("alive") == cells,
            60,
            "the embedded service's workers",
        )
        body = {"language": "python3", "source": AFFINITY}
        seen = set()
        for _ in range(3 * cells):
            reply = httpx.post(f"{url}/v1/submissions?wait=true", json=body, timeout=60).json()
            seen.add(reply["result"]["tests"][0]["stdout"].strip())
        server = serve_pid(launcher)
        workers = _workers(server)
        assert len(workers) == cells
        if not pinned:
            assert seen == {" ".join(map(str, usable))}
            return
        assert all(len(cpus.split()) == 1 for cpus in seen), seen
        placed = {frozenset(_cpus(w)) for w in workers}
        assert placed == {frozenset({cpu}) for cpu in usable[:cells]}
        for worker in workers:  # its maker, inits (and their programs) inherit its CPU
            assert all(_cpus(p) == _cpus(worker) for p in descendants(worker)), worker
        victim, cpu = workers[-1], _cpus(workers[-1])
        os.kill(victim, signal.SIGKILL)
        replacement = wait_for(  # once it has exec'd: its CPU is set just before
            lambda: [p for p in _workers(server) if p not in workers and _is_worker(p)],
            30,
            "a worker in the dead one's place",
        )
        assert [_cpus(p) for p in replacement] == [cpu]
    finally:
        stop(launcher)


def test_pin_cpus_needs_a_cpu_per_cell(run_dir):
    too_many = str(len(os.sched_getaffinity(0)) + 1)
    base = [sys.executable, "-c", "import sys; from cellblock.cli import main; sys.exit(main())"]
    for command in (
        ["worker", "--redis-url", "unix:///nonexistent", "--cells", too_many, "--pin-cpus"],
        ["serve", "--run-dir", str(run_dir / "state"), "--cells", too_many, "--pin-cpus"],
    ):
        done = subprocess.run(
            [*base, *command],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 2 and "--pin-cpus needs a CPU for each cell" in done.stderr
    assert not (run_dir / "state").exists()
    api_alone = subprocess.run(
        [*base, "serve", "--pin-cpus"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "REDIS_URL": "unix:///nonexistent"},
    )
    assert api_alone.returncode == 2 and "give it to `cellblock worker`" in api_alone.stderr


def _get(url: str):
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def stop(launcher: subprocess.Popen) -> None:
    if launcher.poll() is None:
        try:
            os.killpg(launcher.pid, signal.SIGTERM)
            launcher.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(launcher.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            launcher.wait()
    time.sleep(0.1)
