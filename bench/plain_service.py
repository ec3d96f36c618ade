"""The service's libraries with no cell: FastAPI, uvicorn, RQ and Redis running
each program as a plain process. A reference for bench/doors.py (its
`fastapi+rq` door) and bench/service.py (its `fastapi+rq` column).

    python -m uvicorn bench.plain_service:app --port PORT   # PLAIN_REDIS_URL set
    python -m bench.plain_service                           # one worker

`POST /run {"source": ...}` enqueues an RQ job that runs `python3 -c source`
as bench/doors.py's bare door does (a subprocess of the worker) and answers
with its exit code and stdout; `POST /judge {"language", "source", "tests"}`
one that judges an A+B submission as bench/service.py's bare baseline does
(`judge`, which that baseline calls itself). Each answers once the job's
result exists (RQ's blocking read of the job's result stream: no polling).
The worker is RQ's SimpleWorker, which runs jobs in its own process: no fork
per job, the cheapest worker RQ has.

The app and its worker import nothing of cellblock: what they cost beyond
bare is what any service built on these libraries pays before its sandbox, a
part of `cellblock serve`'s cost no change to cellblock can take away.
`PlainService`, the benchmarks' side, starts them beside a Redis configured
as `cellblock serve`'s own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from redis import Redis
from rq import Queue, SimpleWorker

PYTHON = "/usr/bin/python3"
C_COMPILE = ["/usr/bin/gcc", "-std=gnu11", "-O2", "-pipe", "-o", "main", "main.c", "-lm"]
QUEUE = "plain"
WAIT_SECONDS = 120
REPO = Path(__file__).resolve().parent.parent


# --- the jobs -------------------------------------------------------------------


def run_program(source: str, wrap: Callable[[list[str]], Sequence[str]] = list) -> dict:
    """`python3 -c source` as a process (bench/doors.py's bare door runs its
    programs with this too); `wrap(argv)`: the command line that runs it."""
    done = subprocess.run(
        wrap([PYTHON, "-c", source]), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return {"exit_code": done.returncode, "stdout": done.stdout}


def judge(
    language: str,
    source: str,
    tests: list[dict],
    wrap: Callable[[list[str], str], list[str]] | None = None,
) -> bool:
    """An A+B submission judged bare: compiled if C (the C language's own gcc
    command), each test's input on stdin, its stdout compared; True if every
    test passed. `wrap(argv, work)`: the command line that runs each process
    (the compiler's too) in the working directory `work`, if not as itself."""
    with tempfile.TemporaryDirectory(prefix="cb-bare-") as work:

        def command(argv: list[str]) -> list[str]:
            return wrap(argv, work) if wrap else argv

        if language == "c":
            Path(work, "main.c").write_text(source)
            subprocess.run(command(C_COMPILE), cwd=work, check=True)
            argv = ["./main"]
        else:
            Path(work, "main.py").write_text(source)
            argv = [PYTHON, "main.py"]  # the cells' python3, not a PATH shim
        for test in tests:
            done = subprocess.run(
                command(argv), cwd=work, input=test["input"], capture_output=True, text=True
            )
            if done.stdout != test["output"]:
                return False
    return True


# --- the app --------------------------------------------------------------------


class Program(BaseModel):
    source: str


class Submission(BaseModel):
    language: str
    source: str
    tests: list[dict]


app = FastAPI()
_queue: list[Queue] = []  # made on first use, in the server's process


def _done(function: Callable[..., object], *args: object) -> object:
    """`function(*args)` run by a worker: its return value, once there is one."""
    if not _queue:
        _queue.append(Queue(QUEUE, connection=Redis.from_url(os.environ["PLAIN_REDIS_URL"])))
    job = _queue[0].enqueue(function, *args, result_ttl=600, job_timeout=60)
    result = job.latest_result(timeout=WAIT_SECONDS)
    if result is None or result.type != result.Type.SUCCESSFUL:
        raise HTTPException(500, f"job {job.id}: {result.exc_string if result else 'no result'}")
    return result.return_value


# Plain defs: FastAPI runs them in its thread pool, where the wait may block.
@app.post("/run")
def run(program: Program) -> object:
    return _done(run_program, program.source)


@app.post("/judge")
def judge_submission(submission: Submission) -> object:
    return {"accepted": _done(judge, submission.language, submission.source, submission.tests)}


def main() -> None:
    redis = Redis.from_url(os.environ["PLAIN_REDIS_URL"])
    SimpleWorker([Queue(QUEUE, connection=redis)], connection=redis).work(logging_level="WARNING")


# --- the benchmarks' side -------------------------------------------------------


def answers(url: str, seconds: float = 90) -> bool:
    """Whether a GET of `url` answers 200 within `seconds`."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


class PlainService:
    """uvicorn serving `app`, `workers` RQ workers, and a Redis configured as
    `cellblock serve`'s own (api.serve.EmbeddedRedis), in a scratch directory."""

    def __init__(self, workers: int) -> None:
        from service_support import free_port  # tests/: the caller has it on sys.path

        from api.serve import EmbeddedRedis

        self.dir = Path(tempfile.mkdtemp(prefix="cb-bench-plain-"))
        self.redis = EmbeddedRedis(self.dir)
        self.redis.start()
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PLAIN_REDIS_URL": self.redis.url,
        }
        self.api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.plain_service:app"]
            + ["--port", self.url.rsplit(":", 1)[1], "--log-level", "warning", "--no-access-log"],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        self.workers = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.plain_service"], env=env, stdin=subprocess.DEVNULL
            )
            for _ in range(workers)
        ]
        if not answers(f"{self.url}/openapi.json"):
            self.stop()
            raise RuntimeError("bench/plain_service.py did not start")

    def stop(self) -> None:
        for process in (self.api, *self.workers):
            process.terminate()
        for process in (self.api, *self.workers):
            process.wait(60)
        self.redis.stop()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


if __name__ == "__main__":
    main()
