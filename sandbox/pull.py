"""Pulling an image into the layer store (sandbox/imagestore.py) with skopeo.

skopeo copies the image into a temporary OCI layout in the store's tmp/,
keeping the source's compression: a decompression bomb then stops at the
unpacker's limit (sandbox/unpack.py), not when skopeo has filled the disk.
Then nothing skopeo wrote is trusted: index.json -> manifest -> config, each
checked against the digest and size its parent gives; every layer blob is
hashed as it streams into the unpacker and must match its descriptor, and
the unpacked stream's sha256 must be the config's `rootfs.diff_ids[i]`. Any
mismatch, and nothing of the pull is kept.

References: `docker://`, `docker-archive:`, `oci:`, `oci-archive:`,
`containers-storage:`; a bare `NAME[:TAG]` is `docker://NAME[:TAG]`. For a
registry, the manifest digest is asked first (`skopeo inspect`: the digest of
what the registry serves for the tag, a manifest list included, the one a
user writes after `@`) and the copy is made by that digest, so the tag
cannot move between the two. The layout's own manifest is skopeo's (converted
to OCI: another digest), so `skopeo copy --digestfile` would be the wrong one.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from .imagestore import (
    ImageConfig,
    ImageError,
    LayerInfo,
    LayerStore,
    Staged,
    StoredImage,
    check_digest,
    normalize_name,
    split_name,
)
from .unpack import DEFAULT_LIMITS, LayerError, UnpackLimits, unpack_layer

SKOPEO = "skopeo"
TRANSPORTS = ("docker://", "docker-archive:", "oci:", "oci-archive:", "containers-storage:")
# skopeo's other transports: named so that `dir:/x` is refused, not taken for a registry name.
_OTHER_TRANSPORTS = ("dir:", "docker-daemon:", "ostree:", "sif:", "tarball:")
_LAYOUT_REF = "pull"  # the name of the image in the temporary layout

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
# What unpack_layer reads (it tells tar from gzip by the magic bytes).
_LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
)
_MAX_JSON = 4 << 20  # a manifest or config bigger than this is not one


class PullError(ImageError):
    """A pull failed: skopeo's words, or what was wrong with what it fetched."""


@dataclass(frozen=True)
class PullOptions:
    tls_verify: bool = True  # False: plain HTTP or unverified TLS (a local registry)
    name: str | None = None  # a NAME[:TAG] given to the image, besides any the reference has
    limits: UnpackLimits = DEFAULT_LIMITS


@dataclass(frozen=True)
class Source:
    """A reference as skopeo takes it, with the names and repo digest it gives."""

    reference: str  # what skopeo copies from (for a registry: by digest)
    names: tuple[str, ...]
    repo_digest: str | None
    registry: bool


def _skopeo(args: list[str]) -> str:
    try:
        done = subprocess.run([SKOPEO, *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PullError("image pull: skopeo is not installed (apt-get install skopeo)") from None
    if done.returncode != 0:
        raise PullError(f"image pull: skopeo {args[0]} failed: {_skopeo_message(done.stderr)}")
    return done.stdout


def _skopeo_message(stderr: str) -> str:
    """skopeo's message without its logger's decoration (time=... level=fatal msg="...")."""
    messages = re.findall(r'level=(?:fatal|error) msg="((?:[^"\\]|\\.)*)"', stderr)
    if messages:
        return "; ".join(m.replace('\\"', '"') for m in messages)
    return stderr.strip() or "no message"


def parse_reference(reference: str, options: PullOptions) -> Source:
    """Which transport, and the names the image gets: for a registry the
    reference as written (`NAME:TAG`, `latest` if no tag; none if pulled by
    digest alone), for an archive or layout the reference inside it if any;
    `--name` in every case."""
    if not reference.startswith(TRANSPORTS):
        if reference.startswith(_OTHER_TRANSPORTS):
            raise PullError(
                f"image pull: {reference!r}: transport not supported "
                f"(use {', '.join(TRANSPORTS)} or NAME[:TAG])"
            )
        reference = "docker://" + reference
    transport, rest = reference.split(":", 1)
    names: list[str] = []
    repo_digest = None
    if transport == "docker":
        name = rest.removeprefix("//")
        repository, tag, digest = split_name(name)
        if digest is not None:
            check_digest(digest, f"image pull: {reference!r}")
            repo_digest = f"{repository}@{digest}"
        if tag is not None or digest is None:
            names.append(normalize_name(f"{repository}:{tag}" if tag else repository))
    elif transport == "containers-storage":
        # [storage-specifier]NAME[:TAG]
        name = rest.split("]", 1)[1] if rest.startswith("[") else rest
        if "@" not in name and not re.fullmatch(r"[0-9a-f]{64}", name):
            names.append(normalize_name(name))
    else:  # an archive or layout: PATH[:REF]; the path has no colon (skopeo splits there)
        inner = rest.split(":", 1)[1] if ":" in rest else ""
        if inner and not inner.startswith("@"):  # docker-archive's @INDEX is no name
            names.append(normalize_name(inner))
    if options.name:
        names.append(normalize_name(options.name))
    if not names and repo_digest is None:
        raise PullError(
            f"image pull: {reference!r} names no image: give it one with --name NAME[:TAG]"
        )
    return Source(reference, tuple(dict.fromkeys(names)), repo_digest, transport == "docker")


class _Verified(io.RawIOBase):
    """A blob read through sha256: verify() after the reader is done reads
    what it left, then compares the digest and the size with the descriptor."""

    def __init__(self, file: BinaryIO, digest: str, size: int) -> None:
        self._file = file
        self._digest = digest
        self._size = size
        self._hash = hashlib.sha256()
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._file.readinto(buffer)  # type: ignore[attr-defined]
        self._hash.update(memoryview(buffer)[:count])
        self._read += count
        return count

    def verify(self, what: str) -> None:
        while self.read(1 << 20):
            pass
        got = f"sha256:{self._hash.hexdigest()}"
        if got != self._digest or self._read != self._size:
            raise PullError(
                f"image pull: {what}: the blob is not what its descriptor says "
                f"(expected {self._digest}, {self._size} bytes; got {got}, {self._read} bytes)"
            )


class _Layout:
    """The OCI layout skopeo wrote, read with every digest checked."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / check_digest(digest, "blob").split(":", 1)[1]

    def json_blob(self, descriptor: dict, what: str) -> dict:
        digest = check_digest(descriptor.get("digest", ""), what)
        size = descriptor.get("size")
        if not isinstance(size, int) or not 0 <= size <= _MAX_JSON:
            raise PullError(f"image pull: {what}: bad size {size!r}")
        data = self.blob_path(digest).read_bytes()
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest or len(data) != size:
            raise PullError(f"image pull: {what}: its content does not match its digest {digest}")
        try:
            value = json.loads(data)
        except ValueError as error:
            raise PullError(f"image pull: {what}: not JSON ({error})") from None
        if not isinstance(value, dict):
            raise PullError(f"image pull: {what}: not a JSON object")
        return value

    def manifest_named(self, ref: str) -> tuple[dict, dict, str]:
        """(manifest, config, config digest) of the image `ref` of the layout."""
        index = json.loads((self.path / "index.json").read_text())
        found = [
            m
            for m in index.get("manifests", ())
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
        ]
        if len(found) != 1 or found[0].get("mediaType") != _MANIFEST:
            raise PullError("image pull: skopeo's layout has no single OCI manifest for the image")
        manifest = self.json_blob(found[0], "manifest")
        descriptor = manifest.get("config", {})
        if descriptor.get("mediaType") != _CONFIG:
            raise PullError(f"image pull: config of media type {descriptor.get('mediaType')!r}")
        config = self.json_blob(descriptor, "config")
        return manifest, config, descriptor["digest"]


def pull(
    reference: str, options: PullOptions = PullOptions(), store: LayerStore | None = None
) -> StoredImage:
    """Pull `reference` into `store` (the default store if None); returns its record."""
    store = store if store is not None else LayerStore()
    source = parse_reference(reference, options)
    tls = [] if options.tls_verify else ["--src-tls-verify=false"]
    copy_from = source.reference
    repo_digest = source.repo_digest
    if source.registry and repo_digest is None:
        # By the digest the tag names now: what is copied is what is recorded.
        inspect_tls = [] if options.tls_verify else ["--tls-verify=false"]
        name = source.reference.removeprefix("docker://")
        # --no-tags: inspect would otherwise list every tag of the repository.
        asked = ["inspect", "--no-tags", *inspect_tls, "--format", "{{.Digest}}"]
        digest = _skopeo([*asked, source.reference])
        digest = check_digest(digest.strip(), f"image pull: the digest of {name}")
        repository = split_name(name)[0]
        repo_digest = f"{repository}@{digest}"
        copy_from = f"docker://{repo_digest}"
    with store.staging() as staged:
        layout = _Layout(staged.path / "oci")
        _skopeo(["copy", "--quiet", *tls, copy_from, f"oci:{layout.path}:{_LAYOUT_REF}"])
        manifest, config, config_digest = layout.manifest_named(_LAYOUT_REF)
        image = _unpack(store, staged, layout, manifest, config, options.limits)
        record = StoredImage(
            id=config_digest,
            layers=image[0],
            config=ImageConfig.from_oci(config.get("config") or {}),
            size=image[1],
            source=source.reference,
            pulled=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            names=source.names,
            repo_digests=(repo_digest,) if repo_digest else (),
        )
        return store.commit(staged, record)


def _unpack(
    store: LayerStore,
    staged: Staged,
    layout: _Layout,
    manifest: dict,
    config: dict,
    limits: UnpackLimits,
) -> tuple[tuple[str, ...], int]:
    """Each layer not yet stored, unpacked into `staged` and checked; returns
    (the diff_ids, bottom first; the bytes of their files)."""
    rootfs = config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids")
    layers = manifest.get("layers")
    if rootfs.get("type") != "layers" or not isinstance(diff_ids, list):
        raise PullError("image pull: the config has no rootfs.diff_ids")
    if not isinstance(layers, list) or len(layers) != len(diff_ids):
        raise PullError(
            f"image pull: the manifest has {len(layers or ())} layers, "
            f"the config {len(diff_ids)} diff_ids"
        )
    size = 0
    for number, (descriptor, diff_id) in enumerate(zip(layers, diff_ids, strict=True), 1):
        what = f"layer {number} ({descriptor.get('digest')})"
        check_digest(diff_id, f"image pull: {what}: diff_id")
        digest = check_digest(descriptor.get("digest", ""), f"image pull: {what}")
        media_type = descriptor.get("mediaType")
        if media_type not in _LAYER_TYPES:
            raise PullError(f"image pull: {what}: media type {media_type!r} is not supported")
        known = staged.layers.get(diff_id) or store.layer(diff_id)
        if known is not None:  # stored already, or earlier in this image
            if diff_id not in staged.layers:
                size += known.size
            continue
        target = staged.layer_path(diff_id)
        with open(layout.blob_path(digest), "rb") as file:
            blob = _Verified(file, digest, descriptor.get("size", -1))
            try:
                unpacked = unpack_layer(blob, str(target / "diff"), limits)  # type: ignore[arg-type]
            except LayerError as error:
                blob.verify(what)  # a blob changed on the way is said as such
                raise PullError(f"image pull: {what} refused: {error}") from None
            blob.verify(what)
        if unpacked.diff_id != diff_id:
            raise PullError(
                f"image pull: {what}: its content is {unpacked.diff_id}, the config says {diff_id}"
            )
        staged.layers[diff_id] = LayerInfo(
            diff_id, digest, media_type, unpacked.size, unpacked.entries
        )
        size += unpacked.size
    return tuple(diff_ids), size
