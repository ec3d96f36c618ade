"""`cellblock doctor` against the real kernel, as root and as a throwaway unprivileged user."""

from __future__ import annotations

import errno
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    children_of_this_process,
    python_in,
    tree_without_init,
    under_a_refusing_profile,
)

from sandbox import doctor
from sandbox.doctor import (
    Check,
    Outcome,
    Report,
    check_host,
    confinement,
    format_report,
    namespaces,
    probe,
    resources,
    run_doctor,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The venv scripts/install makes (from Debian's python3, usable by every user).
VENV_PYTHON = os.path.join(os.environ.get("CELLBLOCK_VENV", "/opt/cellblock/venv"), "bin", "python")
TEST_USER = os.environ.get("CELLBLOCK_DOCTOR_USER", "cbdoctor")
KERNEL_CHECKS = (
    "program launcher",
    "user namespaces",
    "mount namespace + overlay",
    "pid namespace + /proc",
    "network namespace",
    "seccomp",
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _is_v1_hybrid_host() -> bool:
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    return " /sys/fs/cgroup/memory " in mountinfo and " /sys/fs/cgroup/unified " in mountinfo


# --------------------------------------------------------------------------- helpers


_children = children_of_this_process


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def _fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------- as root


@needs_root
def test_kernel_probes_pass_as_root():
    report = check_host()
    for name in KERNEL_CHECKS:
        check = report.get(name)
        assert check.ok, f"{name}: {check.detail}"
        assert check.required
    assert report.get("kernel").ok
    assert [c.name for c in report.checks] == [name for name, _ in doctor.CHECKS]


@needs_root
@pytest.mark.skipif(not _is_v1_hybrid_host(), reason="this host is not cgroup v1 hybrid")
def test_cgroup_v1_hybrid_reported_as_root():
    check = check_host().get("cgroups")
    assert check.ok, check.detail
    assert check.detail.startswith("cgroup v1 (hybrid: /sys/fs/cgroup/unified is cgroup2")
    for ctrl in ("memory", "pids", "cpuacct"):
        assert ctrl in check.detail
    assert "usable by root" in check.detail
    assert check.fix is None


@needs_root
def test_cgroup_check_only_reads():
    dirs = [p for p in glob.glob("/sys/fs/cgroup/*/") if not os.path.islink(p.rstrip("/"))]
    listing = {p: sorted(os.listdir(p)) for p in dirs}
    doctor.check_cgroups()
    assert {p: sorted(os.listdir(p)) for p in dirs} == listing


def test_report_json_and_text():
    report = check_host()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is report.ok
    assert [c["name"] for c in data["checks"]] == [c.name for c in report.checks]
    for c in data["checks"]:
        assert set(c) == {"name", "ok", "detail", "fix", "required"}
        assert c["detail"]
    text = format_report(report)
    lines = text.splitlines()
    check_lines = [line for line in lines if line[:2] in ("✓ ", "✗ ", "! ")]
    assert len(check_lines) == len(report.checks)
    for c, line in zip(report.checks, check_lines, strict=True):
        assert line == f"{'✓' if c.ok else '✗' if c.required else '!'} {c.name} — {c.detail}"

    text, code = run_doctor(False)
    assert code == (0 if report.ok else 1)
    assert text.splitlines()[0][:2] in ("✓ ", "✗ ", "! ")
    js, code2 = run_doctor(True)
    assert json.loads(js)["ok"] is (code2 == 0)


def test_probes_leave_nothing_behind():
    check_host()  # warm up imports, lazily opened files
    kids, mounts, fds = _children(), _mounts(), _fds()
    for _ in range(3):
        check_host()
    assert _children() == kids
    assert _mounts() == mounts
    assert _fds() == fds
    assert not glob.glob("/usr/.cellblock-doctor-*")


# --------------------------------------------------------------------------- probe harness


@pytest.mark.userland
def test_probe_returns_value_and_errors():
    assert probe(lambda: {"x": 1}) == Outcome(True, {"x": 1})

    def fail():
        raise OSError(errno.EPERM, "unshare: Operation not permitted")

    out = probe(fail)
    assert not out.ok
    assert out.errno == errno.EPERM
    assert "EPERM" in out.error


@pytest.mark.userland
def test_probe_timeout_kills_and_reaps():
    kids = _children()
    t0 = time.monotonic()
    out = probe(lambda: time.sleep(60), timeout=0.3)
    assert time.monotonic() - t0 < 3
    assert not out.ok
    assert "killed" in out.error
    assert _children() == kids


@pytest.mark.userland
def test_probe_child_killed_by_signal():
    out = probe(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert not out.ok
    assert "SIGKILL" in out.error


@pytest.mark.userland
def test_probe_children_skip_atexit_and_stdio_buffers():
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('ATEXIT'))\n"
        "sys.stdout.write('buffered;')\n"
        "from sandbox.doctor import check_host\n"
        "check_host()\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("ATEXIT") == 1
    assert res.stdout.count("buffered;") == 1
    assert res.stderr == ""


# --------------------------------------------------------------------------- fix logic


@pytest.mark.userland
def test_unbuilt_launcher_is_named_with_its_fix(tmp_path):
    # A source tree in which the init was never built: doctor says so, and a run
    # is an IE with the same reason rather than a crash.
    code = (
        "from sandbox import doctor, run\n"
        "c = doctor.check_launcher(); print(c.ok, c.required, c.fix, sep='|')\n"
        "r = run(['true']); print(r.status, r.message, sep='|')\n"
    )
    done = python_in(tree_without_init(tmp_path), code)
    check, result = done.stdout.splitlines()
    assert check.startswith("False|True|") and "scripts/install" in check
    assert result.startswith("IE|") and "cellblock-init is missing" in result, result


def test_cell_maker_check_starts_one_and_leaves_nothing():
    before = set(children_of_this_process())  # earlier tests' inits may still be exiting
    check = doctor.check_maker()
    assert check.ok and not check.required, check
    assert set(children_of_this_process()) <= before


def test_cell_maker_check_where_clone_into_namespaces_is_refused():
    # Docker's worker profile refuses clone with namespace flags: the maker
    # spawns its inits, which unshare, so it is up there too.
    from sandbox import libc

    def run_check() -> str:
        check = doctor.check_maker()
        return f"{check.ok}|{check.required}|{check.detail}"

    ok, required, detail = under_a_refusing_profile({"clone": libc.CLONE_NEWUSER}, run_check).split(
        "|", 2
    )
    assert (ok, required) == ("True", "False"), detail
    assert "made by a small process of their own" in detail


@pytest.mark.userland
def test_report_ok_ignores_optional_checks():
    r = Report([Check("a", True, "d"), Check("b", False, "d", "fix-b", required=False)])
    assert r.ok and r.degraded == [] and r.warnings == ["b"]
    assert "    fix: fix-b" in format_report(r).splitlines()
    r.checks.append(Check("c", False, "d", "fix-c"))
    assert not r.ok and r.degraded == ["c"]
    assert format_report(r).splitlines()[-1] == "degraded: c"


def _fake_sysctls(monkeypatch, values):
    real = namespaces.read_int
    monkeypatch.setattr(namespaces, "read_int", lambda p: values[p] if p in values else real(p))


def test_userns_fixes_name_the_blocking_knob(monkeypatch):
    monkeypatch.setattr(
        namespaces, "probe", lambda fn, timeout=0: Outcome(False, error="EPERM", errno=errno.EPERM)
    )
    monkeypatch.setattr(namespaces, "in_container", lambda: False)
    _fake_sysctls(
        monkeypatch,
        {
            namespaces.USERNS_SYSCTL: 15000,
            namespaces.DEBIAN_USERNS_SYSCTL: None,
            namespaces.APPARMOR_USERNS_SYSCTL: 1,
        },
    )
    check = doctor.check_userns()
    assert not check.ok and check.required
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in check.fix
    assert "unprivileged_userns_clone" not in check.fix  # no such file: no Debian knob

    _fake_sysctls(
        monkeypatch,
        {
            namespaces.USERNS_SYSCTL: 0,
            namespaces.DEBIAN_USERNS_SYSCTL: 0,
            namespaces.APPARMOR_USERNS_SYSCTL: None,
        },
    )
    check = doctor.check_userns()
    assert "sysctl -w user.max_user_namespaces=15000" in check.fix
    assert "sysctl -w kernel.unprivileged_userns_clone=1" in check.fix
    assert "apparmor" not in check.fix


def test_userns_too_few_namespaces(monkeypatch):
    monkeypatch.setattr(namespaces, "probe", lambda fn, timeout=0: Outcome(True, 1000))
    _fake_sysctls(monkeypatch, {namespaces.USERNS_SYSCTL: 3})
    check = doctor.check_userns()
    assert not check.ok
    assert "user.max_user_namespaces=3 is too low" in check.detail
    assert "sysctl -w user.max_user_namespaces=15000" in check.fix


DOCTOR_JSON = (
    "import json\n"
    "from sandbox.doctor import check_host\n"
    "print(json.dumps(check_host().to_dict()))\n"
)


def _doctor_in(unshare: list[str], setup: str) -> dict:
    """Run the doctor in new namespaces (`unshare ...`) after a shell `setup` step there."""
    argv = [*unshare, "sh", "-c", f'{setup} && exec "$@"', "sh", VENV_PYTHON, "-c", DOCTOR_JSON]
    res = subprocess.run(
        argv,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return {c["name"]: c for c in json.loads(res.stdout)["checks"]}


needs_unshare = pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")


@needs_root
@needs_unshare
def test_masked_proc_fails_pid_check():
    # A private mount namespace where /proc paths are masked, as Docker does.
    checks = _doctor_in(
        ["unshare", "-m", "--propagation", "private"],
        "mount --bind /dev/null /proc/keys && mount -t tmpfs none /proc/irq",
    )
    pid = checks["pid namespace + /proc"]
    assert not pid["ok"]
    assert "/proc/irq, /proc/keys" in pid["detail"]
    assert "systempaths=unconfined" in pid["fix"]
    assert checks["user namespaces"]["ok"]


@needs_root
@needs_unshare
def test_exhausted_user_namespaces_name_the_sysctl():
    # bwrap's trick: lower max_user_namespaces inside a user namespace of our own.
    checks = _doctor_in(["unshare", "-Ur"], "echo 1 > /proc/sys/user/max_user_namespaces")
    userns = checks["user namespaces"]
    assert not userns["ok"]
    assert "user.max_user_namespaces=1" in userns["detail"]
    assert userns["fix"] == "sysctl -w user.max_user_namespaces=15000"


@needs_root
@needs_unshare
def test_pure_cgroup_v2_without_controllers():
    # A private mount namespace where the cgroup2 hierarchy sits at /sys/fs/cgroup.
    unified = "/sys/fs/cgroup/unified"
    if not os.path.ismount(unified):
        pytest.skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified")
    checks = _doctor_in(
        ["unshare", "-m", "--propagation", "private"],
        f"mount -t tmpfs none /mnt && mount --bind {unified} /mnt && "
        "umount -l /sys/fs/cgroup && mount --move /mnt /sys/fs/cgroup",
    )
    cg = checks["cgroups"]
    assert cg["detail"].startswith("cgroup v2: /sys/fs/cgroup/cellblock")
    with open(f"{unified}/cgroup.controllers") as f:
        controllers = f.read().split()
    if not {"memory", "pids", "cpu"} <= set(controllers):
        assert not cg["ok"]
        assert "controllers not available" in cg["detail"]


def test_landlock_missing_is_optional(monkeypatch):
    monkeypatch.setattr(
        confinement,
        "probe",
        lambda fn, timeout=0: Outcome(False, error="x", errno=errno.EOPNOTSUPP),
    )
    monkeypatch.setattr(confinement, "_lsm_list", lambda: "lockdown,capability,yama")
    check = doctor.check_landlock()
    assert not check.ok and not check.required
    assert "without landlock" in check.detail
    assert "lsm=landlock,lockdown,capability,yama" in check.fix


def _fake_v2_tree(tmp_path, controllers="cpuset cpu io memory pids", enabled=""):
    root = tmp_path / "cgroup"
    sub = root / "cellblock" / "alice"
    sub.mkdir(parents=True)
    for d in (root, sub.parent, sub):
        (d / "cgroup.controllers").write_text(controllers + "\n")
        (d / "cgroup.subtree_control").write_text(enabled + "\n")
        (d / "cgroup.procs").write_text("")
    return str(root), str(sub)


def _as_alice(monkeypatch, root, own, writable):
    """The cgroup discovery as an unprivileged alice whose process is in `own`."""
    from sandbox.cgroups import v2

    monkeypatch.delenv("CELLBLOCK_CGROUP", raising=False)
    monkeypatch.setattr(v2, "is_root", lambda: False)
    monkeypatch.setattr(v2, "user_name", lambda: "alice")
    monkeypatch.setattr(v2, "own_cgroup", lambda root_=root: f"{root}{own}")
    monkeypatch.setattr(v2, "writable", writable)
    return v2


def test_cgroup_v2_delegated_subtree(tmp_path, monkeypatch):
    root, sub = _fake_v2_tree(tmp_path)
    v2 = _as_alice(monkeypatch, root, "/cellblock/alice/supervisor", lambda p: p.startswith(sub))
    placement = v2.inspect(root)
    assert placement.ok, placement.detail
    assert "memory, pids, cpu usable by alice" in placement.detail
    assert placement.base == sub and v2.choose_base(root) == (sub, "cellblock setup")

    monkeypatch.setenv("CELLBLOCK_CGROUP", sub)
    assert v2.inspect(root).ok


def test_cgroup_v2_not_delegated(tmp_path, monkeypatch):
    root, sub = _fake_v2_tree(tmp_path, controllers="memory pids")
    # Nothing delegated, and alice's own cgroup is not hers to write.
    (Path(sub) / "cgroup.procs").unlink()
    shutil.rmtree(sub)
    v2 = _as_alice(monkeypatch, root, "/user.slice/session-1.scope", lambda p: False)
    placement = v2.inspect(root)
    assert not placement.ok
    assert "nothing is delegated to alice" in placement.detail
    assert placement.fix == "sudo cellblock setup --user alice"


def test_cgroup_v2_delegated_but_the_worker_is_outside_it(tmp_path, monkeypatch):
    # Right after `cellblock setup --user alice`, alice's login shell is outside
    # her subtree and cannot move in: her cells get no cgroup, and the doctor
    # says so (it once said "ok" while her runs said "nothing is delegated").
    root, sub = _fake_v2_tree(tmp_path)
    v2 = _as_alice(monkeypatch, root, "/user.slice/session-1.scope", lambda p: p.startswith(sub))
    placement = v2.inspect(root)
    assert not placement.ok
    assert "is delegated to alice, but this process is outside it" in placement.detail
    assert "Delegate=yes" in placement.detail
    with pytest.raises(OSError, match="outside it"):  # what a run meets: the same words
        v2.choose_base(root)
    # Control: started inside it (as a systemd unit with Delegate=yes would be), it is usable.
    v2 = _as_alice(monkeypatch, root, "/cellblock/alice/supervisor", lambda p: p.startswith(sub))
    assert v2.inspect(root).ok


def test_cgroup_v2_controllers_not_delegated(tmp_path, monkeypatch):
    root, sub = _fake_v2_tree(tmp_path, controllers="memory pids")
    v2 = _as_alice(monkeypatch, root, "/cellblock/alice/supervisor", lambda p: p.startswith(sub))
    placement = v2.inspect(root)
    assert not placement.ok
    assert "controllers not delegated: cpu" in placement.detail
    # Files alice may not write: named.
    v2 = _as_alice(monkeypatch, root, "/cellblock/alice", lambda p: p == sub)
    assert "not writable by alice" in v2.inspect(root).detail


# --------------------------------------------------------------------------- unprivileged


@pytest.fixture(scope="module")
def unprivileged_user():
    if os.geteuid() != 0:
        pytest.skip("creating a throwaway user needs root")
    if not (shutil.which("useradd") and shutil.which("runuser") and shutil.which("userdel")):
        pytest.skip("useradd/runuser/userdel not installed")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                TEST_USER,
            ],
            check=True,
        )
    yield TEST_USER
    subprocess.run(["userdel", TEST_USER], check=False, capture_output=True)


def _doctor_as(user: str, as_json: bool) -> tuple[str, int]:
    code = (
        "import sys\n"
        "from sandbox.doctor import run_doctor\n"
        f"text, code = run_doctor({as_json})\n"
        "print(text)\n"
        "sys.exit(code)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("CELLBLOCK_CGROUP", None)
    res = subprocess.run(
        ["runuser", "-u", user, "--", VENV_PYTHON, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.stderr == "", res.stderr
    return res.stdout, res.returncode


def test_doctor_as_unprivileged_user(unprivileged_user):
    out, code = _doctor_as(unprivileged_user, as_json=True)
    data = json.loads(out)
    checks = {c["name"]: c for c in data["checks"]}
    assert code == (0 if data["ok"] else 1)

    userns = checks["user namespaces"]
    assert userns["ok"], userns["detail"]
    assert f"uid {pwd.getpwnam(unprivileged_user).pw_uid}" in userns["detail"]

    cg = checks["cgroups"]
    assert not cg["ok"] and cg["required"]  # a brand-new user has nothing delegated
    assert unprivileged_user in cg["detail"]
    assert cg["fix"] == f"sudo cellblock setup --user {unprivileged_user}"
    assert not data["ok"] and code == 1
    assert "cgroups" in data["degraded"]

    # A brand-new system user has no subordinate ids: its programs would run as
    # its own uid. Required, and the same one command fixes it.
    subids = checks["subordinate ids"]
    assert not subids["ok"] and subids["required"]
    assert "runs as" in subids["detail"] and "own uid" in subids["detail"]
    assert subids["fix"] == f"sudo cellblock setup --user {unprivileged_user}"
    assert "subordinate ids" in data["degraded"]

    text, code = _doctor_as(unprivileged_user, as_json=False)
    assert code == 1
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("✗ cgroups — "))
    assert lines[i + 1] == f"    fix: sudo cellblock setup --user {unprivileged_user}"


@pytest.mark.skipif(not _is_v1_hybrid_host(), reason="this host is not cgroup v1 hybrid")
def test_unprivileged_v1_names_missing_directories(unprivileged_user):
    out, _ = _doctor_as(unprivileged_user, as_json=True)
    cg = next(c for c in json.loads(out)["checks"] if c["name"] == "cgroups")
    assert cg["detail"].startswith("cgroup v1 (hybrid")
    assert f"not delegated to {unprivileged_user}" in cg["detail"]
    assert "/sys/fs/cgroup/memory/cellblock" in cg["detail"]


@needs_root
def test_root_id_ranges_reported_and_their_unusable_lock_dir_named(tmp_path, monkeypatch):
    from sandbox import userns

    check = doctor.check_subids()
    assert check.ok and "a range of 65536 host ids of its own" in check.detail, check
    # Where the locks cannot be kept (a read-only /run, here a path under a file),
    # cells share one range: the check says so and how to fix it, and cells run.
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(userns, "SLOT_LOCKS_ROOT", str(blocker / "id-ranges"))
    check = doctor.check_subids()
    assert not check.ok and "every live cell shares host ids" in check.detail, check
    assert check.fix.startswith("mkdir -p -m 0700 ")
    import sandbox

    sandbox.keep_warm(False)  # a cold cell: its ids are held in this process
    result = sandbox.run(["cat", "/proc/self/uid_map"])
    assert result.status == "OK", result.message
    first = userns.choose_idmap().uid_lines[0][1]
    assert result.stdout.split() == ["0", str(first), "65536"]


def test_a_user_with_subordinate_ids_passes_that_check(test_user):
    # The main path, as `cellblock setup --user` leaves a user.
    out, _ = _doctor_as(test_user.pw_name, as_json=True)
    subids = next(c for c in json.loads(out)["checks"] if c["name"] == "subordinate ids")
    assert subids["ok"] and subids["required"], subids
    assert "each live cell's program runs as one of its own" in subids["detail"]


def test_per_user_quotas_say_how_many_cells_fit(monkeypatch):
    check = doctor.check_quotas()
    assert "cells at their quotas leave the worker half" in check.detail and not check.required
    # A host whose inotify limits hold too few cells: the check says so and how to fix it.
    small = {
        "/proc/sys/fs/inotify/max_user_instances": "8\n",
        "/proc/sys/fs/inotify/max_user_watches": "8192\n",
    }
    real_read = resources.read
    monkeypatch.setattr(resources, "read", lambda path: small.get(path) or real_read(path))
    check = doctor.check_quotas()
    assert not check.ok and "1 cells at their quotas" in check.detail, check
    cores = os.cpu_count() or 1
    assert check.fix == (
        f"sysctl -w fs.inotify.max_user_instances={max(8, 4 * cores * 4)} "
        f"fs.inotify.max_user_watches={max(8192, 4 * cores * 4096)}"
    )


def test_cpu_waits_are_counted_here(monkeypatch):
    # Two busy processes on one CPU: the probe's waited, and the check says what
    # that gives (sandbox/cpuwait.py); optional either way.
    outcome = probe(resources._probe_cpu_wait)
    assert outcome.ok and outcome.value > 0, outcome
    check = doctor.check_cpu_waits()
    assert check.ok and not check.required and "IE" in check.detail, check
    # A kernel that counts no wait: the check says what is lost and the fix.
    monkeypatch.setattr(resources, "probe", lambda fn: Outcome(True, 0.0))
    check = doctor.check_cpu_waits()
    assert not check.ok and "TLE, as if the program had used the time" in check.detail, check
    assert check.fix and "CONFIG_SCHED_INFO" in check.fix
