"""Checkers: is a program's output an acceptable answer?

Built in (run on the host, on text, in microseconds):

    exact         byte-for-byte equal (after UTF-8 decoding)
    lines         the default: lines equal once trailing whitespace of each line
                  and trailing blank lines are dropped (so CRLF == LF)
    tokens        the whitespace-separated tokens are equal
    float[:EPS]   tokens; where the answer's token is a number, the output's may
                  differ by EPS absolutely or relatively (default 1e-6)

A checker program (testlib convention) is compiled once and run in a cell of
its own for every test as `checker input output answer`: it sees those three
files and nothing else. Exit 0 = AC, 1 = WA, 2 = presentation error (WA),
7 = partial credit with the score on the first line of stderr (the first
number there, as a fraction in [0, 1] of the test's score), anything else or
a crash or a limit = IE: a broken checker never turns into a verdict against
the submission. An uncaught exception exits 1 in Python and Java, so exit 1
with the language's `crash_marker` (a traceback) on stderr is IE too. The
checker's first stderr line is the test's message.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sandbox
from sandbox import Status

from .compiler import Program, compile_program
from .languages import Language, get_language, language_for_path
from .results import Verdict, cell_summary

BUILTIN = ("exact", "lines", "tokens", "float")
DEFAULT_EPS = 1e-6
# A checker program's own cell: generous, and not the submission's limits.
CHECKER_MEMORY = 512 << 20
CHECKER_LIMITS: dict[str, Any] = {
    "time": 10.0,
    "wall_time": 20.0,
    "memory": CHECKER_MEMORY,
    "pids": 64,
    "output_limit": "1M",
}
# testlib's exit codes.
EXIT_OK, EXIT_WA, EXIT_PE, EXIT_PARTIAL = 0, 1, 2, 7
MESSAGE_LIMIT = 300


class CheckerError(ValueError):
    """A checker that cannot be used (unknown name, missing file, does not compile)."""


@dataclass
class Outcome:
    verdict: Verdict
    fraction: float = 0.0  # of the test's score
    message: str = ""
    cell: dict[str, Any] | None = None  # a checker program's run
    summary: str | None = None  # the message without test data (None: the verdict alone)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class Checker:
    name = "checker"

    def check(self, input_data: bytes, output: str, answer: bytes) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the checker holds (nothing for the built-in ones)."""


class ExactChecker(Checker):
    name = "exact"

    def check(self, input_data: bytes, output: str, answer: bytes) -> Outcome:
        expected = answer.decode("utf-8", errors="replace")
        if output == expected:
            return Outcome(Verdict.AC, 1.0)
        at = next(
            (i for i, (a, b) in enumerate(zip(output, expected, strict=False)) if a != b),
            min(len(output), len(expected)),
        )
        line = expected.count("\n", 0, at) + 1
        column = at - (expected.rfind("\n", 0, at) + 1) + 1
        place = f"line {line}, column {column}"
        where = (
            f"{place}: expected {_short(expected[at : at + 20], 20)}, "
            f"got {_short(output[at : at + 20], 20)}"
        )
        if output.rstrip() == expected.rstrip() or _lines(output) == _lines(expected):
            return Outcome(
                Verdict.WA,
                0.0,
                f"differs only in whitespace at {where}",
                summary=f"differs only in whitespace at {place}",
            )
        return Outcome(Verdict.WA, 0.0, f"differs at {where}", summary=f"differs at {place}")


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


class LinesChecker(Checker):
    name = "lines"

    def check(self, input_data: bytes, output: str, answer: bytes) -> Outcome:
        got = _lines(output)
        want = _lines(answer.decode("utf-8", errors="replace"))
        if got == want:
            return Outcome(Verdict.AC, 1.0)
        for number, (a, b) in enumerate(zip(got, want, strict=False), 1):
            if a != b:
                return Outcome(
                    Verdict.WA,
                    0.0,
                    f"line {number}: expected {_short(b)}, got {_short(a)}",
                    summary=f"line {number} differs",
                )
        if len(got) < len(want):
            return Outcome(
                Verdict.WA,
                0.0,
                f"output ends after {len(got)} lines, expected {len(want)}",
                summary=f"output ends after {len(got)} lines, too early",
            )
        return Outcome(
            Verdict.WA,
            0.0,
            f"{len(got) - len(want)} extra line(s) after line "
            f"{len(want)}: {_short(got[len(want)])}",
            summary="extra lines after the expected output",
        )


class TokensChecker(Checker):
    name = "tokens"

    def check(self, input_data: bytes, output: str, answer: bytes) -> Outcome:
        got = output.split()
        want = answer.decode("utf-8", errors="replace").split()
        for index, (a, b) in enumerate(zip(got, want, strict=False), 1):
            if not self.same(a, b):
                return Outcome(
                    Verdict.WA,
                    0.0,
                    f"token {index}: expected {_short(b)}, got {_short(a)}",
                    summary=f"token {index} differs",
                )
        if len(got) != len(want):
            return Outcome(
                Verdict.WA,
                0.0,
                f"{len(got)} tokens, expected {len(want)}",
                summary="fewer tokens than expected"
                if len(got) < len(want)
                else "more tokens than expected",
            )
        return Outcome(Verdict.AC, 1.0)

    def same(self, got: str, want: str) -> bool:
        return got == want


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class FloatChecker(TokensChecker):
    def __init__(self, eps: float = DEFAULT_EPS) -> None:
        self.eps = eps
        self.name = f"float:{eps:g}"

    def same(self, got: str, want: str) -> bool:
        if got == want:
            return True
        # Only finite decimal numbers get the tolerance: "nan", "inf" and
        # hexadecimal floats must match as text.
        if not (_NUMBER.match(got) and _NUMBER.match(want)):
            return False
        a, b = float(got), float(want)
        diff = abs(a - b)
        # A hair of slack: the answer 0.1 is itself only a binary approximation.
        return diff <= self.eps * (1 + 1e-9) or diff <= self.eps * abs(b) * (1 + 1e-9)


class ProgramChecker(Checker):
    """A testlib-convention checker program, compiled once, run in its own cell per test."""

    def __init__(self, program: Program, name: str) -> None:
        self.program = program
        self.name = name

    def check(self, input_data: bytes, output: str, answer: bytes) -> Outcome:
        files = dict(self.program.files)
        files.update({"input": input_data, "output": output.encode(), "answer": answer})
        language = self.program.language
        limits = dict(CHECKER_LIMITS)
        limits["memory"] = CHECKER_MEMORY + language.memory_overhead
        limits["pids"] = max(int(limits["pids"]), language.run_pids or 0)
        result = sandbox.run(
            [*self.program.argv(CHECKER_MEMORY), "input", "output", "answer"],
            copy_in=files,
            readonly=self.program.readonly,
            seccomp=language.seccomp,
            env=language.run_env,
            image=language.image,
            **limits,
        )
        return interpret_exit(result, "checker", self.program.language)


def interpret_exit(
    result: sandbox.RunResult, role: str, language: Language | None = None
) -> Outcome:
    """A checker's (or interactor's) run, read by testlib's exit-code convention."""
    cell = cell_summary(result)
    first = result.stderr.strip().split("\n", 1)[0].strip()[:MESSAGE_LIMIT]
    failed = f"the {role} failed"  # what an IE says without the test's data
    if result.status not in (Status.OK, Status.RE) or result.signal is not None:
        return Outcome(
            Verdict.IE, 0.0, f"the {role} failed: {result.status} ({result.message})", cell, failed
        )
    code = result.exit_code
    if (
        code == EXIT_WA
        and language is not None
        and language.crash_marker
        and (language.crash_marker in result.stderr)
    ):
        last = result.stderr.strip().rsplit("\n", 1)[-1][:MESSAGE_LIMIT]
        return Outcome(Verdict.IE, 0.0, f"the {role} crashed: {last}", cell, failed)
    if code == EXIT_OK:
        return Outcome(Verdict.AC, 1.0, first, cell)
    if code == EXIT_WA:
        return Outcome(Verdict.WA, 0.0, first, cell)
    if code == EXIT_PE:
        return Outcome(
            Verdict.WA,
            0.0,
            f"presentation error: {first}" if first else "presentation error",
            cell,
            "presentation error",
        )
    if code == EXIT_PARTIAL:
        match = re.search(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", first)
        if not match:
            return Outcome(
                Verdict.IE,
                0.0,
                f"the {role} exited 7 (partial) without a score on stderr's first line: {first!r}",
                cell,
                failed,
            )
        fraction = float(match.group(0))
        if not 0.0 <= fraction <= 1.0:
            return Outcome(
                Verdict.IE,
                0.0,
                f"the {role}'s partial score {fraction:g} is outside [0, 1]",
                cell,
                failed,
            )
        verdict = Verdict.AC if fraction == 1.0 else Verdict.WA
        return Outcome(
            verdict,
            fraction,
            f"partial score {fraction:g}: {first}",
            cell,
            f"partial score {fraction:g}",
        )
    return Outcome(
        Verdict.IE,
        0.0,
        f"the {role} exited with {code} (0, 1, 2 or 7 expected): {first}",
        cell,
        failed,
    )


def _builtin(spec: str) -> Checker | None:
    name, _, arg = spec.partition(":")
    if name == "exact" and not arg:
        return ExactChecker()
    if name == "lines" and not arg:
        return LinesChecker()
    if name == "tokens" and not arg:
        return TokensChecker()
    if name == "float":
        if not arg:
            return FloatChecker()
        try:
            eps = float(arg)
        except ValueError:
            raise CheckerError(f"checker {spec!r}: {arg!r} is not a number (float:1e-6)") from None
        if not math.isfinite(eps) or eps < 0:
            raise CheckerError(f"checker {spec!r}: EPS must be a finite number >= 0")
        return FloatChecker(eps)
    return None


@dataclass
class ProgramCache:
    """Compiled helper programs (checkers, interactors) by language and source."""

    programs: dict[tuple[str, str], Program] = field(default_factory=dict)

    def get(self, language: Language, source: bytes, extra: dict[str, bytes]) -> Program:
        digest = hashlib.sha256(source)
        for name in sorted(extra):
            digest.update(b"\0" + name.encode() + b"\0" + extra[name])
        key = (language.id, digest.hexdigest())
        if key not in self.programs:
            self.programs[key] = compile_program(language, source, extra)
        return self.programs[key]


_CACHE = ProgramCache()


def load_program(path: Path, role: str, language_id: str | None = None) -> Program:
    """A helper program from a file: a source in a known language (compiled once,
    cached per process), or an executable run as it is. testlib.h next to it is
    available to its compile."""
    if not path.is_file():
        raise CheckerError(f"{role} {path} does not exist")
    lang_id = language_id or language_for_path(path)
    data = path.read_bytes()
    if lang_id is None:
        if data[:4] != b"\x7fELF" and data[:2] != b"#!":
            raise CheckerError(
                f"{role} {path}: not a source file of a known language (by its extension: "
                ".c .cpp .py .java .js .go .rs .sh) nor an executable (ELF or #!)"
            )
        program = Program(
            Language(id="executable", name="executable", source=role, run=(f"./{role}",)),
            {role: data},
        )
        return program
    try:
        language = get_language(lang_id)
    except ValueError as error:
        raise CheckerError(f"{role} {path}: {error}") from None
    extra = {}
    header = path.parent / "testlib.h"
    if header.is_file() and language.compiled:
        extra["testlib.h"] = header.read_bytes()
    return _compiled(language, data, extra, f"{role} {path}")


def build_checker(spec: object, *, host_paths: bool = True) -> Checker:
    """The one way a checker is made from what a user gives (the CLI, a batch
    item, an HTTP request): None (lines), a built-in's name (`float:1e-4`),
    {"language", "source"} (compiled once per process), or, where the caller
    may name files of this machine (the CLI, a batch; never HTTP), the path
    of a program. Raises CheckerError saying what is wrong."""
    if spec is None or spec == "":
        return LinesChecker()
    if isinstance(spec, dict):
        return _program_checker(spec)
    if not isinstance(spec, str):
        raise CheckerError("checker: a name, a path or {language, source}")
    builtin = _builtin(spec)
    if builtin is not None:
        return builtin
    if not host_paths:
        raise CheckerError(
            f"checker {spec!r}: not a built-in checker (exact, lines, tokens, float[:EPS])"
        )
    path = Path(spec)
    if not path.exists():
        raise CheckerError(
            f"checker {spec!r} is neither a built-in checker (exact, lines, tokens, float[:EPS]) "
            "nor an existing file"
        )
    return ProgramChecker(load_program(path, "checker"), str(path))


def get_checker(spec: str | None) -> Checker:
    """A checker by name (`lines`, `float:1e-4`, ...) or by the path of a program."""
    return build_checker(spec)


def _program_checker(spec: dict[str, Any]) -> ProgramChecker:
    language_id, source = spec.get("language"), spec.get("source")
    if set(spec) != {"language", "source"} or not isinstance(language_id, str):
        raise CheckerError("checker: {language, source}, both strings")
    if not isinstance(source, str):
        raise CheckerError("checker: {language, source}, both strings")
    try:
        language = get_language(language_id)
    except ValueError as error:
        raise CheckerError(f"checker: {error}") from None
    program = _compiled(language, source.encode(), {}, "the checker")
    return ProgramChecker(program, f"{language.id} checker")


def _compiled(language: Language, source: bytes, extra: dict[str, bytes], what: str) -> Program:
    """A helper program compiled (once per process), or CheckerError with the compiler's words."""
    program = _CACHE.get(language, source, extra)
    if not program.ok:
        output = (program.compile.stderr + program.compile.stdout) if program.compile else ""
        raise CheckerError(f"{what} does not compile: {program.error}\n{output[:4000]}")
    return program
