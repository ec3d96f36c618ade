"""Judge0 1.13 compatibility, tested with Judge0's official Python SDK (`pip install judge0`)
pointed at http://HOST:PORT/judge0, and with raw requests for base64/fields/wait/errors."""

from __future__ import annotations

import base64

import httpx
import judge0
import pytest
from service_support import live_service

from api.judge0 import RENDERED
from worker.store import JUDGE0_INDEX, Store, Timing, judge0_index, sub_key

KEY = "judge0-test-key"
TIMING = Timing(lease=4, renew=1, reap=1, limbo=4)


@pytest.fixture(scope="module")
def judge0_service(test_user):
    with live_service(
        "cb-j0-",
        test_user.pw_name,
        TIMING,
        api_keys=frozenset({KEY}),
        rate_limit=0,
        wait_timeout=30.0,
    ) as api:
        yield api


@pytest.fixture(scope="module")
def client(judge0_service):
    return judge0.Client(f"{judge0_service.url}/judge0", headers={"X-Auth-Token": KEY})


def test_sdk_round_trip(client):
    assert client.version == "1.13.1"
    assert client.is_language_supported(judge0.PYTHON)
    assert client.is_language_supported(judge0.C)
    result = judge0.run(
        client=client, source_code="print(input()[::-1])", stdin="judge0", language=judge0.PYTHON
    )
    assert result.status == judge0.Status.ACCEPTED
    assert result.stdout == "0egduj\n"
    assert result.time is not None and result.memory > 0


def test_sdk_statuses(client):
    cases = [
        ("print(1)", judge0.PYTHON, "1", judge0.Status.ACCEPTED),
        ("print(2)", judge0.PYTHON, "1", judge0.Status.WRONG_ANSWER),
        ("int main(void){for(;;){}}", judge0.C, None, judge0.Status.TIME_LIMIT_EXCEEDED),
        ("int main(void){return }", judge0.C, None, judge0.Status.COMPILATION_ERROR),
        (
            "int main(void){int*p=0;*p=1;return 0;}",
            judge0.C,
            None,
            judge0.Status.RUNTIME_ERROR_SIGSEGV,
        ),
        ("raise SystemExit(4)", judge0.PYTHON, None, judge0.Status.RUNTIME_ERROR_NZEC),
    ]
    submissions = [
        judge0.Submission(
            source_code=source, language=language, expected_output=expected, cpu_time_limit=1
        )
        for source, language, expected, _ in cases
    ]
    results = judge0.run(client=client, submissions=submissions)  # the batch endpoints
    assert [r.status for r in results] == [case[3] for case in cases]
    assert "error" in results[3].compile_output
    assert results[5].exit_code == 4


def test_raw_base64_fields_wait_and_errors(judge0_service):
    base = f"{judge0_service.url}/judge0"
    headers = {"X-Auth-Token": KEY}
    body = {
        "source_code": base64.b64encode(b"print(input())").decode(),
        "language_id": 71,
        "stdin": base64.b64encode(b"\xc3\xa9t\xc3\xa9").decode(),
    }
    done = httpx.post(
        f"{base}/submissions?base64_encoded=true&wait=true&fields=*",
        json=body,
        headers=headers,
        timeout=60,
    )
    assert done.status_code == 201, done.text
    data = done.json()
    assert data["status"] == {"id": 3, "description": "Accepted"}
    assert base64.b64decode(data["stdout"]) == "été\n".encode()
    assert data["language"]["id"] == 71 and data["token"]
    token = data["token"]
    some = httpx.get(
        f"{base}/submissions/{token}?fields=status_id,time,memory", headers=headers
    ).json()
    assert set(some) == {"status_id", "time", "memory"}
    assert isinstance(some["time"], str) and isinstance(some["memory"], int)
    default = httpx.get(f"{base}/submissions/{token}", headers=headers).json()
    assert set(default) == {
        "stdout",
        "time",
        "memory",
        "stderr",
        "token",
        "compile_output",
        "message",
        "status",
    }
    assert default["stdout"] == "été\n"  # base64_encoded=false by default
    listed = httpx.get(f"{base}/submissions?per_page=5", headers=headers).json()
    assert listed["meta"]["total_count"] >= 1
    bad = httpx.post(
        f"{base}/submissions", json={"source_code": "x", "language_id": 9999}, headers=headers
    )
    assert bad.status_code == 422 and "language_id" in bad.json()
    network = httpx.post(
        f"{base}/submissions",
        headers=headers,
        json={"source_code": "x", "language_id": 71, "enable_network": True},
    )
    assert network.status_code == 422 and "enable_network" in network.json()
    not_b64 = httpx.post(
        f"{base}/submissions?base64_encoded=true",
        headers=headers,
        json={"source_code": "%%%", "language_id": 71},
    )
    assert not_b64.status_code == 422 and "source_code" in not_b64.json()
    assert httpx.get(f"{base}/submissions/{token}").status_code == 401
    assert httpx.get(f"{base}/statuses", headers=headers).json()[2] == {
        "id": 3,
        "description": "Accepted",
    }
    config = httpx.get(f"{base}/config_info", headers=headers).json()
    assert config["enable_wait_result"] is True and config["allow_enable_network"] is False


def test_a_poll_reads_neither_the_program_nor_its_texts(judge0_service):
    """Judge0's clients poll GET /submissions/{token}, with Judge0's default
    fields most: that reads the fields it shows and the small part of the
    request stored apart, never the stored request (the program, its stdin
    and expected output may be megabytes). Asking for the program reads it
    whole, as does a record stored before that part was kept apart."""
    base = f"{judge0_service.url}/judge0"
    headers = {"X-Auth-Token": KEY}
    body = {"source_code": "print(input())", "language_id": 71, "stdin": "hi", "cpu_time_limit": 2}
    token = httpx.post(
        f"{base}/submissions?wait=true", json=body, headers=headers, timeout=60
    ).json()["token"]
    few = "status_id,language_id,cpu_time_limit,memory_limit,number_of_runs,callback_url"

    def get(fields: str | None = None) -> dict:
        params = {"fields": fields} if fields else {}
        one = httpx.get(f"{base}/submissions/{token}", params=params, headers=headers)
        many = httpx.get(
            f"{base}/submissions/batch", params={"tokens": token, **params}, headers=headers
        )
        assert (one.status_code, many.status_code) == (200, 200), (one.text, many.text)
        assert one.json() == many.json()["submissions"][0]
        return one.json()

    default, shown = get(), get(few)
    assert default["stdout"] == "hi\n" and default["status"]["id"] == 3
    assert shown == {
        "status_id": 3,
        "language_id": 71,
        "cpu_time_limit": 2.0,
        "memory_limit": 128000,
        "number_of_runs": None,
        "callback_url": None,
    }
    redis = Store.from_url(judge0_service.redis_url, TIMING).redis
    key = sub_key(token)
    stored = redis.hget(key, "request")
    # A request no one could parse: never read for these (reading it is a 500).
    redis.hset(key, "request", "not json")
    assert get() == default and get(few) == shown
    # The program asked for: the request is read, whole.
    redis.hset(key, "request", stored)
    assert get("source_code,stdin") == {"source_code": "print(input())", "stdin": "hi"}
    # A record of before: nothing rendered apart, so it is read whole.
    redis.hdel(key, RENDERED)
    assert get() == default and get(few) == shown
    # Older still, its language only in the request: read whole once a request.
    redis.hdel(key, "language")
    redis.config_resetstat()
    assert get() == default
    stats = redis.info("commandstats")
    assert stats["cmdstat_hgetall"]["calls"] == 2, stats  # one GET, one GET of many


def test_a_listing_reads_one_page_of_its_own_key(judge0_service):
    """GET /submissions pages through the caller's own index: it reads the
    page's records and no other key's, whatever the store holds; an entry whose
    record expired is dropped from the count; the one index of before (every
    key's submissions together) is moved into each key's on the API's start."""
    base = f"{judge0_service.url}/judge0"
    headers = {"X-Auth-Token": KEY}
    store = Store.from_url(judge0_service.redis_url, TIMING)
    redis = store.redis
    others = [
        store.create({"language": "python3", "source": "print(0)"}, kind="judge0", owner="other")
        for _ in range(30)
    ]
    body = {"source_code": "print(1)", "language_id": 71}
    mine = [
        httpx.post(f"{base}/submissions?wait=true", json=body, headers=headers, timeout=60).json()[
            "token"
        ]
        for _ in range(3)
    ]

    def listing(page: int, per_page: int = 2) -> dict:
        reply = httpx.get(
            f"{base}/submissions",
            params={"page": page, "per_page": per_page, "fields": "token,status_id"},
            headers=headers,
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    redis.config_resetstat()
    first = listing(1)
    stats = redis.info("commandstats")
    reads = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("hmget", "hgetall"))
    assert len(first["submissions"]) == 2 and reads <= 2, stats
    total = first["meta"]["total_count"]
    pages = first["meta"]["total_pages"]
    assert pages == -(-total // 2) and first["meta"]["next_page"] == 2
    listed = [row["token"] for page in range(1, pages + 1) for row in listing(page)["submissions"]]
    assert len(listed) == len(set(listed)) == total
    assert listed[:3] == mine[::-1] and not set(others) & set(listed)
    # Expired: its record gone, its entry older than result_ttl.
    index = judge0_index(redis.hget(sub_key(mine[0]), "owner").decode())
    redis.zadd(index, {mine[0]: redis.zscore(index, mine[0]) - TIMING.result_ttl - 60})
    redis.delete(sub_key(mine[0]))
    assert listing(1, 100)["meta"]["total_count"] == total - 1
    assert redis.zscore(index, mine[0]) is None
    # Never longer than twice a record's time, even for a key that never lists.
    assert 0 < redis.ttl(index) <= 2 * TIMING.result_ttl
    redis.zadd(index, {"created-long-ago": 1.0})
    httpx.post(f"{base}/submissions", json=body, headers=headers, timeout=60)
    assert redis.zscore(index, "created-long-ago") is None
    # The index of before: moved into each key's own.
    redis.zrem(index, mine[1])
    redis.zadd(JUDGE0_INDEX, {mine[1]: 1.0, "gone-long-ago": 2.0})
    assert mine[1] not in {r["token"] for r in listing(1, 100)["submissions"]}
    assert store.move_judge0_index() == 2
    assert redis.exists(JUDGE0_INDEX) == 0
    assert listing(1, 100)["submissions"][-1]["token"] == mine[1]


# --- Judge0's options, through the one schema (issue: Judge0 complete) --------


def _sdk_run(client, **fields):
    return judge0.run(client=client, submissions=judge0.Submission(**fields))


def test_sdk_command_line_arguments_compiler_options_and_stderr(client):
    args = _sdk_run(
        client,
        source_code="import sys\nprint(sys.argv[1:])",
        language=judge0.PYTHON,
        command_line_arguments="one 'two three' --four",
    )
    assert args.stdout == "['one', 'two three', '--four']\n", args
    c_source = (
        '#include <stdio.h>\nint main(void){\n#ifdef ONLINE_JUDGE\nputs("judged");\n#endif\n}\n'
    )
    plain = _sdk_run(client, source_code=c_source, language=judge0.C)
    assert plain.status == judge0.Status.ACCEPTED and not plain.stdout  # the control
    optioned = _sdk_run(
        client, source_code=c_source, language=judge0.C, compiler_options="-O2 -DONLINE_JUDGE"
    )
    assert optioned.stdout == "judged\n", optioned
    script = "import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr, flush=True)\n"
    merged = _sdk_run(
        client, source_code=script, language=judge0.PYTHON, redirect_stderr_to_stdout=True
    )
    assert merged.stdout == "out\nerr\n" and not merged.stderr, merged
    apart = _sdk_run(client, source_code=script, language=judge0.PYTHON)
    assert apart.stdout == "out\n" and apart.stderr == "err\n"
    averaged = _sdk_run(client, source_code="print(1)", language=judge0.PYTHON, number_of_runs=3)
    assert averaged.status == judge0.Status.ACCEPTED and averaged.number_of_runs == 3


def test_sdk_multi_file_program(client):
    files = judge0.Filesystem(
        content=[
            judge0.File(name="compile", content="gcc -O2 -o prog main.c helper.c\n"),
            judge0.File(name="run", content='./prog "$(cat data/name.txt)"\n'),
            judge0.File(
                name="main.c",
                content="#include <stdio.h>\nconst char *hi(void);\n"
                'int main(int c, char **v){printf("%s %s\\n", hi(), v[1]);}\n',
            ),
            judge0.File(name="helper.c", content='const char *hi(void){return "hello";}\n'),
            judge0.File(name="data/name.txt", content="judge0"),
        ]
    )
    result = _sdk_run(client, source_code="", language=judge0.MULTI_FILE, additional_files=files)
    assert result.status == judge0.Status.ACCEPTED, result
    assert result.stdout == "hello judge0\n"
    # Additional files beside a single-file program, too.
    beside = _sdk_run(
        client,
        source_code="print(open('data/name.txt').read())",
        language=judge0.PYTHON,
        additional_files=files,
    )
    assert beside.stdout == "judge0\n", beside
    broken = judge0.Filesystem(content=[judge0.File(name="run", content="exit 3\n")])
    failed = _sdk_run(client, source_code="", language=judge0.MULTI_FILE, additional_files=broken)
    assert failed.status == judge0.Status.RUNTIME_ERROR_NZEC and failed.exit_code == 3


def test_refusals_and_listings(judge0_service):
    import io
    import zipfile

    base = f"{judge0_service.url}/judge0"
    headers = {"X-Auth-Token": KEY}

    def post(**body):
        return httpx.post(f"{base}/submissions", json=body, headers=headers, timeout=30)

    refused = post(source_code="int main(){}", language_id=50, compiler_options="-fplugin=evil.so")
    assert refused.status_code == 422, refused.text
    assert "compiler_options" in refused.json() and "-fplugin=evil.so" in refused.text
    unbalanced = post(source_code="x", language_id=71, command_line_arguments="'open")
    assert unbalanced.status_code == 422 and "command_line_arguments" in unbalanced.json()
    runs = post(source_code="x", language_id=71, number_of_runs=50)
    assert runs.status_code == 422 and "number_of_runs" in runs.json()
    not_zip = post(source_code="x", language_id=71, additional_files="aGVsbG8=")
    assert not_zip.status_code == 422 and "additional_files" in not_zip.json()
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("../outside", "x")
    escaping = post(
        source_code="x",
        language_id=71,
        additional_files=base64.b64encode(packed.getvalue()).decode(),
    )
    assert escaping.status_code == 422 and "additional_files" in escaping.json(), escaping.text
    blank = post(source_code="", language_id=71)
    assert blank.status_code == 422 and "source_code" in blank.json()
    for token in ("not-a-token", "0" * 36, "%2e%2e"):
        assert httpx.get(f"{base}/submissions/{token}", headers=headers).status_code == 404
    listed = httpx.get(f"{base}/languages", headers=headers).json()
    names = {row["id"]: row["name"] for row in listed}
    import platform

    assert names[71] == f"Python ({platform.python_version()})" or names[71].startswith(
        "Python (3."
    )
    assert "version unknown" not in " ".join(names.values()), names
    assert 48 not in names and names[89] == "Multi-file program"
    assert httpx.get(f"{base}/languages/48", headers=headers).json()["is_archived"] is True
    config = httpx.get(f"{base}/config_info", headers=headers).json()
    assert config["enable_additional_files"] and config["enable_command_line_arguments"]
    assert config["max_number_of_runs"] == 10


def test_sdk_memory_hog_and_twenty_at_once(client):
    hog = "b = bytearray(400 << 20)\nb[::4096] = b'x' * len(b[::4096])\nprint('allocated')"
    result = _sdk_run(client, source_code=hog, language=judge0.PYTHON, memory_limit=65536)
    # Judge0 has no MLE status: 12, "Runtime Error (Other)", the message saying why.
    assert result.status == judge0.Status.RUNTIME_ERROR_OTHER, result
    assert "memory" in (result.message or "").lower() and not result.stdout
    submissions = [
        judge0.Submission(
            source_code=f"print(int(input()) * {i})", language=judge0.PYTHON, stdin="3"
        )
        for i in range(20)
    ]
    results = judge0.run(client=client, submissions=submissions)  # batches, then polls
    assert [r.stdout for r in results] == [f"{3 * i}\n" for i in range(20)]
    assert all(r.status == judge0.Status.ACCEPTED for r in results)
