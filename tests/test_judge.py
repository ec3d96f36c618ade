"""cellblock judge: test sets, built-in checkers, language files, the CLI (formats, exit
codes, bad input), batches; one judge run as an unprivileged user."""

from __future__ import annotations

import json
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import children_of_this_process, python_as
from judge_support import BEHAVE, INSTALLED, PROBLEMS, cli

from worker.checkers import CheckerError, get_checker
from worker.languages import (
    LanguageError,
    all_languages,
    get_language,
    languages_dir,
    load_language,
)
from worker.results import Verdict
from worker.testsets import TestSetError, from_data, load_dir, natural_key

SUM = PROBLEMS / "sum" / "tests"


# --- test sets -----------------------------------------------------------------


def test_natural_order() -> None:
    names = ["10", "2", "1", "a10", "a9", "b", "a", "01"]
    # equal numbers: the text decides, so the order is total
    assert sorted(names, key=natural_key) == ["01", "1", "2", "10", "a", "a9", "a10", "b"]


def test_test_directory(tmp_path: Path) -> None:
    for name in ("2", "10", "1"):
        (tmp_path / f"{name}.in").write_text(name)
        (tmp_path / f"{name}.{'ans' if name == '10' else 'out'}").write_text(name)
    (tmp_path / "checker.cpp").write_text("ignored")
    (tmp_path / "scores.txt").write_text("# weights\n10 2.5\n\n1 0\n")
    tests = load_dir(tmp_path)
    assert [(t.name, t.score) for t in tests] == [("1", 0.0), ("2", 1.0), ("10", 2.5)]
    assert tests[2].answer == tmp_path / "10.ans"


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({"1.in": "", "1.out": "", "2.in": ""}, "2.in .* has no matching .out or .ans"),
        ({"1.in": "", "1.out": "", "3.ans": ""}, "3.ans .* has no matching .in"),
        ({"1.in": "", "1.out": "", "1.ans": ""}, "1.out and 1.ans both exist"),
        ({"README": ""}, "no NAME.in / NAME.out pairs"),
        ({"1.in": "", "1.out": "", "scores.txt": "2 1\n"}, "no test named '2'"),
        ({"1.in": "", "1.out": "", "scores.txt": "1 lots\n"}, "'lots' is not a number"),
        ({"1.in": "", "1.out": "", "scores.txt": "1 -1\n"}, ">= 0"),
    ],
)
def test_bad_test_directories(tmp_path: Path, files: dict[str, str], error: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(TestSetError, match=error):
        load_dir(tmp_path)


def test_missing_test_directory(tmp_path: Path) -> None:
    with pytest.raises(TestSetError, match="does not exist"):
        load_dir(tmp_path / "nope")


def test_inputs_only_for_interactive(tmp_path: Path) -> None:
    (tmp_path / "1.in").write_text("5")
    assert load_dir(tmp_path, answers_required=False)[0].answer is None


def test_tests_as_data() -> None:
    tests = from_data([{"name": "a", "input": "1", "output": "2", "score": 3}, {"input": "x"}])
    assert [(t.name, t.input, t.answer, t.score) for t in tests] == [
        ("a", b"1", b"2", 3.0),
        ("2", b"x", None, 1.0),
    ]
    with pytest.raises(TestSetError, match="duplicate"):
        from_data([{"name": "a"}, {"name": "a"}])


# --- built-in checkers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("checker", "output", "answer", "verdict"),
    [
        ("exact", "1 2\n", "1 2\n", Verdict.AC),
        ("exact", "1 2", "1 2\n", Verdict.WA),
        ("exact", "1 2 \n", "1 2\n", Verdict.WA),
        ("lines", "1 2  \r\n3\t\n\n\n", "1 2\n3\n", Verdict.AC),  # CRLF, trailing spaces, blanks
        ("lines", "1 2", "1 2\n", Verdict.AC),
        ("lines", " 1 2\n", "1 2\n", Verdict.WA),  # leading whitespace counts
        ("lines", "1  2\n", "1 2\n", Verdict.WA),  # so does whitespace inside a line
        ("lines", "1\n\n2\n", "1\n2\n", Verdict.WA),  # and blank lines inside
        ("lines", "", "\n\n", Verdict.AC),
        ("tokens", " 1\n\n 2  ", "1 2\n", Verdict.AC),
        ("tokens", "1 2 3", "1 2", Verdict.WA),
        ("tokens", "1.0", "1", Verdict.WA),
        ("float", "1.0000005", "1", Verdict.AC),  # absolute 5e-7
        ("float", "1.000002", "1", Verdict.WA),
        ("float", "1000000.5", "1000000", Verdict.AC),  # relative 5e-7
        ("float", "1e-12", "0", Verdict.AC),
        ("float", "1e6", "1000000", Verdict.AC),
        ("float", "nan", "1", Verdict.WA),
        ("float", "nan", "nan", Verdict.AC),  # equal text
        ("float", "inf", "1e308", Verdict.WA),
        ("float", "yes 0.1", "yes 0.1000001", Verdict.AC),  # words must match exactly
        ("float", "Yes 0.1", "yes 0.1", Verdict.WA),
        ("float", "0.1", "0.1 0.2", Verdict.WA),
        ("float:0.01", "3.14", "3.14159", Verdict.AC),
        ("float:0", "0.1", "0.1000", Verdict.AC),
        ("float:0", "0.1", "0.1001", Verdict.WA),
    ],
)
def test_builtin_checkers(checker: str, output: str, answer: str, verdict: Verdict) -> None:
    outcome = get_checker(checker).check(b"", output, answer.encode())
    assert outcome.verdict == verdict, outcome
    assert outcome.fraction == (1.0 if verdict == Verdict.AC else 0.0)


def test_checker_messages() -> None:
    lines = get_checker("lines")
    assert lines.check(b"", "1\n3\n", b"1\n2\n").message == "line 2: expected '2', got '3'"
    assert lines.check(b"", "1\n", b"1\n2\n").message == "output ends after 1 lines, expected 2"
    assert lines.check(b"", "1\n2\n", b"1\n").message.startswith("1 extra line(s)")
    assert get_checker("tokens").check(b"", "1", b"1 2").message == "1 tokens, expected 2"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("float:abc", "not a number"),
        ("float:-1", ">= 0"),
        ("linez", "neither a built-in checker"),
        ("/no/such/checker.cpp", "neither a built-in checker"),
    ],
)
def test_bad_checkers(spec: str, error: str) -> None:
    with pytest.raises(CheckerError, match=error):
        get_checker(spec)


# --- languages ---------------------------------------------------------------------


def test_every_contract_language_has_a_file() -> None:
    known = all_languages()
    assert set(known) >= {"c", "cpp", "python3", "java", "javascript", "go", "rust", "bash"}
    assert known["java"].source == "Main.java"
    for language in known.values():
        assert language.installed() == (language.id in INSTALLED)


def test_language_files_are_read_again_when_they_change(tmp_path) -> None:
    """The parsed files are kept between calls (the API asks on every
    submission), and an edited, added or removed file is seen by the next."""
    shutil.copy(languages_dir() / "bash.toml", tmp_path / "bash.toml")
    (tmp_path / ".hidden.toml").write_text("not = [a language")
    assert all_languages(tmp_path)["bash"].name == load_language(tmp_path / "bash.toml").name
    assert set(all_languages(tmp_path)) == {"bash"}
    text = (tmp_path / "bash.toml").read_text()
    (tmp_path / "bash.toml").write_text(re.sub(r'(?m)^name = ".*"$', 'name = "Edited shell"', text))
    assert all_languages(tmp_path)["bash"].name == "Edited shell"
    shutil.copy(tmp_path / "bash.toml", tmp_path / "sh.toml")
    assert set(all_languages(tmp_path)) == {"bash", "sh"}
    (tmp_path / "bash.toml").unlink()
    assert set(all_languages(tmp_path)) == {"sh"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('source = "a.c"\n', "'run' is missing"),
        ('source = "../a.c"\nrun = ["./a"]\n', "plain file name"),
        ('source = "a.c"\nrun = ["./a"]\ncompile = ["cc", "a.c"]\n', "needs 'artifacts'"),
        ('source = "a.c"\nrun = ["./a"]\ncompile = ["cc"]\nartifacts = ["../x"]\n', "artifact"),
        ('source = "a.c"\nrun = "./a"\n', "non-empty list of strings"),
        ('source = "a.c"\nrun = ["./a"]\n[run_limits]\ncpu = 1\n', "unknown"),
        ('source = "a.c"\nrun = ["./a"\n', "a.toml"),  # TOML syntax error names the file
    ],
)
def test_bad_language_files(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(text)
    with pytest.raises(LanguageError, match=error):
        load_language(path)


def test_adding_a_language_is_adding_a_file(tmp_path: Path) -> None:
    (tmp_path / "py-fast.toml").write_text(
        'name = "Python, no site"\nsource = "s.py"\nrun = ["python3", "-S", "s.py"]\n'
    )
    language = get_language("py-fast", tmp_path)
    assert language.run_argv(1 << 20) == ["python3", "-S", "s.py"]
    with pytest.raises(LanguageError, match="unknown language 'cobol'"):
        get_language("cobol", tmp_path)


def test_asking_a_language_its_version_leaves_nothing_in_the_hosts_tmp(test_user) -> None:
    # A worker asks each host language for its version on the host, as its
    # own user (worker/rq_worker.py); nothing of that may stay behind.
    java = all_languages()["java"]
    if not java.installed():
        pytest.skip("java is not installed")
    left = Path(f"/tmp/hsperfdata_{test_user.pw_name}")

    def ask(command: tuple[str, ...]) -> bool:
        shutil.rmtree(left, ignore_errors=True)
        script = f"from worker.languages import _version; print(_version.__wrapped__({command!r}))"
        done = subprocess.run(
            python_as(test_user.pw_name, script), capture_output=True, text=True, cwd="/"
        )
        assert "version" in done.stdout, (done.stdout, done.stderr)
        return left.exists()

    try:
        assert ask(("java", "-version"))  # control: the JVM leaves its directory
        assert not ask(java.version_command)
    finally:
        shutil.rmtree(left, ignore_errors=True)


def test_languages_command() -> None:
    done = cli("languages", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["id"] for row in rows] == sorted(INSTALLED)
    assert all(row["version"] for row in rows)
    table = cli("languages")
    assert table.returncode == 0 and "python3" in table.stdout


# --- the CLI -------------------------------------------------------------------------


def test_cli_json_ac() -> None:
    done = cli("judge", str(BEHAVE / "behave.c"), "--tests", str(SUM), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["verdict"] == "AC" and result["score"] == result["max_score"] == 9.5
    assert result["compile"]["status"] == "OK"
    assert [t["name"] for t in result["tests"]] == ["1", "2", "10", "big-2"]
    for test in result["tests"]:
        assert set(test) >= {
            "name",
            "verdict",
            "time",
            "wall_time",
            "memory",
            "exit_code",
            "signal",
            "message",
        }
    assert {"verdict", "score", "max_score", "compile", "tests", "time", "memory"} <= set(result)


def test_cli_table_and_exit_codes(tmp_path: Path) -> None:
    done = cli(
        "judge",
        str(PROBLEMS / "circle" / "solutions" / "rough.py"),
        "--tests",
        str(PROBLEMS / "circle" / "tests"),
        "--checker",
        "float",
    )
    assert done.returncode == 1
    assert "verdict WA · score 1/4" in done.stdout
    assert "token 1: expected" in done.stdout
    ce = cli("judge", str(BEHAVE / "ce.c"), "--tests", str(SUM))
    assert ce.returncode == 1 and "compilation failed" in ce.stdout
    assert "undeclared_variable" in ce.stdout  # the compiler's own words


def test_cli_stop_on_failure() -> None:
    args = (
        "judge",
        str(PROBLEMS / "pairs" / "solutions" / "wrong.py"),
        "--tests",
        str(PROBLEMS / "pairs" / "tests"),
        "--checker",
        str(PROBLEMS / "pairs" / "checker.py"),
        "--json",
    )
    every = json.loads(cli(*args).stdout)
    first = json.loads(cli(*args, "--stop-on-failure").stdout)
    assert len(every["tests"]) == 4 and len(first["tests"]) == 1
    assert first["tests_total"] == 4 and first["verdict"] == "WA"


def test_cli_gradescope(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = cli(
        "judge",
        str(PROBLEMS / "pairs" / "solutions" / "zero_first.c"),
        "--tests",
        str(PROBLEMS / "pairs" / "tests"),
        "--checker",
        str(PROBLEMS / "pairs" / "checker.cpp"),
        "--format",
        "gradescope",
        "--output",
        str(out),
    )
    assert done.returncode == 1, done.stderr
    results = json.loads(out.read_text())
    assert results["score"] == 2.5
    assert [(t["score"], t["max_score"], t["status"]) for t in results["tests"]] == [
        (0.5, 1.0, "failed"),
        (0.5, 1.0, "failed"),
        (1.0, 1.0, "passed"),
        (0.5, 1.0, "failed"),
    ]
    assert all(t["visibility"] == "visible" and t["output"] for t in results["tests"])


def test_cli_interactive() -> None:
    done = cli(
        "judge",
        str(PROBLEMS / "guess" / "solutions" / "bsearch.cpp"),
        "--tests",
        str(PROBLEMS / "guess" / "tests"),
        "--interactor",
        str(PROBLEMS / "guess" / "interactor.py"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "AC"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--lang", "cobol"], "unknown language 'cobol'"),
        (["--tests", "/no/such/dir"], "tests directory /no/such/dir does not exist"),
        (["--tests", "UNPAIRED"], "has no matching .out or .ans file"),
        (["--checker", "/no/such/checker"], "neither a built-in checker"),
        (["--checker", "float:x"], "not a number"),
        (["--time", "-1"], "time"),
        (["--memory", "lots"], "not a size"),
        (
            ["--interactor", "/no/such/interactor.py"],
            "interactor /no/such/interactor.py does not exist",
        ),
    ],
)
def test_cli_bad_input(tmp_path: Path, args: list[str], error: str) -> None:
    (tmp_path / "1.in").write_text("sum 1 2\n")
    args = [str(tmp_path) if a == "UNPAIRED" else a for a in args]
    if "--tests" not in args:
        args += ["--tests", str(SUM)]
    done = cli("judge", str(BEHAVE / "behave.py"), *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert error in done.stderr
    assert done.stderr.startswith("cellblock judge: error:")
    assert done.stdout == ""


def test_cli_bad_source(tmp_path: Path) -> None:
    missing = cli("judge", str(tmp_path / "nope.c"), "--tests", str(SUM))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    odd = tmp_path / "solution.txt"
    odd.write_text("x")
    unknown = cli("judge", str(odd), "--tests", str(SUM))
    assert unknown.returncode == 2 and "give --lang" in unknown.stderr


# --- batches ---------------------------------------------------------------------------


def test_batch(tmp_path: Path) -> None:
    items = [
        {
            "id": "pass",
            "language": "python3",
            "source": "def f(x):\n    return x + 1\n",
            "test": "assert f(1) == 2",
        },
        {
            "id": "fail",
            "language": "python3",
            "source": "def f(x):\n    return x\n",
            "test": "assert f(1) == 2",
        },
        {
            "id": "hung",
            "language": "python3",
            "source": "import time\ntime.sleep(60)\n",
            "limits": {"time": 30, "wall_time": 60},
            "deadline": 1.5,
        },
        {
            "id": "tests",
            "language": "c",
            "source": (BEHAVE / "behave.c").read_text(),
            "tests": [
                {"name": "a", "input": "sum 1 2", "output": "3"},
                {"name": "b", "input": "wrong 1 2", "output": "3", "score": 2},
            ],
        },
        {
            "id": "io",
            "language": "bash",
            "source": "read x; echo $((x * 2))",
            "stdin": "21\n",
            "expected_output": "42\n",
        },
        {
            "id": "float",
            "language": "python3",
            "source": "print(0.1 + 0.2)",
            "expected_output": "0.3",
            "checker": "float",
        },
        {
            "id": "checker",
            "language": "python3",
            "source": "print(0, 7)",
            "tests": [{"input": "7", "output": "3 4"}],
            "checker": {
                "language": "python3",
                "source": (PROBLEMS / "pairs" / "checker.py").read_text(),
            },
        },
        {"id": "unknown", "language": "cobol", "source": "x"},
    ]
    batch = tmp_path / "items.jsonl"
    batch.write_text("\n".join(json.dumps(item) for item in items) + "\nnot json\n")
    done = cli("judge", "--batch", str(batch), "--jobs", "2", "--time", "2")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(items) + 1
    by_id = {line["id"]: line for line in lines}
    assert by_id["pass"]["verdict"] == "AC" and by_id["pass"]["compile"] is None
    assert by_id["fail"]["verdict"] == "RE"
    assert "AssertionError" in by_id["fail"]["tests"][0]["stderr"]
    hung = by_id["hung"]
    assert hung["verdict"] == "TLE" and hung["tests"][0]["wall_time"] < 3  # the deadline cut it
    assert (by_id["tests"]["verdict"], by_id["tests"]["score"]) == ("WA", 1)
    assert by_id["io"]["verdict"] == "AC"
    assert by_id["float"]["verdict"] == "AC"
    assert (by_id["checker"]["verdict"], by_id["checker"]["score"]) == ("WA", 0.5)
    assert by_id["unknown"]["verdict"] is None and "unknown language" in by_id["unknown"]["error"]
    assert by_id[None]["error"].startswith(f"line {len(items) + 1}: bad JSON")
    assert sorted(line["index"] for line in lines) == list(range(len(items) + 1))


def test_batch_bad_file(tmp_path: Path) -> None:
    done = cli("judge", "--batch", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2 and "No such file" in done.stderr


# --- rootless ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def problems_for_users(scratch_dir: Path) -> Path:
    """tests/problems where every user can read it: the checkout may be private
    (a clone in /root), and the test user judges what is in it."""
    import shutil

    copy = scratch_dir / "problems"
    if not copy.exists():
        shutil.copytree(PROBLEMS, copy)
        for entry in [copy, *copy.rglob("*")]:
            entry.chmod(0o755 if entry.is_dir() else 0o644)
    return copy


def test_judge_as_an_unprivileged_user(
    test_user: pwd.struct_passwd, problems_for_users: Path
) -> None:
    """The main path: an ordinary user compiles and judges (rootless cells)."""
    problems = problems_for_users
    done = cli(
        "judge",
        str(problems / "behave" / "solutions" / "behave.c"),
        "--tests",
        str(problems / "sum" / "tests"),
        "--json",
        user=test_user.pw_name,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "AC"


def test_interactive_as_an_unprivileged_user(
    test_user: pwd.struct_passwd, problems_for_users: Path
) -> None:
    """Two rootless cells wired by pipes (RunSpec.stdin_fd / stdout_fd)."""
    guess = problems_for_users / "guess"
    done = cli(
        "judge",
        str(guess / "solutions" / "bsearch.py"),
        "--tests",
        str(guess / "tests"),
        "--interactor",
        str(guess / "interactor.py"),
        "--json",
        user=test_user.pw_name,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["verdict"] == "AC" and result["score"] == 4


def test_compiled_artifacts_are_read_only_in_runs() -> None:
    """The artifact is carried read-only into every test run : the run
    owns its program file but cannot chmod (nor write) it; its source is not copied."""
    import sandbox
    from worker.compiler import compile_program
    from worker.pipeline import RunLimits, cell_spec

    source = (
        b"#include <stdio.h>\n#include <string.h>\n#include <errno.h>\n"
        b"#include <sys/stat.h>\n"
        b'int main(void) { puts(chmod("main", 0777) ? strerror(errno) : "changed"); }\n'
    )
    program = compile_program(get_language("c"), source)
    assert program.ok, program.error
    assert program.readonly == ("main",)
    run = sandbox.run_spec(cell_spec(program, b"", RunLimits(), 10.0))
    assert run.status == "OK", run.message
    assert run.stdout == "Read-only file system\n"


def test_judging_uses_warm_cells_and_leaves_nothing(monkeypatch) -> None:
    # Every test after the first gets a cell made while the one before ran;
    # each cell still serves one run, and nothing is kept once judging ends
    # for a caller that has warm cells off.

    import sandbox
    from sandbox import warm

    sandbox.keep_warm(False)
    from worker.compiler import compile_program
    from worker.pipeline import JudgeOptions, judge_program

    program = compile_program(get_language("python3"), b"print(sum(map(int, input().split())))")
    taken = []
    real_take = warm.take
    monkeypatch.setattr(warm, "take", lambda birth: taken.append(real_take(birth)) or taken[-1])
    tests = from_data([{"input": f"{i} {i}\n", "output": f"{2 * i}\n"} for i in range(6)])
    result = judge_program(program, tests, JudgeOptions())
    assert result.verdict == Verdict.AC and len(result.tests) == 6, result
    assert warm.setting() is False and not warm._ready
    # 6 runs: the first makes its own cell, each later one takes a warm cell.
    assert [cell is not None for cell in taken] == [False] + [True] * 5, taken
    children = children_of_this_process()
    assert children == [], children


# --- feedback: what a result reveals of the tests ------------------------------------


def _echo_tests(tmp_path: Path) -> Path:
    """A hidden test whose input a wrong program echoes."""
    tests = tmp_path / "hidden"
    tests.mkdir()
    (tests / "1.in").write_text("in-7x35\n")
    (tests / "1.out").write_text("out-42\n")
    return tests


ECHO = "x = input()\nprint(x, 'sum?')\n"


@pytest.mark.parametrize(
    ("feedback", "message"),
    [
        ("diff", "line 1: expected 'out-42', got 'in-7x35 sum?'"),
        ("verdict", "line 1 differs"),
        ("none", ""),
    ],
)
def test_cli_feedback(tmp_path: Path, feedback: str, message: str) -> None:
    source = tmp_path / "echo.py"
    source.write_text(ECHO)
    tests = _echo_tests(tmp_path)
    done = cli("judge", str(source), "--tests", str(tests), "--json", "--feedback", feedback)
    result = json.loads(done.stdout)
    assert result["verdict"] == "WA" and result["tests"][0]["message"] == message
    if feedback != "diff":
        assert "out-42" not in done.stdout and "in-7x35" not in done.stdout
        assert result["message"] == "test 1: WA" + (f" ({message})" if message else "")
    # Gradescope's results.json reveals no more than the JSON.
    out = tmp_path / f"results-{feedback}.json"
    cli(
        "judge",
        str(source),
        "--tests",
        str(tests),
        "--format",
        "gradescope",
        "-o",
        str(out),
        "--feedback",
        feedback,
    )
    text = out.read_text()
    assert ("out-42" in text) == (feedback == "diff")
    assert ("in-7x35" in text) == (feedback == "diff")


def test_feedback_hides_a_checker_program_s_words(tmp_path: Path) -> None:
    """A checker program may print the answer: with `verdict` its message goes,
    and the checker's own output with it; the partial score stays."""
    source = tmp_path / "half.py"
    source.write_text("print(0, 7)\n")
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "1.in").write_text("7\n")
    (tests / "1.out").write_text("3 4\n")
    args = (
        "judge",
        str(source),
        "--tests",
        str(tests),
        "--json",
        "--checker",
        str(PROBLEMS / "pairs" / "checker.py"),
    )
    told = json.loads(cli(*args).stdout)["tests"][0]
    hidden = json.loads(cli(*args, "--feedback", "verdict").stdout)["tests"][0]
    assert told["message"].startswith("partial score 0.5:") and "checker" in told
    assert (hidden["verdict"], hidden["score"]) == (told["verdict"], told["score"])
    assert hidden["message"] == "partial score 0.5" and "checker" not in hidden


def test_batch_feedback(tmp_path: Path) -> None:
    hidden = [{"input": "in-7x35\n", "output": "out-42\n"}]
    items = [
        {"id": name, "language": "python3", "source": ECHO, "feedback": name, "tests": hidden}
        for name in ("none", "verdict", "diff")
    ]
    items.append({"id": "default", "language": "python3", "source": ECHO, "tests": hidden})
    items.append(
        {"id": "bad", "language": "python3", "source": ECHO, "feedback": "all", "tests": hidden}
    )
    batch = tmp_path / "items.jsonl"
    batch.write_text("\n".join(json.dumps(item) for item in items) + "\n")
    done = cli("judge", "--batch", str(batch), "--feedback", "none")
    by_id = {line["id"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert by_id["diff"]["tests"][0]["stdout"] == "in-7x35 sum?\n"
    assert by_id["verdict"]["tests"][0]["message"] == "line 1 differs"
    for name in ("none", "default"):  # the command line's --feedback is the items' default
        test = by_id[name]["tests"][0]
        assert (test["verdict"], test["message"], test["stdout"]) == ("WA", "", "")
        assert "out-42" not in json.dumps(by_id[name]) and "in-7x35" not in json.dumps(by_id[name])
    assert "feedback 'all': expected one of none, verdict, diff" in by_id["bad"]["error"]
