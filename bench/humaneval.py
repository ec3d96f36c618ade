"""HumanEval in cells: every canonical solution must pass, every broken one must fail.

    .venv/bin/python bench/humaneval.py [--jobs N] [--time S] [--json]

The 164 problems of bench/data/humaneval/HumanEval.jsonl.gz (MIT, OpenAI), each run as
one program `prompt + solution + test + check(entry_point)` through the batch
judge (worker/batch.py: `jobs` worker processes, one cell per program), twice:

    canonical   the reference solution: must be AC, 164/164
    broken      a broken solution per problem, must not be AC; the kinds rotate:
                return None, raise, sys.exit(0) before the asserts (caught by the
                sentinel below), another problem's solution, an endless loop (TLE)

A program passes only if it exits 0 *and* prints a sentinel line written after
check(): exiting 0 early is not a pass. Then the same canonical programs run as
plain unsandboxed `python3` processes (same parallelism) for the samples/s
comparison. Exit 1 when any expectation fails (the figures are still printed),
0 otherwise; timings are reported, never judged.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = Path(
    os.environ.get(
        "CELLBLOCK_HUMANEVAL", REPO / "bench" / "data" / "humaneval" / "HumanEval.jsonl.gz"
    )
)
BROKEN_KINDS = ("return-none", "raise", "exit-early", "other-solution", "endless-loop")


def load(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as data:
        return [json.loads(line) for line in data if line.strip()]


def program(problem: dict, body: str, sentinel: str) -> str:
    return (
        problem["prompt"]
        + body
        + "\n\n"
        + problem["test"]
        + "\n\n"
        + f"check({problem['entry_point']})\nprint({sentinel!r})\n"
    )


def broken_body(problems: list[dict], index: int) -> tuple[str, str]:
    # One endless loop in eight (each costs its full CPU limit); the other kinds rotate.
    kind = "endless-loop" if index % 8 == 3 else BROKEN_KINDS[index % 4]
    if kind == "return-none":
        return kind, "    return None\n"
    if kind == "raise":
        return kind, "    raise NotImplementedError\n"
    if kind == "exit-early":
        return kind, "    import sys\n    sys.exit(0)\n"
    if kind == "other-solution":
        return kind, problems[(index + 1) % len(problems)]["canonical_solution"]
    return kind, "    while True:\n        pass\n"


class Lines:
    """A text stream that keeps the batch's result lines."""

    def __init__(self) -> None:
        self.lines: list[dict] = []

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.lines.append(json.loads(line))

    def flush(self) -> None:
        pass


def run_cells(items: list[dict], jobs: int, limits: dict, deadline: float) -> tuple[dict, float]:
    from worker.batch import run_batch

    out = Lines()
    start = time.monotonic()
    run_batch(
        (json.dumps(item) for item in items),
        out,
        jobs=jobs,  # type: ignore[arg-type]
        defaults={"limits": limits, "deadline": deadline},
    )
    elapsed = time.monotonic() - start
    return {line["id"]: line for line in out.lines}, elapsed


def run_plain(items: list[dict], jobs: int, timeout: float) -> tuple[dict, float]:
    """The same programs as plain python3 processes: no isolation at all."""
    scratch = Path(tempfile.mkdtemp(prefix="humaneval-plain-"))

    def one(item: dict) -> tuple[str, bool]:
        path = scratch / f"{abs(hash(item['id']))}.py"
        path.write_text(item["source"])
        try:
            done = subprocess.run(
                ["/usr/bin/python3", str(path)],
                capture_output=True,
                timeout=timeout,
                cwd=scratch,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return item["id"], False
        passed = done.returncode == 0 and done.stdout.decode().strip().endswith(
            item["expected_output"].strip()
        )
        return item["id"], passed

    start = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        results = dict(pool.map(one, items))
    elapsed = time.monotonic() - start
    for path in scratch.iterdir():
        path.unlink()
    scratch.rmdir()
    return results, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--time", type=float, default=2.0, help="CPU seconds per program")
    parser.add_argument("--memory", default="512M")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    problems = load(args.data)
    sentinel = f"cellblock-humaneval-passed-{secrets.token_hex(8)}"
    canonical, broken, kinds = [], [], {}
    for index, problem in enumerate(problems):
        task = problem["task_id"]
        canonical.append(
            {
                "id": task,
                "language": "python3",
                "expected_output": sentinel + "\n",
                "source": program(problem, problem["canonical_solution"], sentinel),
            }
        )
        kind, body = broken_body(problems, index)
        kinds[task] = kind
        broken.append(
            {
                "id": task,
                "language": "python3",
                "expected_output": sentinel + "\n",
                "source": program(problem, body, sentinel),
            }
        )
    limits = {"time": args.time, "memory": args.memory}
    deadline = 2 * args.time + 5

    good, good_seconds = run_cells(canonical, args.jobs, limits, deadline)
    bad, bad_seconds = run_cells(broken, args.jobs, limits, deadline)
    plain, plain_seconds = run_plain(canonical, args.jobs, 2 * args.time + 1)

    not_passed = sorted(
        (task for task in kinds if good.get(task, {}).get("verdict") != "AC"),
        key=lambda t: int(t.split("/")[1]),
    )
    not_failed = sorted(
        (task for task in kinds if bad.get(task, {}).get("verdict") in ("AC", None)),
        key=lambda t: int(t.split("/")[1]),
    )
    plain_failed = sorted(task for task, ok in plain.items() if not ok)
    by_kind: dict[str, dict[str, int]] = {}
    for task, kind in kinds.items():
        verdict = bad.get(task, {}).get("verdict") or "missing"
        by_kind.setdefault(kind, {}).setdefault(verdict, 0)
        by_kind[kind][verdict] += 1
    figures = {
        "problems": len(problems),
        "jobs": args.jobs,
        "canonical_passed": len(problems) - len(not_passed),
        "broken_failed": len(problems) - len(not_failed),
        "broken_verdicts_by_kind": by_kind,
        "cells_canonical_samples_per_s": round(len(canonical) / good_seconds, 1),
        "cells_broken_samples_per_s": round(len(broken) / bad_seconds, 1),
        "plain_python3_samples_per_s": round(len(canonical) / plain_seconds, 1),
        "cells_canonical_seconds": round(good_seconds, 2),
        "plain_python3_seconds": round(plain_seconds, 2),
        "not_passed": not_passed,
        "not_failed": not_failed,
        "plain_python3_failed": plain_failed,
    }
    ok = not not_passed and not not_failed
    if args.json:
        print(json.dumps(figures))
        return 0 if ok else 1
    n = len(problems)
    print(
        f"HumanEval in cells, {n} problems, {args.jobs} jobs, time {args.time:g} s, "
        f"memory {args.memory}"
    )
    print(f"  canonical: {figures['canonical_passed']}/{n} AC")
    print(
        f"  broken:    {figures['broken_failed']}/{n} not AC  "
        + "  ".join(f"{kind}: {dict(sorted(v.items()))}" for kind, v in sorted(by_kind.items()))
    )
    print(
        f"  cells:     {figures['cells_canonical_samples_per_s']} samples/s "
        f"(canonical, {good_seconds:.1f} s); broken {figures['cells_broken_samples_per_s']} "
        f"samples/s ({bad_seconds:.1f} s, the endless loops use their CPU limit)"
    )
    print(
        f"  plain python3, no sandbox: {figures['plain_python3_samples_per_s']} samples/s "
        f"({plain_seconds:.1f} s); cells cost "
        f"{plain_seconds and good_seconds / plain_seconds:.2f}x the plain time"
    )
    for label, tasks in (
        ("canonical not AC", not_passed),
        ("broken but AC", not_failed),
        ("plain python3 failed", plain_failed),
    ):
        if tasks:
            print(f"  {label}: {', '.join(tasks)}")
            for task in tasks[:3]:
                line = (good if label.startswith("canonical") else bad).get(task, {})
                test = (line.get("tests") or [{}])[0]
                print(
                    f"    {task}: {line.get('verdict')} {test.get('message', '')} "
                    f"{test.get('stderr', '')[-300:]}"
                )
    for label, lines in (("canonical", good), ("broken", bad)):
        for task, line in lines.items():
            if line.get("verdict") == "IE":  # the sandbox failed: always worth a look
                test = (line.get("tests") or [{}])[0]
                print(f"  IE ({label}) {task}: {line.get('message')} {test.get('message', '')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
