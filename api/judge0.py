"""Judge0 1.13 compatibility under /judge0: existing Judge0 clients work unchanged.

Point a client's base URL at http://HOST:PORT/judge0. Endpoints, field
names, status ids and the `base64_encoded`, `wait` and `fields` parameters
are Judge0 1.13.1's; so are the default fields of a submission
(`stdout,time,memory,stderr,token,compile_output,message,status`), the units
(`memory_limit` and `memory` in KB, times as strings of seconds) and the
error shape (`{"field": ["message"]}`, here beside the contract's `detail`).

What differs, on purpose:
- Language ids map to cellblock's languages (several Judge0 ids to one, e.g.
  C 48/49/50 all run our gcc); the listings show one id per language, named
  with the version the workers have ("Python (3.11.2)").
- A submission is a thin mapping onto /v1's schema (api/models.py):
  `command_line_arguments` and `compiler_options` are split as a shell
  would (Judge0 splices them into a shell command) into `args` and
  `compile_options`; compiler options must be on the operator's allow-list
  (CELLBLOCK_COMPILE_OPTIONS, 422 naming the option otherwise);
  `additional_files` (a base64 zip, plain files only) become `files`; language
  89, "Multi-file program", runs the zip's `compile` script (if any) and then
  its `run` script with bash; `redirect_stderr_to_stdout` is
  `stderr_to_stdout`; `number_of_runs` (at most 10 here) is `runs`: time and
  memory averaged, as Judge0 does. `enable_network` is refused with a 422: a
  cell has no network.
- Memory-limit exceeded has no Judge0 status: it is 12 "Runtime Error
  (Other)" with the message saying so (Judge0 itself reports it as a runtime
  error or SIGSEGV). Output-limit exceeded is 8 (SIGXFSZ, as isolate reports it).
- Callbacks are PUT, as Judge0 does, with the same SSRF guard as /v1.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import shlex
import stat
import time
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.languages import version_number
from worker.request import MAX_RUNS, allowed_compile_options
from worker.store import Store

from .auth import Caller, Principal, rate_limit
from .models import VIEW_FIELDS, Number, RequestInvalid, SubmissionIn, Text, normalize, view
from .settings import Settings
from .v1 import (
    ID_PATTERN,
    admit,
    check_callback,
    enqueue,
    enqueue_and_wait,
    language_versions,
    owned,
    read_record,
)

router = APIRouter(prefix="/judge0", tags=["judge0"])
VERSION = "1.13.1"

# Judge0 1.13 language id -> (cellblock language, Judge0's name for it, with
# the version the workers report). Judge0 has one id per version it ships;
# every id of a language is accepted and runs the one installed, and the
# listings show one id per language (the newest of Judge0's), named with
# the installed version.
MULTI_FILE = "multifile"  # profiles/languages/multifile.toml: Judge0's 89
LANGUAGES: dict[int, tuple[str, str]] = {
    46: ("bash", "Bash ({})"),
    48: ("c", "C (GCC {})"),
    49: ("c", "C (GCC {})"),
    50: ("c", "C (GCC {})"),
    52: ("cpp", "C++ (GCC {})"),
    53: ("cpp", "C++ (GCC {})"),
    54: ("cpp", "C++ (GCC {})"),
    60: ("go", "Go ({})"),
    62: ("java", "Java (OpenJDK {})"),
    63: ("javascript", "JavaScript (Node.js {})"),
    71: ("python3", "Python ({})"),
    73: ("rust", "Rust ({})"),
    89: (MULTI_FILE, "Multi-file program"),
}
LISTED = (46, 50, 54, 60, 62, 63, 71, 73, 89)


def language_name(judge0_id: int, versions: dict[str, str]) -> str:
    """Judge0's name of a language id with the version installed ('Python (3.11.2)')."""
    ours, template = LANGUAGES[judge0_id]
    return template.format(version_number(versions.get(ours, "")) or "version unknown")


STATUSES = {
    1: "In Queue",
    2: "Processing",
    3: "Accepted",
    4: "Wrong Answer",
    5: "Time Limit Exceeded",
    6: "Compilation Error",
    7: "Runtime Error (SIGSEGV)",
    8: "Runtime Error (SIGXFSZ)",
    9: "Runtime Error (SIGFPE)",
    10: "Runtime Error (SIGABRT)",
    11: "Runtime Error (NZEC)",
    12: "Runtime Error (Other)",
    13: "Internal Error",
    14: "Exec Format Error",
}
SIGNAL_STATUS = {11: 7, 25: 8, 8: 9, 6: 10}

DEFAULT_FIELDS = (
    "stdout",
    "time",
    "memory",
    "stderr",
    "token",
    "compile_output",
    "message",
    "status",
)
ALL_FIELDS = (
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "status",
    "language",
)
ENCODED = ("source_code", "stdin", "expected_output", "stdout", "stderr", "compile_output")
# The fields only the stored request holds whole: the program and its texts,
# which may be megabytes. What else `render` shows of the request (Judge0's own
# options, the limits) is stored apart as well, as RENDERED (JSON), so that a
# poll for the other fields (Judge0's default ones) reads neither.
NEEDS_REQUEST = frozenset(("source_code", "stdin", "expected_output"))
RENDERED = "judge0_rendered"
RENDER_FIELDS = (*VIEW_FIELDS, "callback_url", RENDERED)

# Judge0's defaults for what a submission leaves out.
DEFAULTS = {
    "cpu_time_limit": 5.0,
    "cpu_extra_time": 1.0,
    "wall_time_limit": 10.0,
    "memory_limit": 128000,
    "stack_limit": 64000,
    "max_processes_and_or_threads": 60,
    "max_file_size": 1024,
    "number_of_runs": 1,
}


class Judge0Submission(BaseModel):
    """Judge0's submission attributes (unknown ones are ignored, as Judge0 does)."""

    model_config = ConfigDict(extra="ignore")

    source_code: Text | None = None
    language_id: int
    compiler_options: Text | None = None
    command_line_arguments: Text | None = None
    stdin: Text | None = None
    expected_output: Text | None = None
    cpu_time_limit: Number | None = Field(None, ge=0)
    cpu_extra_time: Number | None = Field(None, ge=0)
    wall_time_limit: Number | None = Field(None, ge=0)
    memory_limit: Number | None = Field(None, ge=0)
    stack_limit: int | None = Field(None, ge=0)
    max_processes_and_or_threads: int | None = Field(None, ge=0)
    enable_per_process_and_thread_time_limit: bool | None = None
    enable_per_process_and_thread_memory_limit: bool | None = None
    max_file_size: int | None = Field(None, ge=0)
    redirect_stderr_to_stdout: bool | None = None
    enable_network: bool | None = None
    number_of_runs: int | None = Field(None, ge=1)
    additional_files: Text | None = None
    callback_url: Text | None = Field(None, max_length=2048)


class Judge0Batch(BaseModel):
    submissions: list[dict[str, Any]]


def _decode(value: str | None, field: str, b64: bool, loc: tuple) -> str | None:
    if value is None or not b64:
        return value
    try:
        raw = base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid((*loc, field), "not valid base64") from None
    return raw.decode("utf-8", errors="replace")


# Where a field of the one schema (SubmissionIn, normalize) is Judge0's: an
# error there names the Judge0 field.
JUDGE0_NAMES = {
    "language": "language_id",
    "source": "source_code",
    "time": "cpu_time_limit",
    "wall_time": "wall_time_limit",
    "memory": "memory_limit",
    "pids": "max_processes_and_or_threads",
    "file_size": "max_file_size",
    "args": "command_line_arguments",
    "files": "additional_files",
    "compile_options": "compiler_options",
    "runs": "number_of_runs",
}


def _split(value: str | None, field: str, loc: tuple) -> list[str]:
    """A command line as Judge0 splices it into a shell command, as words."""
    try:
        return shlex.split(value or "")
    except ValueError as error:
        raise RequestInvalid((*loc, field), f"not a valid command line: {error}") from None


def _unzip(value: str | None, settings: Settings, loc: tuple) -> list[dict[str, str]]:
    """`additional_files`: a base64 zip (always base64, as Judge0) as the
    schema's files. Plain files only (a link or an odd name is refused, by
    name); their sizes are read, not believed, and count in the test data's cap."""
    if not value:
        return []
    where = (*loc, "additional_files")
    try:
        raw = base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
        archive = zipfile.ZipFile(io.BytesIO(raw))
        members = archive.infolist()
    except (binascii.Error, ValueError, zipfile.BadZipFile):
        raise RequestInvalid(where, "not a base64-encoded zip archive") from None
    files: list[dict[str, str]] = []
    room = settings.max_test_data
    for member in members:
        if member.is_dir():
            continue
        kind = stat.S_IFMT(member.external_attr >> 16)  # 0: no type recorded (a plain file)
        if kind and kind != stat.S_IFREG:
            raise RequestInvalid(where, f"{member.filename!r} is not a plain file")
        try:
            with archive.open(member) as opened:
                content = opened.read(room + 1)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError):
            raise RequestInvalid(where, f"{member.filename!r} cannot be read") from None
        room -= len(content)
        if room < 0:
            raise RequestInvalid(where, f"larger than {settings.max_test_data} bytes", status=413)
        files.append(
            {
                "path": member.filename,
                "content": base64.b64encode(content).decode(),
                "encoding": "base64",
            }
        )
    return files


def to_request(
    sub: Judge0Submission, settings: Settings, known: set[str], b64: bool, loc: tuple = ("body",)
) -> dict[str, Any]:
    """A Judge0 submission as a SubmissionIn of the one schema (a single run),
    normalized as /v1's are: what worker/request.py judges."""
    if sub.language_id not in LANGUAGES or LANGUAGES[sub.language_id][0] not in known:
        raise RequestInvalid(
            (*loc, "language_id"), f"language with id {sub.language_id} doesn't exist"
        )
    if sub.enable_network:
        raise RequestInvalid((*loc, "enable_network"), "not supported by this service")
    language = LANGUAGES[sub.language_id][0]
    source = _decode(sub.source_code, "source_code", b64, loc)
    if not source and language != MULTI_FILE:  # a multi-file program is its files
        raise RequestInvalid((*loc, "source_code"), "can't be blank")
    stdin = _decode(sub.stdin, "stdin", b64, loc)
    expected = _decode(sub.expected_output, "expected_output", b64, loc)
    runs = sub.number_of_runs or DEFAULTS["number_of_runs"]
    if runs > MAX_RUNS:
        raise RequestInvalid((*loc, "number_of_runs"), f"at most {MAX_RUNS} here")
    time_limit = sub.cpu_time_limit or DEFAULTS["cpu_time_limit"]
    memory_kb = sub.memory_limit or DEFAULTS["memory_limit"]
    if not math.isfinite(memory_kb * 1024):
        raise RequestInvalid((*loc, "memory_limit"), "too large")
    file_kb = sub.max_file_size if sub.max_file_size is not None else DEFAULTS["max_file_size"]
    try:
        submission = SubmissionIn.model_validate(
            {
                "language": language,
                "source": source or "",
                "stdin": stdin or "",
                "expected_output": expected,
                "checker": "lines",
                "limits": {
                    "time": time_limit,
                    "wall_time": sub.wall_time_limit
                    or max(DEFAULTS["wall_time_limit"], time_limit),
                    "memory": int(memory_kb * 1024),
                    "pids": sub.max_processes_and_or_threads
                    or DEFAULTS["max_processes_and_or_threads"],
                    "file_size": int(file_kb) * 1024,
                },
                "args": _split(sub.command_line_arguments, "command_line_arguments", loc),
                "files": _unzip(sub.additional_files, settings, loc),
                "compile_options": _split(sub.compiler_options, "compiler_options", loc),
                "stderr_to_stdout": bool(sub.redirect_stderr_to_stdout),
                "runs": runs,
            }
        )
        stored = normalize(submission, settings, known, loc)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(next((x for x in first["loc"] if isinstance(x, str)), "body"))
        raise RequestInvalid((*loc, JUDGE0_NAMES.get(field, field)), first["msg"]) from None
    except RequestInvalid as error:
        inner = [x for x in error.loc[len(loc) :] if isinstance(x, str)]
        field = (inner[1:] if inner[:1] == ["limits"] else inner or ["body"])[0]
        raise RequestInvalid(
            (*loc, JUDGE0_NAMES.get(field, field)), error.msg, status=error.status
        ) from None
    # What Judge0 gives back as it was sent (GET renders these); the files are
    # in the request's `files` already.
    stored["judge0"] = {
        k: v
        for k, v in sub.model_dump().items()
        if k not in ("source_code", "stdin", "expected_output")
    }
    return stored


def _status(record: dict[str, Any]) -> int:
    if record["status"] == "queued":
        return 1
    if record["status"] == "running":
        return 2
    if record["status"] == "failed" or not record.get("result"):
        return 13
    result = record["result"]
    verdict = result.get("verdict")
    test = (result.get("tests") or [{}])[0]
    if verdict == "AC":
        return 3
    if verdict == "WA":
        return 4
    if verdict == "TLE":
        return 5
    if verdict == "CE":
        return 6
    if verdict == "OLE":
        return 8
    if verdict == "RE":
        if test.get("signal") is not None:
            return SIGNAL_STATUS.get(test["signal"], 12)
        return 11 if test.get("status") != "SV" else 12
    if verdict == "MLE":
        return 12
    return 13


def _iso(stamp: float | None) -> str | None:
    if not stamp:
        return None
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def render(record: dict[str, Any], fields: tuple[str, ...], b64: bool) -> dict[str, Any]:
    """A stored submission in Judge0's shape, with the requested fields."""
    request = record.get("request") or {}
    extra = request.get("judge0") or {}
    result = record.get("result") or {}
    test = (result.get("tests") or [{}])[0] if result else {}
    status_id = _status(record)
    compile_run = result.get("compile") or {}
    compile_output = ((compile_run.get("stdout") or "") + (compile_run.get("stderr") or "")) or None
    message = None
    if record["status"] == "failed":
        message = record.get("error") or "internal error"
    elif result and status_id not in (3, 4, 6):
        message = test.get("message") or result.get("message") or None
    language_id = extra.get("language_id")
    done = record["status"] in ("done", "failed")
    limits = request.get("limits") or {}
    values: dict[str, Any] = {
        "token": record["id"],
        "source_code": request.get("source"),
        "language_id": language_id,
        "language": {"id": language_id, "name": extra.get("language_name", "")},
        "stdin": request.get("stdin"),
        "expected_output": request.get("expected_output"),
        "stdout": (test.get("stdout") if test else None) if done and result else None,
        "stderr": (test.get("stderr") if test else None) if done and result else None,
        "compile_output": compile_output if done else None,
        "message": message,
        "exit_code": test.get("exit_code") if done and result else None,
        "exit_signal": test.get("signal") if done and result else None,
        "status": {"id": status_id, "description": STATUSES[status_id]},
        "status_id": status_id,
        "created_at": _iso(record.get("created_at")),
        "finished_at": _iso(record.get("finished_at")) if done else None,
        "time": f"{test['time']:.3f}" if done and test.get("time") is not None else None,
        "wall_time": (
            f"{test['wall_time']:.3f}" if done and test.get("wall_time") is not None else None
        ),
        "memory": (
            int(test["memory"]) // 1024 if done and test.get("memory") is not None else None
        ),
        "cpu_time_limit": limits.get("time"),
        "wall_time_limit": limits.get("wall_time"),
        "memory_limit": (limits["memory"] // 1024) if limits.get("memory") else None,
        "max_processes_and_or_threads": limits.get("pids"),
        "callback_url": record.get("callback_url"),
        **{
            k: extra.get(k, DEFAULTS.get(k))
            for k in (
                "cpu_extra_time",
                "stack_limit",
                "max_file_size",
                "number_of_runs",
                "enable_per_process_and_thread_time_limit",
                "enable_per_process_and_thread_memory_limit",
                "compiler_options",
                "command_line_arguments",
                "redirect_stderr_to_stdout",
                "additional_files",
                "enable_network",
            )
        },
    }
    out = {}
    for name in fields:
        if name not in values:
            continue
        value = values[name]
        if b64 and name in ENCODED and value is not None:
            value = base64.b64encode(value.encode()).decode()
        out[name] = value
    return out


def fields_to_read(wanted: Sequence[str]) -> tuple[str, ...] | None:
    """What of a stored record rendering `wanted` needs: RENDER_FIELDS, or the
    whole record (None) when the program or its texts are asked for."""
    return None if NEEDS_REQUEST.intersection(wanted) else RENDER_FIELDS


def with_rendered(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record read by RENDER_FIELDS, its request's rendered part in place;
    None if it has none (stored before records held it apart: read it whole).
    A record the read already took whole (one of before records held their
    `language` apart, store.lacks_language) has its request: it is returned
    as it is, not read a second time."""
    if record is None:
        return None
    if RENDERED not in record:
        return record if record.get("request") else None
    record["request"] = json.loads(record.pop(RENDERED))
    return record


async def read_for(
    request: Request, token: str, wanted: Sequence[str], principal: Principal | None = None
) -> dict[str, Any] | None:
    """The record `render(record, wanted)` needs, read on the event loop:
    only RENDER_FIELDS unless `wanted` shows the program or its texts.
    With `principal`: its own Judge0 submission, or 404."""
    fields = fields_to_read(wanted)

    async def read(fields: Sequence[str] | None) -> dict[str, Any] | None:
        if principal is None:
            return await read_record(request, token, fields)
        return await owned(request, token, principal, kind="judge0", fields=fields)

    record = await read(fields)
    if fields is not None and record is not None:
        record = with_rendered(record) or await read(None)
    return record


def read_many_for(store: Store, ids: list[str], wanted: Sequence[str]) -> list[Any]:
    """Records as read_for reads them, in one round trip (and one more for
    each record of before, read whole)."""
    fields = fields_to_read(wanted)
    records = store.get_many(ids, fields)
    if fields is None:
        return records
    return [
        record  # none, or not Judge0's (the caller shows it as none)
        if record is None or record.get("kind") != "judge0"
        else with_rendered(record) or store.get(sub_id)
        for sub_id, record in zip(ids, records, strict=True)
    ]


def parse_fields(fields: str | None) -> tuple[str, ...]:
    if not fields:
        return DEFAULT_FIELDS
    if fields.strip() == "*":
        return ALL_FIELDS
    wanted = tuple(f.strip() for f in fields.split(",") if f.strip())
    unknown = [f for f in wanted if f not in ALL_FIELDS]
    if unknown:
        raise RequestInvalid(
            ("query", "fields"), f"invalid fields: {', '.join(unknown)}", status=400
        )
    return wanted


def render_callback(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The callback of a finished submission (used by api/callbacks.py for both APIs)."""
    if record.get("kind") == "judge0":
        b64 = record.get("judge0_base64") == "1"
        return "PUT", render(record, DEFAULT_FIELDS, b64)
    return "POST", view(record)


Base64 = Annotated[bool, Query(description="fields are base64 (as Judge0)")]
Fields = Annotated[str | None, Query(description="comma-separated fields, or *")]


async def _create(
    request: Request,
    sub: Judge0Submission,
    principal: Principal,
    b64: bool,
    loc: tuple = ("body",),
    admitted: bool = False,
    wait: float | None = None,
) -> tuple[str, bool]:
    """Queue one submission: (its token, whether it ended within `wait` s;
    False when not waited for)."""
    state = request.app.state
    stored = to_request(sub, state.settings, state.languages, b64, loc)
    stored["judge0"]["language_name"] = language_name(
        sub.language_id, await language_versions(request)
    )
    await check_callback(request, sub.callback_url, (*loc, "callback_url"))
    rendered = {"judge0": stored["judge0"], "limits": stored["limits"]}
    options: dict[str, Any] = {
        "kind": "judge0",
        "callback_url": sub.callback_url,
        "extra": {"judge0_base64": "1" if b64 else "0", RENDERED: json.dumps(rendered)},
        "admitted": admitted,
    }
    if wait is None:
        return await enqueue(request, stored, principal, **options), False
    return await enqueue_and_wait(request, stored, principal, wait, **options)


@router.post("/submissions", status_code=201)
async def create_submission(
    request: Request,
    principal: Caller,
    submission: Judge0Submission,
    base64_encoded: Base64 = False,
    wait: Annotated[bool, Query()] = False,
    fields: Fields = None,
) -> Any:
    wanted = parse_fields(fields)
    state = request.app.state
    token, finished = await _create(
        request,
        submission,
        principal,
        base64_encoded,
        wait=state.settings.wait_timeout if wait else None,
    )
    if finished:
        record = await read_for(request, token, wanted)
        if record is not None:  # not expired in between
            return JSONResponse(render(record, wanted, base64_encoded), status_code=201)
    return JSONResponse({"token": token}, status_code=201)


@router.post("/submissions/batch", status_code=201)
async def create_batch(
    request: Request, principal: Caller, batch: Judge0Batch, base64_encoded: Base64 = False
) -> Any:
    settings = request.app.state.settings
    if not batch.submissions or len(batch.submissions) > settings.max_batch:
        raise RequestInvalid(
            ("body", "submissions"), f"between 1 and {settings.max_batch} submissions"
        )
    await rate_limit(request, principal, len(batch.submissions) - 1)  # one was counted
    await admit(request, len(batch.submissions))
    out: list[dict[str, Any]] = []
    for index, raw in enumerate(batch.submissions):
        loc = ("body", "submissions", index)
        try:
            sub = Judge0Submission.model_validate(raw)
            token, _ = await _create(request, sub, principal, base64_encoded, loc, admitted=True)
            out.append({"token": token})
        except RequestInvalid as error:
            out.append({str(error.loc[-1]): [error.msg]})
        except ValueError as error:  # pydantic's ValidationError
            errors: list[dict[str, Any]] = getattr(error, "errors", lambda: [])()
            out.append(
                {str((e.get("loc") or ["error"])[-1]): [str(e.get("msg"))] for e in errors}
                or {"error": ["invalid submission"]}
            )
    return JSONResponse(out, status_code=201)


@router.get("/submissions/batch")
async def get_batch(
    request: Request,
    principal: Caller,
    tokens: Annotated[str, Query(max_length=37 * 100)],
    base64_encoded: Base64 = False,
    fields: Fields = None,
) -> Any:
    wanted = parse_fields(fields)
    ids = [t.strip() for t in tokens.split(",") if t.strip()]
    if len(ids) > 100:
        raise RequestInvalid(("query", "tokens"), "at most 100 tokens")
    records = await run_in_threadpool(read_many_for, request.app.state.store, ids, wanted)
    return {
        "submissions": [
            render(r, wanted, base64_encoded)
            if r is not None and r.get("owner") == principal.id and r.get("kind") == "judge0"
            else None
            for r in records
        ]
    }


@router.get("/submissions")
async def list_submissions(
    request: Request,
    principal: Caller,
    base64_encoded: Base64 = False,
    fields: Fields = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    wanted = parse_fields(fields)
    store = request.app.state.store
    total, ids = await run_in_threadpool(
        store.judge0_page, principal.id, (page - 1) * per_page, per_page
    )
    records = await run_in_threadpool(read_many_for, store, ids, wanted)
    # A record younger than result_ttl is gone only if Redis evicted it;
    # judge0_page dropped the older ones that are gone.
    gone = [i for i, r in zip(ids, records, strict=True) if r is None]
    if gone:
        await run_in_threadpool(store.forget_judge0, principal.id, gone)
        total -= len(gone)
    pages = max(1, -(-total // per_page))
    return {
        "submissions": [
            render(r, wanted, base64_encoded)
            for r in records
            if r is not None and r.get("owner") == principal.id and r.get("kind") == "judge0"
        ],
        "meta": {
            "current_page": page,
            "next_page": page + 1 if page < pages else None,
            "prev_page": page - 1 if page > 1 else None,
            "total_pages": pages,
            "total_count": total,
        },
    }


@router.get("/submissions/{token}")
async def get_submission(
    request: Request,
    principal: Caller,
    token: str,
    base64_encoded: Base64 = False,
    fields: Fields = None,
) -> Any:
    wanted = parse_fields(fields)
    if not re.match(ID_PATTERN, token):  # Judge0: whatever is not a token is not found
        raise HTTPException(404, "no such submission (unknown, expired, or another key's)")
    record = await read_for(request, token, wanted, principal)
    assert record is not None  # read_for's owner check raised 404 otherwise
    # What a polling client asks most: sent as it is (JSON types only), not
    # walked again by FastAPI's encoder.
    return JSONResponse(render(record, wanted, base64_encoded))


async def _listed(request: Request) -> list[tuple[int, Any, str]]:
    """(Judge0 id, our language, its name with the installed version), one per language."""
    info = request.app.state.language_info
    versions = await language_versions(request)
    return [
        (jid, info[LANGUAGES[jid][0]], language_name(jid, versions))
        for jid in LISTED
        if LANGUAGES[jid][0] in info
    ]


@router.get("/languages")
async def languages(request: Request, principal: Caller) -> Any:
    return [{"id": jid, "name": name} for jid, _, name in await _listed(request)]


@router.get("/languages/all")
async def all_languages(request: Request, principal: Caller) -> Any:
    return [
        {"id": jid, "name": name, "is_archived": False} for jid, _, name in await _listed(request)
    ]


@router.get("/languages/{language_id}")
async def language(request: Request, principal: Caller, language_id: int) -> Any:
    info = request.app.state.language_info
    if language_id in LANGUAGES and LANGUAGES[language_id][0] in info:
        lang = info[LANGUAGES[language_id][0]]
        return {
            "id": language_id,
            "name": language_name(language_id, await language_versions(request)),
            "is_archived": language_id not in LISTED,
            "source_file": lang.source,
            "compile_cmd": " ".join(lang.compile) if lang.compile else None,
            "run_cmd": " ".join(lang.run),
            "cellblock_language": lang.id,
        }
    raise HTTPException(404, f"language with id {language_id} doesn't exist")


@router.get("/statuses")
async def statuses(principal: Caller) -> Any:
    return [{"id": i, "description": d} for i, d in STATUSES.items()]


@router.get("/about")
async def about(principal: Caller) -> Any:
    return {
        "version": VERSION,
        "homepage": "cellblock (Judge0-compatible API)",
        "source_code": "cellblock",
        "maintainer": "cellblock",
        "cellblock": "a rootless sandbox service speaking Judge0 1.13's API",
    }


@router.get("/version")
async def version(principal: Caller) -> Any:
    return VERSION


@router.get("/config_info")
async def config_info(request: Request, principal: Caller) -> Any:
    settings = request.app.state.settings
    return {
        "maintenance_mode": False,
        "enable_wait_result": True,
        "enable_compiler_options": bool(allowed_compile_options()),
        "allowed_languages_for_compile_options": [
            name for _, lang, name in await _listed(request) if lang.compiled
        ],
        "enable_command_line_arguments": True,
        "enable_submission_delete": False,
        "enable_callbacks": True,
        "callbacks_max_tries": settings.callback_tries,
        "callbacks_timeout": settings.callback_timeout,
        "enable_additional_files": True,
        "max_queue_size": 10000,
        "cpu_time_limit": DEFAULTS["cpu_time_limit"],
        "max_cpu_time_limit": settings.max_time,
        "cpu_extra_time": DEFAULTS["cpu_extra_time"],
        "max_cpu_extra_time": 5.0,
        "wall_time_limit": DEFAULTS["wall_time_limit"],
        "max_wall_time_limit": settings.max_wall_time,
        "memory_limit": DEFAULTS["memory_limit"],
        "max_memory_limit": settings.max_memory // 1024,
        "stack_limit": DEFAULTS["stack_limit"],
        "max_stack_limit": settings.max_memory // 1024,
        "max_processes_and_or_threads": DEFAULTS["max_processes_and_or_threads"],
        "max_max_processes_and_or_threads": settings.max_pids,
        "enable_per_process_and_thread_time_limit": False,
        "allow_enable_per_process_and_thread_time_limit": True,
        "enable_per_process_and_thread_memory_limit": False,
        "allow_enable_per_process_and_thread_memory_limit": True,
        "max_file_size": DEFAULTS["max_file_size"],
        "max_max_file_size": 65536,
        "number_of_runs": DEFAULTS["number_of_runs"],
        "max_number_of_runs": MAX_RUNS,
        "redirect_stderr_to_stdout": False,
        "max_extract_size": settings.max_test_data // 1024,
        "enable_batched_submissions": True,
        "max_submission_batch_size": settings.max_batch,
        "submission_cache_duration": 1.0,
        "use_docs_as_homepage": False,
        "enable_network": False,
        "allow_enable_network": False,
        "cellblock_time": time.time(),
    }
