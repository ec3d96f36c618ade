"""Problems beyond plain comparison, in real cells: float tolerance, several valid answers
with a checker program (partial scores), broken checkers (IE, never WA), a checker's
view of the world, and an interactive problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from judge_support import PROBLEMS, compiled

from worker.checkers import CheckerError, get_checker, load_program
from worker.languages import language_for_path
from worker.pipeline import JudgeOptions, RunLimits, judge_program
from worker.results import Verdict
from worker.testsets import load_dir

CIRCLE = PROBLEMS / "circle"
PAIRS = PROBLEMS / "pairs"
GUESS = PROBLEMS / "guess"


def solution(path: Path):
    lang = language_for_path(path)
    assert lang is not None
    program = compiled(lang, path)
    assert program.ok, program.error
    return program


def judge_dir(path: Path, tests: Path, checker: str | None = None, **options):
    limits = RunLimits.build(**options.pop("limits", {"time": 2}))
    return judge_program(
        solution(path),
        load_dir(tests, answers_required=not options.get("interactor")),
        JudgeOptions(limits=limits, checker=get_checker(checker), **options),
    )


@pytest.mark.parametrize(
    ("name", "checker", "verdict", "score"),
    [
        ("exact.py", "float", Verdict.AC, 4),
        ("close.py", "float", Verdict.AC, 4),  # relative error 1e-8: AC even at 3.1e12
        ("close.py", "float:1e-9", Verdict.WA, 1),  # ... but not within 1e-9 (1 test is exact)
        ("close.py", "tokens", Verdict.WA, 0),
        ("rough.py", "float", Verdict.WA, 1),  # 3.142e-06 is within 1e-6 absolutely
        ("words.c", "float:1e-3", Verdict.WA, 0),  # "area 3.14": not a number where one is due
    ],
)
def test_float_tolerance(name: str, checker: str, verdict: Verdict, score: float) -> None:
    result = judge_dir(CIRCLE / "solutions" / name, CIRCLE / "tests", checker)
    assert (result.verdict, result.score) == (verdict, score), result.to_dict()


@pytest.mark.parametrize("checker", ["checker.cpp", "checker.py"])
@pytest.mark.parametrize(
    ("name", "verdict", "score", "message"),
    [
        ("balanced.py", Verdict.AC, 4, "ok 5 5"),
        ("reversed.cpp", Verdict.AC, 4, "ok 5 5"),  # a valid answer unlike the answer file
        ("zero_first.c", Verdict.WA, 2.5, "partial score 0.5"),  # exit 7: half of three tests
        ("wrong.py", Verdict.WA, 0, "5 + 6 != 10"),
        ("garbage.py", Verdict.WA, 0, "presentation error"),  # exit 2 counts as WA
    ],
)
def test_checker_program(
    checker: str, name: str, verdict: Verdict, score: float, message: str
) -> None:
    result = judge_dir(PAIRS / "solutions" / name, PAIRS / "tests", str(PAIRS / checker))
    assert (result.verdict, result.score, result.max_score) == (verdict, score, 4)
    assert result.tests[0].message.startswith(message), result.tests[0]
    assert result.tests[0].checker is not None  # the checker's own cell is reported


@pytest.mark.parametrize(
    ("checker", "message"),
    [
        ("crash_checker.c", "the checker failed: RE (killed by SIGSEGV)"),
        ("crash_checker.py", "the checker crashed: RuntimeError"),  # exit 1 + traceback: not WA
        ("exit3_checker.sh", "the checker exited with 3"),
    ],
)
def test_broken_checker_is_ie(checker: str, message: str) -> None:
    result = judge_dir(
        PAIRS / "solutions" / "balanced.py",
        PAIRS / "tests",
        str(PAIRS / checker),
        stop_on_failure=True,
    )
    assert result.verdict == Verdict.IE
    assert len(result.tests) == 1  # stopped at the first failure
    assert result.tests[0].message.startswith(message), result.tests[0]


def test_checker_sees_only_input_output_answer(tmp_path: Path) -> None:
    """The checker's cell holds its own program and the three files, nothing else."""
    checker = tmp_path / "look.py"
    checker.write_text(
        "import os, sys\n"
        "seen = sorted(os.listdir('.'))\n"
        "print(' '.join(seen), file=sys.stderr)\n"
        "sys.exit(0 if seen == ['answer', 'input', 'main.py', 'output'] else 1)\n"
    )
    result = judge_dir(PAIRS / "solutions" / "reversed.cpp", PAIRS / "tests", str(checker))
    assert result.verdict == Verdict.AC, result.tests[0]
    assert result.tests[0].message == "answer input main.py output"


def test_checker_that_does_not_compile(tmp_path: Path) -> None:
    broken = tmp_path / "checker.cpp"
    broken.write_text("int main( {")
    with pytest.raises(CheckerError, match="does not compile"):
        get_checker(str(broken))


def test_executable_checker(tmp_path: Path) -> None:
    """A checker given as an executable (#! or ELF) runs as it is."""
    script = tmp_path / "accept-all"
    script.write_text("#!/bin/sh\necho fine >&2\nexit 0\n")
    result = judge_dir(PAIRS / "solutions" / "wrong.py", PAIRS / "tests", str(script))
    assert result.verdict == Verdict.AC and result.tests[0].message == "fine"


@pytest.mark.parametrize(
    ("name", "verdict", "score", "message"),
    [
        ("bsearch.py", Verdict.AC, 4, "ok after"),
        ("bsearch.cpp", Verdict.AC, 4, "ok after"),
        ("linear.py", Verdict.WA, 1, "more than 12 questions"),  # secret 1 is found at once
        ("silent.py", Verdict.TLE, 0, "wall-time limit"),  # both wait: the solution's clock ends it
        ("crash.py", Verdict.RE, 0, "exited with code 3"),
    ],
)
def test_interactive(name: str, verdict: Verdict, score: float, message: str) -> None:
    interactor = load_program(GUESS / "interactor.py", "interactor")
    result = judge_dir(
        GUESS / "solutions" / name,
        GUESS / "tests",
        interactor=interactor,
        limits={"time": 1, "wall_time": 1.5},
    )
    assert (result.verdict, result.score) == (verdict, score), result.to_dict()
    failed = next((t for t in result.tests if t.verdict != Verdict.AC), result.tests[0])
    assert message in failed.message, failed
    for test in result.tests:  # both cells' figures are reported
        assert test.interactor is not None and test.interactor["wall_time"] > 0
        assert test.wall_time > 0


def test_interactor_crash_is_ie(tmp_path: Path) -> None:
    interactor = tmp_path / "interactor.py"
    interactor.write_text("print(1000, flush=True)\ninput()\nraise SystemError('bug')\n")
    result = judge_dir(
        GUESS / "solutions" / "bsearch.py",
        GUESS / "tests",
        interactor=load_program(interactor, "interactor"),
        limits={"time": 1, "wall_time": 1.5},
        stop_on_failure=True,
    )
    assert result.verdict == Verdict.IE, result.to_dict()
    assert "the interactor crashed" in result.tests[0].message


def test_java_checker_that_throws_is_ie(tmp_path: Path) -> None:
    """Java's uncaught exception exits 1 too (testlib's WA): with its trace, it is IE."""
    checker = tmp_path / "Checker.java"
    checker.write_text(
        "public class Main { public static void main(String[] a) {"
        ' throw new IllegalStateException("checker bug"); } }'
    )
    result = judge_dir(
        PAIRS / "solutions" / "balanced.py", PAIRS / "tests", str(checker), stop_on_failure=True
    )
    assert result.verdict == Verdict.IE, result.tests[0]
    assert "crashed" in result.tests[0].message
