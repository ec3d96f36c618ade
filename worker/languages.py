"""Languages as data: one TOML file per language in profiles/languages/.

A language file (the file name is the language id, `cpp.toml` -> `cpp`):

    name = "C++ (g++, GNU C++17)"       # shown by `cellblock languages`
    source = "main.cpp"                 # the submission is saved under /box as this
    compile = ["g++", ..., "main.cpp"]  # optional: no compile step when absent
    artifacts = ["main"]                # what the compile leaves for the runs (globs)
    run = ["./main"]                    # argv of every test run
    version = ["g++", "-dumpfullversion"]  # first line of its output is the version
    seccomp = "default"                 # optional seccomp profile of the runs
    image = "cellblock/python-sci:bookworm"  # optional: the image its compiler and runtime
                                        # come from (`cellblock image pull`); default host
    image_source = "docker://registry.example:5000/python-sci:bookworm"
                                        # optional: where a worker that lacks `image` pulls
                                        # it from (worker/imagepull.py has the rule)
    oom_exit_code = 3                   # optional: the runtime's "my heap limit is full"
                                        # exit (the JVM's -XX:+ExitOnOutOfMemoryError): MLE
    crash_marker = "Traceback (most"    # optional: stderr text of an uncaught exception, which
                                        # exits 1 (testlib's WA): a checker that crashes is IE

    [run_limits]        # optional: what the runtime needs beyond the problem's limits
    pids = 128          # a floor for the pids limit (JVM threads)
    memory_overhead = "96M"  # added to the cell's memory limit (the JVM's baseline)
    [compile_limits]    # optional: overrides of COMPILE_LIMITS
    [compile_env]       # optional: environment of the compile cell
    [run_env]           # optional: environment of the run cells

`run` may use `{memory_mb}` (the problem's memory limit in MiB, for -Xmx and
--max-old-space-size) and `{source}`. Adding a language is adding a file;
`CELLBLOCK_LANGUAGES` may name another directory of such files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from profiles import LANGUAGES_DIR
from sandbox.spec import BASE_ENV, SpecError, parse_size


class LanguageError(ValueError):
    """An unknown language or a malformed language file."""


# The compile cell's limits: a compiler needs far more than a judged program,
# and its time is not the submission's. Overridable per language.
COMPILE_LIMITS: dict[str, object] = {
    "time": 30.0,
    "wall_time": 60.0,
    "memory": "1G",
    "pids": 128,
    "output_limit": "1M",
    "file_size": "256M",
}

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_+-]*$")
# Artifact patterns are spliced into a shell command: keep them to plain names and globs.
_ARTIFACT_RE = re.compile(r"^[A-Za-z0-9_.*?\[\]-][A-Za-z0-9_.*?\[\]/-]*$")
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Language:
    id: str
    name: str
    source: str
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    artifacts: tuple[str, ...] = ()
    version_command: tuple[str, ...] = ()
    seccomp: str = "default"
    oom_exit_code: int | None = None
    crash_marker: str = ""
    run_pids: int | None = None
    memory_overhead: int = 0
    compile_limits: dict[str, object] = field(default_factory=dict)
    compile_env: dict[str, str] = field(default_factory=dict)
    run_env: dict[str, str] = field(default_factory=dict)
    image: str = "host"  # where the toolchain is: the host's /usr, or a pulled image
    image_source: str | None = None  # where a worker pulls `image` from if it lacks it
    path: Path | None = None

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    def run_argv(self, memory: int) -> list[str]:
        values = {"memory_mb": str(max(memory >> 20, 1)), "source": self.source}
        return [arg.format(**values) for arg in self.run]

    def executables(self) -> list[str]:
        """The programs the language needs, by name (searched on the cell's PATH)."""
        wanted = [self.run[0]]
        if self.compile:
            wanted.insert(0, self.compile[0])
        return [name for name in wanted if "/" not in name]

    def installed(self) -> bool:
        """Whether its cells can run: for the host image, its programs are on the
        host; for another, the image is in the layer store (its programs are
        what the image has: version() runs in it)."""
        if self.image != "host":
            return _image_present(self.image)
        path = BASE_ENV["PATH"]  # what the cell will search, not the caller's PATH
        return all(shutil.which(name, path=path) for name in self.executables())

    def version(self) -> str:
        """The toolchain's version line, or '' when it cannot be had."""
        if self.image != "host":
            return _version_in_image(self.image, self.version_command)
        return _version(self.version_command)

    def compile_limit_options(self) -> dict[str, Any]:
        return {**COMPILE_LIMITS, **self.compile_limits}


_VERSION_NUMBER_RE = re.compile(r"\d+(?:\.\d+)+")


def version_number(line: str) -> str:
    """The dotted number in a version line ('Python 3.11.2' -> '3.11.2'), or ''."""
    found = _VERSION_NUMBER_RE.search(line)
    return found.group(0) if found else ""


@cache
def _version(command: tuple[str, ...]) -> str:
    if not command:
        return ""
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            timeout=20,
            check=False,
            env={**BASE_ENV, "HOME": "/tmp"},
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout + b"\n" + done.stderr).decode(errors="replace")
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _image_present(image: str) -> bool:
    from sandbox.images import resolve_image

    try:
        resolve_image(image)
    except SpecError:
        return False
    return True


@cache
def _version_in_image(image: str, command: tuple[str, ...]) -> str:
    """The version line of a toolchain in an image, asked in a cell of it."""
    if not command:
        return ""
    import sandbox

    try:
        result = sandbox.run(list(command), image=image, time=10, wall_time=20, memory="1G")
    except SpecError:
        return ""
    for line in (result.stdout + "\n" + result.stderr).splitlines():
        if line.strip():
            return line.strip()
    return ""


def languages_dir() -> Path:
    return Path(os.environ.get("CELLBLOCK_LANGUAGES", LANGUAGES_DIR))


def _strings(data: dict, key: str, path: Path, required: bool = False) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        if required:
            raise LanguageError(f"{path}: '{key}' is missing")
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise LanguageError(f"{path}: '{key}' must be a non-empty list of strings")
    return tuple(value)


def _table(data: dict, key: str, path: Path) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise LanguageError(f"{path}: [{key}] must be a table")
    return value


def _image_ref(data: dict, path: Path) -> str:
    image = data.get("image", "host")
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        raise LanguageError(f"{path}: 'image' must be an image reference (default 'host')")
    return image


def _image_source(data: dict, path: Path) -> str | None:
    source = data.get("image_source")
    if source is None:
        return None
    if "image" not in data:
        raise LanguageError(f"{path}: 'image_source' without 'image'")
    if not isinstance(source, str) or not source or any(c.isspace() for c in source):
        raise LanguageError(f"{path}: 'image_source' must be an image reference skopeo takes")
    return source


def load_language(path: Path) -> Language:
    """One language from its TOML file; every mistake is a LanguageError naming the file."""
    lang_id = path.stem
    if not _ID_RE.match(lang_id):
        raise LanguageError(f"{path}: '{lang_id}' is not a usable language id")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise LanguageError(f"{path}: {error}") from None
    source = data.get("source")
    if not isinstance(source, str) or not _SOURCE_RE.match(source):
        raise LanguageError(f"{path}: 'source' must be a plain file name")
    compile_argv = _strings(data, "compile", path)
    artifacts = _strings(data, "artifacts", path) or ()
    if compile_argv and not artifacts:
        raise LanguageError(f"{path}: a compiled language needs 'artifacts'")
    for pattern in artifacts:
        if not _ARTIFACT_RE.match(pattern) or ".." in pattern.split("/"):
            raise LanguageError(f"{path}: artifact {pattern!r} is not a plain relative name/glob")
    run_limits = _table(data, "run_limits", path)
    unknown = set(run_limits) - {"pids", "memory_overhead"}
    if unknown:
        raise LanguageError(f"{path}: unknown [run_limits] key(s) {sorted(unknown)}")
    compile_limits = _table(data, "compile_limits", path)
    unknown = set(compile_limits) - set(COMPILE_LIMITS)
    if unknown:
        raise LanguageError(f"{path}: unknown [compile_limits] key(s) {sorted(unknown)}")
    try:
        overhead = parse_size(run_limits.get("memory_overhead", 0), "memory_overhead")
    except ValueError as error:
        raise LanguageError(f"{path}: {error}") from None
    pids = run_limits.get("pids")
    if pids is not None and (not isinstance(pids, int) or pids < 1):
        raise LanguageError(f"{path}: [run_limits] pids must be a positive whole number")
    oom_exit_code = data.get("oom_exit_code")
    if oom_exit_code is not None and (
        not isinstance(oom_exit_code, int) or not 1 <= oom_exit_code <= 255
    ):
        raise LanguageError(f"{path}: 'oom_exit_code' must be an exit code 1..255")
    envs = {}
    for key in ("compile_env", "run_env"):
        table = _table(data, key, path)
        if not all(isinstance(v, str) for v in table.values()):
            raise LanguageError(f"{path}: [{key}] values must be strings")
        envs[key] = dict(table)
    return Language(
        id=lang_id,
        name=str(data.get("name", lang_id)),
        source=source,
        run=_strings(data, "run", path, required=True) or (),
        compile=compile_argv,
        artifacts=artifacts,
        version_command=_strings(data, "version", path) or (),
        seccomp=str(data.get("seccomp", "default")),
        oom_exit_code=oom_exit_code,
        crash_marker=str(data.get("crash_marker", "")),
        run_pids=pids,
        memory_overhead=overhead,
        compile_limits=dict(compile_limits),
        compile_env=envs["compile_env"],
        run_env=envs["run_env"],
        image=_image_ref(data, path),
        image_source=_image_source(data, path),
        path=path,
    )


# Parsed language files by directory, with the (name, size, mtime) of each
# file they came from: a worker asks for its languages on every job, and
# parsing eight TOML files costs it ~2 ms; a stat of each is ~20 us, and an
# operator's edit or new file is still seen by the next job.
_parsed: dict[Path, tuple[tuple[tuple[str, int, int], ...], dict[str, Language]]] = {}


def all_languages(directory: Path | None = None) -> dict[str, Language]:
    """Every language file, installed or not, by id (sorted)."""
    directory = directory or languages_dir()
    # os.scandir, not Path.glob: the same stats at a fifth of the CPU (the
    # API asks on every submission).
    with os.scandir(directory) as entries:
        found = sorted(
            (entry.name, (st := entry.stat()).st_size, st.st_mtime_ns)
            for entry in entries
            if entry.name.endswith(".toml") and not entry.name.startswith(".")
        )
    signature = tuple(found)
    cached = _parsed.get(directory)
    if cached is not None and cached[0] == signature:
        return dict(cached[1])
    paths = [directory / name for name, _, _ in found]
    languages = {path.stem: load_language(path) for path in paths}
    _parsed[directory] = (signature, languages)
    return dict(languages)


def get_language(lang_id: str, directory: Path | None = None) -> Language:
    """The language `lang_id`, if its file exists and its toolchain is installed."""
    known = all_languages(directory)
    if lang_id not in known:
        raise LanguageError(f"unknown language {lang_id!r} (known: {', '.join(known) or 'none'})")
    language = known[lang_id]
    if not language.installed():
        if language.image != "host":
            raise LanguageError(
                f"language {lang_id!r} is not installed here: its image {language.image!r} "
                "is not in this machine's image store (cellblock image pull)"
            )
        raise LanguageError(
            f"language {lang_id!r} is not installed here (needs {', '.join(language.executables())}"
            " on /usr/local/bin:/usr/bin:/bin; scripts/install installs the toolchains)"
        )
    return language


EXTENSIONS = {
    ".c": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".py": "python3",
    ".java": "java",
    ".js": "javascript",
    ".mjs": "javascript",
    ".go": "go",
    ".rs": "rust",
    ".sh": "bash",
}


def language_for_path(path: Path) -> str | None:
    """The language id a file name suggests (for checkers and interactors given as source)."""
    return EXTENSIONS.get(path.suffix.lower())
