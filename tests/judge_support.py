"""Shared by the tests/test_judge*.py files: problem paths, compiled programs (once per
session, by source), and the installed languages to parametrize over."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

from worker.checkers import get_checker
from worker.compiler import Program, compile_program
from worker.languages import EXTENSIONS, all_languages, get_language
from worker.pipeline import JudgeOptions, RunLimits, judge_program
from worker.results import JudgeResult
from worker.testsets import TestCase

REPO = Path(__file__).resolve().parent.parent
PROBLEMS = REPO / "tests" / "problems"
BEHAVE = PROBLEMS / "behave" / "solutions"

# File extension of each language's sources in tests/problems.
EXTENSION = {lang: ext.lstrip(".") for ext, lang in EXTENSIONS.items()}
EXTENSION.update({"cpp": "cpp", "javascript": "js"})

INSTALLED = [lang.id for lang in all_languages().values() if lang.installed()]
# The languages whose program is one source file: the verdict matrix's
# (multifile's program is its `files`, a run script and more:
# tests/test_api_judge0.py and tests/test_request.py judge it).
ONE_FILE = [lang for lang in INSTALLED if lang != "multifile"]
COMPILED = [lang for lang in ONE_FILE if get_language(lang).compiled]


@functools.cache
def compiled(lang: str, path: Path) -> Program:
    """`path` compiled as `lang`, once per test session."""
    return compile_program(get_language(lang), path.read_bytes())


def behave(lang: str) -> Program:
    program = compiled(lang, BEHAVE / f"behave.{EXTENSION[lang]}")
    assert program.ok, f"{lang}: {program.error}\n{program.compile and program.compile.stderr}"
    return program


def judge_one(
    program: Program, test: TestCase, checker: str | None = None, **limits: object
) -> JudgeResult:
    options = JudgeOptions(limits=RunLimits.build(**limits), checker=get_checker(checker))
    return judge_program(program, [test], options)


def cli(*args: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`cellblock ARGS` from this checkout (as root, or as `user` with the installed venv)."""
    command = [sys.executable, "-m", "cellblock", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if user is not None:
        venv = Path(os.environ.get("CELLBLOCK_VENV", "/opt/cellblock/venv"))
        readable = (
            subprocess.run(
                ["runuser", "-u", user, "--", "test", "-r", __file__], check=False
            ).returncode
            == 0
        )
        # A private checkout: the copy scripts/install put into the venv (scripts/test
        # installs this checkout first).
        command = (
            [
                "runuser",
                "-u",
                user,
                "--",
                "env",
                f"PYTHONPATH={REPO}",
                str(venv / "bin" / "python"),
                "-m",
                "cellblock",
                *args,
            ]
            if readable
            else ["runuser", "-u", user, "--", str(venv / "bin" / "cellblock"), *args]
        )
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO, check=False
    )


def parallel_capacity() -> float:
    """How many CPUs this machine gives a burst of 4 busy processes right now (a loaded
    VM may give fewer than it has): CPU seconds over wall seconds."""
    start = time.monotonic()
    before = os.times()
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                pass
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return cpu / (time.monotonic() - start)
