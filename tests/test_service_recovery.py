"""No submission is lost: a worker SIGKILLed mid-job, a worker dying between dequeue and
start, a Redis restart. Real redis-server, real unprivileged workers, real cells."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time

import pytest
from conftest import busy_processes
from rq.intermediate_queue import IntermediateQueue
from rq.queue import Queue
from service_support import Workers, scratch_redis, wait_for

from worker.store import QUEUE, Store, Timing, events_log

TIMING = Timing(lease=4, renew=1, reap=1, limbo=4)
SLOW = {
    "language": "python3",
    "limits": {"time": 2, "wall_time": 6},
    "source": "import time\ntime.sleep(1.0)\nprint(sum(map(int, input().split())))",
    "tests": [
        {"name": str(i), "input": f"{i} 1\n", "output": f"{i + 1}\n", "score": 1} for i in range(4)
    ],
}


@pytest.fixture
def redis_dir():
    with scratch_redis("cb-rec-") as server:
        yield server


def finished(store: Store, sub_id: str):
    record = store.get(sub_id)
    return record if record and record["status"] in ("done", "failed") else None


def kill_its_worker(store: Store, sub_id: str) -> int:
    record = wait_for(
        lambda: (r := store.get(sub_id)) and r["status"] == "running" and r,
        60,
        "the submission to start",
    )
    time.sleep(1.5)  # mid-job: a test or two done, cells running
    pid = int(record["worker"].rsplit(".", 1)[1])
    os.kill(pid, signal.SIGKILL)
    return pid


def test_worker_killed_mid_job_is_run_again_elsewhere(redis_dir, test_user):
    store = Store.from_url(redis_dir.url, TIMING)
    workers = Workers(redis_dir.url, cells=2, user=test_user.pw_name)
    try:
        wait_for(lambda: len(store.workers()) == 2, 60, "two live workers")
        sub_id = store.create(SLOW, job_timeout=120)
        killed_at = time.monotonic()
        pid = kill_its_worker(store, sub_id)
        record = wait_for(lambda: finished(store, sub_id), 110, "the recovered submission")
        recovered_in = time.monotonic() - killed_at
        assert record["status"] == "done", record
        assert record["attempt"] == 2
        assert record["result"]["verdict"] == "AC" and record["result"]["score"] == 4.0
        assert int(record["worker"].rsplit(".", 1)[1]) != pid
        assert "lease" in record["last_error"]
        assert recovered_in < 120
        events = [json.loads(e) for e in store.redis.lrange(events_log(sub_id), 0, -1)]
        assert any(e["type"] == "recovered" and e["outcome"] == "requeue:2" for e in events)
        assert int(store.redis.hget("cb:metrics", "recovered")) == 1
        # The killed worker's horse (and so its cells) died with it.
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == pid]
    finally:
        workers.stop()


def test_bounded_retries_then_failed_with_a_reason(redis_dir, test_user):
    store = Store.from_url(redis_dir.url, Timing(lease=4, renew=1, reap=1, limbo=4, max_attempts=1))
    workers = Workers(redis_dir.url, cells=1, user=test_user.pw_name)
    try:
        wait_for(lambda: len(store.workers()) == 1, 60, "a live worker")
        sub_id = store.create(SLOW, job_timeout=120)
        kill_its_worker(store, sub_id)
        record = wait_for(lambda: finished(store, sub_id), 110, "the failure")
        assert record["status"] == "failed"
        assert "lease" in record["error"] and "giving up" in record["error"]
        assert record["result"] is None
    finally:
        workers.stop()


def test_a_job_taken_but_never_started_is_not_lost(redis_dir, test_user):
    store = Store.from_url(redis_dir.url, TIMING)
    sub_id = store.create({"language": "python3", "source": "print(1)"})
    # What a worker does right before dying: move the job to RQ's intermediate list.
    queue_key = Queue.redis_queue_namespace_prefix + QUEUE
    moved = store.redis.lmove(queue_key, IntermediateQueue.get_intermediate_queue_key(queue_key))
    assert moved.decode() == f"{sub_id}_1"
    workers = Workers(redis_dir.url, cells=1, user=test_user.pw_name)
    try:
        record = wait_for(lambda: finished(store, sub_id), 60, "the stranded submission")
        assert record["status"] == "done" and record["attempt"] == 2
        assert record["result"]["verdict"] == "AC"
    finally:
        workers.stop()


def test_redis_restart_loses_nothing_queued(redis_dir, test_user):
    store = Store.from_url(redis_dir.url, TIMING)
    ids = [store.create({"language": "python3", "source": f"print({i})"}) for i in range(3)]
    redis_dir.stop()  # append-only file on: the queue is on disk
    redis_dir.start()
    store = Store.from_url(redis_dir.url, TIMING)
    workers = Workers(redis_dir.url, cells=1, user=test_user.pw_name)
    try:
        records = [wait_for(lambda i=i: finished(store, i), 60, "a queued submission") for i in ids]
        assert [r["result"]["tests"][0]["stdout"] for r in records] == ["0\n", "1\n", "2\n"]
    finally:
        workers.stop()


def _nofile(user: str, pid: int, soft: int, hard: int) -> None:
    from conftest import as_user

    command = ["prlimit", f"--pid={pid}", f"--nofile={soft}:{hard}"]
    subprocess.run(as_user(user, command), check=True)


def _nofile_of(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_redis_stopped_for_a_moment_mid_job_loses_nothing(redis_dir, test_user):
    store = Store.from_url(redis_dir.url, TIMING)
    workers = Workers(redis_dir.url, cells=1, user=test_user.pw_name)
    try:
        wait_for(lambda: len(store.workers()) == 1, 60, "a live worker")
        sub_id = store.create(SLOW, job_timeout=120)
        wait_for(lambda: (r := store.get(sub_id)) and r["status"] == "running", 60, "its start")
        time.sleep(0.5)
        redis_dir.stop()  # mid-job: the worker's events, lease and finish meet a closed door
        time.sleep(2.0)
        redis_dir.start()
        store = Store.from_url(redis_dir.url, TIMING)
        record = wait_for(lambda: finished(store, sub_id), 90, "the submission")
        assert record["status"] == "done", record
        assert record["result"]["verdict"] == "AC" and record["result"]["score"] == 4.0
        events = [json.loads(e) for e in store.redis.lrange(events_log(sub_id), 0, -1)]
        assert [e["index"] for e in events if e["type"] == "test"] == [0, 1, 2, 3]
        assert events[-1] == {**events[-1], "type": "end", "status": "done"}
    finally:
        workers.stop()


def test_a_cell_that_cannot_be_made_is_retried_then_failed_never_a_verdict(redis_dir, test_user):
    # A worker out of file descriptors cannot make a cell (its pipes, sockets,
    # cgroup fds): each attempt is an infrastructure failure, retried, then the
    # submission is `failed` with the reason, never given a program's verdict.
    store = Store.from_url(redis_dir.url, Timing(lease=4, renew=1, reap=1, limbo=4, max_attempts=2))
    workers = Workers(redis_dir.url, cells=1, user=test_user.pw_name)
    try:
        wait_for(lambda: len(store.workers()) == 1, 60, "a live worker")
        pid = store.workers()[0]["pid"]
        before = _nofile_of(pid)
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        # As the worker's own user (root lacks CAP_SYS_RESOURCE on some hosts).
        nofile = functools.partial(_nofile, test_user.pw_name, pid)
        nofile(in_use + 2, before[1])
        sub_id = store.create({"language": "python3", "source": "print(1)"})
        record = wait_for(lambda: finished(store, sub_id), 60, "the failure")
        assert record["status"] == "failed", record
        assert record["result"] is None  # no verdict of the program's
        assert "giving up" in record["error"] and "attempt 2 of 2" in record["error"]
        assert record["attempt"] == 2
        events = [json.loads(e) for e in store.redis.lrange(events_log(sub_id), 0, -1)]
        assert [e["outcome"] for e in events if e["type"] == "recovered"] == ["requeue:2", "failed"]
        # Control: the same worker judges once it has its file descriptors back.
        nofile(*before)
        sub_id = store.create({"language": "python3", "source": "print(1)"})
        record = wait_for(lambda: finished(store, sub_id), 60, "the control")
        assert record["status"] == "done" and record["result"]["verdict"] == "AC", record
        assert store.workers()[0]["pid"] == pid  # the same worker, alive throughout
    finally:
        workers.stop()


def test_an_overloaded_machine_s_wall_clock_kill_is_retried_then_failed_never_a_verdict(
    redis_dir, test_user
):
    # Busy processes outside the cells, on the one CPU the worker and its cells
    # may use: a program that would run to its wall-clock limit waits for them
    # most of that time. Each attempt is the machine's (the cell's IE), retried,
    # then the submission is `failed` with the reason, never given TLE.
    cpu = min(os.sched_getaffinity(0))
    store = Store.from_url(redis_dir.url, Timing(lease=4, renew=1, reap=1, limbo=4, max_attempts=2))
    workers = Workers(
        redis_dir.url, cells=1, user=test_user.pw_name, prefix=["taskset", "-c", str(cpu)]
    )
    busy = {
        "language": "python3",
        "source": "while True:\n    pass\n",
        "limits": {"time": 10, "wall_time": 1},
    }
    try:
        wait_for(lambda: len(store.workers()) == 1, 60, "a live worker")
        # Control: on a quiet CPU the wall-clock kill is the program's verdict.
        sub_id = store.create(busy)
        record = wait_for(lambda: finished(store, sub_id), 60, "the control")
        assert record["status"] == "done" and record["result"]["verdict"] == "TLE", record
        with busy_processes(cpu):
            sub_id = store.create(busy)
            record = wait_for(lambda: finished(store, sub_id), 120, "the failure")
        assert record["status"] == "failed" and record["result"] is None, record
        assert "overloaded" in record["error"] and "attempt 2 of 2" in record["error"], record
    finally:
        workers.stop()


NAPPING = {
    "language": "python3",
    "limits": {"time": 2, "wall_time": 10},
    "source": "import time\ntime.sleep(3)\nprint(sum(map(int, input().split())))",
    "tests": [{"name": "1", "input": "1 1\n", "output": "2\n", "score": 1}],
}


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (parent := _ppid(int(entry))) is not None:
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _its_program(worker: int) -> int:
    """The pid of the judged python3 program under `worker` (waits for it)."""

    def find() -> int | None:
        for pid in _descendants(worker):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"python3", b"main.py"]:
                        return pid
            except OSError:
                pass
        return None

    return wait_for(find, 60, "the judged program")


def _running_on(store: Store, sub_id: str) -> int:
    record = wait_for(
        lambda: (r := store.get(sub_id)) and r["status"] == "running" and r, 60, "the start"
    )
    return int(record["worker"].rsplit(".", 1)[1])


def test_a_program_killed_by_its_worker_s_stop_is_judged_again_not_given_a_verdict(
    redis_dir, test_user
):
    # Slurm's scancel (and a job's time limit, preemption) signals every
    # process of the job: the worker and the program it is judging at once.
    store = Store.from_url(redis_dir.url, TIMING)
    workers = Workers(redis_dir.url, cells=2, user=test_user.pw_name)
    try:
        wait_for(lambda: len(store.workers()) == 2, 60, "two live workers")
        # The control: the program alone killed, its worker not stopping: its verdict.
        alone = store.create(NAPPING, job_timeout=60)
        program = _its_program(_running_on(store, alone))
        os.kill(program, signal.SIGTERM)
        record = wait_for(lambda: finished(store, alone), 60, "the control's verdict")
        assert record["result"]["verdict"] == "RE" and record["attempt"] == 1, record
        assert record["result"]["tests"][0]["signal"] == signal.SIGTERM
        # Both at once, as a job-wide SIGTERM does: judged again by the other worker.
        sub_id = store.create(NAPPING, job_timeout=60)
        worker = _running_on(store, sub_id)
        program = _its_program(worker)
        os.kill(worker, signal.SIGTERM)
        os.kill(program, signal.SIGTERM)
        record = wait_for(lambda: finished(store, sub_id), 110, "the judged-again submission")
        assert record["status"] == "done" and record["attempt"] == 2, record
        assert record["result"]["verdict"] == "AC", record["result"]
        assert "worker's own stop" in record["last_error"]
        assert int(record["worker"].rsplit(".", 1)[1]) != worker
    finally:
        workers.stop()
