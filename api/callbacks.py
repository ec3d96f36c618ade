"""callback_url: POST the finished submission, with bounded retries and an SSRF guard.

Judge0's CVE-2024-29021: a callback to an internal address makes the judge
a proxy into the private network. Here a callback may reach only public
addresses unless the operator allows more (`CELLBLOCK_CALLBACK_ALLOW`: CIDRs, or
`any`). The host is resolved when the submission arrives (a clear 422) and
again right before each try, and the request goes to the address that was
checked (Host header and TLS SNI keep the name), so a DNS answer that changes
in between (rebinding) cannot redirect it. Redirects are not followed.

Workers push finished ids onto `cb:callbacks`; every API process runs a
dispatcher that pops them (each id goes to one dispatcher), tries up to
`callback_tries` times with doubling back-off (`cb:callbacks:retry`), and
records the outcome in the submission (`callback_status`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis.asyncio as aioredis

from worker.store import CALLBACKS, CALLBACKS_RETRY, METRICS, decode_record, sub_key, text

from .background import BackgroundLoop
from .settings import Settings

log = logging.getLogger("cellblock.api")


class CallbackRefused(ValueError):
    pass


def address_allowed(address: str, settings: Settings) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if settings.callback_allow_any:
        return True
    if any(ip in network for network in settings.callback_allow):
        return True
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> tuple[str, str, int]:
    """Scheme, host, port of an acceptable callback URL (CallbackRefused otherwise)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise CallbackRefused(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused("only http and https callbacks")
    if not parts.hostname:
        raise CallbackRefused("no host")
    if parts.username or parts.password:
        raise CallbackRefused("no credentials in the URL")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve_allowed(url: str, settings: Settings) -> str:
    """The first address of the URL's host, after checking every one is allowed."""
    _, host, port = check_url(url)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise CallbackRefused(f"cannot resolve {host}: {error.strerror or error}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise CallbackRefused(f"cannot resolve {host}")
    refused = [a for a in addresses if not address_allowed(a, settings)]
    if refused:
        raise CallbackRefused(
            f"{host} resolves to a loopback, private or reserved address ({refused[0]}); "
            "the operator can allow it with CELLBLOCK_CALLBACK_ALLOW"
        )
    return addresses[0]


async def deliver(url: str, method: str, body: dict[str, Any], settings: Settings) -> str:
    """One try; returns a short outcome, raises on failure."""
    scheme, host, port = check_url(url)
    address = await resolve_allowed(url, settings)
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    headers = {
        "Host": host if default_port else f"{host}:{port}",
        "User-Agent": "cellblock-callback",
    }
    async with httpx.AsyncClient(
        timeout=settings.callback_timeout, follow_redirects=False, trust_env=False
    ) as client:
        response = await client.request(
            method, pinned, json=body, headers=headers, extensions={"sni_hostname": host}
        )
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"HTTP {response.status_code}")
    return f"delivered (HTTP {response.status_code})"


Render = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


class Dispatcher(BackgroundLoop):
    """Pops finished ids and delivers their callbacks (a task in each API process)."""

    def __init__(
        self, connection: aioredis.Redis, settings: Settings, render: Render, concurrency: int = 16
    ) -> None:
        super().__init__()
        self.redis = connection
        self.settings = settings
        self.render = render  # record -> (method, body): v1 or Judge0 shape
        self.slots = asyncio.Semaphore(concurrency)
        self.pending: set[asyncio.Task] = set()

    async def stop(self) -> None:
        await super().stop()
        for task in list(self.pending):
            task.cancel()

    async def _run(self) -> None:
        while not self.stopping:
            try:
                await self._promote_due()
                item = await self.redis.blpop([CALLBACKS], timeout=1)
                if item is None:
                    continue
                await self.slots.acquire()
                task = asyncio.create_task(self._one(text(item[1])))
                self.pending.add(task)
                task.add_done_callback(self._done)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - keep dispatching after a Redis hiccup
                log.warning("callback dispatcher: %s", error)
                await asyncio.sleep(1.0)

    def _done(self, task: asyncio.Task) -> None:
        self.pending.discard(task)
        self.slots.release()

    async def _promote_due(self) -> None:
        for raw in await self.redis.zrangebyscore(
            CALLBACKS_RETRY, "-inf", time.time(), start=0, num=100
        ):
            if await self.redis.zrem(CALLBACKS_RETRY, text(raw)):
                await self.redis.rpush(CALLBACKS, text(raw))

    async def _one(self, sub_id: str) -> None:
        key = sub_key(sub_id)
        raw = await self.redis.hgetall(key)
        if not raw or b"callback_url" not in raw:
            return
        record = decode_record(raw)
        tries = await self.redis.hincrby(key, "callback_tries", 1)
        method, body = self.render(record)
        try:
            outcome = await deliver(record["callback_url"], method, body, self.settings)
        except (CallbackRefused, httpx.HTTPError, RuntimeError, OSError) as error:
            reason = str(error) or type(error).__name__
            if tries < self.settings.callback_tries and not isinstance(error, CallbackRefused):
                delay = self.settings.callback_backoff * 2 ** (tries - 1)
                await self.redis.hset(key, "callback_status", f"retrying: {reason}")
                await self.redis.zadd(CALLBACKS_RETRY, {sub_id: time.time() + delay})
            else:
                await self.redis.hset(
                    key, "callback_status", f"failed after {tries} tries: {reason}"
                )
                await self.redis.hincrby(METRICS, "callbacks_failed", 1)
            return
        await self.redis.hset(key, "callback_status", outcome)
        await self.redis.hincrby(METRICS, "callbacks_delivered", 1)
