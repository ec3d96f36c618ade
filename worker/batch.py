"""Batch judging for LLM work: a JSONL of programs, judged in parallel, one result line each.

One input line is one item (a JSON object):

    {"id": "HumanEval/0", "language": "python3", "source": "def f(): ...",
     "test": "assert f() == 1",             # optional: appended to the source
     "tests": [{"name": "1", "input": "1 2\\n", "output": "3\\n", "score": 1}],
     "stdin": "...", "expected_output": "...",  # a single test, instead of "tests"
     "tests_dir": "path/to/tests",           # or a test directory on this machine
     "checker": "float:1e-6",               # a name, a path, or {"language", "source"}
     "limits": {"time": 2, "wall_time": 5, "memory": "256M", "pids": 64, "output": "16M"},
     "stop_on_failure": false,
     "feedback": "diff"}                     # none, verdict or diff (what results reveal)

With no tests and no expected output, the item is one run on `stdin` (default
empty): AC on a clean exit, the run's failure otherwise (assert-style tests).
One output line per item, in the order they finish: {"id", "index", ...the
JudgeResult fields}, or {"id", "index", "verdict": null, "error": "..."} for an
item that cannot be judged (bad JSON, unknown language...).

Items run in `jobs` worker processes (default: one per core), each a
single-threaded `python -m worker.batch --serve` that launches cells. Every
item has a deadline (compile and tests together): its cells' wall-clock
limits are cut to what is left of it, so one hung program never holds a worker
for longer; a worker that still does not answer `GRACE` seconds after the
deadline is killed and replaced, and its item reported as IE.
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

DEFAULT_DEADLINE = 60.0
GRACE = 30.0  # a checker program's cell may still be running when the deadline passes


# --- one item, in a worker process -------------------------------------------


def judge_item(item: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """Judge one item (a request of worker/request.py, files of this machine
    allowed); a bad item becomes an error line, never an exception."""
    from .request import JudgeRequest, RequestError

    started = time.monotonic()
    try:
        request = JudgeRequest.parse(item, defaults, host_paths=True)
        deadline = started + float(item.get("deadline", defaults.get("deadline", DEFAULT_DEADLINE)))
        return request.judge(deadline=deadline).to_dict()
    except (RequestError, TypeError, ValueError) as error:
        return {"verdict": None, "error": str(error)}


def serve() -> None:
    """A worker process: one request line in, one result line out, until EOF."""
    # The protocol owns the real stdout; anything else printed goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # A long-lived worker of one-run items: each item's cell is made while the
    # item before it runs (warm cells, by this worker's cell maker).
    import sandbox

    sandbox.keep_warm()
    for line in sys.stdin:
        request = json.loads(line)
        result = judge_item(request["item"], request["defaults"])
        out.write(json.dumps(result) + "\n")
        out.flush()


# --- the batch, in the parent ------------------------------------------------


class _Worker:
    """One worker process and its pipes; replaced when it fails or hangs."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.batch", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd="/",
        )
        self.buffer = b""

    def ask(self, request: str, timeout: float) -> dict[str, Any] | None:
        """Send one request; the result, or None when the worker died or timed out."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(request.encode() + b"\n")
            self.process.stdin.flush()
        except OSError:
            return None
        fd = self.process.stdout.fileno()
        end = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = end - time.monotonic()
                if left <= 0 or not selector.select(left):
                    return None
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return None
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            assert self.process.stdin is not None
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_batch(
    lines: Iterable[str],
    out: TextIO,
    jobs: int | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Judge every item of `lines` (JSONL) on `jobs` workers; write one line per item.

    Returns counts by verdict ("error" for items that could not be judged)."""
    defaults = dict(defaults or {})
    deadline = float(defaults.setdefault("deadline", DEFAULT_DEADLINE))
    jobs = max(1, jobs or os.cpu_count() or 1)
    work: queue.Queue[tuple[int, Any, str] | None] = queue.Queue(maxsize=jobs * 4)
    lock = threading.Lock()
    counts: dict[str, int] = {}

    def emit(index: int, item_id: Any, result: dict[str, Any]) -> None:
        line = json.dumps({"id": item_id, "index": index, **result})
        with lock:
            out.write(line + "\n")
            out.flush()
            key = result.get("verdict") or "error"
            counts[key] = counts.get(key, 0) + 1

    def slot() -> None:
        worker: _Worker | None = None
        try:
            while (task := work.get()) is not None:
                index, item_id, request = task
                worker = worker or _Worker()
                item_deadline = json.loads(request)["item"].get("deadline", deadline)
                result = worker.ask(request, float(item_deadline) + GRACE)
                if result is None:
                    worker.stop(kill=True)
                    worker = None
                    result = {
                        "verdict": "IE",
                        "message": "the batch worker died or did not "
                        "answer in time; it was replaced",
                        "tests": [],
                    }
                emit(index, item_id, result)
        finally:
            if worker is not None:
                worker.stop()

    threads = [threading.Thread(target=slot, daemon=True) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError as error:
            emit(index, None, {"verdict": None, "error": f"line {index + 1}: bad JSON: {error}"})
            continue
        item_id = item.get("id", index) if isinstance(item, dict) else index
        if isinstance(item, dict) and not isinstance(item.get("deadline", 0), int | float):
            emit(index, item_id, {"verdict": None, "error": "'deadline' must be a number"})
            continue
        work.put((index, item_id, json.dumps({"item": item, "defaults": defaults})))
    for _ in threads:
        work.put(None)
    for thread in threads:
        thread.join()
    return counts


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        print(
            "usage: python -m worker.batch --serve (used by `cellblock judge --batch`)",
            file=sys.stderr,
        )
        sys.exit(2)
