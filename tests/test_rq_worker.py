"""The worker's Redis traffic, cut without losing anything: a submission is
stored and queued in one transaction; RQ's repeated heartbeats and states are
sent once. Real redis-server."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.suspension import is_suspended, resume, suspend
from service_support import scratch_redis

from worker import rq_worker
from worker.store import (
    LEASES,
    METRICS,
    QUEUE,
    Store,
    Timing,
    events_channel,
    events_log,
    sub_key,
)

TIMING = Timing(lease=4, renew=1, reap=1, limbo=4, max_attempts=2)
REQUEST = {"language": "python3", "source": "print(1)", "tests": []}


@pytest.fixture
def redis_server():
    with scratch_redis("cb-rqw-") as server:
        yield server


def test_a_submission_is_stored_and_queued_in_one_transaction(redis_server, monkeypatch):
    store = Store.from_url(redis_server.url, TIMING)
    sub_id = store.create(REQUEST)
    assert store.get(sub_id)["status"] == "queued"
    assert Queue(QUEUE, connection=store.redis).job_ids == [f"{sub_id}_1"]
    # Nothing guards a gap between storing and queueing: there is none.
    assert store.redis.zscore(LEASES, sub_id) is None

    # A queueing that fails takes the record with it: no submission is left
    # stored but never queued, and nothing is counted.
    def broken(pipe, sub_id, attempt, job_timeout):
        pipe.hset(sub_key(sub_id), "never", "1")  # queued in the transaction
        raise redis.ConnectionError("the queue is gone")

    monkeypatch.setattr(store, "_queue_job", broken)
    before = set(store.redis.keys("cb:sub:*"))
    with pytest.raises(redis.ConnectionError):
        store.create(REQUEST)
    assert set(store.redis.keys("cb:sub:*")) == before
    assert int(store.redis.hget(METRICS, "submissions")) == 1


def test_a_heartbeat_is_skipped_only_when_the_last_one_covers_it(redis_server):
    store = Store.from_url(redis_server.url, TIMING)
    worker = rq_worker.CellWorker(store)
    beat = lambda: store.redis.hget(worker.key, "last_heartbeat")  # noqa: E731

    worker.heartbeat()
    first, ttl = beat(), store.redis.ttl(worker.key)
    assert first and ttl > 0
    worker.heartbeat()  # a moment later, the same expiry asked: skipped
    assert beat() == first
    worker.heartbeat(ttl + 100)  # a later expiry asked: sent
    second = beat()
    assert second != first
    assert store.redis.ttl(worker.key) > ttl + 50
    time.sleep(rq_worker.HEARTBEAT_SLACK + 0.1)
    worker.heartbeat(ttl + 100)  # past the slack: sent
    assert beat() != second

    # The worker's state is written when it changes, not again.
    worker.set_state("busy")
    store.redis.hset(worker.key, "state", "marker")
    worker.set_state("busy")
    assert store.redis.hget(worker.key, "state") == b"marker"
    worker.set_state("suspended")  # another state: written
    assert store.redis.hget(worker.key, "state") == b"suspended"


def commands_sent(connection: redis.Redis) -> int:
    """Commands Redis has run so far (but INFO, which asks it)."""
    stats = connection.info("commandstats")
    return sum(v["calls"] for name, v in stats.items() if name != "cmdstat_info")


def test_a_job_ends_without_round_trips_of_its_own(redis_server):
    store = Store.from_url(redis_server.url, TIMING)
    worker = rq_worker.CellWorker(store)
    queue = Queue(QUEUE, connection=store.redis)
    job = queue.enqueue_call("builtins.len", args=("ab",))
    worker.set_state("busy")
    assert store.redis.hget(worker.key, "state") == b"busy"

    # The job's end and the worker's `idle` send nothing yet...
    before = commands_sent(store.redis)
    worker.handle_execution_ended(job, queue, 60)
    worker.set_state("idle")
    assert commands_sent(store.redis) == before
    assert job.ended_at is not None and worker.get_state() == "idle"
    # ...`idle` goes with the heartbeat of RQ's suspension check, which comes
    # next, before the worker waits for a job.
    assert not is_suspended(store.redis, worker)
    assert store.redis.hget(worker.key, "state") == b"idle"
    # A state set with a pipeline, or any other state, is written at once.
    worker.set_state("busy")
    assert store.redis.hget(worker.key, "state") == b"busy"

    # The control: RQ's own end of a job writes the job's heartbeat.
    before = commands_sent(store.redis)
    SimpleWorker.handle_execution_ended(worker, job, queue, 60)
    assert commands_sent(store.redis) == before + 1


def test_a_batch_of_events_is_one_command_and_one_message_in_order(redis_server):
    store = Store.from_url(redis_server.url, TIMING)
    sub_id = store.create(REQUEST)
    subscriber = store.redis.pubsub()
    subscriber.subscribe(events_channel(sub_id))
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"
    store.publish(store.create(REQUEST), {"type": "test"})  # the script, loaded
    before = store.redis.info("commandstats")
    events = [{"type": "test", "index": i, "total": 4} for i in range(4)]
    assert store.publish_many(sub_id, events[:1]) == [1]
    assert store.publish_many(sub_id, events[1:]) == [2, 3, 4]
    after = store.redis.info("commandstats")
    # One script call per batch, and nothing before it (a pipeline of calls
    # would first ask SCRIPT EXISTS).
    calls = {
        name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
        for name in after
        if after[name]["calls"] != before.get(name, {"calls": 0})["calls"]
    }
    assert calls["cmdstat_evalsha"] == 2, calls
    assert not any(name.startswith("cmdstat_script") for name in calls), calls
    logged = [json.loads(raw) for raw in store.redis.lrange(events_log(sub_id), 0, -1)]
    assert logged == [{"seq": i + 1, **event} for i, event in enumerate(events)]
    # Each batch is one message, its events in order: a subscriber wakes once
    # per batch.
    heard = []
    while len(heard) < 2:
        message = subscriber.get_message(timeout=5)
        assert message is not None, heard
        if message["type"] == "message":
            heard.append(json.loads(message["data"]))
    assert heard == [logged[:1], logged[1:]]
    subscriber.close()


def test_a_job_succeeds_in_one_round_trip_leaving_what_rq_leaves(redis_server):
    """RQ ends a job's success with a transaction that watches and reads its
    dependents (these jobs never have any): the worker writes the same things
    in one round trip."""
    store = Store.from_url(redis_server.url, TIMING)
    queue = Queue(QUEUE, connection=store.redis)

    def succeed(worker: SimpleWorker) -> dict[str, int]:
        queue.enqueue_call("builtins.len", args=("abc",))
        job, _ = Queue.dequeue_any([queue], None, connection=store.redis)
        execution = worker.prepare_execution(job)
        before = store.redis.info("commandstats")
        assert worker.perform_job(job, queue, execution)
        after = store.redis.info("commandstats")
        # What RQ leaves of a job that succeeded.
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.return_value() == 3
        assert job.id in queue.finished_job_registry.get_job_ids()
        assert job.id not in [
            entry.split(":")[0] for entry in StartedJobRegistry(queue=queue).get_job_ids()
        ]
        assert not store.redis.exists(execution.key)
        return {
            name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"] for name in after
        }

    # The control: RQ's own worker watches the dependents and reads them.
    plain = SimpleWorker([queue], connection=store.redis)
    control = succeed(plain)
    assert control.get("cmdstat_watch") == 1 and control.get("cmdstat_smembers") == 1, control
    assert store.redis.hget(plain.key, "successful_job_count") == b"1"

    worker = rq_worker.CellWorker(store)
    calls = succeed(worker)
    assert not calls.get("cmdstat_watch") and not calls.get("cmdstat_smembers"), calls
    # The same transactions (the job's start, its end), nothing around them.
    assert calls.get("cmdstat_exec") == control.get("cmdstat_exec") == 2, (calls, control)
    assert store.redis.hget(worker.key, "successful_job_count") == b"1"
    assert float(store.redis.hget(worker.key, "total_working_time")) > 0


def test_rq_suspend_is_asked_at_most_once_a_second_and_still_heeded(redis_server):
    store = Store.from_url(redis_server.url, TIMING)
    worker = rq_worker.CellWorker(store)
    worker.check_for_suspension(False)  # asks Redis
    before = commands_sent(store.redis)
    worker.check_for_suspension(False)  # a moment later, as the next job comes: does not
    assert commands_sent(store.redis) == before
    suspend(store.redis)
    time.sleep(rq_worker.SUSPENSION_CHECK_INTERVAL + 0.1)
    checking = threading.Thread(target=worker.check_for_suspension, args=(False,))
    checking.start()  # RQ's check waits while the workers are suspended
    deadline = time.monotonic() + 5
    while store.redis.hget(worker.key, "state") != b"suspended":
        assert time.monotonic() < deadline, "the suspension was not noticed"
        time.sleep(0.05)
    assert checking.is_alive()
    resume(store.redis)
    checking.join(5)
    assert not checking.is_alive()
