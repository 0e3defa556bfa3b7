"""The decisions table read back: a row as a `StoredDecision` (with its deferred
contributions) or as a chain `Link` (its fields exactly as stored, for verification); the
chain's lock; and the check that every tombstone was sealed by a purge.

`engine.store` reads and appends through these; `engine.privacy` (retention's purge) takes the
same lock and seals tombstones with the same digest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.audit import PURGE_ACCOUNT
from engine.chain import ChainBreak, Deferred, Link, decision_hash
from engine.database import current_revision, head_revision
from engine.records import FIELDS, DecisionRecord, StoredDecision
from engine.schema import audit_events, decisions
from engine.schema import decision_contributions as contrib

CHAIN_LOCK = 0x41524243  # "ARBC": advisory lock class of chain appends
# A decision with its deferred contributions (an allow decision's, computed later), if any.
DEFERRED = [
    contrib.c.contributions.label("d_contributions"),
    contrib.c.base_value.label("d_base_value"),
    contrib.c.computed_at.label("d_computed_at"),
    contrib.c.hash.label("d_hash"),
]
SELECT = sa.select(decisions, *DEFERRED).select_from(
    decisions.outerjoin(contrib, contrib.c.decision_id == decisions.c.decision_id)
)


def lock_chain(conn: sa.Connection) -> None:
    """Hold the decision chain until the transaction ends: appends wait (PostgreSQL; SQLite's
    `BEGIN IMMEDIATE` already holds the database's write lock). First in the lock order:
    chain, then accounts, then the audit trail."""
    if conn.dialect.name != "sqlite":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:cls, 'decisions'::regclass::oid::int)"),
            {"cls": CHAIN_LOCK},
        )


def unlisted_tombstone(conn: sa.Connection, through_seq: int | None) -> ChainBreak | None:
    """A tombstone that no purge sealed in the audit trail (`retention.purge.account` holds
    each tombstone's digest as purged): someone emptied a record by hand, or changed what a
    tombstone kept."""
    query = SELECT_LINKS.where(decisions.c.purged_at.is_not(None))
    if through_seq is not None:
        query = query.where(decisions.c.seq <= through_seq)
    purged = conn.execute(query.order_by(decisions.c.seq)).all()
    if not purged:
        return None
    listed: dict[str, str] = {}
    for row in conn.execute(
        sa.select(audit_events.c.details).where(audit_events.c.action == PURGE_ACCOUNT)
    ):
        listed.update((row.details or {}).get("decision_tombstones") or {})
    for row in purged:
        sealed = listed.get(str(row.seq))
        if sealed is None:
            why = "a tombstone that no purge recorded in the audit trail"
            return ChainBreak(row.decision_id, row.seq, why)
        if sealed != tombstone_digest(row):
            return ChainBreak(row.decision_id, row.seq, "a tombstone changed after its purge")
    return None


# What verification reads of a record: its fields, seq and links.
SELECT_LINKS = sa.select(decisions)


def tombstone_digest(row: sa.Row[Any]) -> str:
    """A tombstone's content (what retention left of the record) with its links, as one
    digest: `decision_hash` over the fields it holds now."""
    values = row._mapping
    return decision_hash(fields(row), values["seq"], values["prev_hash"])


def schema_problem(conn: sa.Connection) -> str | None:
    revision, head = current_revision(conn), head_revision()
    if revision is None:
        return "the decision store has no schema: run `arbiter decisions migrate`"
    if revision != head:
        return f"the decision store's schema is at revision {revision}, this code needs {head}"
    return None


def deferred(values: Mapping[Any, Any]) -> Deferred | None:
    """The deferred contributions of a row's mapping (SELECT's or VERIFY's columns)."""
    if values["d_hash"] is None:
        return None
    return Deferred(values["d_contributions"], values["d_base_value"], values["d_computed_at"],
                    values["d_hash"])  # fmt: skip


def stored(row: sa.Row[Any]) -> StoredDecision:
    values = row._mapping
    record = DecisionRecord.from_json(fields(row))
    return StoredDecision(
        record, values["seq"], values["prev_hash"], values["hash"], deferred(values),
        purged=values["purged_at"] is not None,
    )  # fmt: skip


_JSON = [c for c in decisions.c if isinstance(c.type, sa.JSON)]
_TEXT = {c.name for c in _JSON} | {"d_contributions"}
# What `verify-chain` reads: SELECT's columns, the JSON ones as the text stored (SQLite), so a
# record whose JSON a driver could not decode is named as broken (`Unreadable`) instead of
# ending the walk with a traceback.
VERIFY = sa.select(
    *(sa.type_coerce(c, sa.Text).label(c.name) if c in _JSON else c for c in decisions.c),
    sa.type_coerce(contrib.c.contributions, sa.Text).label("d_contributions"),
    *DEFERRED[1:],
).select_from(decisions.outerjoin(contrib, contrib.c.decision_id == decisions.c.decision_id))


class Unreadable(Exception):
    """A stored record whose content is not JSON: the chain breaks there."""

    def __init__(self, broken: ChainBreak) -> None:
        super().__init__(str(broken))
        self.broken = broken


def readable_link(row: sa.Row[Any], *, decode: bool) -> Link:
    """A `VERIFY` row as the chain sees it: the fields exactly as read back, not
    re-validated (verification must see any tampering). With `decode` (SQLite: the JSON
    columns came as their text) the JSON is decoded here, `Unreadable` if it is not JSON;
    PostgreSQL's driver hands JSON over decoded, and its columns hold nothing else."""
    values = dict(row._mapping)
    for name in _TEXT if decode else ():
        text = values.get(name)
        if text is not None:
            try:
                values[name] = json.loads(text)
            except (TypeError, ValueError) as exc:
                why = f"{name.removeprefix('d_')} is not JSON ({exc})"
                raise Unreadable(ChainBreak(values["decision_id"], values["seq"], why)) from None
    return Link(
        values["decision_id"], values["seq"], {name: values[name] for name in FIELDS},
        values["prev_hash"], values["hash"], deferred(values), values["purged_at"] is not None,
    )  # fmt: skip


def fields(row: sa.Row[Any]) -> dict[str, Any]:
    values = row._mapping
    return {name: values[name] for name in FIELDS}
