"""A burst through a real `cellblock serve` (its own Redis, 2 unprivileged workers):
1,000 small submissions from 32 concurrent clients, more than the queue may hold.
Every verdict is right, none is lost, nothing answers 5xx, the API says 429 with
Retry-After once the queue is full, and the clients' retries after it succeed.
Timings are the benchmark's (bench/doors.py), never asserted here."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from service_support import free_port, wait_for
from test_service_serve import healthy, run_dir, serve, stop  # noqa: F401 - run_dir: a fixture

SUBMISSIONS = 1000
CLIENTS = 32
MAX_QUEUE = 60


def submission(index: int) -> tuple[dict, str]:
    """Mostly shell, some Python; every fifth expects a wrong answer. Each takes a
    tenth of a second, so that 32 clients fill the queue faster than 2 workers empty it."""
    expected = f"{index + 1}\n" if index % 5 else f"{index + 2}\n"
    if index % 10 == 3:
        source, language = "import time\ntime.sleep(0.1)\nprint(int(input()) + 1)", "python3"
    else:
        source, language = "read n; sleep 0.1; echo $((n + 1))", "bash"
    body = {
        "language": language,
        "source": source,
        "stdin": f"{index}\n",
        "expected_output": expected,
    }
    return body, ("AC" if index % 5 else "WA")


def test_a_burst_beyond_the_queue_limit_loses_nothing(run_dir, test_user):  # noqa: F811
    port = free_port()
    launcher = serve(
        test_user.pw_name,
        port,
        run_dir / "state",
        env={"CELLBLOCK_MAX_QUEUE": str(MAX_QUEUE), "CELLBLOCK_RATE_LIMIT": "0"},
        cells=2,
    )
    url = f"http://127.0.0.1:{port}"
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    retry_after: list[int] = []

    def submit(index: int) -> str:
        body, _ = submission(index)
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                response = client.post("/v1/submissions", json=body)
                with lock:
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 429:
                    wait = int(response.headers["retry-after"])
                    with lock:
                        retry_after.append(wait)
                    time.sleep(min(wait, 2))  # honoured (capped: the test's own patience)
                    continue
                assert response.status_code == 202, response.text
                return response.json()["id"]

    try:
        wait_for(lambda: healthy(url), 60, "the embedded service")
        with ThreadPoolExecutor(CLIENTS) as pool:
            ids = list(pool.map(submit, range(SUBMISSIONS)))
        assert len(set(ids)) == SUBMISSIONS
        assert statuses.get(429, 0) > 0, statuses  # the queue limit was reached
        assert all(wait >= 1 for wait in retry_after)
        assert set(statuses) <= {202, 429}, statuses  # no 5xx, nothing else

        def all_finished() -> list[dict] | None:
            found: list[dict] = []
            with httpx.Client(base_url=url, timeout=30) as client:
                for start in range(0, SUBMISSIONS, 100):
                    chunk = ",".join(ids[start : start + 100])
                    response = client.get("/v1/submissions", params={"ids": chunk})
                    assert response.status_code == 200, response.text
                    found.extend(response.json()["submissions"])
            return found if all(s["status"] in ("done", "failed") for s in found) else None

        results = wait_for(all_finished, 600, "every submission to finish")
        wrong = [
            (index, record["status"], (record.get("result") or {}).get("verdict"))
            for index, record in enumerate(results)
            if record["status"] != "done" or record["result"]["verdict"] != submission(index)[1]
        ]
        assert wrong == []
        assert all(record["attempt"] == 1 for record in results)
    finally:
        stop(launcher)
