"""The API's configuration, from environment variables (all optional).

| variable | default | meaning |
| --- | --- | --- |
| `REDIS_URL` | (none: `cellblock serve` runs its own) | the queue |
| `CELLBLOCK_API_KEYS` | (none: loopback only) | comma-separated keys |
| `CELLBLOCK_API_KEYS_FILE` | | a file with one key per line |
| `CELLBLOCK_RATE_LIMIT` | 600 | requests that queue work (POST) per key per minute (0: off) |
| `CELLBLOCK_READ_RATE_LIMIT` | 12000 | reads (GET) per key per minute (0: off) |
| `CELLBLOCK_MAX_QUEUE` | 10000 | queued submissions before new ones get 429 (0: none) |
| `CELLBLOCK_MAX_BODY` | 32M | largest request body |
| `CELLBLOCK_MAX_SOURCE` | 1M | largest source (and checker source) |
| `CELLBLOCK_MAX_TESTS` | 500 | tests per submission |
| `CELLBLOCK_MAX_TEST_DATA` | 16M | inputs and outputs of one submission together |
| `CELLBLOCK_MAX_BATCH` | 20 | submissions per batch |
| `CELLBLOCK_MAX_TIME` | 20 | CPU seconds per test |
| `CELLBLOCK_MAX_WALL_TIME` | 60 | wall seconds per test |
| `CELLBLOCK_MAX_MEMORY` | 2G | memory per test |
| `CELLBLOCK_MAX_PIDS` | 256 | processes + threads per test |
| `CELLBLOCK_MAX_OUTPUT` | 64M | output cap per test |
| `CELLBLOCK_WAIT_TIMEOUT` | 30 | `?wait=true` waits this long, then answers 202 |
| `CELLBLOCK_CALLBACK_ALLOW` | (none) | CIDRs callbacks may reach beyond public ones, or `any` |
| `CELLBLOCK_CALLBACK_TRIES` | 3 | tries of one callback |
| `CELLBLOCK_CALLBACK_TIMEOUT` | 5 | seconds per try |
| `CELLBLOCK_CALLBACK_BACKOFF` | 2 | seconds before the 2nd try, doubled each time |
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.spec import parse_size


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    api_keys: frozenset[str] = frozenset()
    rate_limit: int = 600
    read_rate_limit: int = 12000
    rate_window: int = 60
    max_queue: int = 10000
    max_body: int = 32 << 20
    max_source: int = 1 << 20
    max_tests: int = 500
    max_test_data: int = 16 << 20
    max_batch: int = 20
    max_time: float = 20.0
    max_wall_time: float = 60.0
    max_memory: int = 2 << 30
    max_pids: int = 256
    max_output: int = 64 << 20
    max_file_size: int = 1 << 30
    wait_timeout: float = 30.0
    callback_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    callback_allow_any: bool = False
    callback_tries: int = 3
    callback_timeout: float = 5.0
    callback_backoff: float = 2.0
    extra: dict[str, str] = field(default_factory=dict)

    def limit_caps(self) -> dict[str, float]:
        """The largest value of each judged-test limit this service accepts."""
        return {
            "time": self.max_time,
            "wall_time": self.max_wall_time,
            "memory": self.max_memory,
            "pids": self.max_pids,
            "output_limit": self.max_output,
            "file_size": self.max_file_size,
        }

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        keys = {k.strip() for k in _env("CELLBLOCK_API_KEYS", "").split(",") if k.strip()}
        keys_file = os.environ.get("CELLBLOCK_API_KEYS_FILE")
        if keys_file:
            keys |= {
                line.strip()
                for line in Path(keys_file).read_text().splitlines()
                if line.strip() and not line.startswith("#")
            }
        allow_raw = [
            a.strip() for a in _env("CELLBLOCK_CALLBACK_ALLOW", "").split(",") if a.strip()
        ]
        values: dict[str, object] = {
            "redis_url": os.environ.get("REDIS_URL") or None,
            "api_keys": frozenset(keys),
            "rate_limit": int(_env("CELLBLOCK_RATE_LIMIT", "600")),
            "read_rate_limit": int(_env("CELLBLOCK_READ_RATE_LIMIT", "12000")),
            "max_queue": int(_env("CELLBLOCK_MAX_QUEUE", "10000")),
            "max_body": parse_size(_env("CELLBLOCK_MAX_BODY", "32M"), "CELLBLOCK_MAX_BODY"),
            "max_source": parse_size(_env("CELLBLOCK_MAX_SOURCE", "1M"), "CELLBLOCK_MAX_SOURCE"),
            "max_tests": int(_env("CELLBLOCK_MAX_TESTS", "500")),
            "max_test_data": parse_size(
                _env("CELLBLOCK_MAX_TEST_DATA", "16M"), "CELLBLOCK_MAX_TEST_DATA"
            ),
            "max_batch": int(_env("CELLBLOCK_MAX_BATCH", "20")),
            "max_time": float(_env("CELLBLOCK_MAX_TIME", "20")),
            "max_wall_time": float(_env("CELLBLOCK_MAX_WALL_TIME", "60")),
            "max_memory": parse_size(_env("CELLBLOCK_MAX_MEMORY", "2G"), "CELLBLOCK_MAX_MEMORY"),
            "max_pids": int(_env("CELLBLOCK_MAX_PIDS", "256")),
            "max_output": parse_size(_env("CELLBLOCK_MAX_OUTPUT", "64M"), "CELLBLOCK_MAX_OUTPUT"),
            "max_file_size": parse_size(
                _env("CELLBLOCK_MAX_FILE_SIZE", "1G"), "CELLBLOCK_MAX_FILE_SIZE"
            ),
            "wait_timeout": float(_env("CELLBLOCK_WAIT_TIMEOUT", "30")),
            "callback_allow": tuple(
                ipaddress.ip_network(a, strict=False) for a in allow_raw if a != "any"
            ),
            "callback_allow_any": "any" in allow_raw,
            "callback_tries": int(_env("CELLBLOCK_CALLBACK_TRIES", "3")),
            "callback_timeout": float(_env("CELLBLOCK_CALLBACK_TIMEOUT", "5")),
            "callback_backoff": float(_env("CELLBLOCK_CALLBACK_BACKOFF", "2")),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
