"""The service end to end through HTTP: real Redis, real workers (unprivileged), real cells.

Every verdict, wait mode, batch, SSE progress, callbacks to a local receiver,
keys, the rate limit, bad input (4xx, never 5xx), health and metrics.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import ipaddress
import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from service_support import ApiServer, RedisServer, Workers, remove, scratch, wait_for

from api.app import create_app
from api.settings import Settings
from worker.store import Store, Timing

KEY, OTHER_KEY = "test-key-1", "test-key-2"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMING = Timing(lease=4, renew=1, reap=1, limbo=4)

A_PLUS_B = "a, b = map(int, input().split())\nprint(a + b)\n"
TESTS = [
    {"name": "1", "input": "1 2\n", "output": "3\n"},
    {"name": "2", "input": "40 2\n", "output": "42\n"},
    {"name": "3", "input": "-5 5\n", "output": "0\n"},
]


@pytest.fixture(scope="module")
def service(test_user):
    directory = scratch("cb-svc-")
    server = RedisServer(directory).start()
    workers = Workers(server.url, cells=2, user=test_user.pw_name)
    settings = Settings.from_env(
        redis_url=server.url,
        api_keys=frozenset({KEY, OTHER_KEY}),
        rate_limit=0,
        wait_timeout=20.0,
        callback_allow=(ipaddress.ip_network("127.0.0.0/8"),),
        callback_backoff=0.2,
        callback_tries=3,
        callback_timeout=2.0,
    )
    api = ApiServer(create_app(settings, TIMING)).start()
    store = Store.from_url(server.url, TIMING)
    wait_for(lambda: len(store.workers()) == 2, 60, "two live workers")
    client = httpx.Client(base_url=api.url, headers=AUTH, timeout=60)
    yield type(
        "Service",
        (),
        {
            "api": api,
            "client": client,
            "store": store,
            "redis": server,
            "url": server.url,
            "workers": workers,
        },
    )
    client.close()
    api.stop()
    workers.stop()
    server.stop()
    remove(directory)


def submit_wait(service, body: dict) -> dict:
    response = service.client.post("/v1/submissions?wait=true", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def poll(service, sub_id: str, timeout: float = 60) -> dict:
    def finished():
        data = service.client.get(f"/v1/submissions/{sub_id}").json()
        return data if data["status"] in ("done", "failed") else None

    return wait_for(finished, timeout, f"submission {sub_id}", interval=0.1)


VERDICTS = {
    "AC": {"language": "python3", "source": A_PLUS_B, "tests": TESTS},
    "WA": {"language": "python3", "source": "print(0)", "tests": TESTS[:1]},
    "TLE": {
        "language": "c",
        "source": "int main(void){for(;;){}}",
        "limits": {"time": 0.5},
        "tests": TESTS[:1],
    },
    "MLE": {
        "language": "c",
        "limits": {"memory": "32M"},
        "tests": TESTS[:1],
        "source": "#include <stdlib.h>\n#include <string.h>\n"
        "int main(void){for(;;){char*p=malloc(1<<20);if(!p)return 3;"
        "memset(p,1,1<<20);}}",
    },
    "OLE": {
        "language": "python3",
        "limits": {"output": "64K"},
        "tests": TESTS[:1],
        "source": "import sys\nwhile True: sys.stdout.write('x' * 4096)",
    },
    "RE": {"language": "python3", "source": "raise SystemExit(3)", "tests": TESTS[:1]},
    "CE": {"language": "c", "source": "int main(void) { return }", "tests": TESTS[:1]},
}


@pytest.mark.parametrize("verdict", sorted(VERDICTS))
def test_every_verdict_over_http(service, verdict):
    data = submit_wait(service, VERDICTS[verdict])
    assert data["status"] == "done"
    assert data["result"]["verdict"] == verdict, data["result"]
    if verdict == "AC":
        assert data["result"]["score"] == 3.0
        assert [t["stdout"] for t in data["result"]["tests"]] == ["3\n", "42\n", "0\n"]
    if verdict == "MLE":
        assert data["result"]["tests"][0]["oom_killed"] is True
    if verdict == "CE":
        assert "error" in data["result"]["compile"]["stderr"]


def test_a_request_no_attempt_can_judge_fails_at_once_with_the_reason(service):
    # A request the API would refuse, stored directly: the job must not crash
    # silently, must not be a verdict, and retrying it would change nothing.
    owner = "key:" + hashlib.sha256(KEY.encode()).hexdigest()[:16]
    sub_id = service.store.create({"language": "no-such-language", "source": "x"}, owner=owner)
    data = poll(service, sub_id)
    assert data["status"] == "failed"
    assert data["result"] is None
    assert "no-such-language" in data["error"] and "invalid" in data["error"]
    assert data["attempt"] == 1


def test_single_run_keeps_the_whole_output(service):
    source = "import sys\nprint('x' * 5000)\nprint('err', file=sys.stderr)\nprint(input())"
    data = submit_wait(service, {"language": "python3", "source": source, "stdin": "hello\n"})
    test = data["result"]["tests"][0]
    assert data["result"]["verdict"] == "AC"
    assert test["stdout"] == "x" * 5000 + "\nhello\n"
    assert test["stderr"] == "err\n"
    assert (test["stdout_truncated"], test["stderr_truncated"]) == (False, False)
    # Its progress event carries an excerpt: events are small, the result is whole.
    events = service.client.get(f"/v1/submissions/{data['id']}/events").text
    data_lines = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: ")]
    event = next(e for e in data_lines if e["type"] == "test")
    assert (
        event["test"]["stdout"].startswith("x" * 1000)
        and "more characters cut" in event["test"]["stdout"]
    )
    with_expected = submit_wait(
        service,
        {"language": "python3", "source": "print(2)", "stdin": "", "expected_output": "3\n"},
    )
    assert with_expected["result"]["verdict"] == "WA"


def test_files_args_and_output_files_over_http(service):
    program = (
        "import sys\n"
        "print(open('data/in.txt').read(), *sys.argv[1:], flush=True)\n"
        "print('warn', file=sys.stderr)\n"
        "open('out.txt', 'w').write('made')\n"
    )
    response = service.client.post(
        "/v1/submissions?wait=true",
        json={
            "language": "python3",
            "source": program,
            "files": [{"path": "data/in.txt", "content": "given"}],
            "args": ["a b"],
            "output_files": ["out.txt"],
            "stderr_to_stdout": True,
        },
    )
    assert response.status_code == 200, response.text
    test = response.json()["result"]["tests"][0]
    assert test["verdict"] == "AC", test
    assert test["stdout"] == "given a b\nwarn\n" and test["stderr"] == ""
    assert test["files"] == {"out.txt": base64.b64encode(b"made").decode()}


def test_wait_falls_back_to_202_and_the_result_comes_later(service):
    app = create_app(
        Settings.from_env(
            redis_url=service.url, api_keys=frozenset({KEY}), rate_limit=0, wait_timeout=0.5
        ),
        TIMING,
    )
    api = ApiServer(app).start()
    try:
        started = time.monotonic()
        response = httpx.post(
            f"{api.url}/v1/submissions?wait=true",
            headers=AUTH,
            json={
                "language": "python3",
                "source": "import time; time.sleep(2)",
                "limits": {"time": 1, "wall_time": 5},
                "tests": TESTS[:1],
            },
            timeout=30,
        )
        assert response.status_code == 202
        assert time.monotonic() - started < 3
        sub_id = response.json()["id"]
    finally:
        api.stop()
    assert poll(service, sub_id)["result"]["verdict"] == "WA"  # slept, printed nothing


def test_batch(service):
    response = service.client.post(
        "/v1/submissions/batch",
        json={
            "submissions": [
                VERDICTS["AC"],
                VERDICTS["WA"],
                {"language": "python3", "source": "print(1)"},
            ]
        },
    )
    assert response.status_code == 202, response.text
    ids = [s["id"] for s in response.json()["submissions"]]
    assert len(set(ids)) == 3
    verdicts = [poll(service, i)["result"]["verdict"] for i in ids]
    assert verdicts == ["AC", "WA", "AC"]
    many = service.client.get("/v1/submissions", params={"ids": ",".join(ids)}).json()
    assert [s["status"] for s in many["submissions"]] == ["done"] * 3
    bad = service.client.post(
        "/v1/submissions/batch",
        json={"submissions": [VERDICTS["AC"], {"language": "cobol", "source": "x"}]},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "submissions", 1, "language"]


def test_a_get_reads_what_it_shows_never_the_stored_request(service):
    """A poll costs the same whatever the submission's size: a GET reads only
    the fields it shows and its owner check needs, never the stored request,
    whose tests may be megabytes. A record stored before records held their
    language alone is read whole."""
    sub_id = submit_wait(service, VERDICTS["AC"])["id"]
    key = f"cb:sub:{sub_id}"
    redis = service.store.redis
    shown = service.client.get(f"/v1/submissions/{sub_id}").json()
    assert shown["language"] == "python3" and shown["result"]["verdict"] == "AC"

    def reads() -> tuple[dict, dict, str]:
        one = service.client.get(f"/v1/submissions/{sub_id}")
        many = service.client.get("/v1/submissions", params={"ids": sub_id})
        events = service.client.get(f"/v1/submissions/{sub_id}/events")
        assert (one.status_code, many.status_code, events.status_code) == (200, 200, 200)
        return one.json(), many.json()["submissions"][0], events.text

    # A request no one could parse: it is never read (reading it would be a 500).
    redis.hset(key, "request", "not json")
    one, many, events = reads()
    assert one == many == shown
    assert "event: end" in events
    # A record of before: no language of its own, so it is read whole.
    redis.hset(key, "request", json.dumps(VERDICTS["AC"]))
    redis.hdel(key, "language")
    one, many, _ = reads()
    assert one == many == shown


def test_sse_progress_per_test(service):
    body = {
        "language": "python3",
        "source": "import time; time.sleep(0.3)\n" + A_PLUS_B,
        "tests": TESTS,
    }
    sub_id = service.client.post("/v1/submissions", json=body).json()["id"]
    events = []
    with service.client.stream("GET", f"/v1/submissions/{sub_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["type"] == "end":
                    break
    tests = [e for e in events if e["type"] == "test"]
    assert [(e["index"], e["total"], e["test"]["verdict"]) for e in tests] == [
        (0, 3, "AC"),
        (1, 3, "AC"),
        (2, 3, "AC"),
    ]
    assert events[-1] == {"seq": events[-1]["seq"], "type": "end", "status": "done"}
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    # A late subscriber gets the whole story replayed, then the end.
    late = service.client.get(f"/v1/submissions/{sub_id}/events").text
    assert late.count("event: test") == 3 and "event: end" in late


class Receiver:
    """A local HTTP receiver for callbacks; answers 500 to the first `fail` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[tuple[str, dict]] = []
        self.fail = fail
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.bodies.append((self.command, body))
                    self.send_response(200)
                self.end_headers()

            do_POST = do_PUT = _any

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_callback_is_posted_with_retries(service):
    receiver = Receiver(fail=1)
    try:
        body = {**VERDICTS["AC"], "callback_url": receiver.url}
        sub_id = service.client.post("/v1/submissions", json=body).json()["id"]
        wait_for(lambda: receiver.bodies, 60, "the callback")
        method, posted = receiver.bodies[0]
        assert method == "POST"
        assert posted["id"] == sub_id and posted["result"]["verdict"] == "AC"
        # The worker records the delivery a moment after the receiver has the body.
        delivered = "delivered (HTTP 200)"
        wait_for(
            lambda: service.store.get(sub_id).get("callback_status") == delivered,
            30,
            "the callback recorded as delivered",
        )
        assert service.store.get(sub_id)["callback_tries"] == "2"
    finally:
        receiver.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://localhost/x",
        "http://192.168.1.1/",
        "ftp://example.com/x",
        "http://user:pw@example.com/",
        "http://0.0.0.0/",
    ],
)
def test_callbacks_to_private_addresses_are_refused(service, url):
    # The service's own app allows 127/8 for the receiver test; a default app allows none.
    app = create_app(
        Settings.from_env(redis_url=service.url, api_keys=frozenset({KEY}), rate_limit=0), TIMING
    )
    with TestClient(app, client=("127.0.0.1", 1), headers=AUTH) as client:
        response = client.post("/v1/submissions", json={**VERDICTS["WA"], "callback_url": url})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "callback_url"]


def test_keys_are_required_and_submissions_are_private(service):
    body = VERDICTS["WA"]
    assert httpx.post(f"{service.api.url}/v1/submissions", json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (
        httpx.post(f"{service.api.url}/v1/submissions", json=body, headers=wrong).status_code == 401
    )
    # Judge0's header works too, and the 401 comes before any validation of the body.
    response = httpx.post(
        f"{service.api.url}/v1/submissions", json=body, headers={"X-Auth-Token": KEY}
    )
    assert response.status_code == 202
    sub_id = response.json()["id"]
    assert httpx.post(f"{service.api.url}/v1/submissions", json={"junk": 1}).status_code == 401
    other = httpx.get(
        f"{service.api.url}/v1/submissions/{sub_id}",
        headers={"Authorization": f"Bearer {OTHER_KEY}"},
    )
    assert other.status_code == 404
    assert service.client.get(f"/v1/submissions/{sub_id}").status_code == 200


def test_without_keys_only_loopback_is_served(service):
    app = create_app(
        Settings.from_env(redis_url=service.url, api_keys=frozenset(), rate_limit=0), TIMING
    )
    for host, expected in (("10.1.2.3", 403), ("192.0.2.7", 403), ("127.0.0.1", 200)):
        with TestClient(app, client=(host, 1234)) as client:
            assert client.get("/v1/languages").status_code == expected, host
    from cellblock.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2


def test_rate_limit_per_key(service):
    app = create_app(
        Settings.from_env(
            redis_url=service.url,
            api_keys=frozenset({"rate-a", "rate-b"}),
            rate_limit=5,
            read_rate_limit=3,
        ),
        TIMING,
    )
    a, b = {"X-Auth-Token": "rate-a"}, {"X-Auth-Token": "rate-b"}
    with TestClient(app, client=("127.0.0.1", 1)) as client:
        codes = [client.get("/v1/languages", headers=a).status_code for _ in range(5)]
        assert codes == [200] * 3 + [429] * 2
        limited = client.get("/v1/languages", headers=a)
        assert int(limited.headers["retry-after"]) >= 1
        assert "reads" in limited.json()["detail"]
        # Reads have a budget of their own: polling does not use up the
        # budget of the work a key may queue (an invalid body still counts).
        codes = [client.post("/v1/submissions", json={}, headers=a).status_code for _ in range(6)]
        assert codes == [422] * 5 + [429]
        # Another key has its own budgets.
        assert client.get("/v1/languages", headers=b).status_code == 200
        assert client.post("/v1/submissions", json={}, headers=b).status_code == 422


BAD_INPUTS = [
    (
        b'{"language": "python3", "source": "x", "limits": {"time": NaN}}',
        422,
        ["body", "limits", "time"],
    ),
    (b'{"language": "python3", "source": "\\ud800"}', 422, ["body", "source"]),
    (
        b'{"language": "python3", "source": "x", "limits": {"memory": "1T"}}',
        422,
        ["body", "limits", "memory"],
    ),
    (
        b'{"language": "python3", "source": "x", "limits": {"time": 1000}}',
        422,
        ["body", "limits", "time"],
    ),
    (
        b'{"language": "python3", "source": "x", "limits": {"time": -1}}',
        422,
        ["body", "limits", "time"],
    ),
    (
        b'{"language": "python3", "source": "x", "limits": {"memory": "lots"}}',
        422,
        ["body", "limits", "memory"],
    ),
    (b'{"language": "cobol", "source": "x"}', 422, ["body", "language"]),
    (b'{"language": "python3", "source": "x", "checker": "/bin/true"}', 422, ["body", "checker"]),
    (b'{"language": "python3", "source": "x", "checker": "float:nan"}', 422, ["body", "checker"]),
    (
        b'{"language": "python3", "source": "x", "stdin": "", "tests": [{"input": ""}]}',
        422,
        ["body", "tests"],
    ),
    (b'{"language": "python3", "source": "x", "tests": []}', 422, ["body", "tests"]),
    (
        b'{"language": "python3", "source": "x", "tests": [{"name": "a"}, {"name": "a"}]}',
        422,
        ["body", "tests", 1, "name"],
    ),
    (b'{"language": "python3", "source": "x", "surprise": 1}', 422, ["body", "surprise"]),
    (b'{"language": "python3"}', 422, ["body", "source"]),
    (b'{"language": 3, "source": "x"}', 422, ["body", "language"]),
    (b"[1, 2]", 422, ["body"]),
    (b"{not json", 422, ["body", 1]),
    # What a run gets besides its source: refused here, not by a worker later.
    (
        b'{"language": "python3", "source": "x", "files": [{"path": "a", "content": "x"},'
        b' {"path": "../b", "content": "x"}]}',
        422,
        ["body", "files", 1, "path"],
    ),
    (
        b'{"language": "python3", "source": "x", "files": [{"path": "main.py", "content": ""}]}',
        422,
        ["body", "files", 0, "path"],
    ),
    (
        b'{"language": "python3", "source": "x", "files": [{"path": "a", "content": "%",'
        b' "encoding": "base64"}]}',
        422,
        ["body", "files", 0, "content"],
    ),
    (
        b'{"language": "python3", "source": "x", "files": [{"path": "a", "content": "",'
        b' "encoding": "hex"}]}',
        422,
        ["body", "files", 0, "encoding"],
    ),
    (b'{"language": "python3", "source": "x", "args": ["a\\u0000"]}', 422, ["body", "args", 0]),
    (
        b'{"language": "python3", "source": "x", "output_files": ["ok", "/etc/shadow"]}',
        422,
        ["body", "output_files", 1],
    ),
    (
        b'{"language": "c", "source": "x", "compile_options": ["-O2", "-fplugin=x.so"]}',
        422,
        ["body", "compile_options"],
    ),
    (b'{"language": "python3", "source": "x", "runs": 11}', 422, ["body", "runs"]),
    (
        b'{"language": "c", "source": "x", "limits": {"compile_time": 1e9}}',
        422,
        ["body", "limits", "compile_time"],
    ),
]


@pytest.mark.parametrize("body,status,loc", BAD_INPUTS)
def test_bad_input_is_4xx_naming_the_field(service, body, status, loc):
    response = service.client.post(
        "/v1/submissions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"] == loc, response.text


def test_payload_caps(service):
    app = create_app(
        Settings.from_env(
            redis_url=service.url,
            api_keys=frozenset({KEY}),
            rate_limit=0,
            max_body=1 << 20,
            max_source=1000,
            max_tests=2,
        ),
        TIMING,
    )
    with TestClient(app, client=("127.0.0.1", 1), headers=AUTH) as client:
        huge = client.post(
            "/v1/submissions", json={"language": "python3", "source": "#" * (2 << 20)}
        )
        assert huge.status_code == 413
        big = client.post("/v1/submissions", json={"language": "python3", "source": "#" * 2000})
        assert big.status_code == 413 and big.json()["detail"][0]["loc"] == ["body", "source"]
        many = client.post("/v1/submissions", json={**VERDICTS["AC"]})
        assert many.status_code == 422 and many.json()["detail"][0]["loc"] == ["body", "tests"]


def test_unknown_ids_are_404(service):
    assert (
        service.client.get("/v1/submissions/0a2b2c3d-0000-4000-8000-000000000000").status_code
        == 404
    )
    assert service.client.get("/v1/submissions/not-an-id").status_code == 422


def test_languages_health_and_metrics(service):
    languages = {lang["id"]: lang for lang in service.client.get("/v1/languages").json()}
    assert languages["python3"]["workers"] == 2 and languages["c"]["compiled"] is True
    health = service.client.get("/v1/health")
    assert health.status_code == 200, health.text
    data = health.json()
    assert data["status"] == "ok" and data["redis"]["ok"] and data["workers"]["alive"] == 2
    assert data["selfcheck"]["contained"] is True
    assert all(w["contained"] and w["status"] == "OK" for w in data["selfcheck"]["workers"])
    submit_wait(service, VERDICTS["AC"])
    text = service.client.get("/metrics").text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples['cellblock_verdicts_total{verdict="AC"}']) >= 1
    assert float(samples["cellblock_runs_total"]) >= 3
    assert float(samples["cellblock_workers"]) == 2
    assert float(samples['cellblock_judge_seconds_bucket{le="+Inf"}']) >= 1
    assert "cellblock_queue_depth 0" in text


@pytest.mark.parametrize("feedback", ["none", "verdict", "diff"])
def test_feedback_keeps_hidden_tests_hidden_in_results_and_events(service, feedback):
    # A wrong answer that echoes the hidden input: with `none` and `verdict`
    # neither the expected output nor the program's output may come back.
    hidden_in, hidden_out = "in-7x35\n", "out-42\n"
    body = {
        "language": "python3",
        "source": "x = input()\nprint(x, 'sum?')\n",
        "tests": [{"name": "secret", "input": hidden_in, "output": hidden_out}],
        "feedback": feedback,
    }
    sub_id = service.client.post("/v1/submissions", json=body).json()["id"]
    done = poll(service, sub_id)
    events = service.client.get(f"/v1/submissions/{sub_id}/events").text
    test = done["result"]["tests"][0]
    assert done["result"]["verdict"] == "WA"
    revealed = json.dumps(done) + events
    if feedback == "diff":
        assert "'out-42'" in test["message"] and "in-7x35" in test["stdout"]
    else:
        assert "out-42" not in revealed and "in-7x35" not in revealed, revealed
        assert test["stdout"] == "" and test["message"] == (
            "line 1 differs" if feedback == "verdict" else ""
        )
    bad = service.client.post("/v1/submissions", json={**body, "feedback": "everything"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "feedback"]
