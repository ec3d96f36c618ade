"""JudgeResult for people and programs: JSON, a table, Gradescope's results.json."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from .results import JudgeResult, TestResult, Verdict


def to_json(result: JudgeResult) -> str:
    return json.dumps(result.to_dict())


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _num(value: float) -> str:
    return f"{value:g}"


def table(result: JudgeResult) -> str:
    """A plain-text report: one row per test, then the summary."""
    lines: list[str] = []
    if (
        result.compile is not None
        and result.verdict in (Verdict.CE, Verdict.IE)
        and not (result.tests)
    ):
        output = (result.compile.stderr + result.compile.stdout).rstrip()
        lines.append(f"compile: {result.message}")
        if output:
            lines.append(output)
    if result.tests:
        rows = [("test", "verdict", "time", "wall", "memory", "score", "message")]
        for test in result.tests:
            rows.append(
                (
                    test.name,
                    str(test.verdict),
                    f"{test.time:.3f}",
                    f"{test.wall_time:.3f}",
                    _mib(test.memory),
                    f"{_num(test.score)}/{_num(test.max_score)}",
                    test.message.replace("\n", " ")[:80],
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        for row in rows:
            cells = [
                cell.ljust(widths[i]) if i in (0, 1) else cell.rjust(widths[i])
                for i, cell in enumerate(row[:6])
            ]
            lines.append("  ".join(cells) + "  " + row[6])
    skipped = result.tests_total - len(result.tests)
    summary = (
        f"verdict {result.verdict} · score {_num(result.score)}/{_num(result.max_score)} · "
        f"time {result.time:.3f} s · memory {_mib(result.memory)}"
    )
    if skipped > 0 and result.tests:
        summary += f" · {skipped} test(s) not run"
    lines.append(summary)
    if result.verdict != Verdict.AC and result.message and result.tests:
        lines.append(result.message)
    return "\n".join(lines)


def gradescope(result: JudgeResult, visibility: str = "visible") -> dict[str, Any]:
    """Gradescope's autograder results.json (docs: specs.md, 'Output format')."""
    tests: list[dict[str, Any]] = []
    for number, test in enumerate(result.tests, 1):
        tests.append(
            {
                "name": f"test {test.name}",
                "number": str(number),
                "score": test.score,
                "max_score": test.max_score,
                "status": "passed" if test.verdict == Verdict.AC else "failed",
                "output": _test_output(test),
                "visibility": visibility,
            }
        )
    output = f"Verdict: {result.verdict}"
    if result.message:
        output += f"\n{result.message}"
    if result.verdict == Verdict.CE and result.compile is not None:
        output += "\n\n" + (result.compile.stderr + result.compile.stdout)[:8000]
    return {
        "score": result.score,
        "max_score": result.max_score,
        "execution_time": round(sum(t.wall_time for t in result.tests), 3),
        "output": output,
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def _test_output(test: TestResult) -> str:
    text = f"{test.verdict}: {test.message}" if test.message else str(test.verdict)
    text += f"\ntime {test.time:.3f} s, memory {_mib(test.memory)}"
    if test.verdict == Verdict.RE and test.stderr:
        text += "\n" + test.stderr[-1000:]
    return text


class ProgressBar:
    """A one-line progress bar on a terminal's stderr; silent elsewhere."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.active = stream.isatty()
        self.failed = 0

    def __call__(self, test: TestResult, index: int, total: int) -> None:
        if not self.active:
            return
        self.failed += test.verdict != Verdict.AC
        width = 30
        done = round(width * (index + 1) / max(total, 1))
        bar = "#" * done + "." * (width - done)
        self.stream.write(f"\r[{bar}] {index + 1}/{total} tests · {self.failed} failed ")
        self.stream.flush()

    def clear(self) -> None:
        if self.active:
            self.stream.write("\r\033[K")
            self.stream.flush()
