"""Shared fixtures. Integration tests use the real Redis at ARBITER_TEST_REDIS_URL (default
redis://127.0.0.1:6379/15), flushed per test; when it does not answer they fail, never skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
TEST_REDIS_URL = os.environ.get("ARBITER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_server() -> redis.Redis:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis does not answer at ARBITER_TEST_REDIS_URL={TEST_REDIS_URL} ({exc}). "
            "Run `make test` (it starts one) or `scripts/ensure-redis.sh "
            f"{TEST_REDIS_URL}`.",
            pytrace=False,
        )
    return client


@pytest.fixture
def redis_client(redis_server: redis.Redis) -> Iterator[redis.Redis]:
    redis_server.flushdb()
    yield redis_server
    redis_server.flushdb()
