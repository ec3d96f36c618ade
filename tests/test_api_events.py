"""The API's event hub (api/events.py) against a real redis-server: a batch of
events is one message, fanned out in order to every request listening on that
submission; a listener opened before a submission is queued misses nothing."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from service_support import scratch_redis

from api.events import EventHub
from worker.store import Store, Timing, events_channel

TIMING = Timing(lease=4, renew=1, reap=1, limbo=4)
REQUEST = {"language": "python3", "source": "print(1)", "tests": []}


@pytest.fixture
def redis_server():
    with scratch_redis("cb-events-") as server:
        yield server


async def _heard(queue: asyncio.Queue, count: int) -> list[dict]:
    return [await asyncio.wait_for(queue.get(), 5) for _ in range(count)]


def test_a_batch_reaches_every_listener_in_order_and_ends_the_wait(redis_server):
    store = Store.from_url(redis_server.url, TIMING)
    sub_id = "00000000-0000-4000-8000-000000000001"

    async def scenario() -> None:
        connection = aioredis.from_url(redis_server.url)
        hub = EventHub(connection)
        hub.start()
        try:
            with hub.listen(sub_id) as first, hub.listen(sub_id) as second:
                # The hub's subscription is up once a message reaches it.
                while not first.qsize():
                    store.publish_many(sub_id, [{"type": "status", "status": "running"}])
                    await asyncio.sleep(0.05)
                while not first.empty():
                    first.get_nowait()
                while not second.empty():
                    second.get_nowait()
                # Before queueing: the submission is stored only now, after
                # listening started, and its end comes in one batch.
                store.create(REQUEST, sub_id=sub_id)
                batch = [{"type": "test", "index": i, "total": 2} for i in range(2)]
                numbers = store.publish_many(sub_id, [*batch, {"type": "end", "status": "done"}])
                for queue in (first, second):
                    heard = await _heard(queue, 3)
                    assert [e["seq"] for e in heard] == numbers
                    assert [e["type"] for e in heard] == ["test", "test", "end"]
                # One event alone, as a worker of before batches sent it: still heard.
                store.redis.publish(events_channel(sub_id), json.dumps({"seq": 99, "type": "end"}))
                assert (await _heard(first, 1))[0]["seq"] == 99
                assert await hub.until_end(sub_id, second, 5)
        finally:
            await hub.stop()
            await connection.aclose()

    asyncio.run(scenario())
