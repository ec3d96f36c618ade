"""Benchmark (not a test): a run that comes after the machine was idle for a moment.

    /opt/cellblock/venv/bin/python bench/idle.py [--runs 30] [--pause 0.1] [--json]
    /opt/cellblock/venv/bin/python bench/idle.py --both      # as root: favordynmods off, then on
    /opt/cellblock/venv/bin/python bench/idle.py --no-service   # the cell and bwrap only

A quiet service or a `cellblock run` typed at a shell starts its run after a
pause, not right after another run. Each run here (`sandbox.run(["/bin/true"])`
from this long-lived process, warm cells, and bubblewrap beside it) follows a
pause of `--pause` seconds. Printed per method: the median and p95 of the whole
call, and for the cell the wall time it reported. On cgroup v1 (and v2 where
CLONE_INTO_CGROUP is refused), moving the program into its cgroup waits for an
RCU grace period after a pause unless a cgroup root is mounted `favordynmods`
(sandbox/cgroups/dynmods.py); `--both` measures the cell with the flag off and
on (a remount of the cgroup2 hierarchy, put back as it was at the end).

Then the same for the service (unless `--no-service`): `cellblock serve --cells 2`
(its own Redis, as bench/doors.py starts it), one `print(1)` POSTed with
`?wait=true` after each pause, and where its time went, from the record's own
timestamps (the service's clock is this machine's): the API until the
submission is stored, the queue until a worker claims it, the worker's judging
outside the cell, the cell's wall time, and the reply from the result's
storing to the client having it.

Every run must succeed; timings are reported, never judged (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the working tree's sandbox, not an installed copy

from bench.doors import Service  # noqa: E402
from sandbox import libc  # noqa: E402
from sandbox import run as sandbox_run  # noqa: E402
from sandbox.cgroups import dynmods  # noqa: E402

BWRAP = ("bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "/bin/true")


def after_pauses(action: Callable[[], float | None], runs: int, pause: float) -> dict:
    """`runs` calls of `action`, each after `pause` seconds of sleep: the
    call's milliseconds, and the wall time it reported (ms), if any."""
    calls, reported = [], []
    action()  # the first run of a process pays for more than a pause
    for _ in range(runs):
        time.sleep(pause)
        start = time.perf_counter()
        wall = action()
        calls.append(1000 * (time.perf_counter() - start))
        if wall is not None:
            reported.append(1000 * wall)
    return {
        "call_ms": _summary(calls),
        "reported_wall_ms": _summary(reported) if reported else None,
    }


def _summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
    }


def cell_once() -> float:
    result = sandbox_run(["/bin/true"])
    if result.status.name != "OK":
        raise SystemExit(f"idle.py: error: a run failed: {result.status.name} {result.message}")
    return result.wall_time


def bwrap_once() -> None:
    subprocess.run(BWRAP, check=True)


# A submission's way through the service, stage by stage (see the docstring).
STAGES = ("to stored", "queued", "judging outside the cell", "in the cell", "reply")


def service_after_pauses(runs: int, pause: float) -> dict:
    """`runs` submissions of `print(1)` with `?wait=true` to a 2-worker
    service, each after `pause` seconds: the call's milliseconds, and each
    stage's (STAGES)."""
    import http.client
    from urllib.parse import urlsplit

    service = Service(2)
    try:
        address = urlsplit(service.url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        body = json.dumps({"language": "python3", "source": "print(1)"}).encode()
        calls: list[float] = []
        stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for index in range(runs + 1):  # the first one pays for more than a pause
            time.sleep(pause)
            sent = time.time()
            start = time.perf_counter()
            connection.request(
                "POST", "/v1/submissions?wait=true", body, {"Content-Type": "application/json"}
            )
            reply = connection.getresponse()
            record = json.loads(reply.read())
            elapsed = time.perf_counter() - start
            answered = time.time()
            if reply.status != 200 or record["result"]["verdict"] != "AC":
                raise SystemExit(f"idle.py: error: a submission failed: {reply.status} {record}")
            if index == 0:
                continue
            cell = record["result"]["wall_time"]
            judging = record["finished_at"] - record["started_at"]
            for stage, seconds in zip(
                STAGES,
                (
                    record["created_at"] - sent,
                    record["started_at"] - record["created_at"],
                    judging - cell,
                    cell,
                    answered - record["finished_at"],
                ),
                strict=True,
            ):
                stages[stage].append(1000 * seconds)
            calls.append(1000 * elapsed)
        connection.close()
    finally:
        service.stop()
    return {"call_ms": _summary(calls), "stages_ms": {k: _summary(v) for k, v in stages.items()}}


def _remount(mountpoint: str, options: list[str]) -> None:
    libc.mount(None, mountpoint, None, libc.MS_REMOUNT, ",".join(options))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--pause", type=float, default=0.1, help="seconds idle before each run")
    parser.add_argument("--both", action="store_true", help="favordynmods off, then on (root)")
    parser.add_argument(
        "--no-service", action="store_true", help="skip the service (cellblock serve)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    mount = dynmods.cgroup2_mount()
    if args.both and (os.geteuid() != 0 or mount is None):
        parser.error("--both needs root and a cgroup2 hierarchy")
    original = [o for o in mount.super_options if o not in ("rw", "ro")] if mount else []
    settings = [False, True] if args.both else [dynmods.favored()]
    try:
        for favored in settings:
            if args.both and mount is not None:
                base = [o for o in original if o != dynmods.FLAG]
                _remount(mount.mountpoint, base + ([dynmods.FLAG] if favored else []))
            name = f"sandbox.run ({dynmods.FLAG} {'on' if favored else 'off'})"
            results[name] = after_pauses(cell_once, args.runs, args.pause)
    finally:
        if args.both and mount is not None:
            _remount(mount.mountpoint, original)
    if shutil.which("bwrap"):
        results["bwrap"] = after_pauses(bwrap_once, args.runs, args.pause)
    service = None if args.no_service else service_after_pauses(args.runs, args.pause)
    if args.json:
        print(json.dumps({**results, "service": service}, indent=1))
        return 0
    print(f"/bin/true after {args.pause * 1000:.0f} ms idle, {args.runs} runs; milliseconds")
    print(f"  {'method':<30} {'call p50':>9} {'call p95':>9} {'wall p50':>9} {'wall p95':>9}")
    for name, figures in results.items():
        wall = figures["reported_wall_ms"] or {"median": float("nan"), "p95": float("nan")}
        call = figures["call_ms"]
        print(
            f"  {name:<30} {call['median']:>9.2f} {call['p95']:>9.2f} "
            f"{wall['median']:>9.2f} {wall['p95']:>9.2f}"
        )
    if service is not None:
        call = service["call_ms"]
        print(
            f"\nprint(1) POSTed with ?wait=true to cellblock serve --cells 2 after "
            f"{args.pause * 1000:.0f} ms idle, {args.runs} submissions; milliseconds"
        )
        print(f"  {'stage':<30} {'p50':>9} {'p95':>9}")
        print(f"  {'the whole call':<30} {call['median']:>9.2f} {call['p95']:>9.2f}")
        for stage, figures in service["stages_ms"].items():
            print(f"  {stage:<30} {figures['median']:>9.2f} {figures['p95']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
