"""Piston v2 compatibility under /piston: existing Piston clients work unchanged.

Point a client at http://HOST:PORT/piston (the server of Piston's clients; the
API itself is /piston/api/v2/...). `GET /runtimes`, `GET /packages` and
`POST /execute` take and give Piston's fields; errors are Piston's
`{"message": "..."}` with status 400, on this router only (FastAPI's 422s too).
An execution is a thin mapping onto one submission of the one schema
(api/models.py): the first UTF-8 file is the source, every other file goes in
the working directory, `args` follow the run command, and the run's whole
stdout and stderr come back.

What differs, on purpose (docs/service.md says the same for users):
- Runtimes are the languages the live workers have, under Piston's names and
  aliases, each with the version its workers report reduced to X.Y.Z ("0.0.0"
  when none reported one). Piston's own packages (`cms_ioi`, `c++17`, ...) do
  not exist: judging with tests and checkers is /v1's.
- The main file is written under the language's source name (main.cpp,
  Main.java: a Java program's class must be `Main`); the other files keep
  their names. A compiled language compiles its main file only (Piston's C and
  C++ compile every UTF-8 file).
- `output` is stdout followed by stderr, not the two interleaved in time (they
  are captured apart; clients read `stdout` and `stderr`).
- The body may be JSON whatever its Content-Type (the npm client sends no
  JSON type) or a form (the PyPI client posts one: there a file can only be a
  string, which is taken as a file's content).
- Limits: `run_timeout` is the wall clock (and the CPU time unless
  `run_cpu_time` is given), up to the operator's caps (CELLBLOCK_MAX_WALL_TIME
  and CELLBLOCK_MAX_TIME) instead of Piston's 3 s; `-1` or no memory limit is
  the service's default memory; the output cap is the service's, not 1 KiB.
- Packages are the operator's (`cellblock languages`): installing or removing
  one through the API is refused. No WebSocket (`/connect`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import signal as signals
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.spec import SpecError, cell_path
from worker.languages import COMPILE_LIMITS

from .auth import Caller
from .models import RequestInvalid, SubmissionIn, normalize
from .v1 import enqueue_and_wait, live_workers, read_record, versions_of

VERSION = "3.1.1"  # the Piston release whose API this is

# cellblock language -> (Piston's language name, its aliases, Piston's runtime).
NAMES: dict[str, tuple[str, list[str], str | None]] = {
    "python3": ("python", ["py", "py3", "python3"], None),
    "c": ("c", ["gcc"], "gcc"),
    "cpp": ("c++", ["cpp", "g++"], "gcc"),
    "javascript": ("javascript", ["node-javascript", "node-js", "js", "node"], "node"),
    "java": ("java", [], None),
    "go": ("go", ["golang"], None),
    "rust": ("rust", ["rs"], None),
    "bash": ("bash", ["sh"], None),
}

# Languages that are not programs in one language: Judge0's "Multi-file program"
# (its run and compile scripts come as files) has no Piston counterpart.
HIDDEN = {"multifile"}

# Piston's defaults (its configuration's), in milliseconds.
RUN_TIMEOUT = 3000
ENCODINGS = ("utf8", "base64", "hex")


class PistonError(Exception):
    """A refusal in Piston's shape: `{"message": ...}` with `status`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # A message may quote the request (a language's name): a lone surrogate there
    # cannot be encoded and would turn the refusal into a 500.
    text = message.encode("utf-8", "backslashreplace").decode()
    return JSONResponse({"message": text}, status_code=status, headers=headers)


class PistonRoute(APIRoute):
    """Every error of this router in Piston's shape (its clients read `message`;
    one, the PyPI client, raises only when `message` is the body's one key)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except PistonError as error:
                return _message(error.status, error.message)
            except RequestInvalid as error:
                return _message(400 if error.status == 422 else error.status, error.msg)
            except RequestValidationError as error:
                first = (error.errors() or [{}])[0]
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
                return _message(400, f"{where}: {first.get('msg', 'invalid')}".lstrip(": "))
            except StarletteHTTPException as error:  # 401, 403, 429 (auth, rate, queue)
                detail = error.detail if isinstance(error.detail, str) else "refused"
                return _message(error.status_code, detail, getattr(error, "headers", None))

        return route


router = APIRouter(prefix="/piston", tags=["piston"], route_class=PistonRoute)


# --- versions: node-semver's ranges, as far as Piston's users write them -------------

# (major, minor, patch, 1), or 0 last for a prerelease: just below its release.
Version = tuple[int, int, int, int]
_PARTIAL = re.compile(
    r"^v?(?P<major>\d+|[xX*])(?:\.(?P<minor>\d+|[xX*]))?(?:\.(?P<patch>\d+|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)
_COMPARATOR = re.compile(r"^(?P<op>\^|~>?|>=|<=|>|<|=)?\s*(?P<version>\S*)$")


def reduce_version(line: str | None) -> str:
    """A toolchain's version line as X.Y.Z ("Python 3.11.2", "go version
    go1.19.8 linux/amd64", "javac 17" -> "17.0.0"); "0.0.0" when it has none."""
    found = re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", line or "")
    if not found:
        return "0.0.0"
    return ".".join(str(int(part or 0)) for part in found.groups())


def _parse_version(text: str) -> Version | None:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(match[1]), int(match[2]), int(match[3]), 1) if match else None


@dataclass(frozen=True)
class _Bound:
    op: str  # one of >=, >, <, <=, =
    version: Version

    def holds(self, version: Version) -> bool:
        return {
            ">=": version >= self.version,
            ">": version > self.version,
            "<": version < self.version,
            "<=": version <= self.version,
            "=": version == self.version,
        }[self.op]


def _partial(text: str) -> tuple[int | None, int | None, int | None, int]:
    """A range's version: its parts (None for x, * or left out) and 0 for a prerelease."""
    match = _PARTIAL.match(text)
    if not match:
        raise ValueError(text)
    out: list[int | None] = []
    for part in (match["major"], match["minor"], match["patch"]):
        if part is not None and len(part) > 1 and part[0] == "0":
            raise ValueError(text)  # 03: no leading zeros
        if part is None or part in "xX*" or (out and out[-1] is None):
            out.append(None)  # what follows a wildcard counts for nothing
        else:
            out.append(int(part))
    if match["pre"] and out[2] is None and match["patch"] is None:
        raise ValueError(text)  # a prerelease of a partial: 3.11-beta
    return out[0], out[1], out[2], 0 if match["pre"] else 1


def _next(major: int, minor: int | None) -> Version:
    """The first version past a partial X or X.Y (node-semver's X.Y.Z-0 is
    the same bound for versions without a prerelease, which ours are)."""
    return (major + 1, 0, 0, 0) if minor is None else (major, minor + 1, 0, 0)


_NOTHING = [_Bound("<", (0, 0, 0, 0))]


def _comparator(op: str, text: str) -> list[_Bound]:
    major, minor, patch, release = _partial(text)
    if major is None:  # *, x: anything (or nothing, for > and <)
        return _NOTHING if op in (">", "<") else []
    low: Version = (major, minor or 0, patch or 0, release)
    exact = patch is not None
    if op in ("", "="):
        if exact:
            return [_Bound("=", low)]
        return [_Bound(">=", low), _Bound("<", _next(major, minor))]
    if op in ("~", "~>"):
        return [_Bound(">=", low), _Bound("<", _next(major, minor))]
    if op == "^":
        if major > 0 or minor is None:
            high: Version = (major + 1, 0, 0, 0)
        elif minor > 0 or patch is None:
            high = (0, minor + 1, 0, 0)
        else:
            high = (0, 0, patch + 1, 0)
        return [_Bound(">=", low), _Bound("<", high)]
    if op == ">":
        return [_Bound(">", low)] if exact else [_Bound(">=", _next(major, minor))]
    if op == "<=":
        return [_Bound("<=", low)] if exact else [_Bound("<", _next(major, minor))]
    if op == "<" and not exact:
        return [_Bound("<", (major, minor or 0, 0, 0))]
    return [_Bound(op, low)]  # >= means the same for a partial and its .0s


def _parse_set(text: str) -> list[_Bound]:
    text = text.strip()
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        low, high = _partial(hyphen[1]), _partial(hyphen[2])
        both = [] if low[0] is None else _comparator(">=", hyphen[1])
        if high[0] is not None:
            both += _comparator("<=", hyphen[2])
        return both
    # node-semver allows a space between an operator and its version.
    text = re.sub(r"(\^|~>?|>=|<=|>|<|=)\s+", r"\1", text)
    bounds: list[_Bound] = []
    for word in text.split() or ["*"]:
        match = _COMPARATOR.match(word)
        if not match:
            raise ValueError(word)
        bounds += _comparator(match["op"] or "", match["version"])
    return bounds


def satisfies(version: str, spec: str) -> bool:
    """Whether X.Y.Z `version` is in node-semver range `spec`: exact versions,
    partials (3.11 = 3.11.x), x/X/* wildcards, ^, ~, comparators, hyphen
    ranges, spaces (and) and || (or). A spec that is not a range matches
    nothing, as node-semver's satisfies() answers false."""
    parsed = _parse_version(version)
    if parsed is None:
        return False
    try:
        sets = [_parse_set(part) for part in spec.split("||")]
    except ValueError:
        return False
    return any(all(bound.holds(parsed) for bound in bounds) for bounds in sets)


# --- runtimes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    language: str  # Piston's name
    version: str  # X.Y.Z
    aliases: list[str]
    runtime: str | None
    ours: str  # the cellblock language

    def listing(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "language": self.language,
            "version": self.version,
            "aliases": self.aliases,
        }
        if self.runtime:
            out["runtime"] = self.runtime
        return out


async def _installed(request: Request) -> dict[str, str | None]:
    """cellblock language -> its version line, for every language a live worker has
    (None: no worker could tell its version)."""
    workers = await live_workers(request)
    versions = versions_of(workers)  # what language_versions() answers, from one read
    return {
        lang: versions.get(lang) for worker in workers for lang in worker.get("languages") or []
    }


async def runtimes_of(request: Request) -> list[Runtime]:
    known = request.app.state.languages
    found = []
    for ours, line in sorted((await _installed(request)).items()):
        if ours not in known or ours in HIDDEN:
            continue
        name, aliases, runtime = NAMES.get(ours, (ours, [], None))
        found.append(Runtime(name, reduce_version(line), list(aliases), runtime, ours))
    return found


def pick(runtimes: list[Runtime], language: str, version: str) -> Runtime | None:
    """Piston's choice: the latest runtime named or aliased `language` in range `version`."""
    matching = [
        rt
        for rt in runtimes
        if (rt.language == language or language in rt.aliases) and satisfies(rt.version, version)
    ]
    matching.sort(key=lambda rt: _parse_version(rt.version) or (0, 0, 0, 0), reverse=True)
    return matching[0] if matching else None


@router.get("/")
async def about(principal: Caller) -> Any:
    return {"message": f"Piston v{VERSION}"}


# Piston's router matches a path with or without a final slash; so do these.
@router.get("/api/v2/runtimes")
@router.get("/api/v2/runtimes/", include_in_schema=False)
async def runtimes(request: Request, principal: Caller) -> Any:
    return [rt.listing() for rt in await runtimes_of(request)]


@router.get("/api/v2/packages")
@router.get("/api/v2/packages/", include_in_schema=False)
async def packages(request: Request, principal: Caller) -> Any:
    return [
        {"language": rt.language, "language_version": rt.version, "installed": True}
        for rt in await runtimes_of(request)
    ]


PACKAGES_ARE_THE_OPERATORS = (
    "packages are installed by this service's operator (cellblock languages), not through the API"
)


@router.post("/api/v2/packages")
async def install_package(principal: Caller) -> Any:
    raise PistonError(PACKAGES_ARE_THE_OPERATORS)


@router.delete("/api/v2/packages")
async def uninstall_package(principal: Caller) -> Any:
    raise PistonError(PACKAGES_ARE_THE_OPERATORS)


# --- execute -------------------------------------------------------------------------


async def read_body(request: Request) -> dict[str, Any]:
    """The request's fields: JSON whatever the Content-Type, or a form."""
    raw = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise PistonError("the form is not valid UTF-8") from None
        return _form(urllib.parse.parse_qs(text, keep_blank_values=True))
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise PistonError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise PistonError("the body must be a JSON object")
    return body


def _form(fields: dict[str, list[str]]) -> dict[str, Any]:
    """A flat form as Piston's fields: `files` and `args` are lists (a file is
    its content), numbers are numbers, the rest single strings."""
    out: dict[str, Any] = {}
    for key, values in fields.items():
        if key in ("files", "args"):
            out[key] = list(values)
        elif key.endswith(("_timeout", "_memory_limit", "_cpu_time")):
            try:
                out[key] = float(values[-1])
            except ValueError:
                out[key] = values[-1]
        else:
            out[key] = values[-1]
    return out


@dataclass
class PistonFile:
    name: str
    content: str  # as given
    encoding: str  # normalised: utf8, base64 or hex
    raw_encoding: Any


def _files(body: dict[str, Any]) -> list[PistonFile]:
    files = body.get("files")
    if not isinstance(files, list):
        raise PistonError("files is required as an array")
    out = []
    for index, item in enumerate(files):
        if isinstance(item, str):  # a form's file (see read_body)
            item = {"content": item}
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise PistonError(f"files[{index}].content is required as a string")
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise PistonError(f"files[{index}].name must be a string")
        encoding = item.get("encoding")
        out.append(
            PistonFile(
                name=name or f"file{index}.code",
                content=item["content"],
                encoding=encoding if encoding in ENCODINGS else "utf8",
                raw_encoding=encoding,
            )
        )
    return out


def _number(body: dict[str, Any], name: str, cap: float) -> float | None:
    """A limit as Piston reads it (absent, 0 or false: its default), at most `cap`."""
    value = body.get(name)
    if not value:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise PistonError(f"If specified, {name} must be a number")
    if value > cap:  # an int past float's range, or inf, is caught here too
        raise PistonError(f"{name} cannot exceed the configured limit of {_js_string(cap)}")
    return float(value) if value >= 0 else -1.0  # any negative: -1 (never past float's range)


def _timeout(body: dict[str, Any], name: str, cap: float) -> float | None:
    value = _number(body, name, cap)
    if value is not None and value < 0:
        raise PistonError(f"{name} must be non-negative")
    return value


def _memory(body: dict[str, Any], name: str, cap: float) -> int:
    """A memory limit in bytes; 0 for the service's default (-1 is Piston's "none")."""
    value = _number(body, name, cap)
    return 0 if value is None or value < 0 else int(value)


@dataclass
class Execution:
    runtime: Runtime
    submission: dict[str, Any]  # SubmissionIn's fields
    names: dict[str, str]  # the submission's field -> Piston's, for refusals
    wait: float  # seconds to wait for the result


def to_submission(
    body: dict[str, Any],
    runtimes: list[Runtime],
    sources: dict[str, str],
    max_time: float,
    max_wall: float,
    max_mem: int,
) -> Execution:
    """A Piston execute request as one submission's fields, or PistonError."""
    language, version = body.get("language"), body.get("version")
    if not language or not isinstance(language, str):
        raise PistonError("language is required as a string")
    if not version or not isinstance(version, str):
        raise PistonError("version is required as a string")
    files = _files(body)
    runtime = pick(runtimes, language, version)
    if runtime is None:
        raise PistonError(f"{language}-{version} runtime is unknown")
    if not any(f.raw_encoding in (None, "", "utf8") for f in files):
        raise PistonError("files must include at least one utf8 encoded file")
    stdin = body.get("stdin")
    if stdin is None:
        stdin = ""
    if not isinstance(stdin, str):
        raise PistonError("stdin must be a string")
    if not stdin.endswith("\n"):
        stdin += "\n"  # as Piston: a last line always ends
    args = body.get("args")
    if args is None:
        args = []
    if not isinstance(args, list) or any(
        isinstance(a, bool) or not isinstance(a, str | int | float) for a in args
    ):
        raise PistonError("args must be an array of strings")
    if any(isinstance(a, str) and "\0" in a for a in args):
        raise PistonError("args must not hold NUL bytes")
    run_timeout = _timeout(body, "run_timeout", max_wall * 1000)
    run_cpu = _timeout(body, "run_cpu_time", max_time * 1000)
    compile_timeout = _timeout(body, "compile_timeout", max_wall * 1000)
    compile_cpu = _timeout(body, "compile_cpu_time", max_wall * 1000)
    run_memory = _memory(body, "run_memory_limit", max_mem)
    compile_memory = _memory(body, "compile_memory_limit", max_mem)

    names = {"source": "files[0].content", "stdin": "stdin", "args": "args"}
    main_index = next(i for i, f in enumerate(files) if f.encoding == "utf8")
    names["source"] = f"files[{main_index}].content"
    extra: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, item in enumerate(files):
        if index == main_index:
            continue
        try:
            path = cell_path(item.name)
        except SpecError as error:
            raise PistonError(f"files[{index}].name: {error}") from None
        if path == sources.get(runtime.ours):
            raise PistonError(
                f"files[{index}].name: {path} is the name the main file gets here "
                "(the first utf8 file)"
            )
        if path in seen:
            raise PistonError(f"files[{index}].name: {path} is given twice")
        seen.add(path)
        names[f"files.{len(extra)}"] = f"files[{index}]"
        extra.append({"path": path, **_content(item, index)})

    wall_s = (run_timeout or RUN_TIMEOUT) / 1000
    cpu_s = run_cpu / 1000 if run_cpu else min(wall_s, max_time)
    limits: dict[str, Any] = {"time": cpu_s, "wall_time": wall_s}
    names["limits.time"] = "run_cpu_time" if run_cpu else "run_timeout"
    names["limits.wall_time"] = "run_timeout"
    if run_memory > 0:
        limits["memory"] = int(run_memory)
        names["limits.memory"] = "run_memory_limit"
    compile_ms = min(v for v in (compile_timeout, compile_cpu, math.inf) if v is not None)
    if compile_ms != math.inf:
        limits["compile_time"] = compile_ms / 1000
        names["limits.compile_time"] = "compile_timeout"
    if compile_memory > 0:
        limits["compile_memory"] = int(compile_memory)
        names["limits.compile_memory"] = "compile_memory_limit"

    submission: dict[str, Any] = {
        "language": runtime.ours,
        "source": files[main_index].content,
        "stdin": stdin,
        "limits": limits,
    }
    # Fields of the one schema left out when empty: a request that needs none
    # of them is a plain /v1 submission.
    if extra:
        submission["files"] = extra
    if args:
        submission["args"] = [a if isinstance(a, str) else _js_string(a) for a in args]
    compile_s = limits.get("compile_time", float(str(COMPILE_LIMITS["wall_time"])))
    return Execution(runtime, submission, names, wait=compile_s + wall_s + 30)


def _js_string(value: int | float) -> str:
    """A number as JavaScript prints it (1.0 is "1")."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _content(item: PistonFile, index: int) -> dict[str, str]:
    if item.encoding == "utf8":
        return {"content": item.content, "encoding": "utf8"}
    try:
        if item.encoding == "hex":
            raw = bytes.fromhex(item.content)
        else:  # Node decodes base64 leniently: no padding, URL-safe letters
            text = re.sub(r"[^A-Za-z0-9+/_-]", "", item.content).replace("-", "+")
            raw = base64.b64decode(text.replace("_", "/") + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raise PistonError(f"files[{index}].content is not valid {item.encoding}") from None
    return {"content": base64.b64encode(raw).decode(), "encoding": "base64"}


def _refusal(error: RequestInvalid | ValidationError, names: dict[str, str]) -> PistonError:
    """A refusal of the one schema, naming Piston's field."""
    if isinstance(error, RequestInvalid):
        loc, msg, status = error.loc, error.msg, error.status
    else:
        first = error.errors()[0]
        loc, msg, status = tuple(first.get("loc", ())), str(first.get("msg")), 422
    path = [str(p) for p in loc if p != "body"]
    field = ".".join(path)
    for length in range(len(path), 0, -1):
        prefix = ".".join(path[:length])
        if prefix in names:
            field = names[prefix] + "".join(f".{p}" for p in path[length:])
            break
    return PistonError(f"{field}: {msg}" if field else msg, 400 if status == 422 else status)


SIGNAL_NAMES = {s.value: s.name for s in signals.Signals if not s.name.startswith("SIG_")}


def stage(run: dict[str, Any]) -> dict[str, Any]:
    """One cell's result (a test's or the compile's) as Piston's stage."""
    status = run.get("status") or ""
    number = run.get("signal")
    name = SIGNAL_NAMES.get(number) if isinstance(number, int) else None
    code = run.get("exit_code")
    if status in ("TLE", "OLE"):
        name = "SIGKILL"  # Piston reports its kill of a run over time or output so
    piston_status = {
        "OK": None,
        "TLE": "TO",
        "OLE": "OL",
        "IE": "XX",
    }.get(status, "SG" if name else "RE")
    if status == "IE":
        name = None
    stdout, stderr = run.get("stdout") or "", run.get("stderr") or ""
    return {
        "stdout": stdout,
        "stderr": stderr,
        "output": stdout + stderr,
        "code": None if name or status == "IE" else code,
        "signal": name,
        "message": run.get("message") or None,
        "status": piston_status,
        "memory": run.get("memory"),
        "cpu_time": _ms(run.get("time")),
        "wall_time": _ms(run.get("wall_time")),
    }


def _ms(seconds: Any) -> int | None:
    return round(seconds * 1000) if isinstance(seconds, int | float) else None


def render(record: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    result = record.get("result") or {}
    out: dict[str, Any] = {"language": runtime.language, "version": runtime.version}
    compiled = result.get("compile")
    if compiled:
        out["compile"] = stage(compiled)
    tests = result.get("tests") or []
    if tests:
        out["run"] = stage(tests[0])
    elif "compile" in out:
        out["run"] = out["compile"]  # Piston's answer when the run never started
    else:
        out["run"] = stage({"status": "IE", "message": result.get("message") or "no run"})
    return out


class ExecuteIn(BaseModel):
    """Piston's execute request, for the OpenAPI page only: the endpoint reads the
    body itself (JSON whatever its Content-Type, or a form) and answers Piston's 400s."""

    language: str = Field(..., description="a runtime's language or alias")
    version: str = Field(..., description="a node-semver range: 3.11.2, 3.x, *, ^3.9")
    files: list[dict[str, str]] = Field(
        ..., description="{name?, content, encoding?: utf8|base64|hex}; the first utf8 one runs"
    )
    stdin: str = ""
    args: list[str] = []
    run_timeout: float | None = Field(None, description="ms, wall clock (default 3000)")
    run_cpu_time: float | None = Field(None, description="ms of CPU (default run_timeout)")
    compile_timeout: float | None = Field(None, description="ms")
    compile_cpu_time: float | None = Field(None, description="ms")
    run_memory_limit: int | None = Field(None, description="bytes; -1: the default")
    compile_memory_limit: int | None = Field(None, description="bytes; -1: the default")


@router.post("/api/v2/execute/", include_in_schema=False)
@router.post(
    "/api/v2/execute",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ExecuteIn.model_json_schema()}},
        }
    },
)
async def execute(request: Request, principal: Caller) -> Any:
    state = request.app.state
    settings = state.settings
    body = await read_body(request)
    execution = to_submission(
        body,
        await runtimes_of(request),
        {lang.id: lang.source for lang in state.language_info.values()},
        settings.max_time,
        settings.max_wall_time,
        settings.max_memory,
    )
    try:
        submission = SubmissionIn.model_validate(execution.submission)
        stored = normalize(submission, settings, state.languages)
    except (RequestInvalid, ValidationError) as error:
        raise _refusal(error, execution.names) from None
    sub_id, finished = await enqueue_and_wait(
        request, stored, principal, execution.wait, kind="piston"
    )
    if not finished:
        raise PistonError(
            f"no result after {execution.wait:g} s (the service is busy); try again", 503
        )
    record = await read_record(request, sub_id, ("status", "result", "error"))
    if record is None or record.get("status") != "done":
        why = (record or {}).get("error") or "the run failed"
        raise PistonError(f"internal error: {why}", 500)
    return render(record, execution.runtime)


@router.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def not_found(path: str) -> Any:
    raise PistonError("Not Found", 404)
