"""AppArmor (Ubuntu 23.10+ restricts unprivileged user namespaces): the
profile cellblock ships, and what `cellblock doctor` concludes.

The restriction exists only in Ubuntu's kernels, so here the doctor's
decisions are tested from what it reads (the sysctl, the process's label, a
mount probe that really runs), and the profile is checked by the AppArmor 4
parser of a Debian trixie root file system (Debian 12's parser, 3.0, predates
the `userns` rule), with a misspelled profile as the control."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import needs_root

from sandbox.doctor import apparmor
from sandbox.doctor.probe import Outcome

PROFILE = Path(__file__).resolve().parent.parent / "profiles" / "apparmor" / "cellblock"


def test_not_restricted_is_fine():
    assert apparmor.assess(None, None, False, None).ok
    assert apparmor.assess(0, "unconfined", False, None).ok
    assert apparmor.assess(1, "unconfined", True, None).ok  # root is not restricted


def test_restricted_and_unconfined_says_how_to_fix():
    check = apparmor.assess(1, "unconfined", False, None)
    assert not check.ok and check.required
    assert "no cell can be made" in check.detail
    assert str(apparmor.PROFILE) in check.fix and "apparmor_parser -r" in check.fix
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in check.fix


def test_restricted_under_a_profile_trusts_only_a_working_mount():
    assert apparmor.assess(1, "cellblock", False, Outcome(True, True)).ok
    refused = apparmor.assess(1, "cellblock", False, Outcome(False, error="mount: EPERM"))
    assert not refused.ok and "mount: EPERM" in refused.detail


def test_the_label_is_read_without_its_mode(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    old.write_text("cellblock (unconfined)\n")
    assert apparmor.current_profile((str(new), str(old))) == "cellblock"
    new.write_text("unconfined\n")
    assert apparmor.current_profile((str(new), str(old))) == "unconfined"
    assert apparmor.current_profile((str(tmp_path / "none"),)) is None


def test_the_doctor_s_mount_probe_really_runs():
    # The probe the doctor runs under a profile: here (no restriction) it must work.
    from sandbox.doctor.probe import probe

    assert probe(apparmor._mount_in_userns).ok


def test_the_profile_names_the_venv_scripts_install_makes():
    text = PROFILE.read_text()
    install = (PROFILE.parent.parent.parent / "scripts" / "install").read_text()
    assert "venv=${CELLBLOCK_VENV:-/opt/cellblock/venv}" in install
    assert "-m venv --copies" in install
    assert "profile cellblock /opt/cellblock/venv/bin/python3" in text
    assert "\n  userns,\n" in text and "flags=(unconfined)" in text


@pytest.fixture(scope="module")
def apparmor4_root(tmp_path_factory):
    """A Debian trixie root file system with AppArmor 4's parser (mmdebstrap)."""
    needs_root("it chroots into a Debian trixie root file system")
    if not shutil.which("mmdebstrap"):
        pytest.fail("mmdebstrap is missing: scripts/install installs it")
    root = tmp_path_factory.mktemp("trixie")
    done = subprocess.run(
        [
            "mmdebstrap",
            "--variant=essential",
            "--include=apparmor",
            "--skip=output/dev",
            "--quiet",
            "trixie",
            str(root),
            "http://deb.debian.org/debian",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _parse(root: Path, text: str) -> subprocess.CompletedProcess[str]:
    (root / "tmp" / "profile").write_text(text)
    return subprocess.run(
        [
            "chroot",
            str(root),
            "apparmor_parser",
            "--skip-kernel-load",
            "--skip-cache",
            "/tmp/profile",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def test_apparmor_4_accepts_the_profile(apparmor4_root):
    version = subprocess.run(
        ["chroot", str(apparmor4_root), "apparmor_parser", "--version"],
        capture_output=True,
        text=True,
    ).stdout
    assert "version 4." in version, version
    done = _parse(apparmor4_root, PROFILE.read_text())
    assert done.returncode == 0, done.stderr
    # The control: the same profile with its rule misspelled is refused.
    broken = _parse(apparmor4_root, PROFILE.read_text().replace("  userns,", "  usrns,"))
    assert broken.returncode != 0 and "syntax error" in broken.stderr
