"""Piston v2 compatibility, tested against a real service with Piston's own clients:
the npm `piston-client` (run by node, installed by scripts/install in /opt/cellblock/npm),
the PyPI `pistonapi`, and open-r1's request shape (its Piston client posts JSON) via httpx.
The version ranges (node-semver's subset) are a pure function, tested on their own."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pistonapi
import pytest
from service_support import ApiServer, live_service

from api.app import create_app
from api.piston import reduce_version, satisfies
from api.settings import Settings
from worker.store import Timing

TIMING = Timing(lease=4, renew=1, reap=1, limbo=4)
NPM = Path(os.environ.get("CELLBLOCK_NPM", "/opt/cellblock/npm"))


@pytest.mark.parametrize(
    ("spec", "yes", "no"),
    [
        ("*", ["0.0.0", "3.11.2"], []),
        ("x", ["3.11.2"], []),
        ("", ["3.11.2"], []),
        ("3.11.2", ["3.11.2"], ["3.11.3", "3.11.1"]),
        ("=3.11.2", ["3.11.2"], ["3.11.3"]),
        ("v3.11.2", ["3.11.2"], ["3.11.3"]),
        ("3.11", ["3.11.0", "3.11.9"], ["3.12.0", "3.10.9"]),
        ("3", ["3.0.0", "3.99.1"], ["4.0.0", "2.9.9"]),
        ("3.x", ["3.1.0"], ["4.0.0"]),
        ("3.11.x", ["3.11.7"], ["3.12.0"]),
        ("3.X.x", ["3.5.5"], ["2.5.5"]),
        ("^3.9.1", ["3.9.1", "3.12.0"], ["3.9.0", "4.0.0"]),
        ("^0.2.3", ["0.2.9"], ["0.3.0", "0.2.2"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4"]),
        ("^0.0.x", ["0.0.9"], ["0.1.0"]),
        ("^0.x", ["0.9.0"], ["1.0.0"]),
        ("^1.x", ["1.9.0"], ["2.0.0"]),
        ("~3.11.1", ["3.11.1", "3.11.9"], ["3.12.0", "3.11.0"]),
        ("~3.11", ["3.11.0"], ["3.12.0"]),
        ("~3", ["3.99.0"], ["4.0.0"]),
        ("~>3.1.2", ["3.1.5"], ["3.2.0"]),
        (">=3.10", ["3.10.0", "12.2.0"], ["3.9.99"]),
        (">= 3.10.0", ["3.10.0"], ["3.9.0"]),
        (">3.10", ["3.11.0"], ["3.10.5"]),
        (">3.10.2", ["3.10.3"], ["3.10.2"]),
        (">3", ["4.0.0"], ["3.99.0"]),
        ("<3.10", ["3.9.9"], ["3.10.0"]),
        ("<=3.10", ["3.10.99"], ["3.11.0"]),
        ("<=3.10.1", ["3.10.1"], ["3.10.2"]),
        (">=3.9 <3.12", ["3.11.2"], ["3.12.0", "3.8.0"]),
        ("1.2.3 - 2.3.4", ["1.2.3", "2.3.4"], ["2.3.5", "1.2.2"]),
        ("1.2 - 2.3", ["1.2.0", "2.3.9"], ["2.4.0", "1.1.9"]),
        ("<3 || >=12", ["2.0.0", "12.2.0"], ["3.11.2"]),
        (">*", [], ["0.0.0", "3.0.0"]),
        ("<*", [], ["0.0.0"]),
        (">=*", ["1.0.0"], []),
        ("3.11.2-beta", [], ["3.11.2"]),
        (">=3.11.2-0", ["3.11.2"], ["3.11.1"]),
        ("<3.11.2-beta", ["3.11.1"], ["3.11.2"]),
        ("1.x.3", ["1.0.0", "1.9.9"], ["2.0.0"]),  # what follows a wildcard counts for nothing
        ("03.11.2", [], ["3.11.2"]),
        ("3.11-beta", [], ["3.11.0"]),
        ("latest", [], ["3.11.2"]),
        ("3.11.2.1", [], ["3.11.2"]),
        (">>3", [], ["3.11.2"]),
    ],
)
def test_version_ranges_as_node_semver(spec, yes, no):
    for version in yes:
        assert satisfies(version, spec), (version, spec)
    for version in no:
        assert not satisfies(version, spec), (version, spec)


def test_version_lines_reduced():
    assert reduce_version("Python 3.11.2") == "3.11.2"
    assert reduce_version("go version go1.19.8 linux/amd64") == "1.19.8"
    assert reduce_version('openjdk version "17.0.9" 2023-10-17') == "17.0.9"
    assert reduce_version("GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)") == "5.2.15"
    assert reduce_version("v18.19.0") == "18.19.0"
    assert reduce_version("12") == "12.0.0"
    assert reduce_version("rustc 1.63.0") == "1.63.0"
    assert reduce_version("") == reduce_version(None) == "0.0.0"


@pytest.fixture(scope="module")
def piston(test_user):
    with live_service(
        "cb-piston-", test_user.pw_name, TIMING, rate_limit=0, wait_timeout=30.0
    ) as api:
        yield api


def execute(piston, body, **kwargs):
    return httpx.post(f"{piston.url}/piston/api/v2/execute", json=body, timeout=120, **kwargs)


def run(piston, language, source, **fields):
    """A Piston execute of one file; the response's JSON (asserted 200)."""
    body = {"language": language, "version": "*", "files": [{"content": source}], **fields}
    response = execute(piston, body)
    assert response.status_code == 200, response.text
    return response.json()


def test_runtimes_list_the_workers_languages_with_versions(piston):
    listed = httpx.get(f"{piston.url}/piston/api/v2/runtimes").json()
    by_name = {rt["language"]: rt for rt in listed}
    assert {"python", "c", "c++", "javascript", "bash"} <= set(by_name)
    assert by_name["python"]["aliases"] == ["py", "py3", "python3"]
    assert by_name["c++"]["runtime"] == "gcc" and "cpp" in by_name["c++"]["aliases"]
    assert "runtime" not in by_name["python"]
    # The version is the one the workers report (GET /v1/languages), as X.Y.Z.
    ours = {lang["id"]: lang for lang in httpx.get(f"{piston.url}/v1/languages").json()}
    assert ours["python3"]["version"].startswith("Python 3.")
    assert by_name["python"]["version"] == reduce_version(ours["python3"]["version"])
    # Judge0's 89 (scripts, not one language) is on the workers but not a Piston runtime.
    assert ours["multifile"]["workers"] > 0 and "multifile" not in by_name
    for rt in listed:
        assert satisfies(rt["version"], "*"), rt
    packages = httpx.get(f"{piston.url}/piston/api/v2/packages").json()
    assert {"language": "python", "language_version": by_name["python"]["version"],
            "installed": True} in packages  # fmt: skip
    assert httpx.get(f"{piston.url}/piston/").json()["message"].startswith("Piston v")
    assert httpx.get(f"{piston.url}/piston/api/v2/runtimes/").json() == listed


NODE_SCRIPT = """
import piston from "piston-client";
const client = piston({ server: process.argv[2] });
const out = {};
out.runtimes = await client.runtimes();
out.hello = await client.execute("python", "import sys\\nprint('hello', sys.argv[1:])");
out.config = await client.execute({
  language: "c++", version: "*",
  files: [{ name: "sum.cpp", content:
    "#include <iostream>\\nint main(int c, char** v){long a,b; std::cin>>a>>b;" +
    "std::cout<<a+b<<' '<<v[1]<<std::endl; return 0;}" }],
  stdin: "40 2", args: ["x"],
});
out.js = await client.execute("javascript", "console.log(process.argv.length)",
                              { args: [] });
out.bad = await client.execute("brainfuck", "+", { version: "1.0.0" });
console.log(JSON.stringify(out));
"""


def test_npm_piston_client(piston, tmp_path):
    if not (NPM / "node_modules" / "piston-client").is_dir():
        pytest.fail(f"piston-client is not installed in {NPM} (scripts/install installs it)")
    script = tmp_path / "client.mjs"
    script.write_text(NODE_SCRIPT)
    # node resolves bare imports from the script's directory upwards: link the modules there.
    (tmp_path / "node_modules").symlink_to(NPM / "node_modules")
    done = subprocess.run(
        ["node", str(script), f"{piston.url}/piston"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert any(rt["language"] == "python" for rt in out["runtimes"])
    # The client sends no JSON Content-Type and args 1 2 3 unless told otherwise.
    assert out["hello"]["run"] == {
        **out["hello"]["run"],
        "stdout": "hello ['1', '2', '3']\n",
        "stderr": "",
        "code": 0,
        "signal": None,
        "output": "hello ['1', '2', '3']\n",
    }
    assert out["hello"]["language"] == "python" and "compile" not in out["hello"]
    assert out["config"]["compile"]["code"] == 0
    assert out["config"]["run"]["stdout"] == "42 x\n" and out["config"]["language"] == "c++"
    assert out["js"]["run"]["stdout"] == "2\n"  # node and the script: no arguments
    assert out["bad"] == {"message": "brainfuck-1.0.0 runtime is unknown"}


def test_pypi_pistonapi(piston):
    # pistonapi posts a form (files as strings) and reads run.output.
    client = pistonapi.PistonAPI(endpoint=f"{piston.url}/piston/api/v2")
    runtimes = client.runtimes
    assert "python" in runtimes and "py3" in runtimes["python"]["aliases"]
    version = runtimes["python"]["version"]
    assert client.execute("python", version, "print(input()[::-1])", stdin="abc") == "cba\n"
    assert client.execute("py", "3.x", "import sys\nprint(sys.argv[1:])", args=["a", "b"]) == (
        "['a', 'b']\n"
    )
    with pytest.raises(pistonapi.PistonError, match="python-9.9.9 runtime is unknown"):
        client.execute("python", "9.9.9", "print(1)")


def test_hello_stdin_args_exit_codes_and_exact_output(piston):
    c = run(piston, "c", '#include <stdio.h>\nint main(void){puts("hello, c");return 0;}')
    assert c["run"]["stdout"] == "hello, c\n" and c["compile"]["code"] == 0
    assert c["run"]["code"] == 0 and c["run"]["signal"] is None
    # stdin gets a last newline, as Piston gives it; the output is exactly the program's.
    echo = run(piston, "python3", "import sys\nsys.stdout.write(repr(sys.stdin.read()))",
               stdin="a  b\n\nc")  # fmt: skip
    assert echo["run"]["stdout"] == "'a  b\\n\\nc\\n'"
    exact = run(piston, "bash", "printf 'x \\t\\r\\n é\\n\\n  '; printf err >&2; exit 3")
    assert exact["run"]["stdout"] == "x \t\r\n é\n\n  "
    assert exact["run"]["stderr"] == "err"
    assert exact["run"]["output"] == "x \t\r\n é\n\n  err"
    assert exact["run"]["code"] == 3 and exact["run"]["signal"] is None
    assert exact["run"]["status"] == "RE"
    args = run(piston, "py", "import sys\nprint(sys.argv[1:])", args=["one", "two words", ""])
    assert args["run"]["stdout"] == "['one', 'two words', '']\n"
    segv = run(piston, "c", "int main(void){volatile int*p=0;*p=1;return 0;}")
    assert segv["run"]["signal"] == "SIGSEGV" and segv["run"]["code"] is None


def test_compile_error_time_out_and_memory_hog(piston):
    broken = run(piston, "c++", "int main() { return }")
    assert broken["compile"]["code"] not in (0, None)
    assert "error" in broken["compile"]["stderr"]
    assert broken["run"] == broken["compile"]  # Piston's answer when nothing ran
    # compile_timeout is the compile's time: a C++ compile in 1 ms is stopped.
    stopped = run(piston, "cpp", "int main() { return 0; }", compile_timeout=1)
    assert stopped["compile"]["status"] == "TO" and stopped["compile"]["signal"] == "SIGKILL"
    assert stopped["run"] == stopped["compile"]
    # compile_memory_limit is the compile's memory: g++ on bits/stdc++.h needs more than 16 MiB.
    starved = run(piston, "cpp", "#include <bits/stdc++.h>\nint main() {}",
                  compile_memory_limit=16 << 20)  # fmt: skip
    assert (starved["compile"]["code"], starved["compile"]["signal"]) != (0, None)
    assert starved["run"] == starved["compile"]
    slow = run(piston, "python", "while True: pass", run_timeout=1000)
    assert slow["run"]["signal"] == "SIGKILL" and slow["run"]["code"] is None
    assert slow["run"]["status"] == "TO" and slow["run"]["stdout"] == ""
    hog = run(piston, "python", "x = bytearray(1 << 30)\nprint(len(x))",
              run_memory_limit=64 * 1024 * 1024)  # fmt: skip
    assert hog["run"]["signal"] == "SIGKILL" and hog["run"]["stdout"] == ""
    assert hog["run"]["memory"] > 32 * 1024 * 1024
    fits = run(piston, "python", "x = bytearray(1 << 20)\nprint(len(x))", run_memory_limit=-1)
    assert fits["run"]["stdout"] == "1048576\n"


def test_files_in_the_working_directory(piston):
    body = {
        "language": "python",
        "version": "3",
        "files": [
            {
                "name": "data.bin",
                "content": base64.b64encode(b"\x00\xffbin").decode(),
                "encoding": "base64",
            },  # fmt: skip
            {
                "name": "prog.py",
                "content": "import helper, os\n"
                "print(helper.X, open('data.bin','rb').read(), open('sub/h.txt').read())",
            },
            {"name": "helper.py", "content": "X = 42"},
            {"name": "sub/h.txt", "content": "6869", "encoding": "hex"},
        ],
    }
    response = execute(piston, body)
    assert response.status_code == 200, response.text
    assert response.json()["run"]["stdout"] == "42 b'\\x00\\xffbin' hi\n"


def test_open_r1_request_shape(piston):
    """open-r1's Piston client: JSON with Content-Type, version "*", extra files
    (input and expected output, graders in a directory), run_timeout as the
    problem's limit plus a margin (over Piston's 3 s), run_memory_limit; it reads
    `message`, compile.code/stderr and run.stdout/stderr/code/signal."""
    solution = (
        '#include <bits/stdc++.h>\nint main(){std::ifstream in("input.txt");long a,b;'
        'in>>a>>b;std::ifstream want("correct_output.txt");long w;want>>w;'
        'std::ifstream g("graders/grader_config");std::string s;g>>s;'
        'std::cout<<(a+b==w?"1":"0")<<std::endl;std::cerr<<s<<std::endl;}'
    )
    body = {
        "files": [
            {"name": "main.cpp", "content": solution},
            {"name": "input.txt", "content": "40 2\n"},
            {"name": "correct_output.txt", "content": "42\n"},
            {"name": "graders/grader_config", "content": "TIME_LIMIT=1\n"},
        ],
        "run_timeout": (1 + 10) * 1000,
        "run_memory_limit": 256 * 1024 * 1024,
        "language": "c++",
        "version": "*",
    }
    response = execute(piston, body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert "message" not in result
    assert result["compile"]["code"] == 0
    assert result["run"]["stdout"] == "1\n" and result["run"]["stderr"] == "TIME_LIMIT=1\n"
    # Its own packages are Piston packages with judging inside: unknown here, said as Piston does.
    ioi = execute(piston, {**body, "language": "cms_ioi"})
    assert ioi.status_code == 400 and ioi.json() == {"message": "cms_ioi-* runtime is unknown"}


def test_twenty_concurrent_requests(piston):
    def one(i):
        return run(piston, "python", f"print({i} * int(input()))", stdin="3")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert [r["run"]["stdout"] for r in results] == [f"{3 * i}\n" for i in range(20)]


MALFORMED = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"", "language is required as a string"),
    ({"version": "*", "files": []}, "language is required as a string"),
    ({"language": 3, "version": "*", "files": []}, "language is required as a string"),
    ({"language": "python", "files": []}, "version is required as a string"),
    ({"language": "python", "version": 3, "files": []}, "version is required as a string"),
    ({"language": "python", "version": "*"}, "files is required as an array"),
    ({"language": "python", "version": "*", "files": {"a": 1}}, "files is required as an array"),
    ({"language": "python", "version": "*", "files": [None]}, "files[0].content is required"),
    ({"language": "python", "version": "*", "files": [{"content": 1}]}, "files[0].content"),
    ({"language": "python", "version": "*", "files": [{}]}, "files[0].content"),
    ({"language": "nope", "version": "*", "files": [{"content": ""}]}, "nope-* runtime is unknown"),
    ({"language": "python", "version": "latest", "files": [{"content": ""}]}, "runtime is unknown"),
    (
        {"language": "python", "version": "*", "files": [{"content": "", "encoding": "base64"}]},
        "at least one utf8",
    ),  # fmt: skip
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": "1"},
        "run_timeout must be a number",
    ),  # fmt: skip
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": 10**9},
        "run_timeout cannot exceed the configured limit",
    ),  # fmt: skip
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": 1e400},
        "run_timeout",
    ),  # fmt: skip
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}],
            "run_memory_limit": 1 << 50,
        },
        "run_memory_limit cannot exceed",
    ),  # fmt: skip
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}],
            "run_memory_limit": "lots",
        },
        "run_memory_limit must be a number",
    ),  # fmt: skip
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "args": "a b"},
        "args must be an array",
    ),  # fmt: skip
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "args": [{}]},
        "args must be an array",
    ),  # fmt: skip
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "stdin": 5},
        "stdin must be a string",
    ),  # fmt: skip
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}, {"name": "../up", "content": "y"}],
        },
        "files[1]",
    ),  # fmt: skip
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}, {"content": "zz", "encoding": "hex"}],
        },
        "not valid hex",
    ),
    ({"language": "python", "version": "*", "files": [{"content": "\ud800"}]}, "files[0]"),
    ({"language": "\ud800", "version": "*", "files": [{"content": "x"}]}, "runtime is unknown"),
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}, {"name": "/etc/x", "content": "y"}],
        },
        "files[1].name",
    ),
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}, {"name": "a", "content": ""}, {"name": "a", "content": ""}],
        },
        "files[2].name: a is given twice",
    ),  # fmt: skip
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"name": "prog.py", "content": "x"}, {"name": "main.py", "content": ""}],
        },
        "files[1].name: main.py is the name the main file gets",
    ),  # fmt: skip
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "args": ["a\u0000"]},
        "NUL",
    ),  # fmt: skip
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": -5},
        "run_timeout must be non-negative",
    ),  # fmt: skip
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}],
            "run_memory_limit": 10**400,
        },
        "run_memory_limit cannot exceed",
    ),  # fmt: skip
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}],
            "compile_timeout": -(10**400),
        },
        "compile_timeout must be non-negative",
    ),  # fmt: skip
    (
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "x"}],
            "run_memory_limit": 1000,
        },
        "run_memory_limit",
    ),  # fmt: skip
    ({"language": "python", "version": "*", "files": [{"content": "x"}] * 300}, "files"),
    (
        {"language": "python", "version": "*", "files": [{"content": "x"}], "args": ["a"] * 300},
        "args",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("body", "says"), MALFORMED)
def test_malformed_requests_are_piston_400s(piston, body, says):
    url = f"{piston.url}/piston/api/v2/execute"
    if isinstance(body, bytes):
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
    else:
        # json.dumps keeps a lone surrogate as its escape (httpx would refuse to encode
        # it); no Content-Type, as the npm client sends none of JSON's.
        response = httpx.post(url, content=json.dumps(body), timeout=60)
    assert response.status_code == 400, response.text
    data = response.json()
    assert list(data) == ["message"] and says in data["message"], data


def test_other_errors_in_piston_shape(piston):
    missing = httpx.get(f"{piston.url}/piston/api/v2/nothing-here")
    assert missing.status_code == 404 and missing.json() == {"message": "Not Found"}
    install = httpx.post(
        f"{piston.url}/piston/api/v2/packages", json={"language": "bash", "version": "5.x"}
    )
    assert install.status_code == 400 and list(install.json()) == ["message"]
    uninstall = httpx.request(
        "DELETE", f"{piston.url}/piston/api/v2/packages", json={"language": "bash", "version": "*"}
    )
    assert uninstall.status_code == 400 and "operator" in uninstall.json()["message"]
    # The contract's own shape stays everywhere else.
    other = httpx.post(f"{piston.url}/v1/submissions", json={"language": 1})
    assert other.status_code == 422 and "detail" in other.json()


def test_keys_refuse_in_piston_shape(piston):
    # A second API on the same queue and workers, with keys: Piston's clients send
    # none, so they are refused, in Piston's shape; a key in a header lets them in.
    settings = Settings.from_env(
        redis_url=piston.redis_url, api_keys=frozenset({"k"}), rate_limit=0, wait_timeout=30.0
    )
    keyed = ApiServer(create_app(settings, TIMING)).start()
    try:
        refused = httpx.get(f"{keyed.url}/piston/api/v2/runtimes")
        assert refused.status_code == 401 and list(refused.json()) == ["message"]
        assert "API key" in refused.json()["message"]
        body = {"language": "bash", "version": "*", "files": [{"content": "echo ok"}]}
        allowed = httpx.post(
            f"{keyed.url}/piston/api/v2/execute", json=body, headers={"X-Auth-Token": "k"},
            timeout=60,
        )  # fmt: skip
        assert allowed.status_code == 200 and allowed.json()["run"]["stdout"] == "ok\n"
    finally:
        keyed.stop()
