"""What a program's own system calls cost in a cell, next to bare and bubblewrap.

    .venv/bin/python bench/fileops.py [--runs 3] [--json]

One Python program times, in a loop inside itself, a `stat` of a file of the
host's /usr, one that does not exist, an `open` and `close` of it, an `open`,
4 KiB `read` and `close`, a listing of /usr/lib/python3.X, and `getpid` (a
call that touches no file: the seccomp filter's own cost). Each figure is the
best of 7 loops; the program is run `--runs` times each way, alternating,
and the best run kept:

    bare        python3 as a plain process
    bubblewrap  under bubblewrap with bench/cells.py's isolation (/usr bound: the
                host's own inodes)
    cell        sandbox.run, the default profile: /usr through the cell's read-only
                overlay (no program ever holds a host inode), Landlock, the filter

A Python program's start-up and imports are mostly such calls (`strace -c`
of `python3 -c "import json, re, typing"`: some 300 `stat`s, 70 `open`s), so
these figures say what a cell adds to a program beyond its fixed cost per run.
Timings are reported, never judged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.cells import PYTHON, bwrap_argv  # noqa: E402

STDLIB = sysconfig.get_paths()["stdlib"]  # /usr/lib/python3.X: on the host's /usr

PROGRAM = f"""
import json, os, time
def best(call, n):
    times = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(n):
            call()
        times.append((time.perf_counter() - start) / n * 1e6)
    return min(times)
def open_close():
    os.close(os.open({STDLIB + "/os.py"!r}, os.O_RDONLY))
def open_read_close():
    fd = os.open({STDLIB + "/os.py"!r}, os.O_RDONLY)
    os.read(fd, 4096)
    os.close(fd)
print(json.dumps({{
    "stat": best(lambda: os.stat({STDLIB + "/os.py"!r}), 3000),
    "stat (missing)": best(lambda: os.path.exists({STDLIB + "/missing.py"!r}), 3000),
    "open+close": best(open_close, 3000),
    "open+read+close": best(open_read_close, 2000),
    "list the stdlib": best(lambda: os.listdir({STDLIB!r}), 100),
    "getpid": best(os.getpid, 20000),
}}))
"""


def bare() -> dict[str, float]:
    done = subprocess.run([PYTHON, "-c", PROGRAM], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def bubblewrap() -> dict[str, float]:
    done = subprocess.run(
        bwrap_argv([PYTHON, "-c", PROGRAM]), capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def cell() -> dict[str, float]:
    import sandbox

    result = sandbox.run([PYTHON, "-c", PROGRAM], time=60, wall_time=120)
    if result.status != "OK":
        raise RuntimeError(f"the program failed in its cell: {result.status} {result.stderr}")
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ways = {"bare": bare, "bubblewrap": bubblewrap, "cell": cell}
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.runs):
        for way, measure in ways.items():
            for op, micros in measure().items():
                mine = best.setdefault(way, {})
                mine[op] = min(mine.get(op, micros), micros)
    if args.json:
        print(json.dumps(best, indent=2))
        return 0
    print(f"best of {args.runs} runs, each the best of 7 loops; microseconds a call")
    print(f"  {'call':<18} {'bare':>8} {'bubblewrap':>11} {'cell':>8} {'cell - bare':>12}")
    for op in best["bare"]:
        row = [best[way][op] for way in ways]
        print(f"  {op:<18} {row[0]:>8.2f} {row[1]:>11.2f} {row[2]:>8.2f} {row[2] - row[0]:>+12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
