"""From what happened to a status: the contract's precedence, in one place.

IE (we failed) > TLE (CPU or wall limit) > MLE (the kernel's OOM killer acted)
> OLE (output or file-size limit) > SV (seccomp killed it) > RE (non-zero
exit or a signal) > OK. MLE comes only from the kernel's OOM count: a SIGKILL
is not an OOM kill, whatever exit code 137 suggests. A wall-clock kill of a
cell the machine starved of CPU (sandbox/cpuwait.py) is IE, not TLE: the
verdict would be the machine's; a CPU time over the limit is TLE all the same
(it is the program's own, however loaded the machine).
"""

from __future__ import annotations

import os
import signal as signals
from dataclasses import dataclass

from . import cpuwait
from .spec import Limits, Status


@dataclass
class Facts:
    wait_status: int
    cpu_time: float
    wall_time: float
    oom_killed: bool
    output_truncated: bool
    kill_reason: str | None  # set when the host ended the cell: "wall", "cpu", "output"
    exec_error: str | None = None
    cpu_wait: cpuwait.CpuWait | None = None  # read at a wall-clock kill


def _signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"


def decide(facts: Facts, limits: Limits) -> tuple[Status, int | None, int | None, str]:
    """(status, exit_code, signal, message) for one finished run."""
    status_word = facts.wait_status
    exit_code = os.WEXITSTATUS(status_word) if os.WIFEXITED(status_word) else None
    sig = os.WTERMSIG(status_word) if os.WIFSIGNALED(status_word) else None

    if (
        facts.kill_reason == "cpu"
        or sig == signals.SIGXCPU
        or (sig == signals.SIGKILL and facts.cpu_time >= limits.time)
        or (facts.kill_reason is None and facts.cpu_time > limits.time)
    ):
        return (
            Status.TLE,
            exit_code,
            sig,
            (f"CPU time limit of {limits.time:g} s exceeded ({facts.cpu_time:.3f} s used)"),
        )
    wait = facts.cpu_wait
    if facts.kill_reason == "wall" and wait is not None and cpuwait.starved(wait, limits.cpus):
        return (
            Status.IE,
            exit_code,
            sig,
            (
                f"the machine was overloaded: the wall-time limit of "
                f"{limits.effective_wall_time:g} s passed while a thread of the program "
                f"waited {wait.outside:.3f} s for CPUs busy with work outside its cell "
                f"(CPU time {wait.cpu_time:.3f} s): not the program's verdict"
            ),
        )
    if facts.kill_reason == "wall":
        return (
            Status.TLE,
            exit_code,
            sig,
            (
                f"wall-time limit of {limits.effective_wall_time:g} s exceeded "
                f"(CPU time {facts.cpu_time:.3f} s)"
            ),
        )
    if facts.oom_killed:
        return (
            Status.MLE,
            exit_code,
            sig,
            (f"the kernel's OOM killer acted: memory limit of {limits.memory} bytes"),
        )
    if facts.kill_reason == "output" or facts.output_truncated:
        return Status.OLE, exit_code, sig, (f"output limit of {limits.output_limit} bytes exceeded")
    if sig == signals.SIGXFSZ:
        return Status.OLE, exit_code, sig, (f"file-size limit of {limits.file_size} bytes exceeded")
    if sig == signals.SIGSYS:
        return Status.SV, exit_code, sig, "killed for a system call the seccomp profile forbids"
    if facts.exec_error:
        return Status.RE, exit_code, sig, facts.exec_error
    if sig is not None:
        return Status.RE, exit_code, sig, f"killed by {_signal_name(sig)}"
    if exit_code:
        return Status.RE, exit_code, sig, f"exited with code {exit_code}"
    return Status.OK, exit_code, sig, "exited normally"
