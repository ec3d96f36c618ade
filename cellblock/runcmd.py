"""`cellblock run`'s run: its options made into a RunSpec, run, and told.

One definition for both ways a run is made: in the CLI's own process
(run_in_process), or in a run server's for a CLI that handed it over
(cellblock/server.py calls outcome). Either way the text to print, the exit
code and the files come from outcome(), and cellblock/output.py writes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cellblock.output import deliver
from cellblock.protocol import RunOptions

if TYPE_CHECKING:
    from sandbox import RunResult

# Exit codes of `cellblock run` without --json (like timeout(1) and env(1)):
EXIT_USAGE = 2  # bad options: nothing ran
EXIT_TLE = 124
EXIT_INTERNAL = 125


class Outcome:
    """What a run leaves: files for --out-dir, the text for stdout and
    stderr, the exit code."""

    __slots__ = ("files", "stdout", "stderr", "code")

    def __init__(self, files: dict[str, bytes], stdout: str, stderr: str, code: int) -> None:
        self.files = files
        self.stdout = stdout
        self.stderr = stderr
        self.code = code


def run_in_process(options: RunOptions) -> int:
    """The run in this process, printed; its exit code."""
    from sandbox import keep_warm

    keep_warm(False)  # one cell per process: a warm successor would only be thrown away
    done = outcome(options)
    deliver(options.out_dir, done.files, done.stdout, done.stderr)
    return done.code


def outcome(
    options: RunOptions, sources: Mapping[str, str] | None = None, check_out_dir: bool = True
) -> Outcome:
    """Run what the options say. `sources` maps --stdin and --copy-in sources
    as typed to the paths to open instead (a run server's: the descriptors
    the client opened, /proc/self/fd/N); messages still name them as typed.
    A run server has no --out-dir to check: its client checked it."""
    from sandbox import RunSpec, SpecError, run_spec
    from sandbox.spec import Limits

    sources = sources or {}
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    try:
        env = {}
        for item in options.env:
            key, sep, value = item.partition("=")
            if not sep:
                raise SpecError(f"--env: {item!r} is not K=V")
            env[key] = value
        copy_in: dict[str, str] = {}
        for item in options.copy_in:
            src, sep, dest = item.rpartition(":")
            if not sep or not src or not dest:
                raise SpecError(f"--copy-in: {item!r} is not SRC:DEST")
            copy_in[dest] = sources.get(src, src)
        limits = Limits.build(**options.limits)
        stdin = sources.get(options.stdin, options.stdin) if options.stdin else None
        spec = RunSpec(
            argv=tuple(command),
            limits=limits,
            stdin=Path(stdin) if stdin else None,
            copy_in=copy_in,
            copy_out=tuple(options.copy_out),
            image=options.image,
            seccomp=options.seccomp,
            env=env,
            readonly=tuple(options.readonly),
            stderr_to_stdout=options.stderr_to_stdout,
        )
        out_dir = Path(options.out_dir)
        if check_out_dir and spec.copy_out and not out_dir.is_dir():
            raise SpecError(f"--out-dir: {out_dir} is not a directory")
        result = run_spec(spec)
    except SpecError as error:
        return Outcome({}, "", f"cellblock run: error: {error}\n", EXIT_USAGE)
    return Outcome(result.files, *_told(result, options.json, spec.copy_out))


def _told(result: RunResult, as_json: bool, copy_out: tuple[str, ...]) -> tuple[str, str, int]:
    """(stdout, stderr, exit code) of a RunResult, as the contract says them."""
    from sandbox import Status

    if as_json:
        return json.dumps(result.to_dict()) + "\n", "", 0
    lines = [
        f"cellblock: {result.status} · {result.message} · time {result.time:.3f} s · "
        f"wall {result.wall_time:.3f} s · memory {result.memory / (1 << 20):.1f} MiB"
    ]
    for entry in result.degraded:  # the isolation's shortcomings (the figures' are in the message)
        if entry not in result.message:
            lines.append(f"cellblock: degraded: {entry}")
    for path in copy_out:
        if path not in result.files:
            lines.append(
                f"cellblock: --copy-out {path}: not copied (missing or not a regular file)"
            )
    stderr = result.stderr + "".join(line + "\n" for line in lines)
    if result.status == Status.IE:
        code = EXIT_INTERNAL
    elif result.status == Status.TLE:
        code = EXIT_TLE
    elif result.signal is not None:
        code = 128 + result.signal
    elif result.exit_code:
        code = result.exit_code
    else:
        code = 0 if result.status == Status.OK else 1
    return result.stdout, stderr, code
