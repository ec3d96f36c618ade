"""SandboxFusion compatibility under /sandboxfusion: its clients run code here unchanged.

Point a client at http://HOST:PORT/sandboxfusion: SandboxFusion's Python
client with `set_endpoint(...)` or `SANDBOX_FUSION_ENDPOINT`, verl's reward
functions with their sandbox URL set to http://HOST:PORT/sandboxfusion/run_code.
`POST /run_code` takes SandboxFusion's request (`code`, `language`, `stdin`,
`compile_timeout`, `run_timeout`, `memory_limit_MB`, `files`, `fetch_files`)
and answers with its response (`status` Success/Failed/SandboxError,
`message`, `compile_result` and `run_result` with `status`
Finished/TimeLimitExceeded, `execution_time`, `return_code`, `stdout`,
`stderr`, and `files`), always 200 as SandboxFusion does; `GET /v1/ping` is
"pong". A request that does not fit is a 422 in FastAPI's validation shape,
which is what SandboxFusion itself answers; never a 5xx. A failure of the
infrastructure is `SandboxError` with the reason (SandboxFusion's client
raises on it, after its retries): no live worker with the language (at once,
rather than holding the request), a submission the workers gave up on, an
internal error, or no result within the job's own time-out plus the queue's
slack. SandboxFusion's per-command `Error` status (its own runner failing)
is never used: ours fails the whole run instead.

The request becomes one submission of the one schema (api/models.py's
SubmissionIn, checked by `normalize`): a single run on `stdin`, judged by a
worker, whose result is then told the way SandboxFusion tells it.

- Languages: `python` (python3), `cpp`, `nodejs` (javascript), `go`, `java`,
  `bash` and `rust` run with cellblock's toolchains (profiles/languages).
  SandboxFusion's other names are refused with a 422 naming `language`.
  SandboxFusion's own `python` has many packages installed; ours is the
  host's plain python3. Its `java` runs with assertions on (`-ea`), ours
  without: SubmissionIn has no way to add a JVM option.
- Timeouts are wall-clock seconds, as SandboxFusion's: `run_timeout` is the
  run's wall-clock limit (`limits.wall_time`) and its CPU limit (`time`) up to
  the operator's CPU cap, `compile_timeout` the compile's (`limits.compile_time`,
  wall and CPU). A timeout beyond the operator's wall-clock cap is a 422.
- `memory_limit_MB` is the run's memory (`limits.memory`); -1 (SandboxFusion's
  "no limit") is the operator's cap (CELLBLOCK_MAX_MEMORY). The compile keeps
  the language's own memory limit. A program over its memory is killed by the
  kernel: `run_result` Finished with `return_code` -9 and the message saying so
  (SandboxFusion, whose limit is an rlimit, shows the program's own failure).
- `return_code` of a program killed by signal N is -N, as Python's subprocess
  (and so SandboxFusion) reports it; after a time-out it is null.
- `files` (path -> base64) go into the working directory for the compile and
  the run; `fetch_files` paths come back in `files` (base64) when the run left
  them, keyed as the request named them. Paths are relative to the working
  directory (/box, so `/box/x` is `x`): another absolute path or a `..` is a
  422 (SandboxFusion would reach outside its temporary directory).
- stdout and stderr are whole (up to the output limit, 64 MiB by default).
- `executor_pod_name` is null; `cpu_time` (in SandboxFusion's client model)
  is the run's CPU seconds.

Not offered, on purpose: `/run_jupyter` (a stateful Jupyter kernel across cells
is not a single run in a cell, and our Python has no ipykernel), and the
dataset endpoints (`/submit`, `/get_prompts`, `/get_prompt_by_id`,
`/list_datasets`, `/list_ids`, `/get_metrics`...): they serve SandboxFusion's
bundled benchmarks (their prompts, tests and scoring), which are data, not a
sandbox; a client judges its own tests with `/run_code`. They are 404.
`GET /languages` is ours (SandboxFusion has no listing): each name offered here
with the cellblock language behind it and its version.

Keys: the routes take the same key as every other (`Caller`). SandboxFusion's
client and verl send no header of their own, but both send a URL's user-info
as HTTP Basic credentials, so with keys configured the endpoint is
`http://cb:KEY@HOST:PORT/sandboxfusion` (the key as the password, or alone as
the user); Basic is accepted here only and turned into the key. Without keys
the service answers loopback clients only, as everywhere.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.spec import SpecError, cell_path

from . import v1
from .auth import Principal, authenticate
from .models import Number, RequestInvalid, SubmissionIn, Text, job_timeout, normalize
from .settings import Settings

router = APIRouter(prefix="/sandboxfusion", tags=["sandboxfusion"])

# Every language name SandboxFusion's server or client accepts, in its order.
SANDBOXFUSION_LANGUAGES = (
    "python",
    "python2",
    "cpp",
    "nodejs",
    "go",
    "go_test",
    "java",
    "php",
    "csharp",
    "bash",
    "typescript",
    "sql",
    "rust",
    "cuda",
    "lua",
    "R",
    "perl",
    "D_ut",
    "ruby",
    "scala",
    "julia",
    "pytest",
    "junit",
    "kotlin_script",
    "jest",
    "verilog",
    "python_gpu",
    "lean",
    "swift",
    "racket",
    "gtest",
    "react",
)
# SandboxFusion's name -> cellblock's language, where both run the same thing
# (its cpp is g++ -std=c++17, its java a class Main in Main.java, as ours).
LANGUAGES = {
    "python": "python3",
    "cpp": "cpp",
    "nodejs": "javascript",
    "go": "go",
    "java": "java",
    "bash": "bash",
    "rust": "rust",
}
# SandboxFusion skips a given file whose name holds this (its datasets use it).
IGNORED_FILE_MARK = "IGNORE_THIS_FILE"

# Where a refusal of the mapped submission points, in SandboxFusion's names.
FIELD_NAMES = {
    "source": "code",
    "time": "run_timeout",
    "wall_time": "run_timeout",
    "memory": "memory_limit_MB",
    "compile_time": "compile_timeout",
    "output_files": "fetch_files",
    "limits": "run_timeout",
}

# Extra seconds a request waits beyond its job's own time-out (the queue).
QUEUE_SLACK = 30.0


class RunCodeRequest(BaseModel):
    """SandboxFusion's RunCodeRequest (unknown fields are ignored, as it does)."""

    model_config = ConfigDict(extra="ignore")

    compile_timeout: Number = Field(10, gt=0, description="the compile's wall-clock seconds")
    run_timeout: Number = Field(10, gt=0, description="the run's wall-clock seconds")
    memory_limit_MB: int = Field(-1, description="the run's memory in MiB; -1: the cap")
    code: Text = Field(..., description="the code to run")
    stdin: Text | None = Field(None, description="the program's standard input")
    language: Literal[SANDBOXFUSION_LANGUAGES] = Field(  # type: ignore[valid-type]
        ..., description="SandboxFusion's language name (GET /sandboxfusion/languages)"
    )
    files: dict[Text, Text | None] = Field(
        {}, description="path (relative) -> base64 content, put in the working directory"
    )
    fetch_files: list[Text] = Field(
        [], description="paths read back after the run (response `files`, base64)"
    )


def _basic_key(request: Request) -> str | None:
    """The key in HTTP Basic credentials: the password, or the user when alone."""
    header = request.headers.get("authorization", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, ValueError):
        return None
    return password or user or None


async def caller(request: Request) -> Principal:
    """The same check as every route's (auth.Caller); a Basic credential's key
    is handed to it as X-Auth-Token, since SandboxFusion's clients can only
    carry a key in the endpoint URL's user-info."""
    key = _basic_key(request)
    if key is not None:
        headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
        scope = {**request.scope, "headers": [*headers, (b"x-auth-token", key.encode())]}
        request = Request(scope, request.receive)
    return await authenticate(request)


SfCaller = Annotated[Principal, Depends(caller)]


def _refused(error: RequestInvalid) -> RequestInvalid:
    """A refusal of the mapped submission, naming SandboxFusion's field."""
    loc = [p for i, p in enumerate(error.loc) if p != "limits" or i == len(error.loc) - 1]
    last = str(loc[-1])
    loc[-1] = FIELD_NAMES.get(last, last)
    return RequestInvalid(tuple(loc), error.msg, error.status)


def to_submission(
    req: RunCodeRequest, settings: Settings, source_names: dict[str, str]
) -> SubmissionIn:
    """SandboxFusion's request as the one schema's submission (RequestInvalid
    naming SandboxFusion's field when it cannot be one). `source_names`:
    language -> the file its source is written to."""
    ours = LANGUAGES.get(req.language)
    if ours is None or ours not in source_names:
        offered = ", ".join(name for name, lang in LANGUAGES.items() if lang in source_names)
        raise RequestInvalid(
            ("body", "language"), f"{req.language!r} is not offered here (offered: {offered})"
        )
    for index, path in enumerate(req.fetch_files):
        try:
            cell_path(path)
        except SpecError as error:
            raise RequestInvalid(("body", "fetch_files", index), str(error)) from None
    files = [
        {"path": path, "content": content, "encoding": "base64"}
        for path, content in req.files.items()
        if content is not None and IGNORED_FILE_MARK not in path
    ]
    for item in files:
        with contextlib.suppress(SpecError):  # a bad path is refused by normalize
            if cell_path(item["path"]) == source_names[ours]:
                # SandboxFusion writes the code under a random name; ours has a fixed one.
                raise RequestInvalid(
                    ("body", "files"), f"{source_names[ours]!r} is the code's own file here"
                )
    memory = req.memory_limit_MB << 20 if req.memory_limit_MB > 0 else settings.max_memory
    try:
        return SubmissionIn.model_validate(
            {
                "language": ours,
                "source": req.code,
                "stdin": req.stdin or "",
                "limits": {
                    # SandboxFusion's timeout is wall-clock only: the CPU
                    # limit (ours) follows it up to the operator's cap.
                    "time": min(req.run_timeout, settings.max_time),
                    "wall_time": req.run_timeout,
                    "memory": memory,
                    "compile_time": req.compile_timeout,
                },
                "files": files,
                "output_files": req.fetch_files,
            }
        )
    except ValidationError as error:  # a count or size the schema caps
        first = error.errors()[0]
        loc = [p for p in first.get("loc", ()) if not isinstance(p, int)]
        raise _refused(
            RequestInvalid(("body", *(loc or ["body"])), str(first.get("msg", "invalid")))
        ) from None


def _return_code(run: dict[str, Any]) -> int | None:
    if run.get("exit_code") is not None:
        return int(run["exit_code"])
    if run.get("signal") is not None:
        return -int(run["signal"])
    return None


def _command(run: dict[str, Any], timed_out: bool, clean: bool) -> dict[str, Any]:
    """A run (the compile's RunResult or the test's result) as a CommandRunResult."""
    code = None if timed_out else _return_code(run)
    if not timed_out and code is None:
        code = 0 if clean else 1  # Finished always has a code (SandboxFusion's client asks)
    return {
        "status": "TimeLimitExceeded" if timed_out else "Finished",
        "execution_time": run.get("wall_time"),
        "return_code": code,
        "stdout": run.get("stdout") or "",
        "stderr": run.get("stderr") or "",
        "cpu_time": run.get("time"),
    }


def _sandbox_error(message: str) -> dict[str, Any]:
    return {
        "status": "SandboxError",
        "message": message,
        "compile_result": None,
        "run_result": None,
        "executor_pod_name": None,
        "files": {},
    }


# Verdicts of a run that ended, told beside its return code (SandboxFusion's
# message is empty for a Failed run; these say what only cellblock knows).
RUN_MESSAGES = {
    "MLE": "memory limit exceeded: killed by the kernel",
    "OLE": "output limit exceeded",
}


def render(record: dict[str, Any]) -> dict[str, Any]:
    """A finished submission as SandboxFusion's RunCodeResponse."""
    result = record.get("result") or {}
    if record["status"] == "failed" or not result:
        return _sandbox_error(record.get("error") or "the sandbox failed to run the code")
    verdict = result.get("verdict")
    compiled = result.get("compile")
    test = (result.get("tests") or [None])[0]
    if verdict == "IE" or (test is None and verdict != "CE"):
        return _sandbox_error(result.get("message") or "the sandbox failed to run the code")
    compile_result = None
    if compiled is not None:
        compile_result = _command(compiled, compiled.get("status") == "TLE", verdict != "CE")
        if verdict == "CE" and compile_result["return_code"] == 0:
            # The compiler exited 0 yet left no program: a failed compile all the same.
            compile_result["return_code"] = 1
            compile_result["stderr"] += (result.get("message") or "") + "\n"
    if verdict == "CE":
        return {
            "status": "Failed",
            "message": "",
            "compile_result": compile_result,
            "run_result": None,
            "executor_pod_name": None,
            "files": {},
        }
    run_result = _command(test, verdict == "TLE", verdict == "AC")
    success = verdict == "AC" and run_result["return_code"] == 0
    return {
        "status": "Success" if success else "Failed",
        "message": RUN_MESSAGES.get(str(verdict), ""),
        "compile_result": compile_result,
        "run_result": run_result,
        "executor_pod_name": None,
        "files": _fetched(record, test.get("files") or {}),
    }


def _fetched(record: dict[str, Any], files: dict[str, str]) -> dict[str, str]:
    """The run's files keyed by the paths as the request gave them (a worker
    keys them by their /box-relative form: "/box/out.txt" is "out.txt")."""
    out = {}
    for given in (record.get("request") or {}).get("output_files") or []:
        with contextlib.suppress(SpecError):
            if cell_path(given) in files:
                out[given] = files[cell_path(given)]
    return out


@router.post("/run_code")
async def run_code(request: Request, principal: SfCaller, body: RunCodeRequest) -> Any:
    """Run code once and answer when it is done (SandboxFusion's /run_code)."""
    state = request.app.state
    sources = {lang.id: lang.source for lang in state.language_info.values()}
    sub = to_submission(body, state.settings, sources)
    try:
        stored = normalize(sub, state.settings, state.languages)
    except RequestInvalid as error:
        raise _refused(error) from None
    # Nothing would run it: say so now (SandboxFusion's client retries a
    # SandboxError) rather than hold the request for the whole wait below.
    workers = await v1.live_workers(request)
    if not any(stored["language"] in (w.get("languages") or []) for w in workers):
        return _sandbox_error(
            f"no live worker has {stored['language']} (start `cellblock worker`)"
            if workers
            else "no live worker to run it (start `cellblock worker`)"
        )
    # SandboxFusion answers only when the run is over: wait as long as the job
    # itself may take, plus some time in the queue, not the /v1 wait's 30 s.
    # (verl gives up after compile_timeout + run_timeout + 10 s of its own.)
    budget = job_timeout(stored) + max(QUEUE_SLACK, state.settings.wait_timeout)
    sub_id, finished = await v1.enqueue_and_wait(
        request, stored, principal, budget, kind="sandboxfusion"
    )
    if not finished:
        return _sandbox_error(
            f"submission {sub_id} not finished after {budget:.0f} s (a busy queue); "
            "it is still judged, but this request no longer waits"
        )
    record = await v1.read_record(request, sub_id)
    if record is None:
        return _sandbox_error(f"submission {sub_id} expired before it was read")
    return render(record)


@router.get("/v1/ping")
async def ping(principal: SfCaller) -> Any:
    """SandboxFusion's liveness check."""
    return "pong"


@router.get("/languages")
async def languages(request: Request, principal: SfCaller) -> Any:
    """The SandboxFusion language names offered here (cellblock's own listing)."""
    info = request.app.state.language_info
    versions = await v1.language_versions(request)
    return [
        {"language": name, "cellblock_language": ours, "version": versions.get(ours)}
        for name, ours in LANGUAGES.items()
        if ours in info
    ]
