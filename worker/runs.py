"""One test's run: its limits (RunLimits, with a judged test's defaults), its
cell (cell_spec), and the TestResult its cell and its checker make (from_run,
apply_outcome). The pipeline (pipeline.py) and interactive problems
(interactive.py) both run tests this way.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import Field, dataclass
from pathlib import Path
from typing import Any

import sandbox
from sandbox import Limits, RunResult, SpecError, Status
from sandbox.spec import limit_fields, read_limit

from .checkers import Outcome
from .compiler import Program
from .languages import Language
from .results import STATUS_VERDICT, TestResult, Verdict, excerpt, output_files, run_fields
from .testsets import TestCase

# Defaults of a judged test (the contract leaves them to us): what online
# judges give a typical problem, with room for the slower interpreters. The
# limits themselves (kinds, bounds, help) are sandbox.spec.Limits's fields.
JUDGE_DEFAULTS: dict[str, object] = {
    "time": 2.0,
    "wall_time": None,  # 2 * time + 1, as a cell's
    "memory": 256 << 20,
    "pids": 64,
    "output_limit": 64 << 20,
    "file_size": 64 << 20,
}


# What a judged test's limits are called in a request (HTTP, batch items): the
# output limit is `output` there.
REQUEST_NAMES = {"output_limit": "output"}

# A request's limits of the compile, beside a test's (default: the language's
# compile limits): the Limits fields each one sets in the compile cell.
# `compile_time` is the compile's wall-clock and CPU time both.
COMPILE_LIMIT_FIELDS = {"compile_time": ("time", "wall_time"), "compile_memory": ("memory",)}


def read_compile_limit(name: str, value: object) -> float | int:
    """A request's compile_time or compile_memory, checked as the Limits field it sets."""
    limit = {f.name: f for f in limit_fields()}[COMPILE_LIMIT_FIELDS[name][-1]]
    try:
        return read_limit(limit, value)
    except SpecError as error:
        raise SpecError(f"{name}: {str(error).partition(': ')[2]}") from None


def judge_limit_fields() -> list[Field[Any]]:
    """The limits a judged test has, in Limits's order."""
    return [limit for limit in limit_fields() if limit.name in JUDGE_DEFAULTS]


def request_name(limit: Field[Any]) -> str:
    return REQUEST_NAMES.get(limit.name, limit.name)


@dataclass(frozen=True)
class RunLimits:
    """The problem's limits for one test run (a language may add to memory and pids)."""

    time: float = typing.cast(float, JUDGE_DEFAULTS["time"])
    wall_time: float | None = None  # default: 2 * time + 1 (the cell's default)
    memory: int = typing.cast(int, JUDGE_DEFAULTS["memory"])
    pids: int = typing.cast(int, JUDGE_DEFAULTS["pids"])
    output_limit: int = typing.cast(int, JUDGE_DEFAULTS["output_limit"])
    file_size: int = typing.cast(int, JUDGE_DEFAULTS["file_size"])
    compile_time: float | None = None  # None: the language's (COMPILE_LIMIT_FIELDS)
    compile_memory: int | None = None

    @classmethod
    def build(cls, **options: object) -> RunLimits:
        """Validated limits from user input (by their Limits names); raises
        sandbox.SpecError naming the bad one."""
        unknown = set(options) - set(JUDGE_DEFAULTS)
        if unknown:
            raise SpecError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        given = {k: v for k, v in options.items() if v is not None}
        checked = Limits.build(**{**JUDGE_DEFAULTS, **given})
        return cls(**{name: getattr(checked, name) for name in JUDGE_DEFAULTS})

    @classmethod
    def from_request(cls, limits: dict[str, object]) -> RunLimits:
        """From a request's `limits` (HTTP, batch items: `output` for the output limit)."""
        if not isinstance(limits, dict):
            raise SpecError("limits: expected an object")
        by_request_name = {request_name(limit): limit.name for limit in judge_limit_fields()}
        unknown = set(limits) - set(by_request_name) - set(COMPILE_LIMIT_FIELDS)
        if unknown:
            raise SpecError(
                f"unknown limit(s): {', '.join(sorted(unknown))} (known: "
                f"{', '.join([*by_request_name, *COMPILE_LIMIT_FIELDS])})"
            )
        compile_limits: dict[str, Any] = {
            name: read_compile_limit(name, limits[name])
            for name in COMPILE_LIMIT_FIELDS
            if limits.get(name) is not None
        }
        run = {k: v for k, v in limits.items() if k not in COMPILE_LIMIT_FIELDS}
        built = cls.build(**{by_request_name[name]: value for name, value in run.items()})
        return dataclasses.replace(built, **compile_limits)

    def compile_cell_options(self) -> dict[str, object]:
        """The compile cell's limits this request sets (over the language's)."""
        return {
            field: getattr(self, name)
            for name, fields in COMPILE_LIMIT_FIELDS.items()
            if getattr(self, name) is not None
            for field in fields
        }

    @property
    def effective_wall_time(self) -> float:
        return self.wall_time if self.wall_time is not None else 2 * self.time + 1.0

    def cell_options(self, language: Language, wall_time: float | None = None) -> dict:
        return {
            "time": self.time,
            "wall_time": wall_time if wall_time is not None else self.effective_wall_time,
            "memory": self.memory + language.memory_overhead,
            "pids": max(self.pids, language.run_pids or 0),
            "output_limit": self.output_limit,
            "file_size": self.file_size,
        }


def cell_spec(
    program: Program, stdin: bytes | Path | int, limits: RunLimits, wall: float
) -> sandbox.RunSpec:
    """The cell of one run of `program`. A test input on disk goes in by path
    (the cell copies it once, the host never holds it)."""
    return sandbox.RunSpec(
        argv=tuple(program.argv(limits.memory)),
        limits=Limits.build(**limits.cell_options(program.language, wall)),
        stdin=stdin,  # type: ignore[arg-type]
        copy_in=program.files,
        readonly=program.readonly,
        seccomp=program.language.seccomp,
        env=program.language.run_env,
        image=program.language.image,
        copy_out=program.output_files,
        stderr_to_stdout=program.stderr_to_stdout,
    )


def from_run(
    test: TestCase, run: RunResult, deadline_cut: bool = False, language: Language | None = None
) -> TestResult:
    """A TestResult from the cell's result alone (AC when it ended cleanly, for now)."""
    tested = TestResult(
        name=test.name,
        verdict=Verdict.AC,
        max_score=test.score,
        message=run.message,
        stdout=excerpt(run.stdout),
        stderr=excerpt(run.stderr),
        files=output_files(run.files) if run.files else None,
        **run_fields(run),
    )
    if run.status != Status.OK:
        tested.verdict = STATUS_VERDICT[run.status]
        if run.status == Status.SV:
            tested.message = f"forbidden system call: {run.message}"
        if (
            run.status == Status.RE
            and language is not None
            and run.signal is None
            and run.exit_code == language.oom_exit_code
        ):
            tested.verdict = Verdict.MLE
            tested.message = (
                f"the runtime's heap limit was exceeded (it exited with "
                f"{run.exit_code}, its out-of-memory code)"
            )
        if run.status == Status.TLE and deadline_cut and "wall" in run.message:
            tested.message = f"{run.message} (cut short by the deadline of the whole judging)"
        tested.summary = tested.message  # what a cell says of its run holds no test data
        return tested
    tested.score = test.score
    return tested


def apply_outcome(tested: TestResult, outcome: Outcome, score: float) -> TestResult:
    tested.verdict = outcome.verdict
    tested.score = round(score * outcome.fraction, 6)
    tested.message = outcome.message or ("accepted" if outcome.verdict == Verdict.AC else "")
    tested.summary = outcome.summary or ("accepted" if outcome.verdict == Verdict.AC else "")
    tested.checker = outcome.cell
    return tested
