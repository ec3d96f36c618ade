"""Progress events: one Redis pub/sub subscription per API process, fanned out.

Workers publish each submission's events on `cb:ev:{id}`, a batch of them
as one message (a JSON array), and log them one by one in `cb:evlog:{id}`
(worker/store.py). The hub holds a single pattern subscription and hands
events to the requests waiting on that id, so `?wait=true` and SSE cost no
polling and no Redis connection per request. A request registers before it
reads the current state (SSE) or before it queues the submission
(`?wait=true`), so no event falls in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from worker.store import PREFIX, events_log, sub_key, text

from .background import BackgroundLoop

log = logging.getLogger("cellblock.api")
FINAL = ("done", "failed")


class EventHub(BackgroundLoop):
    def __init__(self, connection: aioredis.Redis) -> None:
        super().__init__()
        self.redis = connection
        self.waiters: dict[str, set[asyncio.Queue]] = defaultdict(set)

    async def _run(self) -> None:
        while not self.stopping:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.psubscribe(PREFIX + "ev:*")
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    sub_id = message["channel"].decode().rpartition(":")[2]
                    listening = list(self.waiters.get(sub_id, ()))
                    if not listening:
                        continue
                    events = json.loads(message["data"])
                    if isinstance(events, dict):  # one event: a worker of before batches
                        events = [events]
                    for queue in listening:
                        for event in events:
                            queue.put_nowait(event)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reconnect; waiters re-read state
                log.warning("event subscription lost (%s); reconnecting", error)
                for queues in list(self.waiters.values()):
                    for queue in queues:
                        queue.put_nowait({"type": "reconnect"})
                await asyncio.sleep(1.0)

    @contextlib.contextmanager
    def listen(self, sub_id: str):
        queue: asyncio.Queue = asyncio.Queue()
        self.waiters[sub_id].add(queue)
        try:
            yield queue
        finally:
            self.waiters[sub_id].discard(queue)
            if not self.waiters[sub_id]:
                del self.waiters[sub_id]

    async def status(self, sub_id: str) -> str | None:
        raw = await self.redis.hget(sub_key(sub_id), "status")
        return text(raw) if raw else None

    async def until_end(self, sub_id: str, queue: asyncio.Queue, timeout: float) -> bool:
        """Wait on `queue` (from `listen`, opened before the submission was
        queued: api/v1.py's `enqueue_and_wait`) for its end: True once done or
        failed, False after `timeout`. The state is read only when an event may
        have been missed (a lost subscription, the timeout) or a reaper failed
        the run: a finished run's `end` event comes in the same step that
        stores its final state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return await self.status(sub_id) in FINAL
            try:
                event = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                return await self.status(sub_id) in FINAL
            if event.get("type") == "end":
                return True
            if event.get("type") in ("reconnect", "recovered") and (
                await self.status(sub_id) in FINAL
            ):
                return True

    async def stream(
        self, sub_id: str, after: int = 0, keepalive: float = 15.0
    ) -> AsyncIterator[str]:
        """Server-Sent Events: the logged events after `after`, then live ones, until the end."""
        with self.listen(sub_id) as queue:
            last = after
            for raw in await self.redis.lrange(events_log(sub_id), 0, -1):
                event = json.loads(raw)
                if event["seq"] > last:
                    last = event["seq"]
                    yield _sse(event)
                    if event["type"] == "end":
                        return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), keepalive)
                except TimeoutError:
                    event = None
                if event is None or event.get("type") == "reconnect":
                    # Nothing for a while (or the subscription was lost): make
                    # sure the end was not missed, and keep proxies from closing.
                    status = await self.status(sub_id)
                    if status in FINAL or status is None:
                        yield _sse({"seq": last + 1, "type": "end", "status": status or "gone"})
                        return
                    yield ": keepalive\n\n"
                    continue
                if event["seq"] <= last:
                    continue
                last = event["seq"]
                yield _sse(event)
                if event["type"] == "end":
                    return


def _sse(event: dict[str, Any]) -> str:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
