"""Test sets: a directory of NAME.in + NAME.out (or NAME.ans) pairs, or the same as data.

The directory format:

    tests/
      1.in   1.out        a test named "1"
      2.in   2.ans        .ans is accepted for .out (not both for one name)
      10.in  10.out       natural order: 1, 2, 10 (not 1, 10, 2)
      scores.txt          optional: "NAME SCORE" per line ('#' starts a comment);
                          tests not listed score 1

Other files are ignored (a checker source, a README). An .in without an
answer, or an answer without an .in, is an error, except that interactive
problems (whose interactor decides) may have inputs only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path


class TestSetError(ValueError):
    """The tests are missing or malformed; the message says what to fix."""

    __test__ = False  # not a pytest test class, whatever its name


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest test class, whatever its name

    name: str
    input: bytes | Path
    answer: bytes | Path | None = None
    score: float = 1.0

    def input_bytes(self) -> bytes:
        return self.input.read_bytes() if isinstance(self.input, Path) else self.input

    def answer_bytes(self) -> bytes:
        if self.answer is None:
            return b""
        return self.answer.read_bytes() if isinstance(self.answer, Path) else self.answer


SCORES_FILE = "scores.txt"
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """'test2' before 'test10'; numbers compare as numbers, the rest as text."""
    return tuple(
        (0, int(part), part) if part.isdigit() else (1, 0, part)
        for part in _DIGITS.split(name)
        if part
    )


def load_dir(directory: Path, answers_required: bool = True) -> list[TestCase]:
    directory = Path(directory)
    if not directory.exists():
        raise TestSetError(f"tests directory {directory} does not exist")
    if not directory.is_dir():
        raise TestSetError(f"tests: {directory} is not a directory")
    inputs: dict[str, Path] = {}
    answers: dict[str, Path] = {}
    for path in directory.iterdir():
        if not path.is_file():
            continue
        stem, suffix = path.stem, path.suffix
        if suffix == ".in":
            inputs[stem] = path
        elif suffix in (".out", ".ans"):
            if stem in answers:
                raise TestSetError(
                    f"tests: {stem}.out and {stem}.ans both exist in {directory}; keep one"
                )
            answers[stem] = path
    if not inputs and not answers:
        raise TestSetError(f"tests: no NAME.in / NAME.out pairs in {directory}")
    orphans = sorted(set(answers) - set(inputs), key=natural_key)
    if orphans:
        raise TestSetError(
            f"tests: {', '.join(answers[n].name for n in orphans)} in {directory} "
            "has no matching .in file"
        )
    missing = sorted(set(inputs) - set(answers), key=natural_key)
    if missing and answers_required:
        raise TestSetError(
            f"tests: {', '.join(inputs[n].name for n in missing)} in {directory} "
            "has no matching .out or .ans file"
        )
    scores = _read_scores(directory / SCORES_FILE, set(inputs))
    return [
        TestCase(name, inputs[name], answers.get(name), scores.get(name, 1.0))
        for name in sorted(inputs, key=natural_key)
    ]


def _read_scores(path: Path, names: set[str]) -> dict[str, float]:
    if not path.is_file():
        return {}
    scores: dict[str, float] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{path}:{number}"
        if len(parts) != 2:
            raise TestSetError(f"{where}: expected 'NAME SCORE', got {raw.strip()!r}")
        name, value = parts
        if name not in names:
            raise TestSetError(f"{where}: no test named {name!r}")
        try:
            score = float(value)
        except ValueError:
            raise TestSetError(f"{where}: {value!r} is not a number") from None
        if not math.isfinite(score) or score < 0:
            raise TestSetError(f"{where}: a score must be a finite number >= 0")
        scores[name] = score
    return scores


def from_data(items: list[dict]) -> list[TestCase]:
    """Tests given as data: [{name, input, output, score}] (strings or bytes)."""
    tests = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise TestSetError(f"tests[{index}]: expected an object")
        name = str(item.get("name", index + 1))
        if name in seen:
            raise TestSetError(f"tests[{index}]: duplicate test name {name!r}")
        seen.add(name)
        answer = item.get("output", item.get("answer"))
        score = item.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, int | float) or score < 0:
            raise TestSetError(f"tests[{index}]: score must be a number >= 0")
        tests.append(
            TestCase(
                name,
                _bytes(item.get("input", b"")),
                None if answer is None else _bytes(answer),
                float(score),
            )
        )
    return tests


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TestSetError(f"test data must be text, got {type(value).__name__}")
