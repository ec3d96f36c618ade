"""`cellblock image pull containers-storage:NAME`: an image from a local Podman
store. The test builds an OCI archive (busybox-static), `podman load`s it
into a Podman store of its own (never the machine's: a storage.conf of the
test's, the vfs driver, which mounts nothing), pulls it from there the ways
a user writes it, and runs a cell in it. As root, Podman's main case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root
from image_support import BASE, BUSYBOX, Entry, cli, make_layout, ok

import sandbox
from sandbox.imagestore import LayerStore


@pytest.fixture
def podman_store(layer_fs: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    needs_root("Podman's own store is root's here")
    if not shutil.which("podman") or not shutil.which("skopeo") or not BUSYBOX.exists():
        pytest.fail("needs podman, skopeo and busybox-static: run scripts/install")
    work = Path(tempfile.mkdtemp(prefix="cellblock-podman-", dir=layer_fs))
    work.chmod(0o755)
    conf = work / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{work / "graph"}"\nrunroot = "{work / "run"}"\n'
    )
    # Read by Podman and skopeo alike (containers/storage): the machine's store is
    # untouched (and Podman's own state goes to --tmpdir, below).
    env = {"CONTAINERS_STORAGE_CONF": str(conf), "CELLBLOCK_STORE": str(work / "store")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield {"work": work, "env": env, "spec": f"vfs@{work / 'graph'}+{work / 'run'}"}
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def oci_archive(layout_dir: Path, archive: Path) -> None:
    """An OCI layout as an oci-archive: the layout's files, tarred."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(layout_dir.iterdir()):
            tar.add(path, arcname=path.name)


def podman(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["podman", "--tmpdir", str(Path(env["CONTAINERS_STORAGE_CONF"]).parent / "tmp"), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pull_from_a_podman_store(podman_store: dict) -> None:
    work, env = podman_store["work"], {**os.environ, **podman_store["env"]}
    layout = make_layout(
        work / "layout",
        "pod:1",
        [BASE, [Entry("marker", b"from podman\n")]],
        {"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "cat", "/marker"]},
    )
    oci_archive(layout.path, work / "pod.tar")
    assert "localhost/pod:1" in podman("load", "-i", str(work / "pod.tar"), env=env)
    podman_id = podman("image", "inspect", "localhost/pod:1", env=env)
    assert json.loads(podman_id)[0]["Id"] == layout.config_digest.split(":", 1)[1]
    # As users write it: the store storage.conf names.
    out = ok(cli("pull", "containers-storage:localhost/pod:1", env=podman_store["env"]))
    assert layout.config_digest in out
    image = LayerStore().resolve("localhost/pod:1")
    assert image.id == layout.config_digest and image.names == ("localhost/pod:1",)
    assert image.layers == tuple(layout.diff_ids)
    # The image's own command, in a cell.
    result = sandbox.run([], image="localhost/pod:1")
    assert result.status == "OK", result.message
    assert result.stdout == "from podman\n"
    # A store named in the reference ([driver@graph+run]), under another name.
    ok(cli("rm", "localhost/pod:1", env=podman_store["env"]))
    reference = f"containers-storage:[{podman_store['spec']}]localhost/pod:1"
    ok(cli("pull", "--name", "again:1", reference, env=podman_store["env"]))
    assert LayerStore().resolve("again:1").id == layout.config_digest
    # An image the Podman store does not have: a clear error, nothing kept.
    done = cli("pull", "containers-storage:localhost/absent:1", env=podman_store["env"])
    assert done.returncode == 1 and "localhost/absent:1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
