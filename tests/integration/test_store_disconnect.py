"""A PostgreSQL connection that dies in the middle of the decision writer's transaction (its
backend terminated between two of the append's statements, as a failover or a restart would):
the append fails as `StoreUnavailable` with the server's own words, the dead connection is not
handed out again, and the next append goes into the chain as if nothing had happened."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import engine.rows
from engine.errors import StoreUnavailable
from engine.store import DecisionStore
from tests.conftest import drop_postgres_schema, new_postgres_schema
from tests.integration.test_decision_store import decision

pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgres_admin) -> Iterator[DecisionStore]:
    name, url = new_postgres_schema(postgres_admin)
    made = DecisionStore(url)
    made.migrate()
    yield made
    made.close()
    drop_postgres_schema(postgres_admin, name)


def test_a_connection_killed_mid_append_fails_it_cleanly_and_the_next_append_works(
    store, postgres_admin, monkeypatch
):
    first = store.append_decision(decision(1), suspend=False, notification=None)
    real_head = engine.rows.head
    killed: list[int] = []

    def head_after_kill(conn: sa.Connection):
        pid = conn.connection.dbapi_connection.info.backend_pid  # psycopg's
        with postgres_admin.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        killed.append(pid)
        return real_head(conn)

    monkeypatch.setattr(engine.rows, "head", head_after_kill)
    with pytest.raises(StoreUnavailable) as failed:
        store.append_decision(decision(2), suspend=False, notification=None)
    assert killed
    assert "terminat" in failed.value.detail, failed.value.detail  # the server's own words
    monkeypatch.setattr(engine.rows, "head", real_head)

    after = store.append_decision(decision(3), suspend=False, notification=None)
    assert after.seq == first.seq + 1 and after.prev_hash == first.hash
    assert store.get_by_payment("pay-2") is None
    assert store.verify_chain() is None
