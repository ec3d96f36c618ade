"""The service under load: N submissions through the HTTP API with 1 and 2 workers.

    python bench/service.py [--n 20] [--cells 1 2] [--rounds 3] [--json]

For each worker count it starts `cellblock serve` (the embedded default: its
own Redis on a unix socket, N workers) and runs `--rounds` rounds, each the
same work done bare and then through the service: N submissions POSTed at
once (half a C A+B, half a Python A+B, 10 tests each), every verdict waited
for. The ratio is taken within each round and the median reported (this VM's
speed moves by a fifth from one minute to the next; a bare baseline measured
apart from the service's figure moved the ratio by 0.2). Reported:

- submissions/s: N / (last finished - first POSTed);
- p50 / p95 latency from POST to done (the server's created_at -> finished_at);
- share of time outside cells: of a worker's time on a submission (judge_seconds),
  what is not inside a cell's wall time (cell_seconds: compile + tests); and of
  the end-to-end latency, what is not in cells (queueing included);
- x bare: the same submissions judged bare in the same round, with as many
  threads as workers, each compiling (the C language's own gcc command) and
  running the 10 tests as plain processes and comparing the output:
  submissions/s through the service over submissions/s bare (the median over
  rounds; every round's ratio is printed beside it). The other columns are the
  last round's;
- fastapi+rq x bare: a reference, the same submissions through
  bench/plain_service.py, the service's libraries with no cell (FastAPI, RQ
  SimpleWorkers as many as the workers judging each submission bare as above,
  a Redis configured as `serve`'s), POSTed at once and each answered when
  judged, after the service's batch in each round: what any service built on
  those libraries pays before its sandbox;
- bubblewrap x bare: a reference, the bare work with each process (the
  compiler's and each test's) run under bubblewrap with bench/cells.py's
  isolation, last in each round: a judge that starts a C sandbox process per
  run, with no overlay, filter, cgroups or watchdog.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the real-service helpers the tests use

from service_support import free_port  # noqa: E402

from bench.cells import BWRAP  # noqa: E402
from bench.conditions import cgroup_moves_line  # noqa: E402
from bench.plain_service import PlainService, answers, judge  # noqa: E402
from bench.tree import CELLBLOCK  # noqa: E402
from sandbox.cgroups.dynmods import moves_wait  # noqa: E402

C_SOURCE = (
    '#include <stdio.h>\nint main(void){long a,b;scanf("%ld %ld",&a,&b);'
    'printf("%ld\\n",a+b);return 0;}\n'
)
PY_SOURCE = "a, b = map(int, input().split())\nprint(a + b)\n"
TESTS = [{"name": str(i), "input": f"{i} {i * 7}\n", "output": f"{i * 8}\n"} for i in range(10)]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Service:
    """`cellblock serve --cells N` in a temporary run directory, its own Redis."""

    def __init__(self, cells: int) -> None:
        self.cells = cells
        self.run_dir = Path(tempfile.mkdtemp(prefix="cb-bench-", dir="/tmp"))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("REDIS_URL", None)
        self.process = subprocess.Popen(
            [
                *CELLBLOCK,
                "serve",
                "--port",
                str(port),
                "--cells",
                str(cells),
                "--run-dir",
                str(self.run_dir / "state"),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
            if not answers(f"http://127.0.0.1:{port}/v1/health", 60):
                raise RuntimeError("the service did not become healthy")
            self.store = redis.Redis(unix_socket_path=str(self.run_dir / "state" / "redis.sock"))
            for body in _bodies(2):  # warm-up, not measured
                self.client.post("/v1/submissions?wait=true", json=body)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        subprocess.run(["rm", "-rf", str(self.run_dir)], check=False)

    def batch(self, count: int) -> dict:
        """`count` submissions POSTed at once, every verdict waited for: the figures."""
        started = time.time()
        ids = [
            self.client.post("/v1/submissions", json=body).json()["id"] for body in _bodies(count)
        ]
        # Only the submissions not yet seen done, in one round trip: the
        # benchmark's own polling shares the 2 cores (and Redis) with the service.
        pending = list(ids)
        while pending:
            time.sleep(0.05)
            pipe = self.store.pipeline(transaction=False)
            for i in pending:
                pipe.hget(f"cb:sub:{i}", "status")
            statuses = pipe.execute()
            pending = [
                i for i, s in zip(pending, statuses, strict=True) if s not in (b"done", b"failed")
            ]
        records = [
            {k.decode(): v.decode() for k, v in self.store.hgetall(f"cb:sub:{i}").items()}
            for i in ids
        ]
        verdicts = {json.loads(r["result"])["verdict"] for r in records if r.get("result")}
        latency = [float(r["finished_at"]) - float(r["created_at"]) for r in records]
        judge = [float(r["judge_seconds"]) for r in records]
        in_cells = [float(r["cell_seconds"]) for r in records]
        finished = max(float(r["finished_at"]) for r in records)
        return {
            "cells": self.cells,
            "submissions": count,
            "verdicts": sorted(verdicts),
            "per_second": round(count / (finished - started), 2),
            "p50_latency_s": round(statistics.median(latency), 3),
            "p95_latency_s": round(percentile(latency, 0.95), 3),
            "worker_time_outside_cells": round(1 - sum(in_cells) / sum(judge), 3),
            "latency_outside_cells": round(1 - sum(in_cells) / sum(latency), 3),
            "mean_judge_s": round(statistics.mean(judge), 3),
            "mean_in_cells_s": round(statistics.mean(in_cells), 3),
        }


def _bodies(count: int) -> list[dict]:
    return [
        {
            "language": "c" if i % 2 == 0 else "python3",
            "source": C_SOURCE if i % 2 == 0 else PY_SOURCE,
            "tests": TESTS,
        }
        for i in range(count)
    ]


def run(cells: int, count: int, rounds: int) -> dict:
    """`rounds` rounds of the work bare, then through a service of `cells`
    workers: the last round's figures, every round's ratio and their median."""
    service = Service(cells)
    reference = PlainService(cells)
    try:
        ratios, plain_ratios, bwrap_ratios, bare_rates, verdicts = [], [], [], [], set()
        plain(reference, 2)  # warm-up, not measured
        for _ in range(rounds):
            bare_rates.append(bare(cells, count))
            row = service.batch(count)
            ratios.append(round(row["per_second"] / bare_rates[-1], 3))
            plain_ratios.append(round(plain(reference, count) / bare_rates[-1], 3))
            bwrap_ratios.append(round(bare(cells, count, bwrapped) / bare_rates[-1], 3))
            verdicts.update(row["verdicts"])
    finally:
        service.stop()
        reference.stop()
    row["verdicts"] = sorted(verdicts)  # every round's
    row["bare_per_second"] = round(bare_rates[-1], 2)
    row["round_ratios"] = ratios
    row["ratio_to_bare"] = round(statistics.median(ratios), 3)
    row["fastapi_rq_ratio_to_bare"] = round(statistics.median(plain_ratios), 3)
    row["bubblewrap_ratio_to_bare"] = round(statistics.median(bwrap_ratios), 3)
    return row


def bwrapped(argv: list[str], work: str) -> list[str]:
    """`argv` under bubblewrap with bench/cells.py's isolation, `work` bound
    writable as its working directory."""
    return [*BWRAP, "--bind", work, work, "--chdir", work, *argv]


def bare(
    cells: int, count: int, wrap: Callable[[list[str], str], list[str]] | None = None
) -> float:
    """Submissions/s of the same work done bare by `cells` threads (each
    process under `wrap`: see plain_service.judge)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(body: dict) -> None:
        if not judge(body["language"], body["source"], body["tests"], wrap):
            raise RuntimeError(f"a {body['language']} run gave a wrong answer")

    started = time.monotonic()
    with ThreadPoolExecutor(cells) as pool:
        list(pool.map(one, _bodies(count)))
    return count / (time.monotonic() - started)


def plain(service: PlainService, count: int) -> float:
    """Submissions/s of the same work through bench/plain_service.py (FastAPI
    and RQ with no cell), `count` clients at once, as the batch is POSTed."""
    from concurrent.futures import ThreadPoolExecutor

    client = httpx.Client(
        base_url=service.url, timeout=120, limits=httpx.Limits(max_connections=count)
    )

    def one(body: dict) -> None:
        answer = client.post("/judge", json=body).json()
        if answer != {"accepted": True}:
            raise RuntimeError(f"fastapi+rq judged {body['language']}: {answer}")

    with client, ThreadPoolExecutor(count) as pool:
        started = time.monotonic()
        list(pool.map(one, _bodies(count)))
        return count / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="submissions per run (default 20)")
    parser.add_argument("--cells", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="bare, then served (default 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run(cells, args.n, args.rounds) for cells in args.cells]
    wait = moves_wait()
    for row in rows:
        row["cgroup_moves_wait"] = wait
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        "| workers | submissions/s | bare | x bare (median) | each round | fastapi+rq x bare "
        "| bubblewrap x bare | p50 latency | p95 latency | worker time outside cells "
        "| latency outside cells |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        each = ", ".join(f"{r:.2f}" for r in row["round_ratios"])
        print(
            f"| {row['cells']} | {row['per_second']} | {row['bare_per_second']} "
            f"| {row['ratio_to_bare']:.2f} | {each} | {row['fastapi_rq_ratio_to_bare']:.2f} "
            f"| {row['bubblewrap_ratio_to_bare']:.2f} "
            f"| {row['p50_latency_s']} s "
            f"| {row['p95_latency_s']} s | {row['worker_time_outside_cells']:.0%} "
            f"| {row['latency_outside_cells']:.0%} |"
        )
    print(
        f"(N = {args.n}, {args.rounds} round(s): half C, half Python A+B, 10 tests each; verdicts: "
        f"{', '.join(sorted(set().union(*[r['verdicts'] for r in rows])))}; "
        f"mean per submission: {rows[0]['mean_judge_s']} s of worker time, "
        f"{rows[0]['mean_in_cells_s']} s in cells)"
    )
    print(cgroup_moves_line(wait))
    return 0


if __name__ == "__main__":
    sys.exit(main())
