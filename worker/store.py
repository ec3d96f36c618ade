"""The service's state in Redis: submissions, leases, events, callbacks, metrics.

Shared by the API (which creates submissions and reads them) and the workers
(which claim, run and finish them). Every state change that must not be
interleaved with another is one Lua script, so two workers, a reaper and the
API never disagree about a submission.

Keys (all under `cb:`):

    cb:sub:{id}        hash: the submission record (status, attempt, request, result...)
    cb:leases          zset: id -> unix time after which its run is presumed dead
    cb:ev:{id}         pub/sub channel of its progress events
    cb:evlog:{id}      list: the same events, for late subscribers (SSE replay)
    cb:callbacks       list: ids whose result is to be POSTed to their callback_url
    cb:callbacks:retry zset: "id" -> unix time of the next try
    cb:metrics         hash: counters (submissions, verdicts, runs, recoveries, callbacks...)
    cb:rl:{key}:{win}  counter with a TTL: a key's requests in a rate-limit window
    cb:worker:{name}   string with a TTL: a live worker's info and self-check
    cb:judge0          zset: Judge0 tokens by creation time (GET /judge0/submissions)

Lifecycle: `queued` -> `running` -> `done` | `failed`. A run holds a lease
that its worker's main process renews every few seconds; a lease that
expires (the worker was SIGKILLed, the machine died) is found by a reaper
(every worker and every API process run one) which queues the submission again
with `attempt + 1`, up to `max_attempts`, then marks it `failed` with the
reason. Results written by a stale attempt are ignored.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

PREFIX = "cb:"
QUEUE = "cellblock"
QUEUE_KEY = "rq:queue:" + QUEUE  # RQ's list of the queued jobs' ids
LEASES = PREFIX + "leases"
CALLBACKS = PREFIX + "callbacks"
CALLBACKS_RETRY = PREFIX + "callbacks:retry"
METRICS = PREFIX + "metrics"
# Before each API key had its own index (judge0_index), one sorted set held
# every key's Judge0 submissions; the API moves it on start (move_judge0_index).
JUDGE0_INDEX = PREFIX + "judge0"
JOB_FUNC = "worker.jobs.run_submission"

# Histogram buckets of a submission's run time (seconds, worker side).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Histogram buckets of an image pull a worker made (seconds; worker/imagepull.py).
PULL_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def new_submission_id() -> str:
    """A submission's id: a UUID4, as Judge0's tokens."""
    return str(uuid.uuid4())


def sub_key(sub_id: str) -> str:
    return f"{PREFIX}sub:{sub_id}"


def events_channel(sub_id: str) -> str:
    return f"{PREFIX}ev:{sub_id}"


def events_log(sub_id: str) -> str:
    return f"{PREFIX}evlog:{sub_id}"


def events_counter(sub_id: str) -> str:
    return f"{PREFIX}evseq:{sub_id}"


def worker_key(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def judge0_index(owner: str) -> str:
    """One API key's Judge0 submissions, scored by creation time: Judge0's
    listing pages through it, so a listing reads that key's page and no other
    key's records."""
    return f"{PREFIX}judge0:by:{owner}"


def rate_limit_key(principal: str, window: int) -> str:
    return f"{PREFIX}rl:{principal}:{window}"


@dataclass(frozen=True)
class Claim:
    """A started run: what the API stored for it."""

    request: dict[str, Any]
    job_timeout: int


@dataclass(frozen=True)
class Timing:
    """How long things may take; overridable by environment for tests and big hosts."""

    lease: float = 30.0  # a run is presumed dead this long after its last renewal
    renew: float = 5.0  # how often a worker renews the lease of its run
    reap: float = 10.0  # how often each reaper looks for expired leases
    limbo: float = 30.0  # a job taken off the queue but never claimed, after this
    max_attempts: int = 3  # runs of one submission before it is `failed`
    result_ttl: int = 24 * 3600  # how long a finished submission is kept

    @classmethod
    def from_env(cls) -> Timing:
        def number(name: str, default: float) -> float:
            value = os.environ.get(name)
            return float(value) if value else default

        return cls(
            lease=number("CELLBLOCK_LEASE", cls.lease),
            renew=number("CELLBLOCK_LEASE_RENEW", cls.renew),
            reap=number("CELLBLOCK_REAP_INTERVAL", cls.reap),
            limbo=number("CELLBLOCK_LIMBO", cls.limbo),
            max_attempts=int(number("CELLBLOCK_MAX_ATTEMPTS", cls.max_attempts)),
            result_ttl=int(number("CELLBLOCK_RESULT_TTL", cls.result_ttl)),
        )


# --- Lua: each a single atomic step -----------------------------------------

# A submission's events: each numbered and logged for replay (SSE), then the
# batch published as one message, a JSON array in order: a subscriber (the
# API's event hub) wakes once per batch, not once per event. `bodies` are the
# events' JSON objects without their `seq`; returns their numbers.
_EVENT_FN = """
local function publish_events(counter, log, channel, bodies, ttl)
  local numbers, events = {}, {}
  if #bodies == 0 then return numbers end
  for i, body in ipairs(bodies) do
    local seq = redis.call('INCR', counter)
    events[i] = '{"seq":' .. seq .. ',' .. string.sub(body, 2)
    numbers[i] = seq
    redis.call('RPUSH', log, events[i])
  end
  redis.call('EXPIRE', counter, ttl)
  redis.call('EXPIRE', log, ttl)
  redis.call('PUBLISH', channel, '[' .. table.concat(events, ',') .. ']')
  return numbers
end
"""

# Claim attempt ARGV[1] for a worker: only the current attempt of a queued
# submission may start; its `running` event goes out in the same step.
# KEYS: sub, leases, event counter, event log.
# ARGV: attempt, worker, now, lease-until, id, channel, event-json, ttl.
# Returns the request (JSON) and the job's timeout, or 0.
_CLAIM = (
    _EVENT_FN
    + """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'started_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
publish_events(KEYS[3], KEYS[4], ARGV[6], {ARGV[7]}, ARGV[8])
return redis.call('HMGET', KEYS[1], 'request', 'job_timeout')
"""
)

# Renew a lease only while it is ours. KEYS: sub, leases. ARGV: attempt, until, id.
_RENEW = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[3])
return 1
"""

# Finish attempt ARGV[1]: record the outcome, drop the lease, queue the callback,
# count it, and send the `end` event: the result is written once, in one step.
# KEYS: sub, leases, callbacks, metrics, event counter, event log.
# ARGV: attempt, status, result-json, error, finished_at, ttl, id, verdict, bucket, duration,
#       cell seconds ('' when not judged), runs (cells the judging ran), channel,
#       end event JSON, then any events still to send before it (the last tests').
_FINISH = (
    _EVENT_FN
    + """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'result', ARGV[3], 'error', ARGV[4],
           'finished_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[7])
if redis.call('HGET', KEYS[1], 'callback_url') then redis.call('RPUSH', KEYS[3], ARGV[7]) end
redis.call('HINCRBY', KEYS[4], 'finished:' .. ARGV[2], 1)
if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[4], 'verdict:' .. ARGV[8], 1) end
if ARGV[9] ~= '' then
  redis.call('HINCRBY', KEYS[4], 'duration_bucket:' .. ARGV[9], 1)
  redis.call('HINCRBYFLOAT', KEYS[4], 'duration_sum', ARGV[10])
  redis.call('HINCRBY', KEYS[4], 'duration_count', 1)
end
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[1], 'judge_seconds', ARGV[10], 'cell_seconds', ARGV[11])
end
if ARGV[12] ~= '0' then redis.call('HINCRBY', KEYS[4], 'runs', ARGV[12]) end
local events = {}
for i = 15, #ARGV do events[#events + 1] = ARGV[i] end
events[#events + 1] = ARGV[14]
publish_events(KEYS[5], KEYS[6], ARGV[13], events, ARGV[6])
return 1
"""
)

# Recover a submission whose run is presumed dead. KEYS: sub, leases, callbacks, metrics.
# ARGV: id, now, reason, force ('1': no lease needed, the job is stuck in limbo),
#       grace (lease given to the re-queue until it is confirmed), ttl,
#       attempt ('' for any: the one given up must still be the current one).
# Returns 'requeue:<attempt>', 'failed', or '' when there is nothing to do.
_RECOVER = """
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[7] then return '' end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if ARGV[4] ~= '1' then
  if not score or tonumber(score) > tonumber(ARGV[2]) then return '' end
end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' and status ~= 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return ''
end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '1')
local most = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '3')
redis.call('HINCRBY', KEYS[4], 'recovered', 1)
if attempt >= most then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[2], 'error',
             ARGV[3] .. ' (attempt ' .. attempt .. ' of ' .. most .. '; giving up)')
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('HINCRBY', KEYS[4], 'finished:failed', 1)
  if redis.call('HGET', KEYS[1], 'callback_url') then redis.call('RPUSH', KEYS[3], ARGV[1]) end
  return 'failed'
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', attempt + 1,
           'last_error', ARGV[3] .. ' (attempt ' .. attempt .. ')')
redis.call('HDEL', KEYS[1], 'worker', 'started_at')
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[5]), ARGV[1])
return 'requeue:' .. (attempt + 1)
"""

# Drop the grace lease of a queued attempt once its job is in the queue.
# KEYS: sub, leases. ARGV: attempt, id.
_QUEUED = """
if redis.call('HGET', KEYS[1], 'attempt') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
"""

# Publish events ARGV[3..] in order, as one message. KEYS: event counter, event log.
# ARGV: channel, ttl, event-json... Returns their numbers.
_PUBLISH = (
    _EVENT_FN
    + """
local bodies = {}
for i = 3, #ARGV do bodies[#bodies + 1] = ARGV[i] end
return publish_events(KEYS[1], KEYS[2], ARGV[1], bodies, ARGV[2])
"""
)


# How long RQ keeps a finished job. Not 0: RQ deletes a job whose result_ttl
# is 0 at once, which costs seven more round trips per job (it reads the job's
# executions back) than letting the job expire. The submission's result is
# ours (cb:sub:{id}); RQ's own record of a job is kept only this long.
RQ_JOB_TTL = 60


class Store:
    """Submission state in one Redis, through a synchronous client."""

    def __init__(self, connection: redis.Redis, timing: Timing | None = None) -> None:
        self.redis = connection
        self.timing = timing or Timing.from_env()
        self._claim = connection.register_script(_CLAIM)
        self._renew = connection.register_script(_RENEW)
        self._finish = connection.register_script(_FINISH)
        self._recover = connection.register_script(_RECOVER)
        self._queued = connection.register_script(_QUEUED)
        self._publish = connection.register_script(_PUBLISH)

    @classmethod
    def from_url(cls, url: str, timing: Timing | None = None) -> Store:
        return cls(connect(url), timing)

    # --- creating and reading -------------------------------------------------

    def create(
        self,
        request: dict[str, Any],
        *,
        kind: str = "v1",
        owner: str = "",
        callback_url: str | None = None,
        job_timeout: int = 600,
        extra: dict[str, str] | None = None,
        sub_id: str | None = None,
    ) -> str:
        """Store a new submission and queue it; returns its id (`sub_id`, or a
        new one from `new_submission_id`)."""
        sub_id = sub_id or new_submission_id()
        now = time.time()
        record: dict[FieldT, EncodableT] = {
            "id": sub_id,
            "kind": kind,
            "status": "queued",
            "attempt": 1,
            "max_attempts": self.timing.max_attempts,
            "created_at": repr(now),
            "request": json.dumps(request),
            # Alone as well, so that a record is shown without reading its
            # request (whose tests may be megabytes): see `get_many`'s fields.
            "language": str(request.get("language") or ""),
            "owner": owner,
            "job_timeout": job_timeout,
        }
        record.update(extra or {})
        if callback_url:
            record["callback_url"] = callback_url
        # The record and its job in one transaction: a submission is stored
        # queued or not at all, so it needs no grace lease (as `enqueue` does).
        with self.redis.pipeline() as pipe:
            pipe.multi()  # explicitly, as RQ's enqueue into a pipeline requires
            pipe.hset(sub_key(sub_id), mapping=record)
            pipe.expire(sub_key(sub_id), self.timing.result_ttl)
            pipe.hincrby(METRICS, "submissions", 1)
            if kind == "judge0":
                # The index keeps twice as long as a record: an entry outlives
                # its record (judge0_page drops it), but not by more, even for a
                # key that never lists; a key silent that long loses it whole.
                index, kept = judge0_index(owner), 2 * self.timing.result_ttl
                pipe.zadd(index, {sub_id: now})
                pipe.zremrangebyscore(index, "-inf", now - kept)
                pipe.expire(index, kept)
            self._queue_job(pipe, sub_id, 1, job_timeout)
            pipe.execute()
        return sub_id

    def enqueue(self, sub_id: str, attempt: int, job_timeout: int | None = None) -> None:
        """Queue attempt `attempt` of a stored submission (a reaper's recovery)
        and drop the lease that guarded it until now."""
        if job_timeout is None:
            job_timeout = int(self.redis.hget(sub_key(sub_id), "job_timeout") or 600)
        with self.redis.pipeline() as pipe:
            pipe.multi()
            self._queue_job(pipe, sub_id, attempt, job_timeout)
            pipe.execute()
        self._queued(keys=[sub_key(sub_id), LEASES], args=[attempt, sub_id])

    def _queue_job(self, pipe: Any, sub_id: str, attempt: int, job_timeout: int) -> None:
        """Add RQ's job for attempt `attempt` to `pipe` (sent when the pipe is)."""
        from rq import Queue

        Queue(QUEUE, connection=self.redis).enqueue_call(
            JOB_FUNC,
            args=(sub_id, attempt),
            job_id=f"{sub_id}_{attempt}",
            timeout=job_timeout,
            result_ttl=RQ_JOB_TTL,
            failure_ttl=3600,
            ttl=None,
            pipeline=pipe,
        )

    def judge0_page(self, owner: str, start: int, count: int) -> tuple[int, list[str]]:
        """`owner`'s Judge0 submissions: how many, and the ids of `count` of
        them from `start`, newest first. Index entries whose record expired are
        dropped first; only a record created over result_ttl ago can have (each
        lives result_ttl from its creation at least), so only those are looked
        at, and each once after it is gone."""
        key = judge0_index(owner)
        old = cast(
            list[bytes],
            self.redis.zrangebyscore(key, "-inf", time.time() - self.timing.result_ttl),
        )
        if old:
            with self.redis.pipeline(transaction=False) as pipe:
                for sub_id in old:
                    pipe.exists(sub_key(sub_id.decode()))
                present = pipe.execute()
            gone = [sub_id for sub_id, there in zip(old, present, strict=True) if not there]
            if gone:
                self.redis.zrem(key, *gone)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrevrange(key, start, start + count - 1)
            total, ids = pipe.execute()
        return int(total), [sub_id.decode() for sub_id in cast(list[bytes], ids)]

    def forget_judge0(self, owner: str, ids: Sequence[str]) -> None:
        """Drop ids from `owner`'s Judge0 index (their records are gone)."""
        if ids:
            self.redis.zrem(judge0_index(owner), *ids)

    def move_judge0_index(self) -> int:
        """Move the one index of before (every key's Judge0 submissions in
        JUDGE0_INDEX) into each key's own; returns how many were moved. An
        entry whose record is gone is dropped."""
        entries = cast(
            list[tuple[bytes, float]], self.redis.zrange(JUDGE0_INDEX, 0, -1, withscores=True)
        )
        if not entries:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for sub_id, _ in entries:
                pipe.hget(sub_key(sub_id.decode()), "owner")
            owners = cast(list[bytes | None], pipe.execute())
        with self.redis.pipeline() as pipe:
            for (sub_id, score), owner in zip(entries, owners, strict=True):
                if owner is not None:
                    pipe.zadd(judge0_index(owner.decode()), {sub_id: score})
            pipe.zrem(JUDGE0_INDEX, *(sub_id for sub_id, _ in entries))
            pipe.execute()
        return len(entries)

    def get(self, sub_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(sub_key(sub_id))
        return decode_record(raw) if raw else None

    def get_many(
        self, ids: Iterable[str], fields: Sequence[str] | None = None
    ) -> list[dict[str, Any] | None]:
        """Records in one round trip: whole, or only `fields` (a record stored
        before records held their `language` alone is read whole)."""
        ids = list(ids)
        with self.redis.pipeline() as pipe:
            for sub_id in ids:
                if fields is None:
                    pipe.hgetall(sub_key(sub_id))
                else:
                    pipe.hmget(sub_key(sub_id), fields)
            replies = pipe.execute()
        if fields is None:
            return [decode_record(raw) if raw else None for raw in replies]
        records = [decode_fields(fields, values) for values in replies]
        return [
            self.get(sub_id) if lacks_language(record, fields) else record
            for sub_id, record in zip(ids, records, strict=True)
        ]

    # --- running --------------------------------------------------------------

    def claim(self, sub_id: str, attempt: int, worker: str) -> Claim | None:
        """Start attempt `attempt` (None: stale, or another run has it). Its
        lease runs `timing.lease` from now; its `running` event goes out."""
        now = time.time()
        claimed = self._claim(
            keys=[sub_key(sub_id), LEASES, events_counter(sub_id), events_log(sub_id)],
            args=[
                attempt,
                worker,
                repr(now),
                now + self.timing.lease,
                sub_id,
                events_channel(sub_id),
                json.dumps({"type": "status", "status": "running", "attempt": attempt}),
                self.timing.result_ttl,
            ],
        )
        if not claimed:
            return None
        request, job_timeout = claimed
        return Claim(
            request=json.loads(request) if request else {},
            job_timeout=int(job_timeout or 600),
        )

    def renew(self, sub_id: str, attempt: int) -> bool:
        return bool(
            self._renew(
                keys=[sub_key(sub_id), LEASES],
                args=[attempt, time.time() + self.timing.lease, sub_id],
            )
        )

    def is_current(self, sub_id: str, attempt: int, worker: str | None = None) -> bool:
        """Whether attempt `attempt` is running (by `worker`, if given)."""
        status, current, running_on = self.redis.hmget(
            sub_key(sub_id), "status", "attempt", "worker"
        )
        return (
            status == b"running"
            and current == str(attempt).encode()
            and (worker is None or running_on == worker.encode())
        )

    def finish(
        self,
        sub_id: str,
        attempt: int,
        status: str,
        result: dict[str, Any] | None,
        error: str = "",
        verdict: str = "",
        duration: float | None = None,
        cell_seconds: float | None = None,
        runs: int = 0,
        events: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Record attempt `attempt`'s outcome, once (False: not current, or
        finished already). `duration`: the worker's seconds on it; `cell_seconds`
        of those inside cells; `runs`: the cells it ran (compile, tests);
        `events`: progress events not sent yet, sent before the `end` event."""
        bucket = ""
        if duration is not None:
            bucket = next((repr(b) for b in DURATION_BUCKETS if duration <= b), "+Inf")
        return bool(
            self._finish(
                keys=[
                    sub_key(sub_id),
                    LEASES,
                    CALLBACKS,
                    METRICS,
                    events_counter(sub_id),
                    events_log(sub_id),
                ],
                args=[
                    attempt,
                    status,
                    json.dumps(result) if result is not None else "",
                    error,
                    repr(time.time()),
                    self.timing.result_ttl,
                    sub_id,
                    verdict,
                    bucket,
                    repr(duration or 0.0),
                    "" if cell_seconds is None else repr(cell_seconds),
                    runs,
                    events_channel(sub_id),
                    json.dumps({"type": "end", "status": status}),
                    *(json.dumps(event) for event in events or ()),
                ],
            )
        )

    def publish(self, sub_id: str, event: dict[str, Any]) -> int:
        return self.publish_many(sub_id, [event])[0]

    def publish_many(self, sub_id: str, events: list[dict[str, Any]]) -> list[int]:
        """Append events to a submission's stream in one round trip (one script
        call: a pipeline of calls would first ask whether the script is loaded,
        a second round trip); their numbers."""
        keys = [events_counter(sub_id), events_log(sub_id)]
        args: list[str | float] = [events_channel(sub_id), self.timing.result_ttl]
        args += map(json.dumps, events)
        return [int(seq) for seq in self._publish(keys=keys, args=args)]

    # --- recovery ---------------------------------------------------------------

    def recover(
        self, sub_id: str, reason: str, force: bool = False, attempt: int | None = None
    ) -> str:
        """Queue a presumed-dead run again (or fail it after max_attempts).
        `force`: without waiting for its lease; `attempt`: only if it is still
        that attempt (a worker giving up its own run)."""
        outcome = self._recover(
            keys=[sub_key(sub_id), LEASES, CALLBACKS, METRICS],
            args=[
                sub_id,
                repr(time.time()),
                reason,
                "1" if force else "0",
                self.timing.lease,
                self.timing.result_ttl,
                "" if attempt is None else attempt,
            ],
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome or "")
        if outcome.startswith("requeue:"):
            self.enqueue(sub_id, int(outcome.split(":", 1)[1]))
        if outcome:
            self.publish(sub_id, {"type": "recovered", "outcome": outcome, "reason": reason})
            if outcome == "failed":
                self.publish(sub_id, {"type": "end", "status": "failed"})
        return outcome

    def reap(self) -> list[tuple[str, str]]:
        """One pass: expired leases, and jobs a worker took off the queue but never
        claimed (it died in between). Safe to run anywhere, any number of times."""
        done = []
        now = time.time()
        for raw in self.redis.zrangebyscore(LEASES, "-inf", now):
            sub_id = text(raw)
            outcome = self.recover(sub_id, "its worker stopped renewing the lease (killed or lost)")
            if outcome:
                done.append((sub_id, outcome))
        done.extend(self._reap_limbo(now))
        return done

    def _reap_limbo(self, now: float) -> list[tuple[str, str]]:
        from rq.intermediate_queue import IntermediateQueue
        from rq.queue import Queue

        limbo_key = IntermediateQueue.get_intermediate_queue_key(
            Queue.redis_queue_namespace_prefix + QUEUE
        )
        done = []
        for raw in self.redis.lrange(limbo_key, 0, -1):
            job_id = text(raw)
            sub_id, _, attempt = job_id.rpartition("_")
            status, current = self.redis.hmget(sub_key(sub_id), "status", "attempt")
            if status != b"queued" or current != attempt.encode():
                continue  # claimed (running) or stale: RQ's own cleanup handles the list
            seen_key = f"{PREFIX}limbo:{job_id}"
            self.redis.set(seen_key, repr(now), nx=True, ex=int(self.timing.limbo * 10) + 60)
            first = float(self.redis.get(seen_key) or now)
            if now - first >= self.timing.limbo:
                self.redis.lrem(limbo_key, 1, job_id)
                outcome = self.recover(
                    sub_id,
                    "its worker died between taking it off the queue and starting it",
                    force=True,
                )
                if outcome:
                    done.append((sub_id, outcome))
        return done

    # --- images ---------------------------------------------------------------

    def count_image_pull(self, ok: bool, seconds: float) -> None:
        """A pull a worker made of an image it lacked: counted by result, timed."""
        bucket = next((repr(b) for b in PULL_BUCKETS if seconds <= b), "+Inf")
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(METRICS, f"image_pulls:{'ok' if ok else 'failed'}", 1)
            pipe.hincrby(METRICS, f"image_pull_bucket:{bucket}", 1)
            pipe.hincrbyfloat(METRICS, "image_pull_sum", seconds)
            pipe.hincrby(METRICS, "image_pull_count", 1)
            pipe.execute()

    # --- workers ----------------------------------------------------------------

    def worker_alive(self, name: str, info: dict[str, Any], ttl: float) -> None:
        self.redis.set(worker_key(name), json.dumps(info), ex=max(int(ttl), 1))

    def worker_gone(self, name: str) -> None:
        self.redis.delete(worker_key(name))

    def workers(self) -> list[dict[str, Any]]:
        keys = list(self.redis.scan_iter(match=worker_key("*"), count=1000))
        values = self.redis.mget(keys) if keys else []
        return [json.loads(v) for v in values if v]


def connect(url: str) -> redis.Redis:
    """A client for REDIS_URL (redis://, rediss://, unix:///path/to.sock)."""
    return redis.Redis.from_url(url, health_check_interval=30)


def text(raw: Any) -> str:
    """A Redis reply (bytes: this client does not decode) as text."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def decode_fields(fields: Sequence[str], values: Sequence[Any]) -> dict[str, Any] | None:
    """An HMGET of `fields` as `decode_record` gives a record (None: there is none)."""
    raw = {
        name.encode(): value
        for name, value in zip(fields, values, strict=True)
        if value is not None
    }
    return decode_record(raw) if raw else None


def lacks_language(record: dict[str, Any] | None, fields: Sequence[str]) -> bool:
    """Whether a record read by `fields` was stored before records held their
    `language` alone (it is then in the request only)."""
    return record is not None and "language" in fields and "language" not in record


def decode_record(raw: dict[Any, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for key in ("attempt", "max_attempts", "job_timeout"):
        if key in record:
            record[key] = int(record[key])
    for key in ("created_at", "started_at", "finished_at"):
        if record.get(key):
            record[key] = float(record[key])
    record["request"] = json.loads(record["request"]) if record.get("request") else {}
    record["result"] = json.loads(record["result"]) if record.get("result") else None
    return record


def worker_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"
