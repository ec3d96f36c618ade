"""Judging in images: a language whose toolchain comes from a pulled image
(`image = ...` in its file), `cellblock languages` saying so, and the service
running a submission that names an allowed image while refusing one that is
not allowed. The image is busybox built here (tests/image_support.py); its
`sh` is the language's runtime, which the host's PATH does not decide."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import needs_root
from image_support import BASE, PYTHON, REPO, Entry, cli, make_layout, ok
from service_support import ApiServer, RedisServer, Workers, remove, scratch, wait_for

from api.app import create_app
from api.settings import Settings
from worker.store import Store, Timing

SUM = "read a b\necho $((a + b))\n"
TESTS = [
    {"name": "1", "input": "1 2\n", "output": "3\n"},
    {"name": "2", "input": "40 2\n", "output": "42\n"},
]


def shell_language(directory: Path, image: str) -> None:
    """`ash`: busybox's shell, from `image`, next to the host's python3."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "profiles" / "languages" / "python3.toml", directory / "python3.toml")
    (directory / "ash.toml").write_text(
        'name = "BusyBox ash"\n'
        f'image = "{image}"\n'
        'source = "main.sh"\n'
        'run = ["/bin/sh", "main.sh"]\n'
        'version = ["/bin/busybox"]\n'
    )


@pytest.fixture
def image_and_languages(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    needs_root("the store is root's here; the service test runs workers as a user")
    work = Path(tempfile.mkdtemp(prefix="cellblock-imgjudge-"))
    work.chmod(0o755)
    name = f"cellblock-test/ash-{uuid.uuid4().hex[:8]}:1"
    layout = make_layout(work / "layout", "ash", [BASE], {"Env": ["PATH=/bin"]})
    monkeypatch.setenv("CELLBLOCK_STORE", str(work / "store"))
    monkeypatch.setenv("CELLBLOCK_LANGUAGES", str(work / "languages"))
    ok(cli("pull", "--name", name, layout.oci()))
    shell_language(work / "languages", name)
    yield name, work
    subprocess.run(["chmod", "-R", "u+rwX", str(work)], check=False)
    shutil.rmtree(work, ignore_errors=True)


def test_a_language_from_an_image(image_and_languages):
    name, _ = image_and_languages
    listed = subprocess.run(
        [PYTHON, "-m", "cellblock", "languages", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["ash"]["installed"] and rows["ash"]["image"] == name
    assert rows["ash"]["version"].startswith("BusyBox v"), rows["ash"]  # asked in the image
    assert rows["python3"]["image"] == "host"

    from worker.request import JudgeRequest

    judged = JudgeRequest.parse({"language": "ash", "source": SUM, "tests": TESTS}).judge()
    assert judged.verdict == "AC", judged.to_dict()
    # Where it ran: the image has no /usr/bin/python3, the host has. The
    # control is the same language file with the host's image.
    probe = {"language": "ash", "source": "test -e /usr/bin/python3 && echo host || echo image"}
    in_image = JudgeRequest.parse(probe)
    assert in_image.judge(whole_output=True).tests[0].stdout == "image\n"
    on_host = JudgeRequest.parse(probe)
    on_host.language = dataclasses.replace(on_host.language, image="host")
    assert on_host.judge(whole_output=True).tests[0].stdout == "host\n"


def test_a_missing_image_means_the_language_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBLOCK_STORE", str(tmp_path / "store"))
    shell_language(tmp_path / "languages", "cellblock-test/not-pulled:1")
    from worker.languages import all_languages

    assert not all_languages(tmp_path / "languages")["ash"].installed()


@pytest.fixture
def service_with_images(test_user, monkeypatch: pytest.MonkeyPatch):
    """The service, its workers as the test user with a store of their own
    holding the image, and one allowed image besides the languages'."""
    directory = scratch("cb-imgsvc-")
    store = directory / "store"
    store.mkdir(0o700)
    os.chown(store, test_user.pw_uid, test_user.pw_gid)
    name = f"cellblock-test/ash-{uuid.uuid4().hex[:8]}:1"
    layout = make_layout(directory / "layout", "ash", [BASE], {"Env": ["PATH=/bin"]})
    subprocess.run(["chmod", "-R", "a+rX", str(directory / "layout")], check=True)
    # A second image, the allowed one: the first's files and a marker of its own.
    allowed = name.replace("ash-", "marked-")
    marked = make_layout(directory / "marked", "marked", [BASE, [Entry("marker", b"marked\n")]], {})
    subprocess.run(["chmod", "-R", "a+rX", str(directory / "marked")], check=True)
    env = {"CELLBLOCK_STORE": str(store)}
    ok(cli("pull", "--name", name, layout.oci(), user=test_user.pw_name, env=env))
    ok(cli("pull", "--name", allowed, marked.oci(), user=test_user.pw_name, env=env))
    shell_language(directory / "languages", name)
    subprocess.run(["chmod", "-R", "a+rX", str(directory / "languages")], check=True)
    monkeypatch.setenv("CELLBLOCK_LANGUAGES", str(directory / "languages"))
    monkeypatch.setenv("CELLBLOCK_ALLOWED_IMAGES", allowed)
    server = RedisServer(directory).start()
    workers = Workers(
        server.url,
        cells=1,
        user=test_user.pw_name,
        env={
            **env,
            "CELLBLOCK_LANGUAGES": str(directory / "languages"),
            "CELLBLOCK_ALLOWED_IMAGES": allowed,
        },
    )
    timing = Timing(lease=4, renew=1, reap=1, limbo=4)
    api = ApiServer(create_app(Settings.from_env(redis_url=server.url), timing)).start()
    try:
        wait_for(lambda: len(Store.from_url(server.url, timing).workers()) == 1, 60, "a worker")
        with httpx.Client(base_url=api.url, timeout=60) as client:
            yield client, allowed
    finally:
        api.stop()
        workers.stop()
        server.stop()
        remove(directory)


def test_the_service_runs_an_allowed_image_and_refuses_another(service_with_images):
    client, name = service_with_images
    # What a client can offer: the operator's list, as the API checks it.
    assert client.get("/v1/images").json() == [{"ref": name}]
    # The language's own image.
    done = client.post(
        "/v1/submissions?wait=true", json={"language": "ash", "source": SUM, "tests": TESTS}
    )
    assert done.status_code == 200, done.text
    assert done.json()["result"]["verdict"] == "AC", done.json()
    # A submission naming the allowed image: its runs are in that image.
    named = client.post(
        "/v1/submissions?wait=true",
        json={
            "language": "ash",
            "image": name,
            "source": "cat /marker",
            "expected_output": "marked\n",
        },
    )
    assert named.status_code == 200, named.text
    assert named.json()["result"]["verdict"] == "AC", named.json()
    # One not on the operator's list: refused before anything is queued.
    refused = client.post(
        "/v1/submissions", json={"language": "python3", "image": "python:3.12", "source": "1"}
    )
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"][0]
    assert detail["loc"][-1] == "image" and "not allowed" in detail["msg"], detail


def test_the_worker_refuses_an_image_not_allowed(monkeypatch):
    """The workers check the list too (a request reaches Redis by other ways
    than the API); an operator's batch may name any image."""
    from worker.request import JudgeRequest, RequestError

    monkeypatch.setenv("CELLBLOCK_ALLOWED_IMAGES", "a:1, b:2")
    request = {"language": "python3", "source": "print(1)", "image": "c:3"}
    with pytest.raises(RequestError, match="image: 'c:3' is not allowed here"):
        JudgeRequest.parse(request)
    assert JudgeRequest.parse({**request, "image": "b:2"}).language.image == "b:2"
    assert JudgeRequest.parse(request, host_paths=True).language.image == "c:3"
    monkeypatch.delenv("CELLBLOCK_ALLOWED_IMAGES")
    with pytest.raises(RequestError, match="none: the operator sets CELLBLOCK_ALLOWED_IMAGES"):
        JudgeRequest.parse({**request, "image": "b:2"})
