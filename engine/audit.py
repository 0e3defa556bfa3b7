"""The audit trail: who read or changed what, and when; append-only and hash-chained.

Every read of a rationale, every transition of an objection case, every change of an account's
status and every export or purge is one `audit_events` row, written in the same transaction as
the change it records (a read writes its own). Rows are chained like the decisions
(`engine.chain`):

    hash(n) = sha256(canonical({seq, at, actor, action, subject_type, subject_id, account_id,
                                details, prev_hash: hash(n - 1)}))

Appends are serialized (SQLite: the write lock of `BEGIN IMMEDIATE`; PostgreSQL: a
transaction-scoped advisory lock), so the chain never forks. Retention may turn an entry about
a purged account into a tombstone (`purged_at` set, personal content removed, seq and hashes
kept): `first_break` then checks its links but not its content. `arbiter audit verify` names the
first broken link.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.chain import GENESIS, TOMBSTONE, JsonValue, digest, to_json
from engine.database import writing
from engine.schema import audit_events

_AUDIT_LOCK = 0x41524255  # "ARBU": advisory lock class of audit appends
PURGE_ACCOUNT = "retention.purge.account"  # lists the seqs a purge turned into tombstones
_CONTENT = ("at", "actor", "action", "subject_type", "subject_id", "account_id", "details")


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    at: int
    actor: str
    action: str
    subject_type: str
    subject_id: str
    account_id: str | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str
    purged_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "at": self.at, "actor": self.actor, "action": self.action,
            "subject_type": self.subject_type, "subject_id": self.subject_id,
            "account_id": self.account_id, "details": dict(self.details),
            "prev_hash": self.prev_hash, "hash": self.hash, "purged_at": self.purged_at,
        }  # fmt: skip

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> AuditEvent:
        return cls(**row._asdict())


@dataclass(frozen=True)
class AuditBreak:
    seq: int
    why: str

    def __str__(self) -> str:
        return f"audit event seq {self.seq}: {self.why}"


def event_hash(content: Mapping[str, JsonValue], seq: int, prev_hash: str) -> str:
    return digest({**content, "seq": seq, "prev_hash": prev_hash})


def append(
    conn: sa.Connection,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    at: int,
    account_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event at the head of the trail, in the caller's (write) transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_AUDIT_LOCK, 0)))
    head = conn.execute(
        sa.select(audit_events.c.seq, audit_events.c.hash).order_by(audit_events.c.seq.desc())
        .limit(1)
    ).first()  # fmt: skip
    seq, prev_hash = (head.seq + 1, head.hash) if head else (1, GENESIS)
    body = to_json(dict(details or {}), "details")
    assert isinstance(body, dict)
    content: dict[str, JsonValue] = {
        "at": at, "actor": actor, "action": action, "subject_type": subject_type,
        "subject_id": subject_id, "account_id": account_id, "details": body,
    }  # fmt: skip
    digest = event_hash(content, seq, prev_hash)
    conn.execute(audit_events.insert(), {**content, "seq": seq, "prev_hash": prev_hash,
                                         "hash": digest})  # fmt: skip
    return AuditEvent(seq, at, actor, action, subject_type, subject_id, account_id, body,
                      prev_hash, digest)  # fmt: skip


def record(
    engine: sa.Engine,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    account_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """An event in its own transaction (a read: nothing else to write with it), now."""
    with writing(engine) as conn:
        return append(conn, actor=actor, action=action, subject_type=subject_type,
                      subject_id=subject_id, at=time.time_ns() // 1_000_000,
                      account_id=account_id, details=details)  # fmt: skip


def first_break(events: Iterable[AuditEvent]) -> AuditBreak | None:
    """Walk the trail in seq order; the first event that breaks it, or None. A tombstone must be
    empty and sealed by a later purge event (`PURGE_ACCOUNT`'s `audit_tombstones`: its digest
    as purged)."""
    expected, prev_hash = 1, GENESIS
    tombstones: list[AuditEvent] = []
    listed: dict[str, str] = {}
    for event in events:
        if event.seq != expected:
            return AuditBreak(event.seq, f"seq {event.seq} follows {expected - 1}: one is missing")
        if event.prev_hash != prev_hash:
            return AuditBreak(event.seq, "prev_hash is not the hash of the event before it")
        if event.action == PURGE_ACCOUNT:
            listed.update(event.details.get("audit_tombstones") or {})
        if event.purged_at is not None:
            if dict(event.details) or event.subject_id != TOMBSTONE or event.account_id:
                return AuditBreak(event.seq, "marked purged but still holds content")
            tombstones.append(event)
        else:
            content = {name: getattr(event, name) for name in _CONTENT}
            content["details"] = dict(event.details)
            if event_hash(content, event.seq, event.prev_hash) != event.hash:
                return AuditBreak(event.seq, "hash does not match the event's content")
        prev_hash, expected = event.hash, expected + 1
    for tomb in tombstones:
        sealed = listed.get(str(tomb.seq))
        if sealed is None:
            return AuditBreak(tomb.seq, "a tombstone that no purge recorded")
        if sealed != tombstone_digest(tomb):
            return AuditBreak(tomb.seq, "a tombstone changed after its purge")
    return None


def tombstone_digest(event: AuditEvent) -> str:
    """What a purged event still holds (seq, time, actor, action, links), as one digest."""
    content = {name: getattr(event, name) for name in _CONTENT}
    content["details"] = dict(event.details)
    return event_hash(content, event.seq, event.prev_hash)


def events(conn: sa.Connection, seqs: Iterable[int]) -> list[AuditEvent]:
    wanted = list(seqs)
    if not wanted:
        return []
    rows = conn.execute(sa.select(audit_events).where(audit_events.c.seq.in_(wanted)))
    return [AuditEvent.from_row(row) for row in rows]


def walk(conn: sa.Connection) -> Iterator[AuditEvent]:
    rows = conn.execution_options(yield_per=1000).execute(
        sa.select(audit_events).order_by(audit_events.c.seq)
    )
    try:
        for row in rows:
            yield AuditEvent.from_row(row)
    finally:
        rows.close()


def about(
    conn: sa.Connection,
    *,
    account_id: str | None = None,
    subjects: Iterable[tuple[str, str]] = (),
    limit: int | None = 10_000,
) -> list[AuditEvent]:
    """Events about an account or about given (subject_type, subject_id)s, oldest first."""
    where: list[sa.ColumnElement[bool]] = []
    if account_id is not None:
        where.append(audit_events.c.account_id == account_id)
    for kind, ident in subjects:
        where.append(
            sa.and_(audit_events.c.subject_type == kind, audit_events.c.subject_id == ident)
        )
    if not where:
        return []
    query = sa.select(audit_events).where(sa.or_(*where)).order_by(audit_events.c.seq)
    rows = conn.execute(query if limit is None else query.limit(limit))
    return [AuditEvent.from_row(row) for row in rows]
