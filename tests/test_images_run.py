"""Cells run pulled images: the overlay's lowers are the image's layers (the
host's directories are not in the cell), and the image's Env, WorkingDir,
Entrypoint and Cmd apply. As root (warm, cold and recycled cells; the store
0700 under root) and as unprivileged users (the CLI; a store in their own
XDG directory), the images pulled from OCI layouts built here."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root
from image_support import CONFIG, Entry, cli, four_layers, make_layout, ok

import sandbox
from sandbox import SpecError

# What four_layers' image shows, merged: the file added in layer 2 and changed
# in 3 is whited out by 4; /opq is opaque in 4 (only its own file is left).
MERGED_VIEW = "etc:hostname\nopq:new.txt\ndata:\n"
LIST_VIEW = "for d in etc opq data; do echo $d:$(ls /$d); done"
# The config without its User: a cell without subordinate ids cannot take one
# (tests/test_images_user.py), and these tests run in every kind of cell.
NO_USER = {key: value for key, value in CONFIG.items() if key != "User"}


@pytest.fixture
def work(layer_fs: Path) -> Iterator[Path]:
    """A directory for layouts and stores, on a file system that holds layers."""
    path = Path(tempfile.mkdtemp(prefix="cellblock-imgrun-", dir=layer_fs))
    path.chmod(0o755)
    yield path
    subprocess.run(["chmod", "-R", "u+rwX", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def image(cell, work: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """four_layers' image pulled (from an OCI layout) into the store the
    runner's cells use, under a name of its own; removed and pruned after."""
    name = f"cellblock-test/base-{uuid.uuid4().hex[:8]}:1"
    layout = four_layers(work / "layout", ref="base", config=NO_USER)
    user = None if cell.user is None else cell.user.pw_name
    store = work / "store"
    if cell.user is not None:  # a store of the user's own (the test users have no home)
        store.mkdir(0o700)
        os.chown(store, cell.user.pw_uid, cell.user.pw_gid)
    monkeypatch.setenv("CELLBLOCK_STORE", str(store))  # runuser passes it on
    env = {"CELLBLOCK_STORE": str(store)}
    try:
        ok(cli("pull", "--name", name, layout.oci(), user=user, env=env))
        yield name
    finally:
        cli("rm", name, user=user, env=env)
        cli("prune", user=user, env=env)


def test_the_cell_sees_the_images_layers_merged(cell, image):
    result = cell.run(["sh", "-c", LIST_VIEW], image=image)
    assert result.status == "OK", result.message
    assert result.stdout == MERGED_VIEW
    # The host's directories are not there: the image has no /usr, and its
    # /etc is its own.
    result = cell.run(["sh", "-c", "ls /usr; ls /etc"], image=image)
    assert "No such file" in result.stderr
    assert result.stdout == "hostname\n"


def test_the_images_config_applies(cell, image):
    # No command: the image's Entrypoint (sh -c) + Cmd (echo $GREETING), its Env.
    own = cell.run([], image=image)
    assert own.status == "OK", own.message
    assert own.stdout == "hello world\n"
    # A command given runs as it is (Entrypoint and Cmd are the default
    # command only); WorkingDir is the cwd; the run's --env wins over the image's.
    given = cell.run(
        ["sh", "-c", "pwd; echo $GREETING; echo $PATH"], image=image, env={"GREETING": "hi"}
    )
    assert given.status == "OK", given.message
    assert given.stdout == "/data\nhi\n/bin\n"


def test_writes_vanish_with_the_run(cell, image):
    # The image's files are the store owner's: not the program's uid, unless
    # the program runs as the caller's own (no subordinate ids), which may then
    # change them, in its run's upper layer only.
    first = cell.run(
        ["sh", "-c", "echo new > /etc/hostname || echo refused; echo t > /tmp/t; echo b > /box/b"],
        image=image,
    )
    assert first.stdout == ("" if cell.mode == "user-shared" else "refused\n"), first.stderr
    again = cell.run(["sh", "-c", "cat /etc/hostname; ls /tmp /box"], image=image)
    assert again.stdout == "cell\n/box:\n\n/tmp:\n"


def test_recycled_cells_run_an_image_again_and_again(work, monkeypatch):
    """A recycled cell builds each run's root anew from the layers its init
    holds: the view is the image's every time, and a run's writes are gone."""
    needs_root("in-process cells as root; the unprivileged runs are the CLI's")
    monkeypatch.setenv("CELLBLOCK_STORE", str(work / "store"))
    layout = four_layers(work / "layout", ref="base")
    ok(cli("pull", "--name", "recycled:1", layout.oci()))
    sandbox.recycle_cells()
    try:
        for _ in range(4):
            result = sandbox.run(
                ["sh", "-c", LIST_VIEW + "; echo x > /tmp/x; touch /box/y; ls /tmp /box"],
                image="recycled:1",
            )
            assert result.status == "OK", result.message
            assert result.stdout == MERGED_VIEW + "/box:\ny\n\n/tmp:\nx\n"
    finally:
        sandbox.recycle_cells(None)


def test_an_image_of_sixty_layers(work, monkeypatch):
    """Each layer is its own overlay lower: 64 of them fit the mount's options."""
    needs_root("in-process cells as root")
    monkeypatch.setenv("CELLBLOCK_STORE", str(work / "store"))
    layers = [[Entry("bin/"), Entry("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)]]
    layers[0].append(Entry("bin/sh", link="busybox"))
    layers += [[Entry("l/"), Entry(f"l/{index:02d}", f"{index}\n".encode())] for index in range(63)]
    layout = make_layout(work / "tall", "tall", layers, {"Env": ["PATH=/bin"]})
    ok(cli("pull", "--name", "tall:1", layout.oci()))
    result = sandbox.run(["/bin/sh", "-c", "ls /l | wc -l; cat /l/62"], image="tall:1")
    assert result.status == "OK", result.message
    assert result.stdout.split() == ["63", "62"]


def test_an_image_that_is_not_there_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBLOCK_STORE", str(tmp_path / "store"))
    with pytest.raises(SpecError, match="no image 'nowhere:1'"):
        sandbox.run(["true"], image="nowhere:1")
    with pytest.raises(SpecError, match="nothing to run"):
        sandbox.run([], image="host")
