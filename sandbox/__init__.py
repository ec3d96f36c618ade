"""cellblock's cell: run one untrusted command in a rootless container.

    from sandbox import run
    result = run(["python3", "-c", "print(1)"], time=1.0, memory="256M", stdin=b"")
    result.status, result.stdout, result.time, result.memory, result.oom_killed

This package knows nothing of judging; see docs/contract.md, section 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .spec import CopyInSource, Limits, RunResult, RunSpec, SpecError, Status, limit_fields

__all__ = [
    "run",
    "run_spec",
    "for_many_runs",
    "keep_warm",
    "recycle_cells",
    "Limits",
    "RunResult",
    "RunSpec",
    "SpecError",
    "Status",
]


def run(
    argv: Sequence[str],
    *,
    stdin: bytes | str | None = None,
    copy_in: Mapping[str, CopyInSource] | None = None,
    copy_out: Sequence[str] = (),
    image: str = "host",
    seccomp: str = "default",
    env: Mapping[str, str] | None = None,
    readonly: Sequence[str] = (),
    stderr_to_stdout: bool = False,
    **limits: object,
) -> RunResult:
    """Run `argv` in a fresh cell. Options are those of `cellblock run`.

    `readonly` names copy-in destinations the program cannot write, chmod,
    rename over or remove (read-only binds of themselves). `stderr_to_stdout`
    sends the program's stderr into its stdout, in the order written.

    Bad options raise SpecError (a ValueError) before anything starts; a failure
    of the sandbox itself comes back as a result with status IE.
    """
    unknown = set(limits) - {limit.name for limit in limit_fields()}
    if unknown:
        raise SpecError(f"unknown option(s): {', '.join(sorted(unknown))}")
    if isinstance(argv, str):
        raise SpecError("command: pass a list of arguments, not one string")
    spec = RunSpec(
        argv=tuple(argv),
        limits=Limits.build(**limits),
        stdin=stdin.encode() if isinstance(stdin, str) else stdin,
        copy_in=dict(copy_in or {}),
        copy_out=tuple(copy_out),
        image=image,
        seccomp=seccomp,
        env=dict(env or {}),
        # One string is passed on as it is: RunSpec refuses it with a clear error.
        readonly=readonly if isinstance(readonly, str) else tuple(readonly),  # type: ignore[arg-type]
        stderr_to_stdout=bool(stderr_to_stdout),
    )
    return run_spec(spec)


def run_spec(spec: RunSpec) -> RunResult:
    from .cell import run_cell

    return run_cell(spec)


def keep_warm(enabled: bool | None = True) -> None:
    """Make each run's successor cell while its program runs (sandbox/warm.py).

    A run then costs a message to a waiting cell instead of a clone and a
    root. Automatic unless chosen: a process's second run turns it on (one
    that runs a single cell never pays for it), and its tenth starts the cell
    maker (sandbox/maker.py, ~90 ms of CPU once, ~16 MiB) that makes the cells
    from then on. `keep_warm()` turns both on from the first run,
    `keep_warm(False)` off (ending the cell kept and the maker),
    `keep_warm(None)` back to automatic. While on, one cell is kept waiting (a
    process and its mount namespace) until `keep_warm(False)` or exit. From
    outside: CELLBLOCK_WARM=1 (on) or CELLBLOCK_WARM=0 (off).
    """
    from .making import reap_finished
    from .warm import enabled as _enabled
    from .warm import keep_warm as _keep_warm

    _keep_warm(enabled)
    if not _enabled():
        reap_finished()  # and the inits of finished runs: nothing of ours is left


def recycle_cells(enabled: bool | None = True) -> None:
    """Renew a cell after its run instead of ending it (sandbox/warm.py), for
    the next run of the same kind: new mount, network, IPC and UTS namespaces
    and a fresh root, every process gone, the PID counter reset; the user and
    PID namespaces are kept. About half a cell's CPU per run. Turns warm cells
    on. Automatic by default (None): on once a process has run 10 cells. From
    outside: CELLBLOCK_RECYCLE=1 or 0."""
    from .warm import recycle_cells as _recycle_cells

    _recycle_cells(enabled)


def for_many_runs() -> None:
    """How a long-lived caller that runs cell after cell (the service's
    workers, `cellblock run-server`) sets up: warm cells and the cell maker
    from the first run, and recycled cells unless CELLBLOCK_RECYCLE=0."""
    import os

    keep_warm()
    if os.environ.get("CELLBLOCK_RECYCLE", "1") != "0":
        recycle_cells()
