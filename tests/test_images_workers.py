"""Workers pull the images they lack (worker/imagepull.py): from where the
rule says, once per image however many jobs need it, failures a submission's
`failed` reason naming the image, every pull counted in /metrics.

Real parts only: Debian's docker-registry on a loopback port serving images
built here (tests/image_support.py), skopeo, the layer store, and a real
`cellblock worker` (as the suite's unprivileged user, with a store of its own
that starts empty) behind the real API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from image_support import BASE, BUSYBOX, Entry, cli, make_layout, ok, push, registry_server
from service_support import ApiServer, RedisServer, Workers, remove, wait_for

from api.app import create_app
from api.settings import Settings
from sandbox.imagestore import ImageError, LayerStore
from worker.imagepull import ImagePullError, PullRecord, ensure, ensure_images, source_for
from worker.store import Store, Timing

SUM = "read a b\necho $((a + b))\n"
TESTS = [{"name": "1", "input": "1 2\n", "output": "3\n"}]


@pytest.fixture(autouse=True)
def _tools() -> None:
    if not shutil.which("skopeo") or not shutil.which("docker-registry") or not BUSYBOX.exists():
        pytest.fail("needs skopeo, docker-registry and busybox-static: run scripts/install")


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    with registry_server() as address:
        yield address


@pytest.fixture
def work(layer_fs: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch directory on a file system that holds layers, its store the default one."""
    path = layer_fs / f"cb-pulls-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    path.chmod(0o755)
    monkeypatch.setenv("CELLBLOCK_STORE", str(path / "store"))
    for variable in ("CELLBLOCK_IMAGE_REGISTRY", "CELLBLOCK_INSECURE_REGISTRIES"):
        monkeypatch.delenv(variable, raising=False)
    yield path
    subprocess.run(["chmod", "-R", "u+rwX", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def ash_image(path: Path, marker: str = "") -> object:
    layers = [BASE] + ([[Entry("marker", marker.encode())]] if marker else [])
    return make_layout(path, "ash", layers, {"Env": ["PATH=/bin"]})


def test_where_a_missing_image_comes_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELLBLOCK_IMAGE_REGISTRY", raising=False)
    # A reference that names its registry: from there, as written.
    assert source_for("localhost:5000/x:1") == "docker://localhost:5000/x:1"
    assert source_for("registry.example/team/x:1") == "docker://registry.example/team/x:1"
    digest = "sha256:" + "ab" * 32
    assert source_for(f"registry.example/x@{digest}") == f"docker://registry.example/x@{digest}"
    # A bare name: never Docker Hub by default; an image id, a path, host: never pulled.
    for image in ("python:3.12", "cellblock/python-sci:bookworm", digest, "ab" * 6, "/srv/root"):
        assert source_for(image) is None, image
    assert source_for("host") is None
    # The language's own source first; the operator's registry for bare names.
    assert source_for("python:3.12", "oci-archive:/srv/p.tar:p:1") == "oci-archive:/srv/p.tar:p:1"
    monkeypatch.setenv("CELLBLOCK_IMAGE_REGISTRY", "registry.internal:5000/mirror/")
    assert source_for("cellblock/python-sci:bookworm") == (
        "docker://registry.internal:5000/mirror/cellblock/python-sci:bookworm"
    )
    assert source_for("localhost:5000/x:1") == "docker://localhost:5000/x:1"
    assert source_for(digest) is None


def test_one_pull_while_others_wait(registry: str, work: Path, monkeypatch) -> None:
    """Two jobs at once need an image this store lacks: one pulls, the other
    waits on the image's pull lock and then finds it stored."""
    monkeypatch.setenv("CELLBLOCK_INSECURE_REGISTRIES", registry)
    image = f"{registry}/cellblock-test/once:1"
    push(ash_image(work / "layout"), image)
    store = LayerStore()
    results: list[PullRecord | None] = []
    threads = [threading.Thread(target=lambda: results.append(ensure(image))) for _ in range(2)]
    with store.pull_lock(image):  # held here until both are waiting for it
        lock = store.root / "pulls"
        (inode,) = [os.stat(p).st_ino for p in lock.iterdir()]
        for thread in threads:
            thread.start()
        wait_for(lambda: _flock_waiters(inode) == 2, 30, "both jobs waiting for the pull lock")
    for thread in threads:
        thread.join(60)
    pulled = [r for r in results if r is not None]
    assert len(results) == 2 and len(pulled) == 1, results
    assert pulled[0].ok and pulled[0].source == f"docker://{image}"
    assert store.resolve(image).names == (image,)
    assert ensure(image) is None  # present: nothing to do


def _flock_waiters(inode: int) -> int:
    """Processes blocked in flock(2) on the file of `inode` (/proc/locks' `->` lines)."""
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(1 for line in lines if "->" in line and f":{inode} " in line)


def test_a_bare_name_from_the_operators_registry_or_the_languages_source(
    registry: str, work: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CELLBLOCK_INSECURE_REGISTRIES", registry)
    monkeypatch.setenv("CELLBLOCK_IMAGE_REGISTRY", registry)
    push(ash_image(work / "plain"), f"{registry}/cellblock-test/plain:1")
    record = ensure("cellblock-test/plain:1")
    assert record is not None and record.source == f"docker://{registry}/cellblock-test/plain:1"
    # Named as the language asks for it (and as the registry has it).
    assert set(LayerStore().resolve("cellblock-test/plain:1").names) == {
        "cellblock-test/plain:1",
        f"{registry}/cellblock-test/plain:1",
    }
    # A language's image_source: an OCI layout on this machine, any name.
    layout = ash_image(work / "local", marker="local")
    record = ensure("nowhere/local:2", f"oci:{layout.path}:ash")
    assert record is not None and record.ok
    assert LayerStore().resolve("nowhere/local:2").id == layout.config_digest


def test_what_cannot_be_pulled_is_said(registry: str, work: Path, monkeypatch) -> None:
    monkeypatch.setenv("CELLBLOCK_INSECURE_REGISTRIES", registry)
    with pytest.raises(ImagePullError, match="'python:3.12' is not in this worker's image store"):
        ensure("python:3.12")  # no source: nothing asked of any registry
    missing = f"{registry}/cellblock-test/nothing:here"
    with pytest.raises(ImagePullError) as caught:
        ensure(missing)
    assert f"image {missing!r}: the pull from docker://{missing} failed" in str(caught.value)
    assert "manifest unknown" in str(caught.value)
    assert caught.value.record is not None and not caught.value.record.ok
    # TLS is verified for a registry not on the operator's list.
    monkeypatch.setenv("CELLBLOCK_INSECURE_REGISTRIES", "elsewhere:1")
    push(ash_image(work / "tls"), f"{registry}/cellblock-test/tls:1")
    with pytest.raises(ImagePullError, match="HTTPS"):
        ensure(f"{registry}/cellblock-test/tls:1")


def test_a_submission_needs_its_languages_or_its_allowed_image(
    registry: str, work: Path, monkeypatch
) -> None:
    """Which images a request makes a worker pull: never one it may not use."""
    monkeypatch.setenv("CELLBLOCK_INSECURE_REGISTRIES", registry)
    languages = work / "languages"
    languages.mkdir()
    image = f"{registry}/cellblock-test/lang:1"
    (languages / "ash.toml").write_text(
        f'image = "{image}"\nsource = "main.sh"\nrun = ["/bin/sh", "main.sh"]\n'
    )
    monkeypatch.setenv("CELLBLOCK_LANGUAGES", str(languages))
    allowed = f"{registry}/cellblock-test/allowed:1"
    monkeypatch.setenv("CELLBLOCK_ALLOWED_IMAGES", allowed)
    push(ash_image(work / "lang"), image)
    push(ash_image(work / "allowed", marker="allowed"), allowed)
    refused = f"{registry}/cellblock-test/refused:1"
    push(ash_image(work / "refused", marker="refused"), refused)
    heard: list[PullRecord] = []
    # Not allowed: not pulled (the request's parsing refuses it); the language's instead.
    assert [
        r.image for r in ensure_images({"language": "ash", "image": refused}, heard.append)
    ] == [image]
    assert ensure_images({"language": "ash", "image": allowed}, heard.append)[0].image == allowed
    assert ensure_images({"language": "ash"}, heard.append) == []  # there now
    assert [r.image for r in heard] == [image, allowed]
    with pytest.raises(ImageError, match="no image"):
        LayerStore().resolve(refused)


@pytest.fixture
def service_that_pulls(
    test_user, registry: str, layer_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict]:
    """The service; one worker as the test user with an empty store of its
    own; a language whose image is in the registry, one whose tag is not, and
    an allowed image by a bare name, from the operator's registry."""
    directory = layer_fs / f"cb-pullsvc-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    directory.chmod(0o755)
    store = directory / "store"
    store.mkdir(0o700)
    os.chown(store, test_user.pw_uid, test_user.pw_gid)
    tag = uuid.uuid4().hex[:8]
    image = f"{registry}/cellblock-test/ash-{tag}:1"
    push(ash_image(directory / "ash"), image)
    allowed = f"cellblock-test/marked-{tag}:1"
    push(ash_image(directory / "marked", marker="marked\n"), f"{registry}/{allowed}")
    missing = f"{registry}/cellblock-test/never-pushed-{tag}:1"
    languages = directory / "languages"
    languages.mkdir()
    for name, ref in (("ash", image), ("gone", missing)):
        (languages / f"{name}.toml").write_text(
            f'image = "{ref}"\nsource = "main.sh"\nrun = ["/bin/sh", "main.sh"]\n'
        )
    subprocess.run(["chmod", "-R", "a+rX", str(languages)], check=True)
    env = {
        "CELLBLOCK_STORE": str(store),
        "CELLBLOCK_LANGUAGES": str(languages),
        "CELLBLOCK_ALLOWED_IMAGES": allowed,
        "CELLBLOCK_IMAGE_REGISTRY": registry,
        "CELLBLOCK_INSECURE_REGISTRIES": registry,
    }
    for key, value in env.items():  # the API's (languages, allowed images)
        if key != "CELLBLOCK_STORE":
            monkeypatch.setenv(key, value)
    server = RedisServer(directory).start()
    workers = Workers(server.url, cells=1, user=test_user.pw_name, env=env)
    timing = Timing(lease=4, renew=1, reap=1, limbo=4, max_attempts=2)
    api = ApiServer(create_app(Settings.from_env(redis_url=server.url), timing)).start()
    try:
        wait_for(lambda: len(Store.from_url(server.url, timing).workers()) == 1, 60, "a worker")
        with httpx.Client(base_url=api.url, timeout=120) as client:
            yield {
                "client": client,
                "image": image,
                "allowed": allowed,
                "missing": missing,
                "store": env,
                "user": test_user.pw_name,
            }
    finally:
        api.stop()
        workers.stop()
        server.stop()
        subprocess.run(["chmod", "-R", "u+rwX", str(directory)], check=False)
        remove(directory)


def _samples(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        name: float(value)
        for name, value in (
            line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
        )
    }


def test_the_worker_pulls_what_it_lacks_and_counts_it(service_that_pulls) -> None:
    service = service_that_pulls
    client = service["client"]
    before = _samples(client)
    assert before['cellblock_image_pulls_total{result="ok"}'] == 0
    # Not pulled yet, but pullable: the worker counts as having the language.
    listed = {row["id"]: row["workers"] for row in client.get("/v1/languages").json()}
    assert listed["ash"] == 1, listed
    # The language's image, not in the worker's store: pulled, then judged.
    done = client.post(
        "/v1/submissions?wait=true", json={"language": "ash", "source": SUM, "tests": TESTS}
    )
    assert done.status_code == 200, done.text
    assert done.json()["result"]["verdict"] == "AC", done.json()
    # The allowed image, by a bare name, from the operator's registry.
    named = client.post(
        "/v1/submissions?wait=true",
        json={
            "language": "ash",
            "image": service["allowed"],
            "source": "cat /marker",
            "expected_output": "marked\n",
        },
    )
    assert named.status_code == 200, named.text
    assert named.json()["result"]["verdict"] == "AC", named.json()
    # Pulled once: the next submission finds it stored.
    again = client.post(
        "/v1/submissions?wait=true", json={"language": "ash", "source": SUM, "tests": TESTS}
    )
    assert again.json()["result"]["verdict"] == "AC", again.json()
    listed = ok(cli("ls", user=service["user"], env=service["store"]))
    assert service["image"] in listed and service["allowed"] in listed
    # A tag the registry does not have: failed (each attempt), the image named, no verdict.
    failed = client.post("/v1/submissions?wait=true", json={"language": "gone", "source": SUM})
    assert failed.status_code == 200, failed.text
    body = failed.json()
    assert body["status"] == "failed" and body["result"] is None, body
    assert f"image {service['missing']!r}: the pull from" in body["error"], body
    assert "manifest unknown" in body["error"] and "attempt 2 of 2" in body["error"], body
    samples = _samples(client)
    assert samples['cellblock_image_pulls_total{result="ok"}'] == 2, samples
    assert samples['cellblock_image_pulls_total{result="failed"}'] == 2, samples
    assert samples["cellblock_image_pull_seconds_count"] == 4
    assert samples['cellblock_image_pull_seconds_bucket{le="+Inf"}'] == 4
    assert samples["cellblock_image_pull_seconds_sum"] > 0


def test_a_language_file_says_where_its_image_comes_from(tmp_path: Path, monkeypatch) -> None:
    from worker.languages import LanguageError, get_language, load_language

    monkeypatch.setenv("CELLBLOCK_STORE", str(tmp_path / "store"))
    body = 'source = "main.sh"\nrun = ["/bin/sh", "main.sh"]\n'
    (tmp_path / "sci.toml").write_text(
        'image = "team/sci:1"\nimage_source = "oci-archive:/srv/sci.tar:team/sci:1"\n' + body
    )
    assert (
        load_language(tmp_path / "sci.toml").image_source == "oci-archive:/srv/sci.tar:team/sci:1"
    )
    # Not pulled here: the language is not installed, and the message says why.
    with pytest.raises(LanguageError, match="its image 'team/sci:1' is not in this machine's"):
        get_language("sci", tmp_path)
    (tmp_path / "bad.toml").write_text('image_source = "docker://r.example/x:1"\n' + body)
    with pytest.raises(LanguageError, match="'image_source' without 'image'"):
        load_language(tmp_path / "bad.toml")
