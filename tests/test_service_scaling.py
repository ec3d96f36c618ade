"""Scaling out: workers as separate "machines" (each in its own network namespace, reaching
Redis only over a veth pair and TCP, as a worker host reaches the Redis host), and more of
them judge more submissions per second.

Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking): they exist only
on the veth pairs this test creates, inside namespaces it creates and removes.
"""

from __future__ import annotations

import time

import pytest
from service_support import Host, RedisServer, Workers, free_port, remove, scratch, wait_for

from worker.store import Store, Timing

SUBMISSIONS = 12
# Each submission waits 0.4 s in its cell: the figure measures how the queue spreads work
# over worker hosts, not how many CPU-bound cells two shared cores fit (bench/service.py
# measures that), so it holds on a loaded machine too.
BODY = {
    "language": "python3",
    "limits": {"wall_time": 5},
    "source": "import time\ntime.sleep(0.4)\na, b = map(int, input().split())\nprint(a + b)\n",
    "tests": [{"name": "1", "input": "2 3\n", "output": "5\n"}],
}


@pytest.fixture(scope="module")
def cluster():
    hosts = [Host(1), Host(2)]
    directory = scratch("cb-scale-")
    server = None
    try:
        for host in hosts:
            host.create()
        port = free_port()
        server = RedisServer(
            directory, bind=tuple(h.redis_address for h in hosts), port=port
        ).start()
        yield server, hosts, port
    finally:
        if server:
            server.stop()
        for host in hosts:
            host.remove()
        remove(directory)


def throughput(store: Store, count: int) -> float:
    started = time.monotonic()
    ids = [store.create(BODY) for _ in range(count)]

    def all_done() -> bool:
        return all((r or {}).get("status") == "done" for r in store.get_many(ids))

    wait_for(all_done, 300, f"{count} submissions", interval=0.05)
    elapsed = time.monotonic() - started
    records = store.get_many(ids)
    assert {r["result"]["verdict"] for r in records} == {"AC"}
    return count / elapsed, {r["worker"] for r in records}


def test_throughput_grows_with_workers_on_separate_hosts(cluster, test_user):
    server, hosts, port = cluster
    store = Store.from_url(server.url, Timing())
    rates = {}
    for count in (1, 2):
        workers = [
            Workers(
                f"redis://{host.redis_address}:{port}/0",
                cells=1,
                user=test_user.pw_name,
                prefix=host.prefix(),
            )
            for host in hosts[:count]
        ]
        try:
            wait_for(lambda n=count: len(store.workers()) == n, 60, f"{count} live workers")
            throughput(store, 2)  # warm-up
            rates[count], used = throughput(store, SUBMISSIONS)
            assert len(used) == count  # every worker host took its share
        finally:
            for worker in workers:
                worker.stop()
            wait_for(lambda: not store.workers(), 30, "the workers to deregister")
    print(
        f"\nsubmissions/s: 1 worker host {rates[1]:.2f}, 2 worker hosts {rates[2]:.2f} "
        f"({rates[2] / rates[1]:.2f}x)"
    )
    assert rates[2] > 1.5 * rates[1], rates
