"""One definition of the limits, many surfaces: the fields of sandbox.spec.Limits
(kinds, bounds, help, defaults) make the `cellblock run` flags, the judge's
flags, the HTTP API's `limits`, the batch items' `limits` and sandbox.run's
keywords. A limit added to Limits appears everywhere; these tests fail if a
surface has its own list."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import sandbox
from sandbox import SpecError
from sandbox.spec import Limits, limit_fields
from worker.pipeline import JUDGE_DEFAULTS, RunLimits, judge_limit_fields, request_name
from worker.runs import COMPILE_LIMIT_FIELDS

REPO = Path(__file__).resolve().parent.parent


def _flags(build) -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    build(sub)
    (command,) = sub.choices.values()
    return {opt: action for action in command._actions for opt in action.option_strings}


def test_cellblock_run_has_a_flag_per_limit_with_its_default() -> None:
    from cellblock.cli import _run_parser

    flags = _flags(_run_parser)
    for limit in limit_fields():
        flag = "--" + limit.name.replace("_", "-")
        assert flag in flags, flag
        assert limit.metadata["help"] in flags[flag].help
    assert "(default 512M)" in flags["--memory"].help
    assert "(default 2 * time + 1)" in flags["--wall-time"].help


def test_the_judge_has_a_flag_per_judged_limit_with_the_judge_s_default() -> None:
    from worker.command import add_judge_parser

    flags = _flags(add_judge_parser)
    judged = {limit.name for limit in judge_limit_fields()}
    assert judged == set(JUDGE_DEFAULTS) and judged <= {f.name for f in limit_fields()}
    for limit in judge_limit_fields():
        assert "--" + limit.name.replace("_", "-") in flags
    assert "(default 256M)" in flags["--memory"].help and "(default 2)" in flags["--time"].help


def test_the_http_api_and_the_batch_take_the_same_limits_by_the_same_names() -> None:
    from api.models import LimitsIn

    names = {request_name(limit) for limit in judge_limit_fields()}
    # A test's limits, and the compile's a request may set (worker/runs.py).
    assert set(LimitsIn.model_fields) == names | set(COMPILE_LIMIT_FIELDS)
    assert "output" in names and "output_limit" not in names  # the contract's name
    schema = LimitsIn.model_json_schema()["properties"]
    assert "default 256M" in schema["memory"]["description"]
    # The batch reads them the same way (worker/batch.py, worker/jobs.py).
    built = RunLimits.from_request({name: _a_value(name) for name in names})
    assert built.output_limit == 1 << 20
    with pytest.raises(SpecError, match="unknown limit"):
        RunLimits.from_request({"output_limit": 1})


def _a_value(name: str) -> object:
    return {
        "time": 1,
        "wall_time": 3,
        "memory": "64M",
        "pids": 8,
        "output": "1M",
        "file_size": "1M",
    }[name]


def test_judge0_maps_onto_the_same_limits() -> None:
    # Judge0's fields name the one schema's (SubmissionIn and its limits), no others.
    from api.judge0 import JUDGE0_NAMES
    from api.models import SubmissionIn

    limits = {limit.name for limit in judge_limit_fields()}
    assert {"time", "wall_time", "memory", "pids", "file_size"} <= set(JUDGE0_NAMES)
    assert set(JUDGE0_NAMES) <= limits | set(SubmissionIn.model_fields)


def test_sandbox_run_takes_every_limit_and_refuses_others() -> None:
    for limit in limit_fields():
        assert limit.name in {f.name for f in limit_fields()}
    with pytest.raises(SpecError, match="unknown option"):
        sandbox.run(["true"], output=1)  # a request's name, not a run's
    assert Limits.build(output_limit="1M").output_limit == 1 << 20


def test_the_contract_documents_every_flag_of_cellblock_run() -> None:
    contract = (REPO / "docs" / "contract.md").read_text()
    for limit in limit_fields():
        if limit.name == "tmpfs_inodes":
            continue  # an extension the contract leaves out
        assert "--" + limit.name.replace("_", "-") in contract, limit.name
