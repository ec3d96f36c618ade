"""The FastAPI application: `create_app(settings)`.

    uvicorn --factory api.app:create_app   # with REDIS_URL set
    cellblock serve                         # the same, plus its own Redis and workers

The API never runs user code: it validates, stores and queues submissions,
reads results, and relays events and callbacks. Cells run only in workers
(the health endpoint's escape self-check included: each worker runs it and
publishes the outcome with its heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.languages import all_languages
from worker.store import Store, Timing

from .callbacks import Dispatcher
from .events import EventHub
from .models import RequestInvalid, view
from .settings import Settings

log = logging.getLogger("cellblock.api")


def create_app(settings: Settings | None = None, timing: Timing | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    timing = timing or Timing.from_env()
    if not settings.redis_url:
        raise RuntimeError("the API needs REDIS_URL (cellblock serve sets it up when absent)")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        assert settings.redis_url is not None  # serve.py starts a Redis when none is given
        state.aredis = aioredis.from_url(settings.redis_url, health_check_interval=30)
        state.hub = EventHub(state.aredis)
        state.hub.start()
        from .judge0 import render_callback

        state.dispatcher = Dispatcher(state.aredis, settings, render_callback)
        state.dispatcher.start()
        try:
            await run_in_threadpool(state.store.move_judge0_index)
        except redis.RedisError as error:  # Redis not up yet: the next start moves it
            log.warning("could not move the Judge0 index of before: %s", error)
        reaper = asyncio.create_task(_reap(state.store, timing.reap))
        try:
            yield
        finally:
            reaper.cancel()
            await asyncio.wait([reaper], timeout=3)
            await state.dispatcher.stop()
            await state.hub.stop()
            await state.aredis.aclose()

    app = FastAPI(
        title="cellblock",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # api/pages.py serves /docs and /redoc from local assets
        redoc_url=None,
        description="Rootless sandbox service: submissions are judged in cells by workers. "
        "Judge0 1.13 clients: use the base URL /judge0.",
    )
    app.state.settings = settings
    app.state.store = Store.from_url(settings.redis_url, timing)
    languages = all_languages()
    app.state.language_info = languages
    app.state.languages = set(languages)
    app.add_middleware(BodyLimit, limit=settings.max_body)
    _install_handlers(app)

    from . import judge0, pages, piston, sandboxfusion, v1

    app.include_router(v1.router)
    app.include_router(judge0.router)
    app.include_router(sandboxfusion.router)
    app.include_router(piston.router)
    pages.add_pages(app)
    return app


async def _reap(store: Store, interval: float) -> None:
    """The API's reaper: recovers lost runs even when every worker is gone."""
    while True:
        await asyncio.sleep(interval)
        try:
            for sub_id, outcome in await run_in_threadpool(store.reap):
                log.warning("recovered submission %s: %s", sub_id, outcome)
        except Exception as error:  # noqa: BLE001 - retry on the next pass
            log.warning("reaper pass failed: %s", error)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input; an echoed NaN or lone surrogate
        # cannot be serialised and turns the 422 into a 500. Name the field only.
        detail = [
            {
                "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "invalid")),
                "type": str(e.get("type", "invalid")),
            }
            for e in error.errors()
        ]
        return _error(request, 422, detail)

    @app.exception_handler(RequestInvalid)
    async def refused(request: Request, error: RequestInvalid) -> JSONResponse:
        return _error(
            request,
            error.status,
            [{"loc": list(error.loc), "msg": error.msg, "type": "value_error"}],
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(request, error.status_code, error.detail, getattr(error, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, error: redis.RedisError) -> JSONResponse:
        log.error("redis: %s", error)
        return _error(request, 503, "the queue (Redis) is unavailable; try again")


def _error(
    request: Request, status: int, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if request.url.path.startswith("/judge0") and isinstance(detail, list):
        # Judge0's clients read {"field": ["message"]}; keep both shapes.
        for item in detail:
            loc = [p for p in item.get("loc", []) if p not in ("body", "query", "path")]
            body.setdefault(str(loc[-1]) if loc else "error", []).append(item["msg"])
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413) before anything parses them."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _send_413(send, self.limit)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _send_413(send, self.limit)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_413(send: Any, limit: int) -> None:
    body = json.dumps(
        {
            "detail": [
                {
                    "loc": ["body"],
                    "type": "too_large",
                    "msg": f"request body larger than {limit} bytes",
                }
            ]
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["create_app", "view"]
