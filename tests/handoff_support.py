"""What the tests of `cellblock run`'s hand-off share (tests/test_handoff.py for
the Python client, tests/test_launcher.py for the native one): servers in a
socket directory of the test's own, the cases both clients run, and how a
`cellblock run`'s output is compared with the in-process path's."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import process_stat

from cellblock import protocol

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# What differs from one run to the next: the summary's figures, a TLE's CPU seconds used.
FIGURES = re.compile(
    r"time \d+\.\d{3} s · wall \d+\.\d{3} s · memory \d+\.\d MiB|\d+\.\d{3} s used"
)


class Server:
    def __init__(self, runtime: Path, process: subprocess.Popen[bytes]) -> None:
        self.runtime = runtime
        self.process = process
        self.socket = runtime / "cellblock" / protocol.SOCKET_NAME

    def descendants(self) -> set[tuple[int, str]]:
        """(pid, start time) of every process below the server: the cell maker,
        warm cells' inits."""
        children: dict[int, list[int]] = {}
        starts: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (fields := process_stat(entry)):
                children.setdefault(int(fields[1]), []).append(int(entry))
                starts[int(entry)] = fields[19]
        found, todo = set(), [self.process.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.add((child, starts[child]))
                todo.append(child)
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def client_environment(runtime: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLBLOCK_")}
    env.update(PYTHONPATH=str(REPO), XDG_RUNTIME_DIR=str(runtime), **extra)
    return env


def start_server(runtime: Path, *args: str, **env: str) -> Server:
    process = subprocess.Popen(
        [PYTHON, "-m", "cellblock", "run-server", *args],
        env=client_environment(runtime, **env),
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    assert "serving on" in line, line + process.stderr.read().decode()
    return Server(runtime, process)


def runtime_directory(tmp_path: Path) -> Path:
    """An XDG_RUNTIME_DIR of the test's own (a module's `runtime` fixture)."""
    directory = tmp_path / "runtime"
    directory.mkdir(mode=0o700)
    return directory


@contextlib.contextmanager
def serving(runtime: Path, *args: str) -> Iterator[Server]:
    """A server for the block; then stopped, and checked to leave nothing
    behind: no socket, no process of its."""
    started = start_server(runtime, *args)
    try:
        yield started
    finally:
        below = started.descendants()
        started.stop()
        assert started.process.returncode == 0
        assert not started.socket.exists(), "the socket outlived its server"
        deadline = time.monotonic() + 10
        while (left := below & alive_processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes outlived their server: {left}"


def alive_processes() -> set[tuple[int, str]]:
    return {
        (int(entry), fields[19])
        for entry in os.listdir("/proc")
        if entry.isdigit() and (fields := process_stat(entry))
    }


def cellblock_run(
    runtime: Path,
    args: list[str],
    handoff: bool = True,
    cwd: Path | None = None,
    launcher: Path | None = None,
    **env: str,
) -> tuple[str, str, int, bool]:
    """(stdout, stderr, exit code, whether the sandbox was imported: the run
    was made in this process) of `cellblock run ARGS`, by the Python command
    or by a native `launcher` (cellblock/launcher.c) that falls back to it."""
    extra = {} if handoff else {"CELLBLOCK_HANDOFF": "0"}
    # -X importtime's lines, also for the Python a launcher hands over to.
    command = [str(launcher)] if launcher else [PYTHON, "-m", "cellblock"]
    done = subprocess.run(
        [*command, "run", *args],
        env=client_environment(runtime, PYTHONPROFILEIMPORTTIME="1", **extra, **env),
        capture_output=True,
        cwd=cwd,
        check=False,
    )
    lines = done.stderr.decode().splitlines(keepends=True)
    imports = [line for line in lines if line.startswith("import time:")]
    stderr = "".join(line for line in lines if not line.startswith("import time:"))
    modules = {line.split("|")[-1].strip() for line in imports}
    in_process = "cellblock.runcmd" in modules  # the in-process path's, never the client's
    return done.stdout.decode(), stderr, done.returncode, in_process


def comparable(stdout: str, stderr: str) -> tuple[str, str]:
    """Output with the figures that differ from one run to the next taken out."""
    if stdout.startswith("{"):
        data = json.loads(stdout)
        for figure in ("time", "wall_time", "memory"):
            data[figure] = "…"
        data["message"] = FIGURES.sub("FIGURES", data["message"])
        stdout = json.dumps(data)
    return stdout, FIGURES.sub("FIGURES", stderr)


CASES = {
    "ok": ["--", "sh", "-c", "echo hello"],
    "exit code": ["--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    "signal": ["--", "sh", "-c", "echo before; kill -9 $$"],
    "tle": ["--time", "0.2", "--", "sh", "-c", "while :; do :; done"],
    "json": ["--json", "--", "sh", "-c", "echo hi; exit 4"],
    "stderr into stdout": ["--stderr-to-stdout", "--", "sh", "-c", "echo a; echo b >&2; echo c"],
    "env": ["--env", "A=b", "--env=C=d e", "--", "sh", "-c", 'echo "$A $C"'],
    "bad limit": ["--memory", "12X", "--", "true"],
    "bad env": ["--env", "noequals", "--", "true"],
    "no such program": ["--", "/no/such/program"],
    "argparse's spelling": ["--mem", "64M", "--", "sh", "-c", "echo abbreviated"],
    "no --": ["sh", "-c", "echo bare"],
}
