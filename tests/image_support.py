"""Images built by hand for the image tests: OCI layouts of busybox-static and
small files (layers that add, change, delete with a whiteout and make a
directory opaque), pushing to a registry, and the `cellblock image` CLI."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("CELLBLOCK_VENV", "/opt/cellblock/venv") + "/bin/python"
BUSYBOX = Path("/bin/busybox")
# The platform skopeo picks from a manifest list: this machine's, in Go's words.
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


@dataclass
class Entry:
    """One tar member: a file (data), a directory (data None, dir=True) or a symlink."""

    name: str
    data: bytes | None = None
    mode: int = 0o644
    link: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.data is None and self.link is None


@dataclass
class Layout:
    path: Path
    ref: str
    manifest_digest: str
    config_digest: str
    diff_ids: list[str]
    layer_digests: list[str] = field(default_factory=list)

    def oci(self) -> str:
        return f"oci:{self.path}:{self.ref}"


def layer_tar(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mtime = 1_700_000_000
            info.mode = entry.mode
            if entry.link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, entry.link
                tar.addfile(info)
            elif entry.is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755 if entry.mode == Entry.mode else entry.mode
                tar.addfile(info)
            else:
                assert entry.data is not None
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return out.getvalue()


def write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def make_layout(
    path: Path,
    ref: str,
    layers: list[list[Entry]],
    config: dict | None = None,
    *,
    compress: bool = True,
    diff_ids: list[str] | None = None,
) -> Layout:
    """An OCI image layout at `path` (one image, `ref`); `diff_ids` overrides
    the config's (to make one that lies)."""
    path.mkdir(parents=True, exist_ok=True)
    descriptors, real_diff_ids, digests = [], [], []
    for entries in layers:
        raw = layer_tar(entries)
        real_diff_ids.append(f"sha256:{hashlib.sha256(raw).hexdigest()}")
        blob = gzip.compress(raw, mtime=0) if compress else raw
        digest, size = write_blob(path, blob)
        digests.append(digest)
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        descriptors.append({"mediaType": media, "digest": digest, "size": size})
    config_doc = {
        "architecture": ARCH,
        "os": "linux",
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or real_diff_ids},
    }
    config_digest, config_size = write_blob(path, json.dumps(config_doc).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": descriptors,
    }
    manifest_digest, manifest_size = write_blob(path, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
    return Layout(path, ref, manifest_digest, config_digest, diff_ids or real_diff_ids, digests)


BASE = [
    Entry("bin/"),
    Entry("bin/busybox", BUSYBOX.read_bytes() if BUSYBOX.exists() else b"", 0o755),
    Entry("bin/sh", link="busybox"),
    Entry("etc/"),
    Entry("etc/hostname", b"cell\n"),
]
ADD = [
    Entry("data/"),
    Entry("data/added.txt", b"one\n"),
    Entry("opq/"),
    Entry("opq/old.txt", b"o"),
    Entry("ro/", mode=0o555),  # a directory its owner may not write: rm and prune still can
    Entry("ro/file", b"r"),
]
CHANGE = [Entry("data/"), Entry("data/added.txt", b"two\n")]
DELETE = [
    Entry("data/"),
    Entry("data/.wh.added.txt", b""),
    Entry("opq/"),
    Entry("opq/.wh..wh..opq", b""),
    Entry("opq/new.txt", b"n"),
]
CONFIG = {
    "Env": ["PATH=/bin", "GREETING=hello world"],
    "WorkingDir": "/data",
    "User": "1000:1000",
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo $GREETING"],
}


def four_layers(path: Path, ref: str = "base:1", config: dict | None = None) -> Layout:
    """busybox; a file and a directory added; the file changed; the file
    deleted by a whiteout and the directory made opaque."""
    return make_layout(path, ref, [BASE, ADD, CHANGE, DELETE], CONFIG if config is None else config)


def tree(root: str) -> dict[str, str]:
    """Every entry beneath `root`: what it is (file content's start, a link's
    target, 'dir' with an opaque mark, 'whiteout')."""
    found = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = "-> " + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                try:
                    opaque = os.getxattr(path, "user.overlay.opaque")
                except OSError:
                    opaque = b""
                found[rel] = "dir opaque" if opaque == b"y" else "dir"
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found[rel] = "whiteout"
            else:
                data = Path(path).read_bytes()
                found[rel] = "busybox" if data == BUSYBOX.read_bytes() else data.decode()
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def registry_server() -> Iterator[str]:
    """docker-registry on 127.0.0.1 (plain HTTP), its storage in a temporary
    directory; yields its HOST:PORT."""
    work = Path(tempfile.mkdtemp(prefix="cellblock-registry-"))
    port = free_port()
    (work / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    server = subprocess.Popen(
        ["docker-registry", "serve", str(work / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {server.stderr}") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def push(layout: Layout, target: str) -> str:
    """Push to the registry; returns the registry's manifest digest (as it says it)."""
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            layout.oci(),
            f"docker://{target}",
        ],
        check=True,
    )
    repository, tag = target.split("/", 1)[1].rsplit(":", 1)
    request = urllib.request.Request(
        f"http://{target.split('/')[0]}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request) as answer:
        return answer.headers["Docker-Content-Digest"]


def cli(*args: str, user: str | None = None, env: dict[str, str] | None = None):
    """`python -m cellblock image ARGS` from this checkout, as `user` if given."""
    command = [PYTHON, "-m", "cellblock", "image", *args]
    environment = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})}
    if user is None:
        environment = {**os.environ, **environment}
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run(
        [*prefix, "env", "-i", *[f"{k}={v}" for k, v in environment.items()], *command],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout
