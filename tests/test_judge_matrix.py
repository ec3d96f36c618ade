"""The verdict matrix: every verdict in every installed language, in real cells.

One program per language (tests/problems/behave/solutions/behave.*), compiled once,
behaves as its input's first word says; each case judges it on one test. CE comes
from ce.* sources. The MLE cases need the memory cgroup (needs_cgroup): they are
never skipped, so they fail loudly on a host without one.
"""

from __future__ import annotations

import signal

import pytest
from judge_support import (
    BEHAVE,
    COMPILED,
    EXTENSION,
    ONE_FILE,
    PROBLEMS,
    behave,
    compiled,
    judge_one,
    parallel_capacity,
)

from worker.languages import get_language
from worker.pipeline import JudgeOptions, RunLimits, judge, judge_program
from worker.results import Verdict
from worker.testsets import TestCase, load_dir

TIME = 1.0


def case(mode: str) -> TestCase:
    return TestCase(mode, f"{mode} 2 3\n".encode(), b"5\n")


@pytest.mark.parametrize("lang", ONE_FILE)
def test_ac_on_a_test_directory_with_scores(lang: str) -> None:
    tests = load_dir(PROBLEMS / "sum" / "tests")
    result = judge_program(behave(lang), tests, JudgeOptions(limits=RunLimits.build(time=2)))
    assert result.verdict == Verdict.AC, result.to_dict()
    assert [t.name for t in result.tests] == ["1", "2", "10", "big-2"]  # natural order
    assert (result.score, result.max_score) == (9.5, 9.5)  # scores.txt: 10 -> 5, big-2 -> 2.5
    assert result.time == max(t.time for t in result.tests) > 0
    assert result.memory == max(t.memory for t in result.tests) > 0
    assert (result.compile is None) == (not get_language(lang).compiled)


@pytest.mark.parametrize("lang", ONE_FILE)
def test_wa(lang: str) -> None:
    result = judge_one(behave(lang), case("wrong"), time=TIME)
    assert result.verdict == Verdict.WA
    assert result.tests[0].message == "line 1: expected '5', got '6'"
    assert (result.score, result.max_score) == (0, 1)


@pytest.mark.parametrize("lang", ONE_FILE)
def test_tle_by_cpu(lang: str) -> None:
    result = judge_one(behave(lang), case("spin"), time=TIME)
    test = result.tests[0]
    assert result.verdict == Verdict.TLE, test
    assert "CPU" in test.message
    assert test.time >= TIME


@pytest.mark.parametrize("lang", ONE_FILE)
def test_tle_by_cpu_of_all_threads(lang: str) -> None:
    """Four threads (processes in Python and bash) burning CPU: the limit counts them all,
    so the cell ends after TIME seconds of CPU, in less wall time where the CPUs exist."""
    capacity = parallel_capacity()
    result = judge_one(behave(lang), case("threads"), time=TIME)
    test = result.tests[0]
    assert result.verdict == Verdict.TLE, test
    assert "CPU" in test.message, test
    assert test.time >= TIME
    if capacity >= 1.6:  # a loaded VM may not give us two CPUs; the CPU verdict holds anyway
        assert test.wall_time < test.time, (test, capacity)


@pytest.mark.parametrize("lang", ONE_FILE)
def test_tle_by_wall(lang: str) -> None:
    result = judge_one(behave(lang), case("sleep"), time=TIME, wall_time=1.5)
    test = result.tests[0]
    assert result.verdict == Verdict.TLE, test
    assert "wall" in test.message
    assert test.wall_time >= 1.5 and test.time < TIME


@pytest.mark.needs_cgroup
@pytest.mark.parametrize("lang", ONE_FILE)
def test_mle(lang: str) -> None:
    result = judge_one(behave(lang), case("alloc"), time=5, memory="64M")
    test = result.tests[0]
    assert result.verdict == Verdict.MLE, test
    if get_language(lang).oom_exit_code is not None:
        # The JVM's heap is the problem's memory (-Xmx): the JVM reports it full.
        assert test.exit_code == get_language(lang).oom_exit_code
    else:
        assert test.oom_killed, test
        assert test.signal == signal.SIGKILL


@pytest.mark.parametrize("lang", ONE_FILE)
def test_ole(lang: str) -> None:
    result = judge_one(behave(lang), case("flood"), time=5, output_limit="1M")
    test = result.tests[0]
    assert result.verdict == Verdict.OLE, test
    assert "output limit" in test.message


@pytest.mark.parametrize("lang", ONE_FILE)
def test_re_by_signal(lang: str) -> None:
    result = judge_one(behave(lang), case("crash"), time=TIME)
    test = result.tests[0]
    assert result.verdict == Verdict.RE, test
    assert test.signal in (signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL), test
    assert test.exit_code is None


@pytest.mark.parametrize("lang", ONE_FILE)
def test_re_by_exit_code(lang: str) -> None:
    result = judge_one(behave(lang), case("exit"), time=TIME)
    test = result.tests[0]
    assert result.verdict == Verdict.RE, test
    assert (test.exit_code, test.signal) == (4, None)
    assert "code 4" in test.message


@pytest.mark.parametrize("lang", ONE_FILE)
def test_trailing_whitespace_lines_vs_exact(lang: str) -> None:
    """'5   \\n\\n\\n' against '5\\n': lines and tokens accept it, exact does not."""
    program = behave(lang)
    assert judge_one(program, case("trailing"), time=TIME).verdict == Verdict.AC
    assert judge_one(program, case("trailing"), "tokens", time=TIME).verdict == Verdict.AC
    exact = judge_one(program, case("trailing"), "exact", time=TIME)
    assert exact.verdict == Verdict.WA
    assert "whitespace" in exact.tests[0].message


@pytest.mark.parametrize("lang", COMPILED)
def test_ce(lang: str) -> None:
    program = compiled(lang, BEHAVE / f"ce.{EXTENSION[lang]}")
    result = judge_program(program, [case("sum")], JudgeOptions())
    assert result.verdict == Verdict.CE, result.to_dict()
    assert result.tests == [] and result.score == 0 and result.max_score == 1
    assert result.compile is not None and result.compile.status == "RE"
    assert result.compile.stdout + result.compile.stderr  # the compiler's messages
    assert "compilation failed" in result.message


def test_ce_output_is_cut() -> None:
    """A compiler that writes megabytes of errors: CE with its output cut to a sane size."""
    if "cpp" not in ONE_FILE:
        pytest.fail("g++ is not installed (scripts/install installs it)")
    source = "int main() {\n" + "".join(f"  undeclared_{i}();\n" for i in range(800)) + "}\n"
    result = judge(get_language("cpp"), source.encode(), [case("sum")], JudgeOptions())
    assert result.verdict == Verdict.CE
    assert result.compile is not None
    assert len(result.compile.stderr) <= 70 << 10 and result.compile.stderr_truncated


def test_python_syntax_error_is_re() -> None:
    """Interpreted languages have no compile step (compile is null): a syntax error is RE."""
    result = judge(get_language("python3"), b"def f(:\n", [case("sum")], JudgeOptions())
    assert result.verdict == Verdict.RE and result.compile is None
    assert "SyntaxError" in result.tests[0].stderr
