"""Compile once, in a cell of its own; carry the artifacts into every run.

The compile cell runs the language's compile command under COMPILE_LIMITS
(far larger than a test's: a compiler's needs are not the submission's), then
packs the language's `artifacts` globs into one tar in the same cell. The host
unpacks that tar itself, keeping only regular files with plain relative names
(the compile ran untrusted source: its output is untrusted too). Every test run
gets those files copied into /box, read-only (the run cannot alter its own
program, whatever it owns), beside the submission's own extra files.

A submission's `compile_options` are appended to the language's compile
command (gcc, g++, rustc and javac take options after the file names); the
operator's allow-list (COMPILE_OPTIONS_VARIABLE) is checked by the request, not here.
"""

from __future__ import annotations

import io
import shlex
import tarfile
from dataclasses import dataclass, field
from typing import Any

import sandbox
from sandbox import RunResult, Status

from .languages import Language

# Compiler output kept in a CE result: enough for every error of a real
# mistake, not a megabyte of template instantiation backtraces.
COMPILE_OUTPUT_KEEP = 64 << 10
ARTIFACTS_TAR = ".cellblock-artifacts.tar"
MAX_ARTIFACTS = 256 << 20


@dataclass
class Program:
    """A runnable submission (or checker, or interactor): what every run copies in."""

    language: Language
    files: dict[str, bytes] = field(default_factory=dict)
    compile: RunResult | None = None
    error: str = ""  # why it cannot run: a CE (or IE) message; "" when it can
    internal: bool = False  # the failure is the sandbox's, not the source's
    readonly: tuple[str, ...] = ()  # files the runs may not change: the compiled artifacts
    # How every run of it goes (a submission's `args`, `stderr_to_stdout`,
    # `output_files`); a checker's or interactor's runs have none.
    args: tuple[str, ...] = ()
    stderr_to_stdout: bool = False
    output_files: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.error

    def argv(self, memory: int) -> list[str]:
        return [*self.language.run_argv(memory), *self.args]


def _cut(result: RunResult) -> RunResult:
    for stream in ("stdout", "stderr"):
        text = getattr(result, stream)
        if len(text) > COMPILE_OUTPUT_KEEP:
            setattr(result, stream, text[:COMPILE_OUTPUT_KEEP] + "\n[... compiler output cut]\n")
            setattr(result, f"{stream}_truncated", True)
    return result


def compile_program(
    language: Language,
    source: bytes,
    extra_files: dict[str, bytes] | None = None,
    wall_time: float | None = None,
    options: tuple[str, ...] = (),
    limits: dict[str, Any] | None = None,
) -> Program:
    """Compile `source` (if the language compiles); never raises for the source's faults.

    `extra_files` sit beside the source in the compile and in every run;
    `wall_time` shortens the compile's wall-clock limit (a batch item's
    deadline); `options` go after the compile command; `limits` (a request's
    compile_time, compile_memory as cell options) replace the language's."""
    files = dict(extra_files or {})
    files[language.source] = source
    if not language.compiled:
        return Program(language, files)
    assert language.compile is not None
    patterns = " ".join(
        shlex.quote(p) if not any(c in p for c in "*?[") else p for p in language.artifacts
    )
    # One cell: the compiler, then the packing of what it made. A missing
    # artifact leaves no tar (reported as CE below), not a confusing tar error.
    script = (
        '"$@" || exit\n'
        f"tar -cf {ARTIFACTS_TAR} -- {patterns} 2>/dev/null || rm -f {ARTIFACTS_TAR}\n"
    )
    cell_limits = {**language.compile_limit_options(), **(limits or {})}
    if wall_time is not None:
        cell_limits["wall_time"] = min(float(cell_limits["wall_time"]), max(wall_time, 0.1))
    result = sandbox.run(
        ["sh", "-c", script, "compile", *language.compile, *options],
        copy_in=files,
        copy_out=[ARTIFACTS_TAR],
        env=language.compile_env,
        image=language.image,
        **cell_limits,
    )
    result = _cut(result)
    program = Program(language, compile=result)
    if result.status == Status.IE:
        program.error = f"the compile cell failed: {result.message}"
        program.internal = True
        return program
    if result.status != Status.OK:
        program.error = _compile_failure(result)
        return program
    tar = result.files.pop(ARTIFACTS_TAR, None)
    if tar is None:
        program.error = f"the compiler exited normally but left no {', '.join(language.artifacts)}"
        return program
    try:
        artifacts = _unpack(tar)
        program.readonly = tuple(artifacts)
        # The submission's own files too, unless the compile made one of that name.
        program.files = {**(extra_files or {}), **artifacts}
    except ValueError as error:
        program.error = f"unusable compiler output: {error}"
    return program


def _compile_failure(result: RunResult) -> str:
    if result.status == Status.RE:
        if result.signal is not None:
            return f"the compiler was killed by signal {result.signal}"
        return f"compilation failed (exit code {result.exit_code})"
    if result.status == Status.TLE:
        return f"compilation took too long ({result.message})"
    if result.status == Status.MLE:
        return "compilation ran out of memory"
    if result.status == Status.OLE:
        return f"the compiler's output or files were too large ({result.message})"
    return f"compilation failed: {result.message}"


def _unpack(data: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if member.isdir():
                continue
            parts = name.split("/")
            if (
                not member.isreg()
                or name.startswith("/")
                or any(p in ("", ".", "..") for p in parts)
            ):
                raise ValueError(f"{member.name!r} is not a plain file")
            total += member.size
            if total > MAX_ARTIFACTS:
                raise ValueError(f"artifacts larger than {MAX_ARTIFACTS >> 20} MiB")
            extracted = archive.extractfile(member)
            assert extracted is not None
            files[name] = extracted.read()
    if not files:
        raise ValueError("no files")
    return files
