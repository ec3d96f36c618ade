"""`cellblock doctor`: what this kernel and host allow, what is degraded, how to fix it.

Every kernel feature is probed for real, never inferred from configuration
(probe.py: a forked, time-boxed child that leaves nothing behind), and what
cellblock decides at run time is asked of the module that decides it: the
cgroup a run would get of sandbox.cgroups (`inspect()`, read only: it never
creates, moves or writes a cgroup), the program's host ids of sandbox.userns,
the launcher of sandbox.spawn. One module per section:

    namespaces.py    user, mount + overlay, pid + /proc, network
    apparmor.py      AppArmor's restriction of user namespaces (Ubuntu)
    confinement.py   seccomp, Landlock
    resources.py     cgroups, per-user quotas, CPU waits
    ids.py           subordinate ids
    runtime.py       the kernel, the program launcher, the cell maker

    report = check_host()
    report.ok            # True only when every required check passes
    report.to_dict()     # for --json
    format_report(report)  # for people

The report is for the *current* user: run it as the user the workers run as.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .apparmor import check_apparmor
from .confinement import check_landlock, check_seccomp
from .ids import check_subids
from .namespaces import check_netns, check_overlay, check_pidns, check_userns
from .probe import Outcome, ProbeFailed, probe
from .report import Check, Report, format_report
from .resources import check_cgroup_moves, check_cgroups, check_cpu_waits, check_quotas
from .runtime import check_kernel, check_launcher, check_maker

__all__ = [
    "CHECKS",
    "check_apparmor",
    "Check",
    "Outcome",
    "ProbeFailed",
    "Report",
    "check_cgroup_moves",
    "check_cgroups",
    "check_cpu_waits",
    "check_host",
    "check_kernel",
    "check_landlock",
    "check_launcher",
    "check_maker",
    "check_netns",
    "check_overlay",
    "check_pidns",
    "check_quotas",
    "check_seccomp",
    "check_subids",
    "check_userns",
    "format_report",
    "probe",
    "run_doctor",
]

CHECKS: list[tuple[str, Callable[[], Check]]] = [
    ("program launcher", check_launcher),
    ("user namespaces", check_userns),
    ("apparmor", check_apparmor),
    ("mount namespace + overlay", check_overlay),
    ("pid namespace + /proc", check_pidns),
    ("network namespace", check_netns),
    ("seccomp", check_seccomp),
    ("cgroups", check_cgroups),
    ("cgroup moves", check_cgroup_moves),
    ("landlock", check_landlock),
    ("subordinate ids", check_subids),
    ("per-user quotas", check_quotas),
    ("CPU waits", check_cpu_waits),
    ("kernel", check_kernel),
    ("cell maker", check_maker),
]


def check_host() -> Report:
    report = Report()
    for name, fn in CHECKS:
        try:
            check = fn()
        except Exception as e:  # a bug in one check must not hide the others
            check = Check(name, False, f"internal error while checking: {type(e).__name__}: {e}")
        report.checks.append(check)
    return report


def run_doctor(as_json: bool = False) -> tuple[str, int]:
    """The text `cellblock doctor [--json]` prints and its exit code (0 iff report.ok)."""
    report = check_host()
    text = json.dumps(report.to_dict(), indent=2) if as_json else format_report(report)
    return text, 0 if report.ok else 1
