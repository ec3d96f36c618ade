"""The /v1 endpoints (docs/contract.md, section 4), plus /metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from worker.request import allowed_images
from worker.store import (
    METRICS,
    QUEUE_KEY,
    decode_fields,
    decode_record,
    lacks_language,
    new_submission_id,
    sub_key,
)

from . import metrics
from .auth import Caller, Principal, rate_limit
from .callbacks import CallbackRefused, resolve_allowed
from .models import (
    VIEW_FIELDS,
    BatchIn,
    BatchQueued,
    Queued,
    RequestInvalid,
    SubmissionIn,
    SubmissionOut,
    job_timeout,
    normalize,
    view,
)

router = APIRouter()
ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
SubId = Annotated[str, Path(pattern=ID_PATTERN, description="a submission id (UUID)")]


async def check_callback(request: Request, url: str | None, loc: tuple) -> None:
    if url is None:
        return
    try:
        await resolve_allowed(url, request.app.state.settings)
    except CallbackRefused as error:
        raise RequestInvalid(loc, str(error)) from None


async def admit(request: Request, count: int = 1) -> None:
    """Refuse new work (429 with Retry-After) once the queue holds the configured
    maximum: under overload a client waits and retries, instead of every
    submission's latency growing without bound."""
    state = request.app.state
    most = state.settings.max_queue
    if most <= 0:
        return
    queued = int(await state.aredis.llen(QUEUE_KEY))
    if queued + count <= most:
        return
    raise HTTPException(
        429,
        f"the queue is full ({queued} submissions waiting, at most {most} here); "
        "try again after Retry-After seconds",
        headers={"Retry-After": str(await _drain_estimate(request, queued + count - most))},
    )


async def _drain_estimate(request: Request, excess: int) -> int:
    """Seconds until `excess` queued submissions are likely done: their mean
    judging time over the live workers, between 1 and 60."""
    state = request.app.state
    total, count = await state.aredis.hmget(METRICS, "duration_sum", "duration_count")
    mean = float(total or 0) / int(count or 0) if count and int(count) else 1.0
    workers = max(len(await live_workers(request)), 1)
    return min(max(math.ceil(excess * mean / workers), 1), 60)


async def enqueue(
    request: Request,
    stored: dict[str, Any],
    principal: Principal,
    *,
    kind: str = "v1",
    callback_url: str | None = None,
    extra: dict[str, str] | None = None,
    admitted: bool = False,
    sub_id: str | None = None,
) -> str:
    """Store and queue one submission (`admitted`: its batch was admitted whole)."""
    if not admitted:
        await admit(request)
    store = request.app.state.store
    return await run_in_threadpool(
        store.create,
        stored,
        kind=kind,
        owner=principal.id,
        callback_url=callback_url,
        job_timeout=job_timeout(stored),
        extra=extra,
        sub_id=sub_id,
    )


async def enqueue_and_wait(
    request: Request, stored: dict[str, Any], principal: Principal, timeout: float, **options: Any
) -> tuple[str, bool]:
    """Store and queue one submission (as `enqueue`), then wait up to
    `timeout` s for it to end: (its id, whether it is done or failed). The
    hub listens for its events from before it is queued, so none can be
    missed and its state need not be read first."""
    hub = request.app.state.hub
    sub_id = new_submission_id()
    with hub.listen(sub_id) as events:
        await enqueue(request, stored, principal, sub_id=sub_id, **options)
        return sub_id, await hub.until_end(sub_id, events, timeout)


async def read_record(
    request: Request, sub_id: str, fields: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """A submission's record, whole or only `fields`, read on the event loop:
    no hop to a thread for the request a polling client makes most."""
    connection = request.app.state.aredis
    if fields is None:
        raw = await connection.hgetall(sub_key(sub_id))
        return decode_record(raw) if raw else None
    record = decode_fields(fields, await connection.hmget(sub_key(sub_id), fields))
    return await read_record(request, sub_id) if lacks_language(record, fields) else record


async def owned(
    request: Request,
    sub_id: str,
    principal: Principal,
    kind: str | None = None,
    fields: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The caller's submission (404 if it is not theirs), whole or only `fields`."""
    record = await read_record(request, sub_id, fields)
    if (
        record is None
        or record.get("owner") != principal.id
        or (kind is not None and record.get("kind") != kind)
    ):
        raise HTTPException(404, "no such submission (unknown, expired, or another key's)")
    return record


@router.post(
    "/v1/submissions",
    status_code=202,
    response_model=Queued,
    responses={200: {"model": SubmissionOut, "description": "with ?wait=true: done"}},
    tags=["v1"],
)
async def create_submission(
    request: Request,
    principal: Caller,
    submission: SubmissionIn,
    wait: Annotated[bool, Query(description="wait for the verdict (falls back to 202)")] = False,
) -> Any:
    """Queue a submission; with `?wait=true`, answer with its result when it is done."""
    state = request.app.state
    stored = normalize(submission, state.settings, state.languages)
    await check_callback(request, submission.callback_url, ("body", "callback_url"))
    if not wait:
        sub_id = await enqueue(request, stored, principal, callback_url=submission.callback_url)
        return JSONResponse({"id": sub_id, "status": "queued"}, status_code=202)
    timeout = state.settings.wait_timeout
    sub_id, finished = await enqueue_and_wait(
        request, stored, principal, timeout, callback_url=submission.callback_url
    )
    if finished:
        record = await read_record(request, sub_id, VIEW_FIELDS)
        if record is not None:  # not expired in between
            return JSONResponse(view(record), status_code=200)
    return JSONResponse({"id": sub_id, "status": "queued"}, status_code=202)


@router.post("/v1/submissions/batch", status_code=202, response_model=BatchQueued, tags=["v1"])
async def create_batch(request: Request, principal: Caller, batch: BatchIn) -> Any:
    """Queue several submissions at once (each counts against the rate limit)."""
    state = request.app.state
    if not batch.submissions:
        raise RequestInvalid(("body", "submissions"), "at least one submission")
    if len(batch.submissions) > state.settings.max_batch:
        raise RequestInvalid(
            ("body", "submissions"), f"at most {state.settings.max_batch} per batch here"
        )
    await rate_limit(request, principal, len(batch.submissions) - 1)  # one was counted
    stored = []
    for index, submission in enumerate(batch.submissions):
        loc = ("body", "submissions", index)
        stored.append(normalize(submission, state.settings, state.languages, loc))
        await check_callback(request, submission.callback_url, (*loc, "callback_url"))
    await admit(request, len(stored))
    ids = [
        await enqueue(request, one, principal, callback_url=sub.callback_url, admitted=True)
        for one, sub in zip(stored, batch.submissions, strict=True)
    ]
    return JSONResponse(
        {"submissions": [{"id": i, "status": "queued"} for i in ids]}, status_code=202
    )


@router.get("/v1/submissions", tags=["v1"])
async def get_submissions(
    request: Request,
    principal: Caller,
    ids: Annotated[str, Query(max_length=37 * 100, description="comma-separated ids")],
) -> dict[str, Any]:
    """Several submissions by id (unknown ones are null)."""
    wanted = [i for i in ids.split(",") if i]
    if len(wanted) > 100:
        raise RequestInvalid(("query", "ids"), "at most 100 ids")
    records = await run_in_threadpool(request.app.state.store.get_many, wanted, VIEW_FIELDS)
    return {
        "submissions": [
            view(r) if r is not None and r.get("owner") == principal.id else None for r in records
        ]
    }


@router.get("/v1/submissions/{sub_id}", response_model=SubmissionOut, tags=["v1"])
async def get_submission(request: Request, principal: Caller, sub_id: SubId) -> Any:
    # view() has made it a SubmissionOut already: sent as it is, not validated again.
    return JSONResponse(view(await owned(request, sub_id, principal, fields=VIEW_FIELDS)))


@router.get(
    "/v1/submissions/{sub_id}/events",
    tags=["v1"],
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def submission_events(
    request: Request,
    principal: Caller,
    sub_id: SubId,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events: `status`, one `test` per finished test, then `end`."""
    await owned(request, sub_id, principal, fields=("owner", "kind"))
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return StreamingResponse(
        request.app.state.hub.stream(sub_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/v1/languages", tags=["v1"])
async def languages(request: Request, principal: Caller) -> list[dict]:
    """The languages, and whether a live worker has each one's toolchain."""
    workers = await live_workers(request)
    on_workers: dict[str, int] = {}
    for worker in workers:
        for lang in worker.get("languages") or []:
            on_workers[lang] = on_workers.get(lang, 0) + 1
    versions = versions_of(workers)
    return [
        {
            "id": lang.id,
            "name": lang.name,
            "compiled": lang.compiled,
            "workers": on_workers.get(lang.id, 0),
            "version": versions.get(lang.id),
        }
        for lang in request.app.state.language_info.values()
    ]


@router.get("/v1/images", tags=["v1"])
async def images(principal: Caller) -> list[dict]:
    """The images a submission may name in `image` (the operator's
    CELLBLOCK_ALLOWED_IMAGES, sorted); empty: each runs in its language's."""
    return [{"ref": ref} for ref in sorted(allowed_images())]


async def live_workers(request: Request) -> list[dict[str, Any]]:
    return await run_in_threadpool(request.app.state.store.workers)


def versions_of(workers: list[dict[str, Any]]) -> dict[str, str]:
    """Each language's version line as live workers report it (the first
    worker that has it; workers of one service are meant to be alike)."""
    versions: dict[str, str] = {}
    for worker in sorted(workers, key=lambda w: str(w.get("name"))):
        for lang, line in (worker.get("versions") or {}).items():
            if line:
                versions.setdefault(lang, line)
    return versions


# Versions change when workers do: asked of Redis at most this often.
VERSIONS_TTL = 5.0


async def language_versions(request: Request) -> dict[str, str]:
    """Language id -> the version line its live workers report (the listings of
    /v1, /judge0, /piston and /sandboxfusion all say what is installed)."""
    state = request.app.state
    cached = getattr(state, "language_versions", None)
    now = time.monotonic()
    if cached is None or now - cached[0] > VERSIONS_TTL or not cached[1]:
        cached = (now, versions_of(await live_workers(request)))
        state.language_versions = cached
    return cached[1]


@router.get("/v1/health", tags=["v1"])
async def health(request: Request) -> JSONResponse:
    """Redis, live workers, and each worker's latest escape self-check. 503 unless all is well."""
    state = request.app.state
    started = time.monotonic()
    try:
        await state.aredis.ping()
        redis_ok = True
    except Exception:  # noqa: BLE001 - any failure means Redis is not usable
        redis_ok = False
    latency = round((time.monotonic() - started) * 1000, 2)
    workers = await live_workers(request) if redis_ok else []
    checks = [w.get("selfcheck") for w in workers]
    contained = bool(checks) and all(c and c.get("contained") for c in checks)
    now = time.time()
    body = {
        "status": "ok"
        if redis_ok and workers and contained
        else ("down" if not redis_ok else "degraded"),
        "redis": {"ok": redis_ok, "latency_ms": latency},
        "workers": {"alive": len(workers), "busy": sum(1 for w in workers if w.get("busy"))},
        "selfcheck": {
            "contained": contained,
            "what": "each worker runs a cell whose program tries known escapes (host files "
            "by path and via /proc/1/root, writes to /usr, the host network, a "
            "copy-out symlink); see worker/selfcheck.py",
            "workers": [
                {
                    "worker": w.get("name"),
                    **(w.get("selfcheck") or {}),
                    "age_s": round(now - (w.get("selfcheck") or {}).get("checked_at", now), 1),
                }
                for w in workers
            ],
        },
    }
    if not workers and redis_ok:
        body["message"] = "no live worker: start `cellblock worker` (or use the embedded default)"
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
async def prometheus(request: Request) -> PlainTextResponse:
    workers = await live_workers(request)
    text = await metrics.collect(request.app.state.aredis, workers)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
