"""The decision store against real databases: SQLite in a temporary directory and the PostgreSQL
server at ARBITER_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).

Each PostgreSQL case works in a schema of its own, dropped afterwards. When PostgreSQL does not
answer, its cases fail with a message saying so; they are never skipped.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from engine.chain import GENESIS, decision_hash
from engine.database import connect
from engine.errors import (
    ContributionsConflict,
    DecisionNotFound,
    InvalidAccountStatus,
    NotificationNotFound,
    StoreError,
    StoreUnavailable,
)
from engine.records import DecisionRecord, Reason
from engine.schema import metadata
from engine.store import DecisionStore
from tests.conftest import drop_postgres_schema, new_postgres_schema

# --- databases ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[], str]]:
    """A factory of URLs of empty databases (SQLite files, or PostgreSQL schemas)."""
    made: list[str] = []

    def new() -> str:
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / uuid.uuid4().hex[:12]}.db"
        name, url = new_postgres_schema(request.getfixturevalue("postgres_admin"))
        made.append(name)
        return url

    yield new
    for name in made:
        drop_postgres_schema(request.getfixturevalue("postgres_admin"), name)


@pytest.fixture
def url(new_database: Callable[[], str]) -> str:
    return new_database()


@pytest.fixture
def store(url: str) -> Iterator[DecisionStore]:
    store = DecisionStore(url)
    store.migrate()
    yield store
    store.close()


def execute(url: str, sql: str, **params: Any) -> list[Any]:
    """Raw SQL on the store's database, outside the store (to tamper, to inspect)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def decision(n: int, *, account: str = "acct-1", action: str = "allow", **more: Any):
    """The n-th payment decision of a test, adverse ones with their contributions."""
    adverse = action != "allow"
    values: dict[str, Any] = {
        "decision_id": f"dec-{n:04d}-{uuid.uuid4().hex[:6]}",
        "created_at": 1_700_000_000_000 + n,
        "subject_type": "payment",
        "subject_id": f"pay-{n}",
        "payment_id": f"pay-{n}",
        "account_id": account,
        "action": action,
        "score": 0.9 if adverse else 0.01,
        "raw_margin": 2.2 if adverse else -4.6,
        "model_name": "arbiter-fraud",
        "model_version": "3",
        "feature_spec_version": "spec-1",
        "policy_version": "pol-1",
        "reasons": (Reason("HIGH_RISK_SCORE", "The risk score is high."),) if adverse else (),
        "features": {"amount": 12.5, "cards_24h": 1},
        "contributions": {"amount": 0.3, "cards_24h": -0.1} if adverse else None,
        "base_value": -3.0 if adverse else None,
        "timings": {"total_ms": 1.2},
        **more,
    }
    if values["subject_type"] == "account":
        values.update(subject_id=account, payment_id=None)
    return DecisionRecord(**values)


def count(url: str, table: str) -> int:
    return int(execute(url, f"SELECT count(*) FROM {table}")[0][0])


# --- records --------------------------------------------------------------------------------


def test_a_decision_reads_back_with_every_field_and_nan_features_as_null(store, url):
    record = decision(
        1, action="decline", model_run_id="run-abc", segment="new_accounts",
        rules_fired=("too_many_cards",), degraded=True,
        reasons=(Reason("TOO_MANY_CARDS", "Many cards in a day."), Reason("HIGH_RISK_SCORE", "x")),
        features={"amount": 12.5, "ip_country": "FR", "missing": math.nan,
                  "cards_24h": np.float64(21.0), "trial": True, "huge": 1e300, "tiny": 5e-324},
        shadow={"model_version": "4", "score": 0.42},
        timings={"features_ms": 0.4, "model_ms": 0.3, "total_ms": 1.1},
    )  # fmt: skip
    assert all(getattr(record, f.name) not in (None, (), {}) for f in fields(record))

    stored = store.append_decision(record, suspend=False, notification=None)
    got = store.get_decision(record.decision_id)

    assert got == stored
    assert got.record == record
    assert got.record.features["missing"] is None
    assert (got.seq, got.prev_hash, got.replayed) == (1, GENESIS, False)
    assert store.get_by_payment("pay-1") == got
    (raw,) = execute(url, "SELECT features FROM decisions")[0]
    assert (json.loads(raw) if isinstance(raw, str) else raw)["missing"] is None


def test_an_unknown_decision_is_not_found(store):
    with pytest.raises(DecisionNotFound, match="no decision nope"):
        store.get_decision("nope")
    assert store.get_by_payment("nope") is None


def test_a_retried_payment_returns_the_first_decision_and_writes_nothing(store, url):
    first = store.append_decision(
        decision(1, action="suspend_account"), suspend=True, notification={"text": "first"}
    )
    retry = decision(1, action="review")  # same payment, another id and outcome

    again = store.append_decision(retry, suspend=True, notification={"text": "retry"})

    assert again.replayed
    assert again.record == first.record
    assert (again.seq, again.hash) == (first.seq, first.hash)
    assert count(url, "decisions") == 1
    assert count(url, "outbox") == 1
    assert len(store.suspension_events("acct-1")) == 1


def test_account_decisions_have_no_idempotency_key(store):
    for n in range(2):
        store.append_decision(decision(n, subject_type="account"), suspend=False, notification=None)
    assert store.chain_head()[0] == 2


# --- the chain ------------------------------------------------------------------------------


def test_each_record_is_hashed_with_the_hash_of_the_one_before(store):
    stored = [
        store.append_decision(decision(n, action=a), suspend=False, notification=None)
        for n, a in enumerate(["allow", "review", "decline", "allow", "suspend_account"])
    ]

    assert [s.seq for s in stored] == [1, 2, 3, 4, 5]
    assert [s.prev_hash for s in stored] == [GENESIS] + [s.hash for s in stored[:-1]]
    for s in stored:
        assert s.hash == decision_hash(s.record.to_json(), s.seq, s.prev_hash)
    assert store.verify_chain() is None
    assert store.chain_head() == (5, stored[-1].hash)


def test_verify_chain_names_exactly_the_record_whose_action_was_changed(store, url):
    stored = [
        store.append_decision(decision(n, action="decline"), suspend=False, notification=None)
        for n in range(5)
    ]
    target = stored[2]

    execute(url, "UPDATE decisions SET action = 'allow' WHERE decision_id = :id",
            id=target.decision_id)  # fmt: skip

    broken = store.verify_chain()
    assert broken is not None
    assert (broken.decision_id, broken.seq) == (target.decision_id, 3)
    assert "hash does not match" in broken.why


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("features", "not json", "features is not JSON"),
        ("features", '{"amount": NaN}', "content that no record holds"),
        ("reasons", "[", "reasons is not JSON"),
        ("score", b"\x00", "content that no record holds"),
    ],
)
def test_verify_chain_names_a_record_whose_content_no_driver_can_read(tmp_path, column, value, why):
    # SQLite's columns hold whatever is written to them: such a record is a broken link, named,
    # not a traceback that names nothing (a JSON column PostgreSQL would refuse to hold).
    url = f"sqlite:///{tmp_path / 'chain.db'}"
    store = DecisionStore(url)
    store.migrate()
    try:
        stored = [
            store.append_decision(decision(n, action="decline"), suspend=False, notification=None)
            for n in range(4)
        ]
        execute(url, f"UPDATE decisions SET {column} = :v WHERE decision_id = :id", v=value,
                id=stored[2].decision_id)  # fmt: skip
        broken = store.verify_chain()
        assert broken is not None
        assert (broken.decision_id, broken.seq) == (stored[2].decision_id, 3)
        assert why in broken.why
        assert store.verify_chain(through_seq=2) is None  # the records before it hold
    finally:
        store.close()


def test_verify_chain_names_the_record_after_a_deleted_one(store, url):
    stored = [
        store.append_decision(decision(n), suspend=False, notification=None) for n in range(4)
    ]

    execute(url, "DELETE FROM decisions WHERE decision_id = :id", id=stored[1].decision_id)

    broken = store.verify_chain()
    assert broken is not None
    assert (broken.decision_id, broken.seq) == (stored[2].decision_id, 3)
    assert "a record is missing" in broken.why


def _append_many(url: str, writer: int, n: int, start: threading.Barrier | None = None) -> int:
    store = DecisionStore(url)  # one engine per writer, as in separate workers
    try:
        if start is not None:
            start.wait()
        for i in range(n):
            record = decision(writer * 1000 + i, account=f"acct-{writer}")
            store.append_decision(record, suspend=False, notification={"i": i})
    finally:
        store.close()
    return n


def _assert_one_chain(store: DecisionStore, url: str, total: int) -> None:
    assert store.verify_chain() is None
    assert store.chain_head()[0] == total
    assert count(url, "decisions") == total
    seqs = [row[0] for row in execute(url, "SELECT seq FROM decisions ORDER BY seq")]
    assert seqs == list(range(1, total + 1))
    assert count(url, "outbox") == total


def test_four_concurrent_writers_append_to_one_intact_chain(store, url):
    start = threading.Barrier(4)
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda w: _append_many(url, w, 50, start), range(4)))
    assert sum(done) == 200
    _assert_one_chain(store, url, 200)


def test_concurrent_processes_append_to_one_intact_chain(store, url):
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        done = pool.starmap(_append_many, [(url, w, 25) for w in range(2)])
    assert sum(done) == 50
    _assert_one_chain(store, url, 50)


# --- contributions computed later -----------------------------------------------------------


def test_contributions_of_an_allow_decision_are_stored_later_and_verified(store, url):
    allow = store.append_decision(decision(1), suspend=False, notification=None)
    adverse = store.append_decision(decision(2, action="decline"), suspend=False,
                                    notification=None)  # fmt: skip
    assert store.get_decision(allow.decision_id).contributions is None

    kept = store.store_contributions(allow.decision_id, {"amount": 0.2, "cards_24h": -0.05},
                                     -3.1, computed_at=1_700_000_100_000)  # fmt: skip
    again = store.store_contributions(allow.decision_id, {"amount": 0.2, "cards_24h": -0.05},
                                      -3.1)  # fmt: skip

    got = store.get_decision(allow.decision_id)
    assert again == kept
    assert (got.contributions, got.base_value) == ({"amount": 0.2, "cards_24h": -0.05}, -3.1)
    assert got.hash == allow.hash  # the decision row is untouched
    assert store.verify_chain() is None
    with pytest.raises(ContributionsConflict, match="has other contributions stored"):
        store.store_contributions(allow.decision_id, {"amount": 0.3}, -3.1)
    with pytest.raises(ContributionsConflict, match="carries its contributions in its record"):
        store.store_contributions(adverse.decision_id, {"amount": 0.3}, -3.0)
    with pytest.raises(DecisionNotFound, match="no decision nope"):
        store.store_contributions("nope", {"amount": 0.3}, -3.0)

    execute(url, "UPDATE decision_contributions SET base_value = 0.0")
    broken = store.verify_chain()
    assert broken is not None
    assert broken.decision_id == allow.decision_id
    assert "contributions stored later" in broken.why


# --- suspension and the outbox --------------------------------------------------------------


def test_a_suspending_decision_writes_status_event_and_notification_with_it(store):
    first = decision(1, action="suspend_account")
    store.append_decision(first, suspend=True, notification={"text": "suspended"})
    store.append_decision(decision(2, action="suspend_account"), suspend=True,
                          notification={"text": "again"})  # fmt: skip

    state = store.account_status("acct-1")
    assert (state.status, state.since, state.decision_id) == (
        "suspended", first.created_at, first.decision_id,
    )  # fmt: skip
    (event,) = store.suspension_events("acct-1")  # the second changed nothing
    assert (event.from_status, event.to_status, event.decision_id, event.actor, event.reason) == (
        "active", "suspended", first.decision_id, "engine", "HIGH_RISK_SCORE",
    )  # fmt: skip
    (note,) = store.notifications_for(first.decision_id)
    assert (note.payload, note.status, note.account_id) == ({"text": "suspended"}, "pending",
                                                            "acct-1")  # fmt: skip
    assert store.account_status("acct-never-seen").status == "active"


class Outbox:
    """Switches the outbox off: every insert fails, as a database error in the decision's own
    transaction (a trigger), and back on."""

    def __init__(self, url: str) -> None:
        self.url, self.is_down = url, False
        self.sqlite = url.startswith("sqlite")

    def down(self) -> None:
        if self.sqlite:
            execute(self.url, "CREATE TRIGGER outbox_down BEFORE INSERT ON outbox "
                              "BEGIN SELECT RAISE(ABORT, 'outbox is down'); END")  # fmt: skip
        else:
            execute(self.url, "CREATE OR REPLACE FUNCTION outbox_down() RETURNS trigger "
                              "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'outbox is down'; "
                              "END $$")  # fmt: skip
            execute(self.url, "CREATE TRIGGER outbox_down BEFORE INSERT ON outbox "
                              "FOR EACH ROW EXECUTE FUNCTION outbox_down()")  # fmt: skip
        self.is_down = True

    def up(self) -> None:
        execute(self.url, "DROP TRIGGER outbox_down" + ("" if self.sqlite else " ON outbox"))
        self.is_down = False


def test_a_failed_outbox_insert_stores_nothing_of_the_decision(store, url):
    before = store.append_decision(decision(0), suspend=False, notification=None)
    outbox = Outbox(url)
    outbox.down()
    failing = decision(1, action="suspend_account")

    with pytest.raises(StoreError, match="outbox is down"):
        store.append_decision(failing, suspend=True, notification={"text": "suspended"})

    assert store.get_by_payment("pay-1") is None
    assert store.chain_head() == (1, before.hash)
    assert store.account_status("acct-1").status == "active"
    assert store.suspension_events("acct-1") == []
    assert count(url, "outbox") == 0

    outbox.up()
    stored = store.append_decision(failing, suspend=True, notification={"text": "suspended"})
    assert (stored.seq, stored.prev_hash) == (2, before.hash)
    assert store.account_status("acct-1").status == "suspended"
    assert len(store.notifications_for(failing.decision_id)) == 1
    assert store.verify_chain() is None


def test_notifications_are_leased_retried_and_given_up(store):
    a = store.append_decision(decision(1, action="decline"), suspend=False, notification={"n": 1})
    b = store.append_decision(decision(2, action="decline"), suspend=False, notification={"n": 2})
    now = a.record.created_at + 10

    claimed = store.pending_notifications(now, 10, lease_ms=1000)
    assert [n.payload for n in claimed] == [{"n": 1}, {"n": 2}]
    assert store.pending_notifications(now, 10) == []  # both leased
    first, second = claimed
    store.mark_failed(first.id, "receiver said 503", now + 5000, dead=False)
    assert [n.id for n in store.pending_notifications(now + 2000, 10)] == [second.id]
    store.mark_delivered(second.id, at=now + 2100)

    (retry,) = store.pending_notifications(now + 6000, 10)
    assert (retry.id, retry.attempts, retry.last_error) == (first.id, 1, "receiver said 503")
    store.mark_failed(first.id, "receiver said 503", now + 9000, dead=True)
    assert store.pending_notifications(now + 10**9, 10, lease_ms=0) == []
    assert store.notifications_for(a.decision_id)[0].status == "dead"
    delivered = store.notifications_for(b.decision_id)[0]
    assert (delivered.status, delivered.delivered_at, delivered.attempts) == (
        "delivered", now + 2100, 1,
    )  # fmt: skip
    with pytest.raises(NotificationNotFound, match="no notification 999999"):
        store.mark_delivered(999999)


def test_reinstatement_is_recorded_with_its_actor_and_notification(store):
    suspending = decision(1, action="suspend_account")
    store.append_decision(suspending, suspend=True, notification=None)

    state = store.set_account_status(
        "acct-1", "active", actor="reviewer:alice", reason="objection upheld",
        objection_id="obj-7", notification={"text": "reinstated"}, at=1_800_000_000_000,
    )  # fmt: skip
    unchanged = store.set_account_status("acct-1", "active", actor="reviewer:bob", reason="again")

    assert (state.status, state.since, state.decision_id) == ("active", 1_800_000_000_000, None)
    assert unchanged == state
    events = store.suspension_events("acct-1")
    assert [(e.from_status, e.to_status, e.actor, e.objection_id) for e in events] == [
        ("active", "suspended", "engine", None),
        ("suspended", "active", "reviewer:alice", "obj-7"),
    ]
    assert [n.payload for n in store.pending_notifications(2 * 10**12, 10, lease_ms=0)] == [
        {"text": "reinstated"}
    ]
    with pytest.raises(InvalidAccountStatus, match="'closed' is neither active nor suspended"):
        store.set_account_status("acct-1", "closed", actor="x", reason="y")
    with pytest.raises(InvalidAccountStatus, match="needs an actor and a reason"):
        store.set_account_status("acct-1", "suspended", actor="", reason="y")


# --- reads for the backtest, health, schema -------------------------------------------------


def test_decisions_since_streams_from_a_time_in_chain_order(store):
    stored = [
        store.append_decision(decision(n), suspend=False, notification=None) for n in range(4)
    ]
    since = stored[1].record.created_at
    assert [s.decision_id for s in store.decisions_since(since)] == [
        s.decision_id for s in stored[1:]
    ]


def test_a_migrated_store_is_writable_and_an_empty_database_is_not(store, new_database):
    assert store.is_writable()
    bare = DecisionStore(new_database())
    try:
        assert not bare.is_writable()
        assert "has no schema" in (bare.writable_problem() or "")
    finally:
        bare.close()


def test_a_store_that_does_not_answer_is_unavailable():
    store = DecisionStore("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    try:
        assert "unavailable" in (store.writable_problem() or "")
        with pytest.raises(StoreUnavailable, match="the decision store is unavailable"):
            store.get_decision("any")
    finally:
        store.close()


def _snapshot(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        out = {}
        for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
            out[table] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"])
                            for c in inspector.get_columns(table)],
                "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                "unique": sorted((u["name"], tuple(u["column_names"]))
                                 for u in inspector.get_unique_constraints(table)),
                "indexes": sorted((i["name"], tuple(i["column_names"]), i["unique"])
                                  for i in inspector.get_indexes(table)),
                "fks": sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                              for f in inspector.get_foreign_keys(table)),
                "checks": sorted((c["name"], " ".join(c["sqltext"].split()))
                                 for c in inspector.get_check_constraints(table)),
            }  # fmt: skip
        return out
    finally:
        engine.dispose()


def test_migrations_create_the_schema_the_metadata_describes(store, url, new_database):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()
    from_metadata = new_database()
    engine = sa.create_engine(from_metadata)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()

    migrated = _snapshot(url)
    assert set(migrated) == set(metadata.tables)
    assert migrated == _snapshot(from_metadata)


def test_sqlite_commits_are_durable_in_wal_mode(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'durable.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        engine.dispose()


def test_a_read_only_postgresql_is_unavailable_not_a_refused_decision(postgres_admin):
    """A standby after a failover refuses every write: the journal must wait for it, not set
    the decisions aside as refused (engine/database.py maps SQLSTATE 25006)."""
    name, url = new_postgres_schema(postgres_admin)
    try:
        writable = DecisionStore(url)
        writable.migrate()
        writable.close()
        options = f"-csearch_path={name} -cdefault_transaction_read_only=on"
        read_only = DecisionStore(
            sa.make_url(url).update_query_dict({"options": options}).render_as_string(False)
        )
        with pytest.raises(StoreUnavailable, match="read-only"):
            read_only.append_decision(decision(1), suspend=False, notification=None)
        read_only.close()
    finally:
        drop_postgres_schema(postgres_admin, name)
