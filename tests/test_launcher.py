"""The native `cellblock run` (cellblock/launcher.c): a run handed to a run
server without an interpreter, printing what the in-process path prints;
anything it does not do itself goes to the Python command unchanged; and it
sends nothing to a server of another uid.

Each launcher is built here with gcc, as scripts/install builds it, its Python
command a script that runs this checkout's `python -m cellblock`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from handoff_support import (
    CASES,
    PYTHON,
    REPO,
    Server,
    cellblock_run,
    client_environment,
    comparable,
    runtime_directory,
    serving,
    start_server,
)

from cellblock.native import build


def build_launcher(directory: Path, python_command: str) -> Path:
    """A launcher whose Python command is `python_command` (a shell script's body)."""
    directory.mkdir(parents=True, exist_ok=True)
    cli = directory / "cellblock-python"
    cli.write_text(f"#!/bin/sh\n{python_command}\n")
    cli.chmod(0o755)
    launcher = build(directory / "cellblock", cli, REPO / "cellblock")
    directory.chmod(0o755)
    return launcher


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_launcher(tmp_path_factory.mktemp("launcher"), f'exec {PYTHON} -m cellblock "$@"')


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    return runtime_directory(tmp_path)


@pytest.fixture
def server(runtime: Path) -> Iterator[Server]:
    with serving(runtime) as started:
        yield started


def run_native(
    launcher: Path, runtime: Path, args: list[str], **env: str
) -> tuple[str, str, int, bool]:
    """(stdout, stderr, exit code, whether Python ran at all) of the launcher's
    `run ARGS`: Python, had it run, would have printed its imports."""
    done = subprocess.run(
        [str(launcher), "run", *args],
        env=client_environment(runtime, PYTHONPROFILEIMPORTTIME="1", **env),
        capture_output=True,
        check=False,
    )
    stderr = done.stderr.decode(errors="surrogateescape")
    lines = stderr.splitlines(keepends=True)
    python_ran = any(line.startswith("import time:") for line in lines)
    text = "".join(line for line in lines if not line.startswith("import time:"))
    return done.stdout.decode(errors="surrogateescape"), text, done.returncode, python_ran


@pytest.mark.parametrize("case", list(CASES))
def test_same_output_and_exit_code_as_in_process(
    launcher: Path, server: Server, runtime: Path, case: str
) -> None:
    out, err, code, python_ran = run_native(launcher, runtime, CASES[case])
    # Only what client.parse leaves to argparse (an abbreviation) reaches Python.
    assert python_ran == (case == "argparse's spelling")
    expected_out, expected_err, expected_code, _ = cellblock_run(
        runtime, CASES[case], handoff=False
    )
    assert (code, *comparable(out, err)) == (
        expected_code,
        *comparable(expected_out, expected_err),
    )


def test_stdin_and_copy_in_travel_as_descriptors(
    launcher: Path, server: Server, runtime: Path, tmp_path: Path
) -> None:
    (tmp_path / "input").write_text("some input\n")
    (tmp_path / "script").write_text("tr a-z A-Z < in.txt; cat; echo done\n")
    args = [
        "--stdin", str(tmp_path / "input"),
        "--copy-in", f"{tmp_path / 'script'}:run.sh",
        "--copy-in", f"{tmp_path / 'input'}:in.txt",
        "--readonly", "in.txt",
        "--", "sh", "run.sh",
    ]  # fmt: skip
    out, err, code, python_ran = run_native(launcher, runtime, args)
    assert (out, code, python_ran) == ("SOME INPUT\nsome input\ndone\n", 0, False), err
    # What it cannot open (a directory) is Python's to explain, in-process.
    out, err, code, python_ran = run_native(
        launcher, runtime, ["--copy-in", "/etc:x", "--", "true"]
    )
    assert python_ran and code == 2 and err.startswith("cellblock run: error:"), err


def test_copy_out_goes_to_python(launcher: Path, server: Server, runtime: Path, tmp_path: Path):
    # Python writes copied-out files (cellblock/output.py); its client hands the run over.
    args = ["--copy-out", "f", "--out-dir", str(tmp_path), "--", "sh", "-c", "echo x > f"]
    out, err, code, python_ran = run_native(launcher, runtime, args)
    assert python_ran and code == 0 and (tmp_path / "f").read_text() == "x\n", err


@pytest.mark.parametrize(
    "args",
    [
        [],  # argparse's usage error
        ["--", "printf", "%s", "caf\xe9"],  # an argument that is not UTF-8
        ["--time"],
    ],
)
def test_what_it_does_not_read_goes_to_python(
    launcher: Path, server: Server, runtime: Path, args: list[str]
) -> None:
    encoded = [a.encode("latin-1") if "\xe9" in a else a for a in args]
    done = subprocess.run(
        [str(launcher), "run", *encoded],
        env=client_environment(runtime, PYTHONPROFILEIMPORTTIME="1"),
        capture_output=True,
        check=False,
    )
    expected = subprocess.run(
        [PYTHON, "-m", "cellblock", "run", *encoded],
        env=client_environment(runtime, PYTHONPROFILEIMPORTTIME="1"),
        capture_output=True,
        check=False,
    )
    assert b"import time:" in done.stderr
    assert (done.returncode, done.stdout) == (expected.returncode, expected.stdout)


def test_no_server_or_another_environment_runs_in_process(launcher: Path, runtime: Path) -> None:
    out, err, code, python_ran = run_native(launcher, runtime, CASES["ok"])
    assert (out, code, python_ran) == ("hello\n", 0, True), err
    with serving(runtime):
        # Refused (the CELLBLOCK_* environment differs): Python runs it here.
        out, err, code, python_ran = run_native(
            launcher, runtime, CASES["ok"], CELLBLOCK_SUBUID="0"
        )
        assert (out, code, python_ran) == ("hello\n", 0, True), err
        assert run_native(launcher, runtime, CASES["ok"])[3] is False  # control


def test_the_same_environment_is_served(launcher: Path, runtime: Path) -> None:
    """The CELLBLOCK_* variables travel in the request as the Python client sends
    them: a server started with the client's own is used."""
    started = start_server(runtime, CELLBLOCK_SUBUID="0", CELLBLOCK_WARM="1")
    try:
        # CELLBLOCK_WARM is not compared (it chooses how, not what, runs).
        out, err, code, python_ran = run_native(
            launcher, runtime, CASES["ok"], CELLBLOCK_SUBUID="0", CELLBLOCK_WARM="0"
        )
        assert (out, code, python_ran) == ("hello\n", 0, False), err
        assert run_native(launcher, runtime, CASES["ok"])[3] is True  # control: it differs
    finally:
        started.stop()


def test_a_directory_others_may_write_is_not_used(
    launcher: Path, server: Server, runtime: Path
) -> None:
    assert run_native(launcher, runtime, CASES["ok"])[3] is False  # control
    (runtime / "cellblock").chmod(0o777)
    try:
        out, _, code, python_ran = run_native(launcher, runtime, CASES["ok"])
        assert (out, code, python_ran) == ("hello\n", 0, True)
    finally:
        (runtime / "cellblock").chmod(0o700)


def test_a_server_lost_during_the_run_is_an_internal_error(launcher: Path, runtime: Path):
    started = start_server(runtime)
    client = subprocess.Popen(
        [str(launcher), "run", "--", "sh", "-c", "sleep 3"],
        env=client_environment(runtime, PYTHONPROFILEIMPORTTIME="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1)  # well into the run
    started.process.send_signal(signal.SIGKILL)
    started.process.wait()
    out, err = client.communicate(timeout=30)
    # Not run a second time in-process: it may have done things already.
    assert client.returncode == 125 and out == b"", err
    assert b"the run server was lost during the run" in err and b"import time:" not in err


LISTENER = """
import os, socket, sys
path = sys.argv[1]
listener = socket.socket(socket.AF_UNIX)
listener.bind(path)
os.chmod(path, 0o666)
listener.listen(1)
print("listening", flush=True)
listener.settimeout(30)
connection, _ = listener.accept()
connection.settimeout(2)
received = b""
try:
    while chunk := connection.recv(65536):
        received += chunk
except OSError:
    pass
print(len(received), flush=True)
"""


def test_nothing_is_sent_to_a_server_of_another_uid(tmp_path: Path) -> None:
    """SO_PEERCRED, the client's side: a socket in the client's own directory
    that another uid listens on (root here, which may write anywhere) gets no
    request; the run goes to Python instead. The control: the same listener
    run as the client's own uid receives the request."""
    if os.geteuid() != 0:
        pytest.skip("needs root: runs a client as nobody")
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="cellblock-launcher-"))
    try:
        base.chmod(0o755)
        launcher = build_launcher(base / "bin", 'echo "went to python"')
        runtime = base / "runtime"
        (runtime / "cellblock").mkdir(parents=True)
        for directory in (runtime, runtime / "cellblock"):
            os.chown(directory, nobody.pw_uid, nobody.pw_gid)
            directory.chmod(0o700)
        script = base / "listener.py"
        script.write_text(LISTENER)
        script.chmod(0o644)
        socket_path = runtime / "cellblock" / "run.sock"
        env = client_environment(runtime)
        for listener_user, sent in (("root", False), ("nobody", True)):
            listener = subprocess.Popen(
                ["runuser", "-u", listener_user, "--", PYTHON, str(script), str(socket_path)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert listener.stdout is not None
            assert listener.stdout.readline().strip() == "listening"
            done = subprocess.run(
                ["runuser", "-u", "nobody", "--", str(launcher), "run", "--", "echo", "hi"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            received = int(listener.communicate(timeout=30)[0].strip())
            socket_path.unlink()
            if sent:  # the control: its own uid's server gets the request
                assert received > 0
            else:
                assert received == 0 and done.stdout == "went to python\n", done.stderr
    finally:
        shutil.rmtree(base)
