"""The one request path of worker/ (worker/request.py): an HTTP submission and a
batch item are parsed by the same code; only a batch may name host files.
Pure logic: no cell runs here (built-in checkers only)."""

from __future__ import annotations

import re

import pytest

from worker.checkers import CheckerError, FloatChecker, LinesChecker, build_checker
from worker.request import JudgeRequest, RequestError

BASE = {"language": "python3", "source": "print(1)"}


def test_a_request_without_tests_is_a_single_run_on_stdin():
    request = JudgeRequest.parse({**BASE, "stdin": "5\n", "expected_output": "1\n"})
    assert request.single_run
    assert [(t.name, t.input, t.answer) for t in request.tests] == [("1", b"5\n", b"1\n")]
    assert isinstance(request.checker, LinesChecker)
    assert request.feedback == "diff"


def test_tests_limits_and_the_appended_test():
    request = JudgeRequest.parse(
        {
            **BASE,
            "test": "assert True",
            "tests": [{"name": "a", "input": "1", "output": "2", "score": 3}],
            "limits": {"time": 1, "memory": "64M", "output": "1M"},
            "checker": "float:1e-3",
        }
    )
    assert not request.single_run and request.source == b"print(1)\nassert True\n"
    assert (request.limits.time, request.limits.memory, request.limits.output_limit) == (
        1.0,
        64 << 20,
        1 << 20,
    )
    assert request.limits.effective_wall_time == 3.0
    assert isinstance(request.checker, FloatChecker)


def test_a_batch_s_defaults_fill_what_an_item_leaves_out():
    defaults = {"limits": {"time": 3, "memory": "128M"}, "feedback": "none", "checker": "tokens"}
    request = JudgeRequest.parse({**BASE, "limits": {"time": 1}}, defaults)
    assert (request.limits.time, request.limits.memory) == (1.0, 128 << 20)
    assert request.feedback == "none"
    own = JudgeRequest.parse({**BASE, "feedback": "verdict", "checker": "exact"}, defaults)
    assert own.feedback == "verdict" and type(own.checker).__name__ == "ExactChecker"


def test_only_a_request_from_this_machine_may_name_host_files(tmp_path):
    (tmp_path / "1.in").write_text("1\n")
    (tmp_path / "1.out").write_text("1\n")
    item = {**BASE, "tests_dir": str(tmp_path)}
    # Control: the batch (host_paths) reads the directory...
    assert [t.name for t in JudgeRequest.parse(item, host_paths=True).tests] == ["1"]
    # ...a request that came over HTTP may not.
    with pytest.raises(RequestError, match="tests_dir"):
        JudgeRequest.parse(item)
    checker = tmp_path / "check.sh"
    checker.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(CheckerError, match="not a built-in checker"):
        build_checker(str(checker), host_paths=False)
    with pytest.raises(RequestError, match="not a built-in checker"):
        JudgeRequest.parse({**BASE, "checker": str(checker)})
    assert type(build_checker(str(checker))).__name__ == "ProgramChecker"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"language": "cobol"}, "cobol"),
        ({"source": 5}, "source: a string is required"),
        ({"tests": []}, "tests: empty"),
        ({"tests": "1"}, "tests: a list"),
        ({"limits": {"cpu": 1}}, "unknown limit"),
        ({"limits": [1]}, "limits: expected an object"),
        ({"feedback": "all"}, "feedback 'all'"),
        ({"checker": 7}, "checker: a name"),
        ({"checker": {"language": "python3"}}, "checker: {language, source}"),
        ({"stdin": 5}, "stdin and expected_output"),
        ({"args": "x"}, "args: a list of strings"),
        ({"args": ["a\0"]}, "args: no NUL"),
        ({"files": [{"path": "../x", "content": ""}]}, "files[0].path"),
        ({"files": [{"path": "main.py", "content": ""}]}, "given twice"),
        ({"files": [{"path": "a", "content": "!", "encoding": "base64"}]}, "not valid base64"),
        ({"files": [{"path": "a", "content": "", "encoding": "hex"}]}, "utf8 or base64"),
        ({"output_files": ["/etc/passwd"]}, "must name a file under /box"),
        ({"compile_options": ["-fplugin=x.so"]}, "'-fplugin=x.so' is not allowed"),
        ({"runs": 11}, "runs: an integer from 1 to 10"),
        ({"runs": True}, "runs: an integer"),
        ({"limits": {"compile_time": 0}}, "compile_time: 0 s is out of range"),
        ({"limits": {"compile_memory": "lots"}}, "compile_memory"),
    ],
)
def test_bad_requests_say_which_field(change, message):
    with pytest.raises(RequestError, match=re.escape(message)):
        JudgeRequest.parse({**BASE, **change})


def test_a_request_is_an_object():
    with pytest.raises(RequestError, match="JSON object"):
        JudgeRequest.parse(["python3"])


# --- the TLE re-check (worker/pipeline.py, RECHECK_MARGIN) --------------------

# Burns CPU until the process has used `{cpu}` s, then exits cleanly.
BURN = "import time\nwhile time.process_time() < {cpu}:\n    pass\nprint('done')\n"


def _judge_burner(cpu: float | None, recheck: bool) -> dict:
    from worker.request import JudgeRequest

    source = BURN.format(cpu=cpu) if cpu is not None else "while True:\n    pass\n"
    request = {
        "language": "python3",
        "source": source,
        "tests": [{"name": "1", "input": "", "output": "done\n"}],
        "limits": {"time": 0.5},
        "recheck_tle": recheck,
    }
    return JudgeRequest.parse(request).judge().to_dict()["tests"][0]


def test_a_tle_just_over_the_limit_is_run_again():
    # 0.55 s against a 0.5 s limit: within the 20% margin, so a second run decides.
    test = _judge_burner(0.55, recheck=True)
    assert test["verdict"] == "TLE"
    assert test["rechecked"] is True
    assert ", then " in test["message"]  # both runs' CPU times
    # Control: without the re-check, the same program is TLE after one run.
    control = _judge_burner(0.55, recheck=False)
    assert control["verdict"] == "TLE" and control["rechecked"] is False


def test_a_tle_far_over_the_limit_is_not_run_again():
    test = _judge_burner(None, recheck=True)  # never ends: killed at 0.6 s
    assert test["verdict"] == "TLE"
    assert test["rechecked"] is False
    assert "not re-run" in test["message"]
    # Within the limit, the re-check changes nothing.
    quick = _judge_burner(0.1, recheck=True)
    assert quick["verdict"] == "AC" and quick["rechecked"] is False


# --- what a run gets besides its source (args, files, output files, ...) -----

PROGRAM = """
import sys
print(open("data/words.txt").read().strip(), *sys.argv[1:])
print("to stderr", file=sys.stderr)
open("answer.txt", "w").write("42")
"""


def test_args_files_and_output_files_reach_the_run():
    request = JudgeRequest.parse(
        {
            "language": "python3",
            "source": PROGRAM,
            "args": ["x y", "--z"],
            "files": [{"path": "data/words.txt", "content": "aGVsbG8=", "encoding": "base64"}],
            "output_files": ["answer.txt", "never-made.txt"],
        }
    )
    test = request.judge(whole_output=True).to_dict()["tests"][0]
    assert test["verdict"] == "AC", test
    assert test["stdout"] == "hello x y --z\n" and test["stderr"] == "to stderr\n"
    assert test["files"] == {"answer.txt": "NDI="}  # base64 of 42; the missing one is absent


def test_stderr_to_stdout_in_order():
    request = JudgeRequest.parse(
        {
            "language": "python3",
            "source": "import sys\nfor i in range(3):\n    print(i, flush=True)\n"
            "    print('e', i, file=sys.stderr, flush=True)\n",
            "stderr_to_stdout": True,
        }
    )
    test = request.judge(whole_output=True).to_dict()["tests"][0]
    assert test["stdout"] == "0\ne 0\n1\ne 1\n2\ne 2\n" and test["stderr"] == ""


def test_compile_options_and_files_reach_the_compiler(monkeypatch):
    source = '#include "defs.h"\n#include <stdio.h>\nint main(void){printf("%d\\n", ANSWER);}\n'
    base = {"language": "c", "source": source, "files": [{"path": "defs.h", "content": ""}]}
    # The control: without the option the macro is undefined and the compile fails.
    assert JudgeRequest.parse(base).judge().verdict.value == "CE"
    monkeypatch.setenv("CELLBLOCK_COMPILE_OPTIONS", "-DANSWER=*")
    done = JudgeRequest.parse({**base, "compile_options": ["-DANSWER=7"]}).judge(whole_output=True)
    assert done.verdict.value == "AC" and done.tests[0].stdout == "7\n", done.to_dict()
    monkeypatch.setenv("CELLBLOCK_COMPILE_OPTIONS", "")
    with pytest.raises(RequestError, match="not allowed here"):
        JudgeRequest.parse({**base, "compile_options": ["-DANSWER=7"]})
    # An operator's batch (host paths) may give any.
    assert JudgeRequest.parse({**base, "compile_options": ["-DANSWER=7"]}, host_paths=True)


def test_the_compile_time_limit_is_the_request_s():
    loop = "#include <stdio.h>\nint main(void){return 0;}\n"
    request = JudgeRequest.parse(
        {"language": "c", "source": loop, "limits": {"compile_time": 0.001}}
    )
    done = request.judge()
    assert done.verdict.value == "CE" and "too long" in done.message, done.to_dict()
    assert JudgeRequest.parse({"language": "c", "source": loop}).judge().verdict.value == "AC"


def test_runs_average_the_figures():
    request = JudgeRequest.parse({**BASE, "runs": 3})
    assert request.runs == 3
    done = request.judge()
    assert done.verdict.value == "AC" and done.tests[0].memory > 0


def test_a_multi_file_program_runs_its_compile_and_run_scripts():
    files = [
        {"path": "compile", "content": "gcc -o prog main.c\n"},
        {"path": "run", "content": './prog "$@"\n'},
        {
            "path": "main.c",
            "content": "#include <stdio.h>\nint main(int c, char **v){puts(v[1]);}\n",
        },
    ]
    request = JudgeRequest.parse(
        {
            "language": "multifile",
            "source": "",
            "files": files,
            "args": ["hi"],
            "expected_output": "hi\n",
        }
    )
    done = request.judge(whole_output=True)
    assert done.verdict.value == "AC", done.to_dict()
    assert done.compile is not None  # the compile script ran in a cell of its own
    no_run = JudgeRequest.parse({"language": "multifile", "source": "", "files": files[2:]})
    assert no_run.judge().verdict.value == "RE"  # bash: no file named run
