"""Shared fixtures. Integration tests use the real Redis at ARBITER_TEST_REDIS_URL (default
redis://127.0.0.1:6379/15), flushed per test; when it does not answer they fail, never skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
# The Redis time budget of a payment (engine/service.py) is 50 ms in production; tests of what
# a decision says run with a generous one, so a busy CI machine does not turn their payments
# into degraded ones. tests/integration/test_failures.py sets 50 ms and tests the budget itself.
TEST_REDIS_BUDGET_MS = "2000"
os.environ.setdefault("ARBITER_REDIS_BUDGET_MS", TEST_REDIS_BUDGET_MS)
TEST_REDIS_URL = os.environ.get("ARBITER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "ARBITER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


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


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    """The PostgreSQL server at ARBITER_TEST_POSTGRES_URL; the tests fail when it is absent."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        pytest.fail(
            f"PostgreSQL does not answer at ARBITER_TEST_POSTGRES_URL={POSTGRES_URL} ({reason}). "
            "Run `make test` (it starts one), or point ARBITER_TEST_POSTGRES_URL at a server "
            "where the tests may create schemas.",
            pytrace=False,
        )
    yield admin
    admin.dispose()


def new_postgres_schema(admin: sa.Engine) -> tuple[str, str]:
    """A new empty schema: its name and a URL whose search_path is it."""
    name = f"arbiter_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
    return name, url.render_as_string(hide_password=False)


def drop_postgres_schema(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The payment and account models trained and promoted once per session
    (tests/integration/conftest.py `train_models`; about a minute and a half)."""
    from tests.integration.conftest import train_models

    return train_models(tmp_path_factory)
