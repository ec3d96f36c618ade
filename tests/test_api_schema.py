"""Property-based: schemathesis generates requests (valid and invalid) from the OpenAPI
schema for every operation; the API must never answer 5xx.

The API runs for real (uvicorn, real Redis); no worker runs here, so queued
submissions just wait, and `?wait=true` falls back to 202 quickly.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from service_support import ApiServer, RedisServer, remove, scratch

from api.app import create_app
from api.settings import Settings
from worker.store import Timing

KEY = "schema-test-key"


# The schema is the app's own (building the app connects to nothing).
schema = schemathesis.openapi.from_dict(
    create_app(Settings(redis_url="unix:///nonexistent"), Timing()).openapi()
)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def live_api():
    directory = scratch("cb-schema-")
    server = RedisServer(directory).start()
    app = create_app(
        Settings.from_env(
            redis_url=server.url, api_keys=frozenset({KEY}), rate_limit=0, wait_timeout=0.2
        ),
        Timing(),
    )
    api = ApiServer(app).start()
    yield api
    api.stop()
    server.stop()
    remove(directory)


def _no_dns(body: object) -> None:
    """Callback URLs are resolved on submission: keep generated ones from reaching DNS."""
    if isinstance(body, dict):
        if isinstance(body.get("callback_url"), str):
            body["callback_url"] = "http://192.0.2.1/hook"  # refused without a lookup
        for value in body.values():
            _no_dns(value)
    elif isinstance(body, list):
        for value in body:
            _no_dns(value)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_input_makes_a_server_error(case, live_api):
    _no_dns(case.body)
    response = case.call(
        base_url=live_api.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    if case.path == "/v1/health" and response.status_code == 503:
        return  # its answer while no worker runs (none runs here)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
