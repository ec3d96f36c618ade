"""SandboxFusion compatibility, tested with SandboxFusion's own client (`pip install
sandbox-fusion`, only its endpoint changed) and with the exact JSON body verl's
reward functions post, against a real service (Redis, workers, the API)."""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sandbox_fusion
from sandbox_fusion import (
    CommandRunStatus,
    RunCodeRequest,
    RunStatus,
    SummaryMapping,
    summary_run_code_result,
)
from service_support import ApiServer, RedisServer, live_service, remove, scratch

from api.app import create_app
from api.sandboxfusion import render
from api.settings import Settings
from worker.store import Timing

KEY = "sandboxfusion-test-key"
TIMING = Timing(lease=4, renew=1, reap=1, limbo=4)
MAX_MEMORY = 512 << 20  # the cap, and what memory_limit_MB -1 (the client's) means
# The client's own reading of a response, with a name for each case.
SUMMARY = SummaryMapping(
    CompileFailed="CompileFailed",
    CompileTimeout="CompileTimeout",
    RunFailed="RunFailed",
    RunTimeout="RunTimeout",
)


@pytest.fixture(scope="module")
def service(test_user):
    with live_service(
        "cb-sf-",
        test_user.pw_name,
        TIMING,
        api_keys=frozenset({KEY}),
        rate_limit=0,
        max_memory=MAX_MEMORY,
    ) as api:
        yield api


@pytest.fixture(scope="module")
def endpoint(service):
    """The client's endpoint: the key travels as the URL's user-info (HTTP Basic),
    the one way SandboxFusion's client and verl can carry it."""
    url = service.url.replace("http://", f"http://cb:{KEY}@") + "/sandboxfusion"
    sandbox_fusion.set_endpoint(url)
    return url


def run(endpoint, **fields):
    # One attempt: the client's retries would hide a failure.
    return sandbox_fusion.run_code(RunCodeRequest(**fields), max_attempts=1)


def verl_post(endpoint, code, stdin, language, timeout=10, memory_mb=256):
    """Exactly what verl's call_sandbox_api sends (its URL ends in /run_code)."""
    payload = json.dumps(
        {
            "compile_timeout": timeout,
            "run_timeout": timeout,
            "code": code,
            "stdin": stdin,
            "memory_limit_MB": memory_mb,
            "language": language,
            "files": {},
            "fetch_files": [],
        }
    )
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    return httpx.post(
        f"{endpoint}/run_code", content=payload, headers=headers, timeout=2 * timeout + 60
    )


def test_client_hello_python_and_cpp(endpoint):
    python = run(endpoint, code='print("hello")', language="python")
    assert python.status == RunStatus.Success, python
    assert python.compile_result is None
    assert python.run_result.status == CommandRunStatus.Finished
    assert python.run_result.return_code == 0
    assert python.run_result.stdout == "hello\n" and python.run_result.stderr == ""
    assert python.run_result.execution_time > 0
    assert summary_run_code_result(python, SUMMARY) == "Success"
    cpp = run(
        endpoint,
        code='#include <iostream>\nint main(){std::cout << "hello" << std::endl;}',
        language="cpp",
    )
    assert cpp.status == RunStatus.Success, cpp
    assert cpp.compile_result.status == CommandRunStatus.Finished
    assert cpp.compile_result.return_code == 0
    assert cpp.run_result.stdout == "hello\n"
    assert summary_run_code_result(cpp, SUMMARY) == "Success"


def test_every_offered_language(endpoint):
    programs = {
        "python": "print(input()[::-1])",
        "cpp": "#include <iostream>\n#include <string>\n#include <algorithm>\n"
        "int main(){std::string s; std::cin >> s; std::reverse(s.begin(), s.end());"
        " std::cout << s << '\\n';}",
        "nodejs": 'const s = require("fs").readFileSync(0, "utf8").trim();'
        'console.log(s.split("").reverse().join(""));',
        "go": 'package main\nimport "fmt"\nfunc main(){var s string; fmt.Scan(&s);'
        " r := []rune(s); for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {"
        " r[i], r[j] = r[j], r[i] }; fmt.Println(string(r))}",
        "java": "import java.util.*;\npublic class Main { public static void main(String[] a)"
        " { String s = new Scanner(System.in).next();"
        " System.out.println(new StringBuilder(s).reverse()); } }",
        "bash": 'read s; r=""; for ((i=${#s}-1; i>=0; i--)); do r+="${s:i:1}"; done; echo "$r"',
        "rust": "use std::io::Read;\nfn main(){ let mut s = String::new();"
        " std::io::stdin().read_to_string(&mut s).unwrap();"
        ' println!("{}", s.trim().chars().rev().collect::<String>()); }',
    }
    with ThreadPoolExecutor(len(programs)) as pool:
        results = dict(
            zip(
                programs,
                pool.map(
                    lambda item: run(
                        endpoint,
                        code=item[1],
                        language=item[0],
                        stdin="cellblock",
                        compile_timeout=60,
                    ),
                    programs.items(),
                ),
                strict=True,
            )
        )
    for language, result in results.items():
        assert result.status == RunStatus.Success, (language, result)
        assert result.run_result.stdout == "kcolbllec\n", language
        compiled = language in ("cpp", "go", "java", "rust")
        assert (result.compile_result is not None) == compiled, language


def test_stdin_and_exact_output(endpoint):
    result = run(
        endpoint,
        code="import sys\ndata = sys.stdin.read()\n"
        "sys.stdout.write(data.upper() + '\\n\\n  tail  ')\nsys.stderr.write('to stderr')",
        language="python",
        stdin="line one\nline two é",
    )
    assert result.status == RunStatus.Success, result
    assert result.run_result.stdout == "LINE ONE\nLINE TWO É\n\n  tail  "
    assert result.run_result.stderr == "to stderr"


def test_nonzero_exit(endpoint):
    result = run(endpoint, code="print('partial')\nraise SystemExit(3)", language="python")
    assert result.status == RunStatus.Failed
    assert result.run_result.status == CommandRunStatus.Finished
    assert result.run_result.return_code == 3
    assert result.run_result.stdout == "partial\n"
    assert summary_run_code_result(result, SUMMARY) == "RunFailed"
    crash = run(endpoint, code="int main(){int*p=0;*p=1;return 0;}", language="cpp")
    assert crash.status == RunStatus.Failed
    assert crash.run_result.return_code == -11  # SIGSEGV, as Python's subprocess tells it


def test_compile_error_and_compile_timeout(endpoint):
    result = run(endpoint, code="int main(){ return }", language="cpp")
    assert result.status == RunStatus.Failed
    assert result.compile_result.status == CommandRunStatus.Finished
    assert result.compile_result.return_code not in (None, 0)
    assert "error" in result.compile_result.stderr
    assert result.run_result is None
    assert summary_run_code_result(result, SUMMARY) == "CompileFailed"
    slow = run(
        endpoint,
        code="#include <bits/stdc++.h>\nint main(){ std::cout << 1; }",
        language="cpp",
        compile_timeout=0.1,
    )
    assert slow.status == RunStatus.Failed
    assert slow.compile_result.status == CommandRunStatus.TimeLimitExceeded
    assert slow.compile_result.return_code is None
    assert slow.run_result is None
    assert summary_run_code_result(slow, SUMMARY) == "CompileTimeout"


def test_time_out(endpoint):
    busy = run(
        endpoint,
        code="print('started', flush=True)\nwhile True: pass",
        language="python",
        run_timeout=1,
    )
    assert busy.status == RunStatus.Failed
    assert busy.run_result.status == CommandRunStatus.TimeLimitExceeded
    assert busy.run_result.return_code is None
    assert busy.run_result.stdout == "started\n"  # what it wrote before, as SandboxFusion keeps
    assert summary_run_code_result(busy, SUMMARY) == "RunTimeout"
    asleep = run(endpoint, code="import time\ntime.sleep(60)", language="python", run_timeout=1)
    assert asleep.run_result.status == CommandRunStatus.TimeLimitExceeded  # wall clock
    # A timeout beyond the CPU cap (20 s) but within the wall-clock cap (60 s) is taken.
    long = run(endpoint, code="print('quick')", language="python", run_timeout=45)
    assert long.status == RunStatus.Success and long.run_result.stdout == "quick\n"


def test_memory_hog(endpoint):
    # The client sends no memory_limit_MB: -1, the operator's cap (512 MiB here).
    result = run(endpoint, code="x = bytearray(1 << 30)\nprint('survived')", language="python")
    assert result.status == RunStatus.Failed
    assert result.run_result.status == CommandRunStatus.Finished
    assert result.run_result.return_code == -9
    assert "survived" not in result.run_result.stdout
    assert "memory" in result.message
    assert summary_run_code_result(result, SUMMARY) == "RunFailed"
    within = run(endpoint, code="x = bytearray(64 << 20)\nprint('fine')", language="python")
    assert within.status == RunStatus.Success and within.run_result.stdout == "fine\n"


def test_files_in_and_fetch_files_out(endpoint):
    blob = bytes(range(256)) * 3
    result = run(
        endpoint,
        code="data = open('input/data.bin', 'rb').read()\n"
        "open('out.bin', 'wb').write(data[::-1])\n"
        "import os\nos.makedirs('sub', exist_ok=True)\n"
        "open('sub/note.txt', 'w').write(open('config.txt').read().upper())\n"
        "print(len(data))",
        language="python",
        files={
            "input/data.bin": base64.b64encode(blob).decode(),
            "config.txt": base64.b64encode(b"mode=fast").decode(),
        },
        fetch_files=["out.bin", "/box/sub/note.txt", "never-written.txt"],
    )
    assert result.status == RunStatus.Success, result
    assert result.run_result.stdout == f"{len(blob)}\n"
    assert set(result.files) == {"out.bin", "/box/sub/note.txt"}  # as the request names them
    assert base64.b64decode(result.files["out.bin"]) == blob[::-1]
    assert base64.b64decode(result.files["/box/sub/note.txt"]) == b"MODE=FAST"
    # A file given is there for the compile too.
    header = run(
        endpoint,
        code='#include <cstdio>\n#include "answer.h"\nint main(){ printf("%d\\n", ANSWER); }',
        language="cpp",
        files={"answer.h": base64.b64encode(b"#define ANSWER 42\n").decode()},
    )
    assert header.status == RunStatus.Success, header
    assert header.run_result.stdout == "42\n"


def test_verl_body(endpoint):
    hello = verl_post(endpoint, "print(int(input()) * 2)", "21", "python")
    assert hello.status_code == 200, hello.text
    data = hello.json()
    assert data["status"] == "Success"
    assert data["run_result"]["status"] == "Finished"
    assert data["run_result"]["stdout"].rstrip("\n") == "42"
    assert data["run_result"]["return_code"] == 0
    assert set(data) >= {"status", "message", "compile_result", "run_result", "files"}
    cpp = verl_post(
        endpoint,
        "#include <iostream>\nint main(){int a,b; std::cin >> a >> b; std::cout << a+b;}",
        "40 2",
        "cpp",
    ).json()
    assert cpp["status"] == "Success" and cpp["run_result"]["stdout"] == "42"
    assert cpp["compile_result"]["status"] == "Finished"
    failed = verl_post(endpoint, "import sys; sys.exit(1)", "", "python").json()
    assert failed["status"] == "Failed" and failed["run_result"]["return_code"] == 1
    compile_error = verl_post(endpoint, "int main(){ nope }", "", "cpp").json()
    assert compile_error["status"] == "Failed" and compile_error["run_result"] is None
    assert compile_error["compile_result"]["return_code"] != 0
    timeout = verl_post(endpoint, "while True: pass", "", "python", timeout=1).json()
    assert timeout["status"] == "Failed"
    assert timeout["run_result"]["status"] == "TimeLimitExceeded"
    hog = verl_post(endpoint, "x = bytearray(512 << 20)", "", "python", memory_mb=128).json()
    assert hog["status"] == "Failed" and hog["run_result"]["return_code"] == -9


def test_twenty_at_once(endpoint):
    """verl sends many requests at once; each gets its own answer."""
    code = "import sys\nn = int(sys.stdin.read())\nprint(n * n)"
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda n: verl_post(endpoint, code, str(n), "python"), range(20)))
    for n, response in enumerate(responses):
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["status"] == "Success", data
        assert data["run_result"]["stdout"] == f"{n * n}\n"


def test_async_client_twenty_at_once(endpoint):
    """The client's asyncio variant (aiohttp), 20 requests in flight together."""

    async def all_of_them():
        return await asyncio.gather(
            *(
                sandbox_fusion.run_code_async(
                    RunCodeRequest(code=f"print({n} + int(input()))", language="python", stdin="1"),
                    max_attempts=1,
                )
                for n in range(20)
            )
        )

    results = asyncio.run(all_of_them())
    assert [r.run_result.stdout for r in results] == [f"{n + 1}\n" for n in range(20)]
    assert all(r.status == RunStatus.Success for r in results)


def test_malformed_requests_are_4xx(endpoint):
    url = f"{endpoint}/run_code"
    ok = {"code": "print(1)", "language": "python"}
    cases = [
        ({}, "code"),
        ({"code": "print(1)"}, "language"),
        ({**ok, "language": "klingon"}, "language"),
        ({**ok, "language": "php"}, "language"),  # SandboxFusion's, not offered here
        ({**ok, "run_timeout": -1}, "run_timeout"),
        ({**ok, "run_timeout": 1e9}, "run_timeout"),
        ({**ok, "run_timeout": "soon"}, "run_timeout"),
        ({**ok, "compile_timeout": 1e9}, "compile_timeout"),
        ({**ok, "memory_limit_MB": 10**6}, "memory_limit_MB"),
        ({**ok, "memory_limit_MB": 10**30}, "memory_limit_MB"),
        ({**ok, "memory_limit_MB": "lots"}, "memory_limit_MB"),
        ({**ok, "files": {"../escape.txt": "aGk="}}, "files"),
        ({**ok, "files": {"/etc/passwd": "aGk="}}, "files"),
        ({**ok, "files": {"a.txt": "%%% not base64"}}, "files"),
        ({**ok, "files": ["a.txt"]}, "files"),
        ({**ok, "files": {"main.py": "aGk="}}, "files"),  # the code's own file here
        ({**ok, "files": {"/box/main.py": "aGk="}}, "files"),
        ({**ok, "run_timeout": 61}, "run_timeout"),  # beyond the wall-clock cap
        ({**ok, "fetch_files": ["/etc/passwd"]}, "fetch_files"),
        ({**ok, "fetch_files": ["../x"]}, "fetch_files"),
        ({**ok, "fetch_files": "out.txt"}, "fetch_files"),
        ({**ok, "fetch_files": [f"f{i}" for i in range(1000)]}, "fetch_files"),
        ({**ok, "stdin": 5}, "stdin"),
        ({**ok, "code": None}, "code"),
    ]
    for body, field in cases:
        response = httpx.post(url, json=body, timeout=30)
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        locs = [e["loc"] for e in response.json()["detail"]]
        assert any(field in loc for loc in locs), (body, response.text)
    raw = [
        b'{"code": "print(1)", "language": "python", "run_timeout": NaN}',
        b'{"code": "\\ud800", "language": "python"}',
        b"not json",
        b"[1, 2]",
        b"",
    ]
    for content in raw:
        response = httpx.post(
            url, content=content, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert 400 <= response.status_code < 500, (content, response.status_code, response.text)
        assert "detail" in response.json()


def test_keys_ping_and_languages(service, endpoint):
    base = f"{service.url}/sandboxfusion"
    assert httpx.get(f"{endpoint}/v1/ping").json() == "pong"
    assert httpx.get(f"{base}/v1/ping").status_code == 401
    assert httpx.get(f"{base}/v1/ping", auth=("cb", "wrong")).status_code == 401
    assert httpx.get(f"{base}/v1/ping", headers={"X-Auth-Token": KEY}).json() == "pong"
    assert httpx.get(f"{base}/v1/ping", auth=(KEY, "")).json() == "pong"
    refused = httpx.post(f"{base}/run_code", json={"code": "print(1)", "language": "python"})
    assert refused.status_code == 401
    bearer = httpx.post(
        f"{base}/run_code",
        json={"code": "print(1)", "language": "python"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert bearer.json()["run_result"]["stdout"] == "1\n"
    listed = httpx.get(f"{endpoint}/languages").json()
    names = {item["language"]: item for item in listed}
    assert set(names) == {"python", "cpp", "nodejs", "go", "java", "bash", "rust"}
    assert names["nodejs"]["cellblock_language"] == "javascript"
    assert all("version" in item for item in listed)
    assert httpx.post(f"{endpoint}/run_jupyter", json={"cells": ["1"]}).status_code == 404
    assert httpx.post(f"{endpoint}/submit", json={}).status_code == 404


def test_no_worker_is_a_sandbox_error_at_once():
    """With no live worker the answer is SandboxError now, not after the wait."""
    directory = scratch("cb-sf0-")
    server = RedisServer(directory).start()
    settings = Settings.from_env(redis_url=server.url, rate_limit=0)
    api = ApiServer(create_app(settings, TIMING)).start()
    try:
        response = httpx.post(
            f"{api.url}/sandboxfusion/run_code",
            json={"code": "print(1)", "language": "python"},
            timeout=20,
        )
        assert response.status_code == 200
        assert response.json()["status"] == "SandboxError"
        assert "no live worker" in response.json()["message"]
    finally:
        api.stop()
        server.stop()
        remove(directory)


def test_infrastructure_failures_are_sandbox_errors():
    """A submission the workers gave up on (failed after its attempts) or an
    internal error is SandboxError with the reason, never a verdict of the code;
    SandboxFusion's client raises on it (and retries)."""
    failed = render({"id": "x", "status": "failed", "error": "lost worker (attempt 3 of 3)"})
    assert failed["status"] == "SandboxError"
    assert failed["message"] == "lost worker (attempt 3 of 3)"
    assert failed["run_result"] is None and failed["compile_result"] is None
    assert sandbox_fusion.RunCodeResponse(**failed).status == RunStatus.SandboxError
    internal = render(
        {
            "id": "x",
            "status": "done",
            "result": {"verdict": "IE", "message": "the compile cell failed", "tests": []},
        }
    )
    assert internal["status"] == "SandboxError"
    assert internal["message"] == "the compile cell failed"
