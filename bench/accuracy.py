"""Benchmark (not a test): do the cell's figures tell the truth?

    .venv/bin/python bench/accuracy.py [--repeat 3] [--json]
    runuser -u USER -- /opt/cellblock/venv/bin/python bench/accuracy.py  # after cellblock setup

Each figure the cell reports is set against what the program really did, with
the bare program (no cell, measured with wait4's rusage) in the same run as the
reference. Bounds (bench/README.md); each line says `ok` or `OUT OF BOUNDS`:

    mem64      a C program that mallocs and touches 64 MiB     memory in [64, 67] MiB
    hello      a static C hello world                          memory < 2 MiB
    busy1s     a 1.0 s CPU busy loop                            time within 5 % of bare
    threads4   four threads burning 0.6 s each                  time ~2.4 s (within 5 % of bare)
    threads4   the same under a 1 s CPU limit                   TLE, time - 1 s < 50 ms
    cpu0.5     a busy loop under a 0.5 s CPU limit             TLE, overshoot < 50 ms
    sleep1     `sleep 1`                                        time < bare + 20 ms,
                                                                wall < bare + 0.1 s

Exit code 0 when every figure is within bounds, 1 otherwise (for people and
scripts; CI does not judge timings, the machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import cgroups, run  # noqa: E402

MiB = 1 << 20

PROGRAMS = {
    "mem64": r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    size_t n = 64u << 20;
    char *volatile p = malloc(n);
    memset(p, 1, n);
    long sum = 0;
    for (size_t i = 0; i < n; i += 4096) sum += p[i];
    printf("%ld\n", sum);
    return 0;
}""",
    "hello": r"""
#include <stdio.h>
int main(void) { puts("hello"); return 0; }""",
    "burn": r"""
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
static double seconds;
static double cpu(void) {
    struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static void *burn(void *arg) {
    volatile unsigned long x = 0;
    while (cpu() < seconds) x++;
    return 0;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]); seconds = atof(argv[2]);
    pthread_t t[64];
    for (int i = 0; i < n; i++) pthread_create(&t[i], 0, burn, 0);
    for (int i = 0; i < n; i++) pthread_join(t[i], 0);
    return 0;
}""",
}


@dataclass
class Figure:
    name: str
    what: str
    measured: float
    reference: str
    ok: bool


def build(directory: Path) -> dict[str, bytes]:
    binaries = {}
    for name, source in PROGRAMS.items():
        src = directory / f"{name}.c"
        out = directory / name
        src.write_text(source)
        flags = ["-static"] if name == "hello" else []
        subprocess.run(["gcc", "-O2", "-pthread", *flags, "-o", str(out), str(src)], check=True)
        binaries[name] = out.read_bytes()
    return binaries


def bare_cpu(path: Path, *args: str) -> float:
    """CPU seconds of the program run bare, from wait4's rusage."""
    pid = os.posix_spawn(str(path), [str(path), *args], {})
    _, _, usage = os.wait4(pid, 0)
    return usage.ru_utime + usage.ru_stime


def in_cell(binaries: dict[str, bytes], name: str, *args: str, **limits: object):
    result = run([f"./{name}", *args], copy_in={name: binaries[name]}, **limits)
    if result.status not in ("OK", "TLE"):
        raise SystemExit(f"{name}: unexpected {result.status}: {result.message}")
    return result


def measure(binaries: dict[str, bytes], directory: Path, repeat: int) -> list[Figure]:
    figures = []
    mem = [in_cell(binaries, "mem64").memory / MiB for _ in range(repeat)]
    worst = max(mem)
    figures.append(
        Figure(
            "mem64",
            "peak memory, MiB (worst of runs)",
            worst,
            "[64, 67]",
            all(64 <= m <= 67 for m in mem),
        )
    )
    hello = max(in_cell(binaries, "hello").memory / MiB for _ in range(repeat))
    figures.append(Figure("hello", "peak memory, MiB (worst of runs)", hello, "< 2", hello < 2))

    bare_busy = statistics.median(bare_cpu(directory / "burn", "1", "1.0") for _ in range(repeat))
    cell_busy = statistics.median(in_cell(binaries, "burn", "1", "1.0").time for _ in range(repeat))
    figures.append(
        Figure(
            "busy1s",
            "CPU s (median)",
            cell_busy,
            f"bare {bare_busy:.3f} ±5 %",
            abs(cell_busy - bare_busy) <= 0.05 * bare_busy,
        )
    )

    bare_threads = statistics.median(
        bare_cpu(directory / "burn", "4", "0.6") for _ in range(repeat)
    )
    cell_threads = statistics.median(
        in_cell(binaries, "burn", "4", "0.6", time=10).time for _ in range(repeat)
    )
    figures.append(
        Figure(
            "threads4",
            "CPU s of 4 threads (median)",
            cell_threads,
            f"bare {bare_threads:.3f} ±5 %",
            abs(cell_threads - bare_threads) <= 0.05 * bare_threads,
        )
    )
    limited = [in_cell(binaries, "burn", "4", "0.6", time=1) for _ in range(repeat)]
    over = max(r.time - 1.0 for r in limited)
    figures.append(
        Figure(
            "threads4",
            "overshoot of a 1 s CPU limit, ms (worst)",
            over * 1000,
            "TLE, < 50",
            all(r.status == "TLE" for r in limited) and over < 0.05,
        )
    )
    half = [in_cell(binaries, "burn", "1", "5", time=0.5) for _ in range(repeat)]
    over = max(r.time - 0.5 for r in half)
    figures.append(
        Figure(
            "cpu0.5",
            "overshoot of a 0.5 s CPU limit, ms (worst)",
            over * 1000,
            "TLE, < 50",
            all(r.status == "TLE" for r in half) and over < 0.05,
        )
    )

    # The bare `sleep 1` is the reference: on hardware it costs ~1 ms of CPU; in
    # an emulated VM (scripts/vm-test, no KVM) exec alone costs far more, and
    # that is the machine's, not the cell's.
    sleep = shutil.which("sleep") or "/bin/sleep"
    bare = []
    for _ in range(repeat):
        started = time.monotonic()
        cpu_used = bare_cpu(Path(sleep), "1")
        bare.append((cpu_used, time.monotonic() - started))
    bare_cpu_ms = max(c for c, _ in bare) * 1000
    bare_wall = max(w for _, w in bare)
    sleeps = [run(["sleep", "1"]) for _ in range(repeat)]
    cpu = max(r.time for r in sleeps) * 1000
    wall = max(r.wall_time for r in sleeps)
    figures.append(
        Figure(
            "sleep1",
            "CPU ms (worst)",
            cpu,
            f"bare {bare_cpu_ms:.1f} + < 20",
            cpu < bare_cpu_ms + 20,
        )
    )
    figures.append(
        Figure(
            "sleep1",
            "wall s (worst)",
            wall,
            f"bare {bare_wall:.3f} + < 0.1",
            all(1.0 <= r.wall_time <= bare_wall + 0.1 for r in sleeps),
        )
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    hierarchy, reason = cgroups.find()
    where = hierarchy.describe() if hierarchy else f"NO CGROUP ({reason}): degraded figures"
    with tempfile.TemporaryDirectory(prefix="cellblock-accuracy-") as tmp:
        directory = Path(tmp)
        binaries = build(directory)
        started = time.monotonic()
        figures = measure(binaries, directory, args.repeat)
    if args.json:
        print(json.dumps({"cgroup": where, "figures": [asdict(f) for f in figures]}, indent=1))
    else:
        print(f"cellblock accuracy · {os.uname().release} · uid {os.geteuid()} · {where}")
        print(f"{'figure':<9} {'what':<44} {'measured':>10}  {'bound':<22} verdict")
        for f in figures:
            verdict = "ok" if f.ok else "OUT OF BOUNDS"
            print(f"{f.name:<9} {f.what:<44} {f.measured:>10.3f}  {f.reference:<22} {verdict}")
        took = time.monotonic() - started
        print(
            f"({args.repeat} runs per figure, {took:.0f} s; "
            f"max RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB)"
        )
    return 0 if all(f.ok for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
