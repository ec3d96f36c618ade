"""A worker pulls the images it lacks, once, from where the operator said.

A worker asked to judge a submission whose language comes from an image (a
language file's `image`), or that names an allowed image, or whose checker's
language does, and whose store (sandbox/imagestore.py, the one its cells
read) lacks that image, pulls it before judging (sandbox/pull.py). From where:

1. the language file's `image_source` (any reference skopeo takes:
   `docker://HOST/NAME:TAG`, `oci-archive:/srv/images/x.tar:NAME:TAG`...),
   for its `image`; an allowed image that is some language's `image` has
   that language's source;
2. else the reference itself, when it names its registry (its first
   component has a `.` or a `:`, or is `localhost`: `localhost:5000/x:1`,
   `registry.example/x@sha256:...`);
3. else `CELLBLOCK_IMAGE_REGISTRY` (`HOST[:PORT][/PREFIX]`) in front of the
   name: `cellblock/python-sci:bookworm` from
   `docker://HOST[:PORT][/PREFIX]/cellblock/python-sci:bookworm`.

Otherwise nothing is pulled: a bare name is never taken to mean Docker Hub,
and an image id (`sha256:...`) cannot be pulled. A pulled image is given the
reference it was asked by as a name (for a name; a digest is recorded as the
registry gives it), and must then resolve to it, or the pull counts as failed.
TLS is verified unless the registry is one of `CELLBLOCK_INSECURE_REGISTRIES`
(comma-separated `HOST[:PORT]`: a registry on a loopback port, say).

One pull per image at a time: the puller holds the store's lock for that
reference (`LayerStore.pull_lock`), and a second worker process that needs
the image waits for it, then finds it stored. A failure (no source, skopeo's
error, a digest that does not match) is an ImagePullError naming the image:
an infrastructure failure of the attempt (worker/jobs.py), never a verdict.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.imagestore import MIN_ID_PREFIX, ImageError, LayerStore, split_name
from sandbox.pull import PullOptions, pull
from sandbox.spec import SpecError

REGISTRY_VARIABLE = "CELLBLOCK_IMAGE_REGISTRY"
INSECURE_VARIABLE = "CELLBLOCK_INSECURE_REGISTRIES"
# An image id's start, as `cellblock image` takes it (imagestore.MIN_ID_PREFIX).
_ID_PREFIX_RE = re.compile(rf"^[0-9a-f]{{{MIN_ID_PREFIX},64}}$")


class ImagePullError(RuntimeError):
    """A needed image is not here and could not be pulled; the message names
    it. `record`: the failed pull, if one was made."""

    def __init__(self, message: str, record: PullRecord | None = None) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class PullRecord:
    """One pull a worker made (for its metrics)."""

    image: str
    source: str
    ok: bool
    seconds: float


def names_registry(reference: str) -> bool:
    """Whether a docker reference starts with a registry (as docker tells one:
    a first component with a `.` or `:`, or `localhost`)."""
    first, slash, _ = reference.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def _pullable_name(image: str) -> bool:
    """A NAME[:TAG] or NAME@DIGEST, not `host`, a path or an image id."""
    if image == "host" or image.startswith("/") or image.startswith("sha256:"):
        return False
    repository = split_name(image)[0]
    return bool(repository) and not _ID_PREFIX_RE.match(repository)


def source_for(image: str, declared: str | None = None) -> str | None:
    """Where `image` is pulled from when a worker lacks it (the rule above), or None."""
    if not _pullable_name(image):
        return None
    if declared:
        return declared
    if names_registry(image):
        return f"docker://{image}"
    registry = os.environ.get(REGISTRY_VARIABLE, "").strip().strip("/")
    if registry:
        return f"docker://{registry}/{image}"
    return None


def insecure_registries() -> frozenset[str]:
    raw = os.environ.get(INSECURE_VARIABLE, "")
    return frozenset(entry.strip() for entry in raw.split(",") if entry.strip())


def _options(image: str, source: str) -> PullOptions:
    tls_verify = True
    if source.startswith("docker://"):
        tls_verify = source.removeprefix("docker://").split("/", 1)[0] not in insecure_registries()
    # Named as asked, so that the language's `image` resolves to what was pulled.
    return PullOptions(tls_verify=tls_verify, name=None if "@" in image else image)


def _present(image: str) -> bool:
    from sandbox.images import resolve_image

    try:
        resolve_image(image)
    except SpecError:
        return False
    return True


def ensure(image: str, declared: str | None = None) -> PullRecord | None:
    """Make sure `image` is in this worker's store: None if it was there (or
    came while this process waited for another's pull), else the pull made.
    Raises ImagePullError (after a failed pull: with its record attached)."""
    if image == "host" or _present(image):
        return None
    store = LayerStore()
    source = source_for(image, declared)
    if source is None:
        raise ImagePullError(
            f"image {image!r} is not in this worker's image store ({store.root}) and there "
            f"is nowhere to pull it from (a language's image_source, a reference with its "
            f"registry, or {REGISTRY_VARIABLE}; or run cellblock image pull on the worker)"
        )
    try:
        with store.pull_lock(image):
            if _present(image):
                return None  # another worker process pulled it while this one waited
            started = time.monotonic()
            try:
                pull(source, _options(image, source), store)
                error = None if _present(image) else "the pulled image is not that reference"
            except (ImageError, OSError) as failure:
                error = str(failure)
            except Exception as failure:  # noqa: BLE001 - whatever broke, the pull failed
                error = f"{type(failure).__name__}: {failure}"
            record = PullRecord(image, source, error is None, time.monotonic() - started)
    except ImageError as failure:  # the store itself (pull_lock could not make it)
        raise ImagePullError(f"image {image!r}: cannot pull it here: {failure}") from None
    if error is not None:
        raise ImagePullError(f"image {image!r}: the pull from {source} failed: {error}", record)
    return record


def needed_images(request: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(image, declared source) of every image a submission's request needs:
    its language's, or the image it names if the operator allows that one,
    and its checker's language's. What the request gets wrong is left to the
    request's parsing (worker/request.py) to say."""
    from .languages import LanguageError, all_languages
    from .request import RequestError, check_image

    try:
        languages = all_languages()
    except LanguageError:
        return
    sources = {lang.image: lang.image_source for lang in languages.values() if lang.image_source}
    language = languages.get(str(request.get("language")))
    if language is not None:
        try:
            asked = check_image(request.get("image"))
        except RequestError:
            asked = None  # refused when the request is parsed; never pulled
        if asked is not None:
            yield asked, sources.get(asked)
        else:
            yield language.image, language.image_source
    checker = request.get("checker")
    if isinstance(checker, dict) and str(checker.get("language")) in languages:
        helper = languages[str(checker.get("language"))]
        yield helper.image, helper.image_source


def ensure_images(
    request: dict[str, Any], pulled: Callable[[PullRecord], None] | None = None
) -> list[PullRecord]:
    """ensure() for each image the request needs; `pulled` hears of every
    pull made, failed ones included, before a failure is raised."""
    records = []
    for image, declared in dict(needed_images(request)).items():
        try:
            record = ensure(image, declared)
        except ImagePullError as error:
            if error.record is not None and pulled is not None:
                pulled(error.record)
            raise
        if record is not None:
            records.append(record)
            if pulled is not None:
                pulled(record)
    return records
