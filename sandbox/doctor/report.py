"""The doctor's report: one Check per section, and how it reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only when every required check passes."""
        return all(c.ok for c in self.checks if c.required)

    @property
    def degraded(self) -> list[str]:
        """Names of the required checks that fail."""
        return [c.name for c in self.checks if c.required and not c.ok]

    @property
    def warnings(self) -> list[str]:
        """Names of the optional checks that fail."""
        return [c.name for c in self.checks if not c.required and not c.ok]

    def get(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "degraded": self.degraded,
            "warnings": self.warnings,
            "checks": [asdict(c) for c in self.checks],
        }


def format_report(report: Report) -> str:
    """One line per check (✓ passes, ✗ required and fails, ! optional and fails)."""
    lines = []
    for c in report.checks:
        mark = "✓" if c.ok else ("✗" if c.required else "!")
        lines.append(f"{mark} {c.name} — {c.detail}")
        if c.fix and not c.ok:
            lines.append(f"    fix: {c.fix}")
    if report.ok:
        summary = "ok: cells run with every protection"
        if report.warnings:
            summary += f" (optional hardening missing: {', '.join(report.warnings)})"
    else:
        summary = f"degraded: {', '.join(report.degraded)}"
    lines.append(summary)
    return "\n".join(lines)
