"""API keys and the per-key rate limit.

A key comes as `Authorization: Bearer KEY` or `X-Auth-Token: KEY` (Judge0's
header). With no keys configured the service is for this machine only:
`cellblock serve` refuses to listen beyond loopback, and every request from a
non-loopback peer is refused here too (a proxy in front would defeat that, so
configure keys before putting one there).

The rate limit is a fixed window per key in Redis (`rate_limit_key` in worker/store.py),
shared by every API process, so it holds however many there are.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from worker.store import rate_limit_key


@dataclass(frozen=True)
class Principal:
    id: str  # "key:<digest>" or "local"; never the key itself


def _key_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-auth-token") or None


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


async def authenticate(request: Request, cost: int = 1) -> Principal:
    state = request.app.state
    keys = state.settings.api_keys
    if keys:
        given = _key_of(request)
        if given is None or not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
            raise HTTPException(
                401,
                "a valid API key is required (Authorization: Bearer KEY or X-Auth-Token: KEY)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = Principal("key:" + hashlib.sha256(given.encode()).hexdigest()[:16])
    else:
        if not _loopback(request.client.host if request.client else None):
            raise HTTPException(
                403, "no API keys are configured: this service answers loopback clients only"
            )
        principal = Principal("local")
    await rate_limit(request, principal, cost)
    return principal


# Requests that only read (results, events, listings) have a budget of their
# own: a client polling its submissions (Judge0's way) must not use up the
# budget of the work it may queue, and a read costs one Redis lookup.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def rate_limit(request: Request, principal: Principal, cost: int = 1) -> None:
    settings = request.app.state.settings
    reading = request.method in READ_METHODS
    limit = settings.read_rate_limit if reading else settings.rate_limit
    if limit <= 0:
        return
    window = int(time.time() // settings.rate_window)
    key = rate_limit_key(principal.id + (":read" if reading else ""), window)
    redis = request.app.state.aredis
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incrby(key, cost)
        pipe.expire(key, settings.rate_window * 2)
        used, _ = await pipe.execute()
    if used > limit:
        retry = settings.rate_window - int(time.time()) % settings.rate_window
        what = "reads" if reading else "requests that queue work"
        raise HTTPException(
            429,
            f"rate limit: {limit} {what} per {settings.rate_window} s for this key",
            headers={"Retry-After": str(retry)},
        )


async def caller(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller (one request of its rate)."""
    return await authenticate(request)


# Routes take `principal: Caller` to require a key (and count one request).
Caller = Annotated[Principal, Depends(caller)]
