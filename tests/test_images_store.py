"""The layer store and pulls (sandbox/imagestore.py, sandbox/pull.py, `cellblock image`).

Real parts only: a local registry (Debian's docker-registry on a free port),
images built here by hand as OCI layouts (busybox-static and small text
files), pushed and pulled with skopeo, unpacked by sandbox/unpack.py. The
end-to-end cases use the CLI as users would; the detailed checks use the
Python API. The CLI cases run as root and as unprivileged users (a store in
each user's XDG data directory).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_support import (
    ADD,
    ARCH,
    BASE,
    BUSYBOX,
    PYTHON,
    REPO,
    Entry,
    cli,
    four_layers,
    free_port,
    layer_tar,
    make_layout,
    ok,
    push,
    registry_server,
    tree,
    write_blob,
)

from sandbox.imagestore import ImageError, LayerStore
from sandbox.pull import PullError, PullOptions, pull

# The suite's unprivileged users (conftest.py), with and without subordinate
# ids; the store needs neither.
USERS = ("test_user", "shared_test_user")


@pytest.fixture(autouse=True)
def _tools() -> None:
    if not shutil.which("skopeo") or not shutil.which("docker-registry") or not BUSYBOX.exists():
        pytest.fail("needs skopeo, docker-registry and busybox-static: run scripts/install")


# -- a registry, a store, the CLI -------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    """docker-registry on 127.0.0.1 (plain HTTP), its storage in a temporary directory."""
    with registry_server() as address:
        yield address


@pytest.fixture
def scratch(layer_fs: Path) -> Iterator[Path]:
    """On a file system that holds layers (conftest's layer_fs: the VM's /tmp does not)."""
    path = Path(tempfile.mkdtemp(prefix="cellblock-images-", dir=layer_fs))
    path.chmod(0o755)  # layouts and archives are read by the unprivileged users too
    yield path
    # Layers keep their directories' modes (0555 ones too): writable again first.
    subprocess.run(["chmod", "-R", "u+rwX", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def store(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> LayerStore:
    root = scratch / "store"
    monkeypatch.setenv("CELLBLOCK_STORE", str(root))
    return LayerStore(root)


def store_is_empty(root: Path) -> None:
    """Nothing kept (a pull that fails before its copy has not made the store)."""
    for sub in ("layers", "images", "tmp"):
        left = list((root / sub).iterdir()) if (root / sub).exists() else []
        assert not left, (sub, left)


# -- pulls ------------------------------------------------------------------------------


def test_pull_by_tag_and_by_digest(registry: str, scratch: Path, store: LayerStore) -> None:
    layout = four_layers(scratch / "base")
    digest = push(layout, f"{registry}/base:1")
    out = ok(cli("pull", "--no-tls-verify", f"{registry}/base:1"))
    assert layout.config_digest in out
    image = json.loads(ok(cli("inspect", f"{registry}/base:1")))
    assert image["id"] == layout.config_digest
    assert image["names"] == [f"{registry}/base:1"]
    assert image["repo_digests"] == [f"{registry}/base@{digest}"]
    assert [layer["diff_id"] for layer in image["layers"]] == layout.diff_ids
    assert image["layers"][0]["size"] == BUSYBOX.stat().st_size + len(b"cell\n")
    # The same image by the digest users write after @: the registry's.
    assert json.loads(ok(cli("inspect", f"{registry}/base@{digest}")))["id"] == image["id"]
    ok(cli("rm", f"{registry}/base:1"))
    ok(cli("prune"))
    store_is_empty(store.root)
    ok(cli("pull", "--no-tls-verify", f"{registry}/base@{digest}"))
    pulled = store.resolve(f"{registry}/base@{digest}")
    assert pulled.id == layout.config_digest
    assert pulled.names == () and pulled.repo_digests == (f"{registry}/base@{digest}",)
    listed = json.loads(ok(cli("ls", "--json")))
    assert [i["id"] for i in listed] == [layout.config_digest]
    assert f"{registry}/base@{digest}" in ok(cli("ls"))  # no name: listed by its digest
    assert not list((store.root / "tmp").iterdir())


@pytest.mark.userland
def test_a_manifest_list_by_its_digest(registry: str, scratch: Path, store: LayerStore) -> None:
    """A multi-platform image: the digest users write after @ is the list's;
    skopeo takes this platform's image from it."""
    layout = make_layout(scratch / "list", "list", [BASE])
    index = json.loads((layout.path / "index.json").read_text())
    entry = index["manifests"][0]
    del entry["annotations"]
    entry["platform"] = {"architecture": ARCH, "os": "linux"}
    image_index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    }
    digest, size = write_blob(layout.path, json.dumps(image_index).encode())
    index["manifests"] = [
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "list"},
        }
    ]
    (layout.path / "index.json").write_text(json.dumps(index))
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", layout.oci(),
         f"docker://{registry}/list:1"],
        check=True,
    )  # fmt: skip
    image = pull(f"{registry}/list:1", PullOptions(tls_verify=False), store)
    assert image.repo_digests == (f"{registry}/list@{digest}",)
    assert image.id == layout.config_digest


def test_layers_are_stored_exactly(registry: str, scratch: Path, store: LayerStore) -> None:
    layout = four_layers(scratch / "base")
    push(layout, f"{registry}/exact:1")
    image = pull(f"{registry}/exact:1", PullOptions(tls_verify=False), store)
    assert image.layers == tuple(layout.diff_ids)
    expected = [
        {"bin": "dir", "bin/busybox": "busybox", "bin/sh": "-> busybox", "etc": "dir",
         "etc/hostname": "cell\n"},
        {"data": "dir", "data/added.txt": "one\n", "opq": "dir", "opq/old.txt": "o",
         "ro": "dir", "ro/file": "r"},
        {"data": "dir", "data/added.txt": "two\n"},
        {"data": "dir", "data/added.txt": "whiteout", "opq": "dir opaque", "opq/new.txt": "n"},
    ]  # fmt: skip
    dirs = [store.layer_dir(diff_id) for diff_id in image.layers]
    assert [tree(d) for d in dirs] == expected
    assert os.stat(Path(dirs[0]) / "bin/busybox").st_mode & 0o777 == 0o755
    assert stat.S_IMODE(os.stat(Path(dirs[1]) / "ro").st_mode) == 0o555
    # Nothing beside the layers: the store's own files, no leftovers of the pull.
    assert sorted(p.name for p in (store.root / "layers").iterdir()) == sorted(
        d.split(":")[1] for d in layout.diff_ids
    )
    for diff_id in layout.diff_ids:
        assert sorted(os.listdir(store.root / "layers" / diff_id.split(":")[1])) == [
            "diff",
            "layer.json",
        ]
    assert image.size == sum(store.layer(d).size for d in image.layers)  # type: ignore[union-attr]
    assert not list((store.root / "tmp").iterdir())
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700


@pytest.mark.userland
def test_config_is_recorded(registry: str, scratch: Path, store: LayerStore) -> None:
    push(four_layers(scratch / "base"), f"{registry}/config:1")
    image = pull(f"{registry}/config:1", PullOptions(tls_verify=False), store)
    assert image.config.env == ("PATH=/bin", "GREETING=hello world")
    assert image.config.working_dir == "/data"
    assert image.config.user == "1000:1000"
    assert image.config.entrypoint == ("/bin/sh", "-c")
    assert image.config.cmd == ("echo $GREETING",)
    assert image.source == f"docker://{registry}/config:1"
    assert store.resolve(f"{registry}/config:1") == image  # as read back from its record


def test_a_shared_base_layer_is_stored_once(
    registry: str, scratch: Path, store: LayerStore
) -> None:
    one = make_layout(scratch / "one", "one", [BASE, [Entry("one.txt", b"1")]])
    two = make_layout(scratch / "two", "two", [BASE, [Entry("two.txt", b"2")]])
    assert one.diff_ids[0] == two.diff_ids[0]
    push(one, f"{registry}/one:1")
    push(two, f"{registry}/two:1")
    first = pull(f"{registry}/one:1", PullOptions(tls_verify=False), store)
    base = store.layer_dir(first.layers[0])
    inode = os.stat(Path(base) / "bin/busybox").st_ino
    second = pull(f"{registry}/two:1", PullOptions(tls_verify=False), store)
    assert store.layer_dir(second.layers[0]) == base
    assert os.stat(Path(base) / "bin/busybox").st_ino == inode  # not unpacked again
    assert len(list((store.root / "layers").iterdir())) == 3
    copies = [p for p in store.root.rglob("busybox") if p.is_file()]
    assert len(copies) == 1
    # Each image counts its own layers; the store counts the shared one once.
    assert first.size == second.size == BUSYBOX.stat().st_size + 5 + 1
    assert store.usage() == BUSYBOX.stat().st_size + 5 + 2
    on_disk = sum(p.lstat().st_size for p in (store.root / "layers").rglob("*") if p.is_file())
    assert on_disk < 2 * BUSYBOX.stat().st_size


def test_docker_archive_and_oci_layout(scratch: Path, store: LayerStore) -> None:
    layout = four_layers(scratch / "base", "arch:1")
    archive = scratch / "base.tar"
    subprocess.run(
        ["skopeo", "copy", "--quiet", layout.oci(), f"docker-archive:{archive}:arch/base:2"],
        check=True,
    )
    archive.chmod(0o644)
    ok(cli("pull", f"docker-archive:{archive}:arch/base:2"))
    from_archive = store.resolve("arch/base:2")
    assert from_archive.layers == tuple(layout.diff_ids)  # uncompressed in the archive
    ok(cli("pull", layout.oci()))
    from_layout = store.resolve("arch:1")
    # skopeo writes the archive's config in Docker's form: another image id, the same layers.
    assert from_layout.id == layout.config_digest
    assert from_layout.layers == from_archive.layers
    # No reference inside: --name gives the image its name; without one, refused.
    failed = cli("pull", f"docker-archive:{archive}")
    assert failed.returncode == 1 and "--name" in failed.stderr
    ok(cli("pull", "--name", "named", f"docker-archive:{archive}"))
    assert store.resolve("named:latest").id == from_archive.id
    assert store.resolve("named").names == ("arch/base:2", "named:latest")
    assert len(list((store.root / "layers").iterdir())) == 4  # one copy of each layer
    assert not list((store.root / "tmp").iterdir())


# -- failures: clear, non-zero, nothing kept ---------------------------------------------


@pytest.mark.userland
def test_a_missing_tag_is_a_clear_error(registry: str, store: LayerStore) -> None:
    done = cli("pull", "--no-tls-verify", f"{registry}/nothing:here")
    assert done.returncode == 1
    assert "manifest unknown" in done.stderr and "nothing" in done.stderr
    assert "Traceback" not in done.stderr
    store_is_empty(store.root)


@pytest.mark.userland
def test_an_unreachable_registry_is_a_clear_error(store: LayerStore) -> None:
    done = cli("pull", "--no-tls-verify", f"127.0.0.1:{free_port()}/base:1")
    assert done.returncode == 1 and "connection refused" in done.stderr.lower()
    store_is_empty(store.root)


@pytest.mark.userland
def test_tls_is_verified_unless_told(registry: str, scratch: Path, store: LayerStore) -> None:
    push(four_layers(scratch / "base"), f"{registry}/tls:1")
    done = cli("pull", f"{registry}/tls:1")  # localhost gets no exception
    assert done.returncode == 1 and "HTTPS" in done.stderr
    store_is_empty(store.root)


@pytest.mark.userland
def test_a_tampered_blob_is_refused(scratch: Path, store: LayerStore) -> None:
    layout = four_layers(scratch / "base")
    blob = layout.path / "blobs" / "sha256" / layout.layer_digests[1].split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-9] ^= 0xFF  # the gzip trailer's CRC: still a blob of the same size
    blob.write_bytes(bytes(data))
    done = cli("pull", layout.oci())
    assert done.returncode == 1 and "did not match" in done.stderr.lower()
    store_is_empty(store.root)


@pytest.mark.userland
def test_a_layer_unlike_its_diff_id_is_refused(scratch: Path, store: LayerStore) -> None:
    # Every blob matches its descriptor, but the config lies about a layer's content.
    liar = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    layout = make_layout(
        scratch / "liar", "liar", [BASE, ADD], diff_ids=[layer_diff_id(BASE), liar]
    )
    with pytest.raises(PullError, match="the config says"):
        pull(layout.oci(), store=store)
    store_is_empty(store.root)


@pytest.mark.userland
def test_pulls_own_checks_of_what_skopeo_wrote(scratch: Path, store: LayerStore) -> None:
    """skopeo checks blobs on its copy; pull.py checks the layout again, not
    trusting it: a blob changed after the copy, a manifest unlike its digest."""
    from sandbox.pull import _Layout, _unpack

    layout = four_layers(scratch / "base")
    blob = layout.path / "blobs" / "sha256" / layout.layer_digests[2].split(":")[1]
    blob.write_bytes(gzip.compress(layer_tar([Entry("data/added.txt", b"evil")]), mtime=0))
    read = _Layout(layout.path)
    manifest, config, config_digest = read.manifest_named(layout.ref)
    assert config_digest == layout.config_digest
    with store.staging() as staged, pytest.raises(PullError, match="not what its descriptor says"):
        _unpack(store, staged, read, manifest, config, PullOptions().limits)
    manifest_blob = layout.path / "blobs" / "sha256" / layout.manifest_digest.split(":")[1]
    manifest_blob.write_bytes(
        manifest_blob.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion":2')
    )
    with pytest.raises(PullError, match="does not match its digest"):
        read.manifest_named(layout.ref)
    store_is_empty(store.root)


@pytest.mark.userland
def test_two_pulls_at_once(registry: str, scratch: Path, store: LayerStore) -> None:
    one = make_layout(scratch / "one", "one", [BASE, [Entry("one.txt", b"1")]])
    two = make_layout(scratch / "two", "two", [BASE, [Entry("two.txt", b"2")]])
    push(one, f"{registry}/both-one:1")
    push(two, f"{registry}/both-two:1")
    command = [PYTHON, "-m", "cellblock", "image", "pull", "--no-tls-verify"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    running = [
        subprocess.Popen([*command, f"{registry}/both-{n}:1"], env=env, stderr=subprocess.PIPE)
        for n in ("one", "two")
    ]
    for process in running:
        assert process.wait(60) == 0, process.stderr.read() if process.stderr else ""
    assert store.resolve(f"{registry}/both-one:1").layers[0] == one.diff_ids[0]
    assert store.resolve(f"{registry}/both-two:1").layers[0] == one.diff_ids[0]
    assert len(list((store.root / "layers").iterdir())) == 3
    assert not list((store.root / "tmp").iterdir())


@pytest.mark.userland
def test_prune_leaves_a_pull_in_progress(scratch: Path, store: LayerStore) -> None:
    with store.staging() as staged:
        (staged.path / "oci").mkdir()
        assert store.prune().tmp == 0
        assert staged.path.exists()
    crashed = store.root / "tmp" / "pull-crashed"
    (crashed / "layers" / "x" / "diff" / "ro").mkdir(parents=True)
    (crashed / "layers" / "x" / "diff" / "ro" / "f").write_text("f")
    (crashed / "layers" / "x" / "diff" / "ro").chmod(0o555)  # as the unpacker leaves some
    assert store.prune().tmp == 1
    store_is_empty(store.root)


def layer_diff_id(entries: list[Entry]) -> str:
    return "sha256:" + hashlib.sha256(layer_tar(entries)).hexdigest()


# -- names, rm, prune -------------------------------------------------------------------


@pytest.mark.userland
def test_rm_then_prune_frees_the_layers(registry: str, scratch: Path, store: LayerStore) -> None:
    one = make_layout(scratch / "one", "one", [BASE, [Entry("one.txt", b"1")]])
    two = make_layout(scratch / "two", "two", [BASE, [Entry("two.txt", b"2")]])
    push(one, f"{registry}/rm-one:1")
    push(two, f"{registry}/rm-two:1")
    ok(cli("pull", "--no-tls-verify", f"{registry}/rm-one:1"))
    ok(cli("pull", "--no-tls-verify", "--name", "second", f"{registry}/rm-two:1"))
    # A crashed pull's leftovers: nobody holds them.
    (store.root / "tmp" / "pull-crashed" / "oci").mkdir(parents=True)
    out = ok(cli("rm", f"{registry}/rm-one:1"))
    assert f"deleted {one.config_digest}" in out
    assert len(list((store.root / "layers").iterdir())) == 3  # rm leaves layers to prune
    out = ok(cli("prune"))
    assert f"deleted layer {one.diff_ids[1]}" in out and "1 stale pulls" in out
    assert sorted(p.name for p in (store.root / "layers").iterdir()) == sorted(
        d.split(":")[1] for d in two.diff_ids
    )
    ok(cli("rm", f"{registry}/rm-two:1"))  # one name of two: the image stays
    assert store.resolve("second").id == two.config_digest
    assert ok(cli("prune")).startswith("freed 0 B")
    ok(cli("rm", "second"))
    pruned = store.prune()
    assert set(pruned.layers) == set(two.diff_ids)
    assert pruned.bytes == BUSYBOX.stat().st_size + 5 + 1
    store_is_empty(store.root)
    assert cli("rm", "second").returncode == 1


@pytest.mark.userland
def test_a_name_moves_to_the_image_pulled_last(
    registry: str, scratch: Path, store: LayerStore
) -> None:
    old = make_layout(scratch / "old", "old", [BASE, [Entry("v", b"1")]])
    new = make_layout(scratch / "new", "new", [BASE, [Entry("v", b"2")]])
    push(old, f"{registry}/moving:1")
    pull(f"{registry}/moving:1", PullOptions(tls_verify=False), store)
    push(new, f"{registry}/moving:1")
    pull(f"{registry}/moving:1", PullOptions(tls_verify=False), store)
    assert store.resolve(f"{registry}/moving:1").id == new.config_digest
    left = store.resolve(old.config_digest)
    assert left.names == () and left.repo_digests == ()  # dangling: prune takes it
    assert "<none>" in ok(cli("ls"))
    pruned = store.prune()
    assert pruned.images == (old.config_digest,) and pruned.layers == (old.diff_ids[1],)


@pytest.mark.userland
def test_references_resolve(registry: str, scratch: Path, store: LayerStore) -> None:
    layout = make_layout(scratch / "ref", "ref", [BASE])
    push(layout, f"{registry}/ref:latest")
    pull(f"{registry}/ref", PullOptions(tls_verify=False), store)  # tag latest by default
    full = layout.config_digest
    for reference in (f"{registry}/ref", f"{registry}/ref:latest", full, full[:19], full[7:19]):
        assert store.resolve(reference).id == full, reference
    for reference in ("ref", f"{registry}/ref:2", full[:18], "sha256:" + "0" * 64):
        with pytest.raises(ImageError, match="no image"):
            store.resolve(reference)
    assert "ref:2" in cli("inspect", f"{registry}/ref:2").stderr


@pytest.mark.userland
def test_an_open_store_is_refused(scratch: Path) -> None:
    root = scratch / "open"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    with pytest.raises(ImageError, match="open to other users"):
        LayerStore(root).images()
    fresh = LayerStore(scratch / "deep" / "fresh")
    assert fresh.images() == []
    assert stat.S_IMODE((scratch / "deep" / "fresh").stat().st_mode) == 0o700


@pytest.mark.needs_root
def test_another_user_cannot_reach_a_layer(
    scratch: Path, store: LayerStore, shared_test_user
) -> None:
    """SECURITY.md rule 29: a setuid-root file of a layer root pulled, out of
    another user's reach; with the store opened (the mechanism taken out)
    it is reachable, and the store refuses to work."""
    setuid = [Entry("bin/"), Entry("bin/busybox", BUSYBOX.read_bytes(), 0o4755)]
    layout = make_layout(scratch / "suid", "suid", [setuid])
    image = pull(layout.oci(), PullOptions(name="suid"), store)
    path = Path(store.layer_dir(image.layers[0])) / "bin" / "busybox"
    st = path.stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o4755)

    def reachable() -> bool:
        probe = ["runuser", "-u", shared_test_user.pw_name, "--", "test", "-x", str(path)]
        return subprocess.run(probe, check=False).returncode == 0

    assert not reachable()
    store.root.chmod(0o755)
    (store.root / "layers").chmod(0o755)  # made 0700 too: both opened
    try:
        assert reachable()  # the attack works without the rule
        with pytest.raises(ImageError, match="open to other users"):
            LayerStore(store.root).resolve("suid")
        assert cli("ls").returncode == 1
    finally:
        store.root.chmod(0o700)
        (store.root / "layers").chmod(0o700)


@pytest.mark.userland
def test_cellblock_run_does_not_import_the_image_code(store: LayerStore) -> None:
    def imported(*args: str) -> str:
        done = subprocess.run(
            [PYTHON, "-X", "importtime", "-m", "cellblock", *args],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stderr

    modules = ("cellblock.imagecmd", "sandbox.imagestore", "sandbox.pull", "sandbox.unpack")
    run = imported("run")  # no command: exit 2 after parsing
    assert "no command given" in run
    assert not [m for m in modules if f" {m}\n" in run]
    image = imported("image", "ls")  # the control: the image commands do import them
    assert [m for m in modules if f" {m}\n" in image] == list(modules[:2])  # ls pulls nothing


# -- as unprivileged users --------------------------------------------------------------


@pytest.mark.needs_root
@pytest.mark.parametrize("user_fixture", USERS)
def test_as_an_unprivileged_user(
    registry: str, scratch: Path, user_fixture: str, request: pytest.FixtureRequest
) -> None:
    entry = request.getfixturevalue(user_fixture)
    user = entry.pw_name
    home = scratch / f"home-{user}"
    home.mkdir()
    os.chown(home, entry.pw_uid, entry.pw_gid)
    env = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    layout = four_layers(scratch / "base")
    digest = push(layout, f"{registry}/user-{user}:1")

    ok(cli("pull", "--no-tls-verify", f"{registry}/user-{user}:1", user=user, env=env))
    root = home / "data" / "cellblock" / "store"
    st = root.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (entry.pw_uid, 0o700)
    image = json.loads(ok(cli("inspect", f"{registry}/user-{user}@{digest}", user=user, env=env)))
    assert image["id"] == layout.config_digest
    layers = [layer["path"] for layer in image["layers"]]
    assert [tree(path) for path in layers][3] == {
        "data": "dir",
        "data/added.txt": "whiteout",
        "opq": "dir opaque",
        "opq/new.txt": "n",
    }
    assert tree(layers[0])["bin/busybox"] == "busybox"
    assert all(Path(path).stat().st_uid == entry.pw_uid for path in layers)
    assert stat.S_IMODE((Path(layers[1]) / "ro").stat().st_mode) == 0o555  # prune must chmod
    assert json.loads(ok(cli("ls", "--json", user=user, env=env)))[0]["config"]["cmd"] == [
        "echo $GREETING"
    ]
    ok(cli("pull", "--name", "local:1", layout.oci(), user=user, env=env))
    assert f"{registry}/user-{user}:1" in ok(cli("ls", user=user, env=env))
    failed = cli("pull", "--no-tls-verify", f"{registry}/user-{user}:2", user=user, env=env)
    assert failed.returncode == 1 and "manifest unknown" in failed.stderr
    ok(cli("rm", layout.config_digest[:19], user=user, env=env))
    out = ok(cli("prune", user=user, env=env))
    assert "4 layers" in out
    store_is_empty(root)


@pytest.mark.needs_root  # mounts an overlay (in a mount namespace of its own)
def test_a_store_that_cannot_hold_layers_is_refused_clearly(scratch: Path) -> None:
    """On an overlayfs (a container's root) whiteouts cannot be kept as files:
    the pull says so and what to do, instead of failing at the first one."""
    layout = four_layers(scratch / "layout")
    for name in ("lower", "upper", "work", "merged"):
        (scratch / name).mkdir()
    script = (
        f"mount -t overlay overlay -o lowerdir={scratch}/lower,upperdir={scratch}/upper,"
        f"workdir={scratch}/work {scratch}/merged && "
        f'PYTHONPATH={REPO} CELLBLOCK_STORE={scratch}/merged/store "$0" -m cellblock image '
        f"pull {layout.oci()}"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, PYTHON], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    assert "cannot hold image layers" in done.stderr, done.stderr
    assert "CELLBLOCK_STORE" in done.stderr


@pytest.mark.userland
@pytest.mark.parametrize(
    "config",
    [
        {"Env": ["PATH=/bin", "A=\0b"]},
        {"Cmd": ["sh", "-c", "\0"]},
        {"Entrypoint": ["/bin/\0sh"]},
        {"WorkingDir": "/box\0/x"},
        {"User": "1000\0"},
    ],
)
def test_an_image_config_with_a_nul_byte_is_refused(config: dict) -> None:
    # No part of a process's start can hold a NUL byte: a hostile config that
    # has one is a clear error, not a run that fails half-way (or a cut string).
    from sandbox.imagestore import ImageConfig

    assert ImageConfig.from_oci({"Env": ["PATH=/bin"], "Cmd": ["sh"]}).cmd == ("sh",)
    with pytest.raises(ImageError, match="NUL byte"):
        ImageConfig.from_oci(config)
