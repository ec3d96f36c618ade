"""Many machines: N worker hosts against one Redis, over veth and TCP.

    /opt/cellblock/venv/bin/python bench/machines.py [--hosts 1 2 4] [--n 40] [--json]

Root only (it makes network namespaces). Each worker "host" is a network
namespace joined to the root namespace by a veth pair, so its `cellblock
worker` (one cell) reaches Redis only over TCP, as a worker machine reaches
the Redis machine. Redis (Debian's redis-server, append-only file with
`appendfsync everysec`, as `cellblock serve` and the deployments configure it)
and the API (`cellblock serve` with REDIS_URL: the API alone) run in the root
namespace. For each load and each N, the N workers start, take a warm-up, then
`--n` submissions are POSTed by 16 clients with `?wait=true` (verl's way) and
every verdict is checked. Printed per load and N:

- submissions/s, and the ratio to N = 1;
- Redis commands per submission (INFO commandstats over the measured
  submissions; the workers' heartbeats, lease renewals and reapers included),
  the commonest ones, and bytes to and from Redis per submission;
- CPU per submission: the whole machine's (from /proc/stat), Redis's, the
  API's, and the rest (workers, cells, clients).

The loads: `cpu`, a Python A+B with 10 tests (the cores are the limit: with
2 cores, N = 4 cannot beat N = 2), and `wait`, one test whose program sleeps
0.4 s (little CPU: shows how the queue spreads work over hosts, unbounded
by cores). From them it prints a capacity model: submissions/s per core,
where a single-threaded Redis saturates, and what 100,000 programs an hour
needs. Run it on a quiet machine: nothing else running.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the real-service helpers the tests use

from service_support import (  # noqa: E402
    Host,
    RedisServer,
    Workers,
    descendants,
    free_port,
    remove,
    scratch,
    wait_for,
)

from bench.tree import CELLBLOCK  # noqa: E402
from worker.store import Store, Timing  # noqa: E402

CLIENTS = 16
PROGRAMS_AN_HOUR = 100_000
A_PLUS_B = "a, b = map(int, input().split())\nprint(a + b)\n"
LOADS: dict[str, dict[str, Any]] = {
    "cpu": {
        "language": "python3",
        "source": A_PLUS_B,
        "tests": [
            {"name": str(i), "input": f"{i} {i * 7}\n", "output": f"{i * 8}\n"} for i in range(10)
        ],
    },
    "wait": {
        "language": "python3",
        "limits": {"wall_time": 5},
        "source": "import time\ntime.sleep(0.4)\n" + A_PLUS_B,
        "tests": [{"name": "1", "input": "2 3\n", "output": "5\n"}],
    },
}
# The service's own timing (heartbeats, lease renewals, reapers), not the tests' fast one:
# their Redis traffic is part of what a submission costs.
PRODUCTION_TIMING = {
    "CELLBLOCK_LEASE": str(Timing.lease),
    "CELLBLOCK_LEASE_RENEW": str(Timing.renew),
    "CELLBLOCK_REAP_INTERVAL": str(Timing.reap),
    "CELLBLOCK_LIMBO": str(Timing.limbo),
    "CELLBLOCK_SELFCHECK_INTERVAL": "600",
}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Measure:
    load: str
    hosts: int
    submissions: int
    per_second: float
    redis_commands: float  # per submission
    commands: dict[str, float]  # per submission, commonest first
    redis_bytes_in: float
    redis_bytes_out: float
    cpu_ms: float  # the whole machine's, per submission
    redis_cpu_ms: float
    api_cpu_ms: float


def machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS


def process_seconds(pid: int) -> float:
    """CPU of a process and its live descendants (user + system)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


class Redis:
    """The Redis machine's view: what it did, from INFO."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()

    def reset(self) -> None:
        self.client.config_resetstat()

    def cpu_seconds(self) -> float:
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def commands(self) -> dict[str, int]:
        ours = {"info", "config|resetstat", "config"}
        stats = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name.removeprefix("cmdstat_") not in ours
        }

    def bytes(self) -> tuple[int, int]:
        stats = self.client.info("stats")
        return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])


class Api:
    """`cellblock serve` with REDIS_URL set: the API alone, in the root namespace."""

    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        env = {**os.environ, **PRODUCTION_TIMING, "REDIS_URL": redis_url}
        env["PYTHONPATH"] = str(REPO)
        self.process = subprocess.Popen(
            [*CELLBLOCK, "serve", "--port", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(self._up, 30, "the API")
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/v1/health")
            connection.getresponse()  # any answer: 503 "degraded" while no worker is up
            return True
        except OSError:
            return False

    def submit(self, bodies: list[dict]) -> list[dict]:
        """POST every body with ?wait=true from CLIENTS kept-open connections."""

        def client(share: list[dict]) -> list[dict]:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            records = []
            for body in share:
                connection.request(
                    "POST",
                    "/v1/submissions?wait=true",
                    json.dumps(body),
                    {"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                records.append(json.loads(response.read()))
            connection.close()
            return records

        shares = [bodies[i::CLIENTS] for i in range(CLIENTS)]
        with ThreadPoolExecutor(CLIENTS) as pool:
            return [r for records in pool.map(client, shares) for r in records]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measure(
    load: str, count: int, hosts: list[Host], port: int, redis: Redis, api: Api, store: Store
) -> Measure:
    body = LOADS[load]
    workers = [
        Workers(
            f"redis://{host.redis_address}:{port}/0",
            cells=1,
            prefix=host.prefix(),
            env=PRODUCTION_TIMING,
        )
        for host in hosts
    ]
    try:
        wait_for(lambda: len(store.workers()) == len(hosts), 60, f"{len(hosts)} live workers")
        api.submit([body] * (2 * len(hosts)))  # warm-up: every worker has judged one
        redis.reset()
        redis_cpu, api_cpu = redis.cpu_seconds(), process_seconds(api.process.pid)
        busy = machine_busy_seconds()
        started = time.monotonic()
        records = api.submit([body] * count)
        elapsed = time.monotonic() - started
        busy = machine_busy_seconds() - busy
        redis_cpu = redis.cpu_seconds() - redis_cpu
        api_cpu = process_seconds(api.process.pid) - api_cpu
        commands = redis.commands()
        bytes_in, bytes_out = redis.bytes()
        verdicts = {(r.get("result") or {}).get("verdict") for r in records}
        if verdicts != {"AC"}:
            raise SystemExit(f"{load}, {len(hosts)} hosts: verdicts {verdicts}, not all AC")
        used = {(r or {}).get("worker") for r in store.get_many([r["id"] for r in records])}
    finally:
        for worker in workers:
            worker.stop()
        wait_for(lambda: not store.workers(), 60, "the workers to deregister")
    if len(used) != len(hosts):
        print(f"  (only {len(used)} of {len(hosts)} hosts took work)", file=sys.stderr)
    return Measure(
        load=load,
        hosts=len(hosts),
        submissions=count,
        per_second=count / elapsed,
        redis_commands=sum(commands.values()) / count,
        commands={
            name: calls / count for name, calls in sorted(commands.items(), key=lambda kv: -kv[1])
        },
        redis_bytes_in=bytes_in / count,
        redis_bytes_out=bytes_out / count,
        cpu_ms=1000 * busy / count,
        redis_cpu_ms=1000 * redis_cpu / count,
        api_cpu_ms=1000 * api_cpu / count,
    )


def capacity(measures: list[Measure]) -> list[str]:
    """The model: a core judges 1/cpu submissions a second; Redis is one thread."""
    lines = []
    cores = os.cpu_count() or 1
    rate = PROGRAMS_AN_HOUR / 3600
    for load in LOADS:
        ms = [m for m in measures if m.load == load]
        if not ms:
            continue
        best = max(ms, key=lambda m: m.per_second)
        redis_ms = min(m.redis_cpu_ms for m in ms)
        per_core = 1000 / best.cpu_ms
        lines += [
            f"{load}: best {best.per_second:.1f} submissions/s with {best.hosts} host(s) on "
            f"{cores} cores; {best.cpu_ms:.0f} ms of CPU per submission, so "
            f"{per_core:.1f} submissions/s per core",
            f"  Redis: {best.redis_commands:.0f} commands and "
            f"{(best.redis_bytes_in + best.redis_bytes_out) / 1024:.1f} KiB per submission, "
            f"{redis_ms:.2f} ms of its CPU: one Redis core saturates near "
            f"{1000 / redis_ms:.0f} submissions/s",
            f"  {PROGRAMS_AN_HOUR:,} an hour = {rate:.1f}/s: about {rate / per_core:.1f} cores "
            f"(workers, cells, API and Redis together), "
            f"{100 * rate * redis_ms / 1000:.1f}% of one Redis core",
        ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--n", type=int, default=40, help="submissions per load and N")
    parser.add_argument("--loads", nargs="+", choices=sorted(LOADS), default=list(LOADS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: worker hosts are network namespaces")
    hosts = [Host(i + 1) for i in range(max(args.hosts))]
    directory = scratch("cb-machines-")
    server = api = None
    measures: list[Measure] = []
    try:
        for host in hosts:
            host.create()
        port = free_port()
        server = RedisServer(
            directory,
            bind=("127.0.0.1", *(h.redis_address for h in hosts)),
            port=port,
            appendfsync="everysec",
        ).start()
        redis = Redis(server)
        store = Store.from_url(server.url, Timing())
        api = Api(f"redis://127.0.0.1:{port}/0")
        for load in args.loads:
            for n in args.hosts:
                m = measure(load, args.n, hosts[:n], port, redis, api, store)
                measures.append(m)
                if not args.json:
                    print(report(m, measures), flush=True)
    finally:
        if api:
            api.stop()
        if server:
            server.stop()
        for host in hosts:
            host.remove()
        remove(directory)
    if args.json:
        print(json.dumps([asdict(m) for m in measures], indent=2))
    else:
        print("\n".join(["", "capacity model", *capacity(measures)]))
    return 0


def report(m: Measure, measures: list[Measure]) -> str:
    first = next(x for x in measures if x.load == m.load)
    top = ", ".join(f"{name} {calls:.1f}" for name, calls in list(m.commands.items())[:6])
    return (
        f"{m.load:5} {m.hosts} host(s): {m.per_second:6.2f} submissions/s "
        f"({m.per_second / first.per_second:.2f}x {first.hosts} host)  "
        f"Redis {m.redis_commands:.0f} commands/submission ({top}), "
        f"{m.redis_bytes_in / 1024:.1f} KiB in, {m.redis_bytes_out / 1024:.1f} KiB out; "
        f"CPU ms/submission: machine {m.cpu_ms:.0f}, Redis {m.redis_cpu_ms:.2f}, "
        f"API {m.api_cpu_ms:.1f}"
    )


if __name__ == "__main__":
    sys.exit(main())
