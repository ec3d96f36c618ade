"""Rootless cgroup v2 where systemd runs: a cellblock started from a login
shell, with nothing delegated by root, asks the user's systemd manager for a
scope with Delegate=yes (sandbox/cgroups/systemd.py) and gets every limit.

Runs in scripts/vm-test-systemd (systemd as init, Debian 12's kernel, pure
cgroup v2), which scripts/test runs after the suite; this host has no
systemd, so elsewhere the module says so and is skipped. The user logs in
with `su -l` (pam_systemd: a session scope root owns, and user@UID.service).
The control: the same commands with the user's manager out of reach
(XDG_RUNTIME_DIR elsewhere) run without limits, as the issue saw.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("CELLBLOCK_SYSTEMD_VM") != "1",
    reason="needs systemd as init: run by scripts/vm-test-systemd (scripts/test runs it)",
)

USER = "cbscope"
VENV = Path(os.environ.get("CELLBLOCK_VENV", "/opt/cellblock/venv"))
REPO = Path(__file__).resolve().parent.parent
HOG = "b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); print('allocated')"
WHERE = "import sandbox.cgroups as c; h, why = c.find(); print(h.base if h else 'NONE: ' + why)"


@pytest.fixture(scope="module")
def login_user():
    # virtme-ng binds files of its own over a few in /etc (/etc/shadow among
    # them), and useradd's rename onto one fails: the VM's root is a
    # throwaway copy, so they go.
    for _ in range(3):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if point.startswith("/etc/"):
                subprocess.run(["umount", point], check=False)
    made = subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/bash", USER], capture_output=True, text=True
    )
    assert made.returncode == 0, (made.stderr, Path("/proc/self/mountinfo").read_text())
    # The user's manager runs while the user has a session, and on for good
    # with lingering (a worker's user has it on): a session that ends does not
    # take the manager down between the tests' logins.
    subprocess.run(["loginctl", "enable-linger", USER], check=True)
    uid = pwd.getpwnam(USER).pw_uid
    deadline = time.monotonic() + 120
    while not Path(f"/run/user/{uid}/systemd/private").exists():
        assert time.monotonic() < deadline, "the user's systemd manager did not start"
        time.sleep(0.5)
    yield USER
    subprocess.run(["loginctl", "terminate-user", USER], check=False)
    subprocess.run(["userdel", "--remove", USER], check=False)


def login(command: str, env: str = "") -> subprocess.CompletedProcess[str]:
    """`command` in a login shell of the user (a session of its own, as ssh gives)."""
    line = f"cd /tmp && export PYTHONPATH={shlex.quote(str(REPO))} && {env} {command}"
    return subprocess.run(
        ["su", "--login", USER, "--command", line], capture_output=True, text=True, timeout=600
    )


def cellblock_run(*args: str, env: str = "") -> dict:
    done = login(f"{VENV}/bin/python -m cellblock run --json {shlex.join(args)}", env)
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout)


NO_MANAGER = "XDG_RUNTIME_DIR=/nonexistent DBUS_SESSION_BUS_ADDRESS="


def test_the_login_shell_is_in_a_scope_root_owns(login_user):
    # Asked from within the session (its scope goes when the session ends).
    done = login('p=$(cut -d: -f3 /proc/self/cgroup); echo "$p $(stat -c %u /sys/fs/cgroup$p)"')
    path, owner = done.stdout.split()
    assert "/session-" in path and path.endswith(".scope"), done.stdout
    assert owner == "0"  # nothing there is the user's: cells need a scope of their own


def test_cells_run_in_a_delegated_scope_of_the_user_s_manager(login_user):
    done = login(f"{VENV}/bin/python -c {shlex.quote(WHERE)}")
    base = done.stdout.strip()
    uid = int(login("id -u").stdout)
    assert f"/user@{uid}.service/" in base and "/cellblock-" in base, (base, done.stderr)
    assert base.endswith(".scope")


def test_memory_limit_from_a_login_shell(login_user):
    result = cellblock_run("--memory", "64M", "--", "python3", "-c", HOG)
    assert result["status"] == "MLE" and result["oom_killed"], result
    assert not [d for d in result["degraded"] if "cgroup" in d], result["degraded"]
    control = cellblock_run("--memory", "64M", "--", "python3", "-c", HOG, env=NO_MANAGER)
    assert control["status"] != "MLE", control  # no cgroup: nothing stops it at 64M
    assert any("systemd user manager" in d for d in control["degraded"]), control["degraded"]


def test_cpu_time_limit_from_a_login_shell(login_user):
    result = cellblock_run("--time", "0.5", "--", "sh", "-c", "while :; do :; done")
    assert result["status"] == "TLE" and "CPU" in result["message"], result
    # Polled every 10 ms; QEMU without KVM is slow, so the margin is wide (the
    # control without a cgroup ran to 1.55-2 s on RLIMIT_CPU's whole seconds).
    assert 0.45 <= result["time"] < 1.0, result["time"]


def test_the_scopes_go_with_their_processes(login_user):
    uid = int(login("id -u").stdout)
    app = Path(f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/app.slice")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and list(app.glob("cellblock-*.scope")):
        time.sleep(0.5)
    assert not list(app.glob("cellblock-*.scope"))
