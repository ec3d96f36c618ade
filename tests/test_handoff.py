"""`cellblock run` handed to `cellblock run-server` (cellblock/client.py, server.py,
protocol.py): the same output and exit codes as in-process, only the same user
served, the in-process fallback, and nothing left behind.

Every server here lives in a socket directory of the test's own
(XDG_RUNTIME_DIR), so no other test's `cellblock run` is ever handed to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
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
    alive_processes,
    cellblock_run,
    client_environment,
    comparable,
    runtime_directory,
    serving,
    start_server,
)

from cellblock import client, protocol


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    return runtime_directory(tmp_path)


@pytest.fixture
def server(runtime: Path) -> Iterator[Server]:
    with serving(runtime) as started:
        yield started


@pytest.mark.parametrize("case", list(CASES))
def test_same_output_and_exit_code_as_in_process(server: Server, runtime: Path, case: str) -> None:
    out, err, code, in_process = cellblock_run(runtime, CASES[case])
    assert not in_process, "not handed to the server"
    expected_out, expected_err, expected_code, _ = cellblock_run(
        runtime, CASES[case], handoff=False
    )
    assert (code, *comparable(out, err)) == (expected_code, *comparable(expected_out, expected_err))


def test_exit_codes(server: Server, runtime: Path) -> None:
    codes = {case: cellblock_run(runtime, CASES[case])[2] for case in CASES}
    assert codes["ok"] == 0 and codes["exit code"] == 3 and codes["signal"] == 137
    assert codes["tle"] == 124 and codes["json"] == 0 and codes["bad limit"] == 2


def test_stdin_and_files(server: Server, runtime: Path, tmp_path: Path) -> None:
    (tmp_path / "input").write_text("some input\n")
    (tmp_path / "script").write_text(
        "mkdir out; tr a-z A-Z < in.txt > out/upper.txt; cat; echo done\n"
    )
    outputs = []
    for handoff in (True, False):
        out_dir = tmp_path / f"out-{handoff}"
        out_dir.mkdir()
        args = [
            "--stdin", "input",
            "--copy-in", "script:run.sh",
            "--copy-in", "input:in.txt",
            "--readonly", "in.txt",
            "--copy-out", "out/upper.txt",
            "--copy-out", "missing.txt",
            "--out-dir", str(out_dir),
            "--", "sh", "run.sh",
        ]  # fmt: skip
        out, err, code, in_process = cellblock_run(runtime, args, handoff, cwd=tmp_path)
        assert in_process != handoff
        assert (out_dir / "out" / "upper.txt").read_text() == "SOME INPUT\n"
        outputs.append((code, *comparable(out, err)))
    assert outputs[0] == outputs[1]
    assert outputs[0][1] == "some input\ndone\n"
    assert "--copy-out missing.txt: not copied" in outputs[0][2]


def test_what_the_client_cannot_open_runs_in_process(server: Server, runtime: Path) -> None:
    # The in-process path says what is wrong, as it always did.
    for args in (
        ["--stdin", "/no/such/file", "--", "cat"],
        ["--copy-in", "/no/such/file:x", "--", "true"],
        ["--copy-in", "/etc:x", "--", "true"],
        ["--copy-out", "x", "--out-dir", "/no/such/dir", "--", "true"],
        ["--seccomp", "./relative.json", "--", "true"],
    ):
        out, err, code, in_process = cellblock_run(runtime, args)
        assert in_process and code == 2 and err.startswith("cellblock run: error:"), (args, err)


def test_runs_do_not_wait_for_each_other(server: Server, runtime: Path) -> None:
    clients = [
        subprocess.Popen(
            [PYTHON, "-m", "cellblock", "run", "--", "sh", "-c", "sleep 1; echo slept"],
            env=client_environment(runtime),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    start = time.monotonic()
    outputs = [process.communicate()[0] for process in clients]
    assert outputs == [b"slept\n"] * 3
    assert time.monotonic() - start < 2.5  # not 3 s one after the other


def test_another_user_is_refused() -> None:
    """SO_PEERCRED: a client of another uid gets no run, however it reached the
    socket. Here the filesystem's walls (a 0700 directory, a 0600 socket) are
    taken away, so that only the peer-uid check stands."""
    if os.geteuid() != 0:
        pytest.skip("needs root: runs a client as nobody")
    runtime = Path(tempfile.mkdtemp(prefix="cellblock-handoff-"))  # nobody may enter it
    runtime.chmod(0o755)
    try:
        with serving(runtime) as server:
            server.socket.parent.chmod(0o755)
            server.socket.chmod(0o666)
            _refused_unless_root(server)
    finally:
        shutil.rmtree(runtime)


def _refused_unless_root(server: Server) -> None:
    script = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
import _socket
from cellblock import protocol
from cellblock.protocol import Reply, Request, RunOptions
sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
sock.connect({str(server.socket)!r})
options = RunOptions(["--", "echo", "it ran"])
request = Request(options, False, 0, package=protocol.package(), environment=protocol.environment())
replies = []
try:
    protocol.send(sock, request.to_wire())
    while True:
        reply = Reply.from_wire(protocol.receive(sock)[0])
        replies.append(reply.kind + ("(" + reply.stdout.strip() + ")" if reply.stdout else ""))
except (OSError, protocol.ProtocolError) as error:
    replies.append(type(error).__name__)
print(" ".join(replies))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLBLOCK_")}
    as_root = subprocess.run(
        [PYTHON, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    # Control: the server's own user is served (then the server closes: EOF).
    assert as_root.stdout.split() == ["accepted", "done(it", "ran)", "ProtocolError"]
    as_nobody = subprocess.run(
        ["runuser", "-u", "nobody", "--", PYTHON, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # Refused and closed, its request unread: the client sees the refusal, or
    # (closed first) a broken pipe or the reset a unix socket closed with
    # unread data gives its peer. Either way, nothing ran.
    # Refused, however the closed connection shows (the refusal read first or not).
    assert as_nobody.stdout.split() in (
        ["refused", "ProtocolError"],
        ["refused", "ConnectionResetError"],
        ["refused", "BrokenPipeError"],
        ["ConnectionResetError"],
        ["BrokenPipeError"],
    ), as_nobody.stderr


def test_a_client_checks_the_directory(server: Server, runtime: Path) -> None:
    # A socket directory that others may write is no server's: the client runs in-process.
    assert not cellblock_run(runtime, CASES["ok"])[3]  # control
    (runtime / "cellblock").chmod(0o777)
    try:
        assert cellblock_run(runtime, CASES["ok"])[3]
    finally:
        (runtime / "cellblock").chmod(0o700)


def test_a_stale_socket_falls_back(runtime: Path) -> None:
    directory = runtime / "cellblock"
    directory.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(directory / protocol.SOCKET_NAME))
    stale.close()  # bound, never listened: ECONNREFUSED, as after a crash
    out, err, code, in_process = cellblock_run(runtime, CASES["exit code"])
    assert in_process and code == 3 and out == "out\n" and err.startswith("err\n")
    # A server starts over it.
    started = start_server(runtime)
    try:
        assert not cellblock_run(runtime, CASES["ok"])[3]
    finally:
        started.stop()
    assert not (directory / protocol.SOCKET_NAME).exists()


def test_no_server_falls_back(runtime: Path) -> None:
    out, _, code, in_process = cellblock_run(runtime, CASES["ok"])
    assert in_process and code == 0 and out == "hello\n"


def test_no_server_runs_in_process_without_argparse(runtime: Path) -> None:
    """With no server, options the client has read are run as they are and
    argparse is never imported; what it leaves to argparse still gets argparse
    (an abbreviation here)."""

    def imported(args: list[str]) -> tuple[set[str], str, int]:
        done = subprocess.run(
            [PYTHON, "-X", "importtime", "-m", "cellblock", "run", *args],
            env=client_environment(runtime),
            capture_output=True,
            text=True,
            check=False,
        )
        lines = done.stderr.splitlines()
        modules = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
        return modules, done.stdout, done.returncode

    modules, out, code = imported(["--time", "2", "--", "sh", "-c", "echo hi"])
    assert (code, out) == (0, "hi\n")
    assert "cellblock.runcmd" in modules and "argparse" not in modules
    modules, out, code = imported(["--mem", "64M", "--", "sh", "-c", "echo hi"])
    assert (code, out) == (0, "hi\n")
    assert "argparse" in modules


@pytest.mark.parametrize("served", [True, False])
def test_an_interpreter_without_site_packages(runtime: Path, served: bool) -> None:
    """`python -S` (a launcher that spares the hand-off site's ~2 ms): the
    in-process path still finds site-packages (pyseccomp, on a cache miss)."""
    env = client_environment(runtime, CELLBLOCK_SECCOMP_CACHE="")  # compile: import pyseccomp
    with serving(runtime) if served else contextlib.nullcontext():
        done = subprocess.run(
            [PYTHON, "-S", "-m", "cellblock", "run", "--", "sh", "-c", "echo hi"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr


def test_a_server_lost_during_the_run_is_an_internal_error(runtime: Path) -> None:
    """Once the server has taken the run, the client does not make it again
    (it may have done things already): it says the server was lost, exit 125."""
    started = start_server(runtime)
    client_run = subprocess.Popen(
        [PYTHON, "-m", "cellblock", "run", "--", "sh", "-c", "sleep 3"],
        env=client_environment(runtime),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1)  # well into the run
    below = started.descendants()
    started.process.kill()
    started.process.wait()
    out, err = client_run.communicate(timeout=30)
    assert client_run.returncode == 125, err
    assert b"the run server was lost during the run" in err and out == b""
    deadline = time.monotonic() + 10  # its cell maker and cells die with it
    while (left := below & alive_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left
    assert cellblock_run(runtime, CASES["ok"])[3]  # its socket is stale: in-process


def test_another_environment_runs_in_process(server: Server, runtime: Path) -> None:
    assert cellblock_run(runtime, CASES["ok"], CELLBLOCK_SUBUID="0")[3]


def _run_server_once(runtime: Path) -> subprocess.CompletedProcess:
    """`cellblock run-server` where it is expected not to start."""
    return subprocess.run(
        [PYTHON, "-m", "cellblock", "run-server"],
        env=client_environment(runtime),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_one_server_per_directory(server: Server, runtime: Path) -> None:
    second = _run_server_once(runtime)
    assert second.returncode == 1 and "already running" in second.stderr
    assert not cellblock_run(runtime, CASES["ok"])[3]  # the first still serves


def test_idle_exit_removes_the_socket(runtime: Path) -> None:
    started = start_server(runtime, "--idle-exit", "1")
    assert started.process.wait(timeout=30) == 0
    assert not started.socket.exists()


def test_a_server_in_a_directory_others_may_write_does_not_start(runtime: Path) -> None:
    (runtime / "cellblock").mkdir(mode=0o777)
    (runtime / "cellblock").chmod(0o777)
    done = _run_server_once(runtime)
    assert done.returncode == 1 and "nobody else may write" in done.stderr


def test_a_handed_off_run_imports_little(server: Server, runtime: Path) -> None:
    script = (
        "import sys\n"
        "from cellblock.cli import main\n"
        "code = main(['run', '--', 'true'])\n"
        "heavy = {'argparse', 'json', 'socket', 'sandbox', 'typing', 'dataclasses', 're'}\n"
        "print(code, sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", script],
        env=client_environment(runtime),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split("\n")[0] == "0 []"


# ---------------------------------------------------------------------------
# The client's own option parser: argparse's reading, or none


def _argparse_options(argv: list[str]) -> protocol.RunOptions | None:
    import argparse

    from cellblock import cli

    parser = argparse.ArgumentParser(exit_on_error=False)
    cli._run_parser(parser.add_subparsers(dest="subcommand"))
    try:
        with contextlib.redirect_stderr(None):
            args = parser.parse_args(["run", *argv])
    except (argparse.ArgumentError, SystemExit):
        return None
    return cli.run_options(args)


@pytest.mark.parametrize(
    "argv",
    [
        ["--", "true"],
        ["true"],
        ["true", "--json"],
        ["--json", "--", "sh", "-c", "x"],
        ["--stderr-to-stdout", "--json", "x"],
        ["--time", "1", "--memory=64M", "--", "a", "--time", "2"],
        ["--time", "1", "--time", "2", "--", "a"],
        ["--env", "A=1", "--env=B=2=3", "--copy-in", "a:b", "--copy-in=c:d", "x"],
        ["--stdin", "f", "--out-dir", "d", "--image", "host", "--seccomp", "default", "x"],
        ["--readonly", "b", "--copy-out", "o", "x", "y"],
        ["--tmpfs-inodes", "5", "--cpus", "0.5", "--stack", "1M", "--open-files", "9", "x"],
        ["--wall-time", "3", "--pids", "4", "--output-limit", "1K", "--file-size", "2K", "x"],
        ["--tmpfs-size", "1M", "--", "--"],
        ["--", "--json"],
    ],
)
def test_the_client_reads_options_as_argparse_does(argv: list[str]) -> None:
    assert client.parse(argv) == _argparse_options(argv) != None  # noqa: E711


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--"],
        ["--json"],
        ["-h"],
        ["--help"],
        ["--mem", "64M", "x"],  # an abbreviation: argparse's to read
        ["--time", "-1", "x"],  # a value like an option
        ["--time=", "x"],
        ["--time"],
        ["--json=1", "x"],
        ["-", "x"],
        ["--unknown", "x"],
    ],
)
def test_what_the_client_does_not_read_is_left_to_argparse(argv: list[str]) -> None:
    assert client.parse(argv) is None


def test_the_client_knows_every_option_of_run() -> None:
    import argparse

    from cellblock import cli
    from sandbox.spec import limit_fields

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli._run_parser(sub)
    (run,) = sub.choices.values()
    flags = {flag for action in run._actions for flag in action.option_strings}
    known = {
        *client.SWITCH_FLAGS,
        *client.LIMIT_FLAGS,
        *client.REPEATED_FLAGS,
        *client.SINGLE_FLAGS,
    }
    assert flags - {"-h", "--help"} == known
    assert set(client.LIMIT_FLAGS.values()) == {f.name for f in limit_fields()}
