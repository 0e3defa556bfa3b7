"""The decision writer's rows (engine/rows.py): the hash composed from the fields' canonical
texts is `decision_hash` of the record, and each JSON column holds its canonical text."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from engine.chain import GENESIS, canonical, decision_hash
from engine.records import DecisionRecord, Reason
from engine.rows import COLUMNS, decision_row, insert_sql


def _record(**more):
    values = {
        "decision_id": "d1", "created_at": 1_700_000_000_123, "subject_type": "payment",
        "subject_id": "p1", "payment_id": "p1", "account_id": "a1", "action": "allow",
        "feature_spec_version": "s", "policy_version": "p",
    }  # fmt: skip
    return DecisionRecord(**{**values, **more})


RECORDS = [
    _record(),
    _record(
        action="decline",
        score=0.97,
        raw_margin=-3.5e-05,
        model_name="arbiter-fraud",
        model_version="12",
        model_run_id="r" * 32,
        segment="trial",
        degraded=False,
        rules_fired=("deny:ip", "rule:cards_24h"),
        reasons=(Reason("DENY_IP", 'IP "199.10.0.1" is on the deny list \\ é ✓'),),
        features={
            "amount": 1e16,
            "tiny": 5e-324,
            "country": "Ísland\n",
            "n": 3,
            "none": None,
            "flag": True,
            "neg": -0.0,
        },
        contributions={"amount": 0.25, "tiny": -1e-300},
        base_value=-2.0,
        shadow={"version": "13", "score": 0.5},
        timings={"total_ms": 1.234},
    ),
    _record(
        subject_type="account",
        subject_id="a\u00e9\U0001f600",
        account_id="a\u00e9\U0001f600",
        payment_id=None,
        action="suspend_account",
        degraded=True,
        features={},
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=["allow", "decline", "account"])
def test_the_composed_hash_is_the_records_decision_hash(record):
    for seq, prev in ((1, GENESIS), (123_456_789_012, "f" * 64)):
        row, digest = decision_row(record, seq, prev)
        assert digest == decision_hash(record.to_json(), seq, prev)
        values = dict(zip(COLUMNS, row, strict=True))
        assert values["hash"] == digest
        assert (values["seq"], values["prev_hash"]) == (seq, prev)


def test_json_columns_hold_canonical_text_and_null_stays_sql_null():
    row = dict(zip(COLUMNS, decision_row(RECORDS[1], 1, GENESIS)[0], strict=True))
    fields = RECORDS[1].to_json()
    for name in ("features", "contributions", "reasons", "rules_fired", "shadow", "timings"):
        assert row[name] == canonical(fields[name])
        assert json.loads(row[name]) == fields[name]
    allow = dict(zip(COLUMNS, decision_row(RECORDS[0], 1, GENESIS)[0], strict=True))
    assert allow["contributions"] is None and allow["shadow"] is None
    assert allow["rules_fired"] == "[]" and allow["features"] == "{}"


def test_the_insert_names_every_column_once_and_casts_json_on_postgresql():
    sqlite_sql = insert_sql(sa.create_engine("sqlite://").dialect)
    assert sqlite_sql.count("?") == len(COLUMNS) and "purged_at" not in sqlite_sql
    pg = sa.create_engine("postgresql+psycopg://u@h/db").dialect
    assert insert_sql(pg).count("CAST(%s AS JSON)") == 6


def test_none_in_a_json_column_is_sql_null_only_where_the_column_says_so():
    record = _record(features=None)
    row = dict(zip(COLUMNS, decision_row(record, 1, GENESIS)[0], strict=True))
    assert row["features"] == "null"  # NOT NULL column: JSON's null, as SQLAlchemy writes it
    assert row["contributions"] is None and row["shadow"] is None  # none_as_null: SQL NULL
