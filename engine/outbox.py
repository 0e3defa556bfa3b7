"""The transactional outbox: customer notifications written in the decision's own transaction.

A decision and its notification commit together or not at all, so a notification is never sent
for a decision that was not stored, nor lost for one that was. A delivery worker then takes due
entries (`claim`), delivers them, and marks each delivered, failed (retry at a later time) or
dead (given up). Delivery is at least once: an entry whose worker died is taken again after
its lease; receivers deduplicate by the entry's `id`.

These functions run inside a transaction the caller owns (see `engine.store`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from engine.chain import JsonValue, to_json
from engine.errors import NotificationNotFound
from engine.records import DecisionRecord
from engine.schema import decisions, outbox

OutboxStatus = Literal["pending", "delivered", "dead"]
CUSTOMER_NOTIFICATION = "customer_notification"
_MAX_ERROR = 2000
_INSERT = outbox.insert()


@dataclass(frozen=True)
class Notification:
    id: int
    created_at: int
    kind: str
    account_id: str
    decision_id: str | None
    payload: Mapping[str, JsonValue]
    status: OutboxStatus
    attempts: int
    next_attempt_at: int
    last_error: str | None
    delivered_at: int | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Notification:
        return cls(**row._asdict())


def enqueue(
    conn: sa.Connection,
    *,
    account_id: str,
    decision_id: str | None,
    payload: Mapping[str, object],
    at: int,
    kind: str = CUSTOMER_NOTIFICATION,
) -> int:
    """Add a pending entry, due at once; its id."""
    body = to_json(payload, "notification")
    result = conn.execute(
        _INSERT,
        {"created_at": at, "kind": kind, "account_id": account_id, "decision_id": decision_id,
         "payload": body, "status": "pending", "attempts": 0, "next_attempt_at": at},
    )  # fmt: skip
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return int(key[0])


def claim(conn: sa.Connection, *, now: int, limit: int, lease_ms: int) -> list[Notification]:
    """Up to `limit` due entries, oldest first, each hidden from other claims for `lease_ms`.

    On PostgreSQL, rows another worker is claiming are skipped (`SKIP LOCKED`); on SQLite the
    caller's write transaction already excludes other writers.
    """
    due = (
        sa.select(outbox.c.id)
        .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(limit)
    )
    if conn.dialect.name != "sqlite":
        due = due.with_for_update(skip_locked=True)
    ids = list(conn.scalars(due))
    if not ids:
        return []
    if lease_ms > 0:
        conn.execute(
            outbox.update().where(outbox.c.id.in_(ids)).values(next_attempt_at=now + lease_ms)
        )
    rows = conn.execute(
        sa.select(outbox)
        .where(outbox.c.id.in_(ids))
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
    )
    return [Notification.from_row(row) for row in rows]


def mark_delivered(conn: sa.Connection, notification_id: int, *, at: int) -> None:
    _update(
        conn, notification_id,
        status="delivered", delivered_at=at, attempts=outbox.c.attempts + 1, last_error=None,
    )  # fmt: skip


def mark_failed(
    conn: sa.Connection, notification_id: int, *, error: str, next_attempt_at: int, dead: bool
) -> None:
    _update(
        conn, notification_id,
        status="dead" if dead else "pending", attempts=outbox.c.attempts + 1,
        last_error=error[:_MAX_ERROR], next_attempt_at=next_attempt_at,
    )  # fmt: skip


def requeue_dead(conn: sa.Connection, ids: Sequence[int] | None, *, now: int) -> list[int]:
    """Dead entries (those of `ids`, or all of them with None) pending again, due `now`, with
    their attempts counted from zero (the full retries again); their last error is kept until
    the next attempt. The ids requeued, in order; an id that is not dead is left as it is."""
    query = sa.select(outbox.c.id).where(outbox.c.status == "dead")
    if ids is not None:
        query = query.where(outbox.c.id.in_(list(ids)))
    found = [int(i) for i in conn.scalars(query.order_by(outbox.c.id))]
    if found:
        conn.execute(
            outbox.update()
            .where(outbox.c.id.in_(found), outbox.c.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=now)
        )
    return found


def for_decision(conn: sa.Connection, decision_id: str) -> list[Notification]:
    rows = conn.execute(
        sa.select(outbox).where(outbox.c.decision_id == decision_id).order_by(outbox.c.id)
    )
    return [Notification.from_row(row) for row in rows]


def counts(conn: sa.Connection) -> dict[OutboxStatus, int]:
    """How many entries have each status (every status present, zeros included)."""
    found: dict[OutboxStatus, int] = {"pending": 0, "delivered": 0, "dead": 0}
    rows = conn.execute(sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status))
    for status, n in rows:
        found[status] = int(n)
    return found


def with_status(conn: sa.Connection, status: OutboxStatus, *, limit: int) -> list[Notification]:
    """Up to `limit` entries with `status`, newest first."""
    rows = conn.execute(
        sa.select(outbox).where(outbox.c.status == status).order_by(outbox.c.id.desc()).limit(limit)
    )
    return [Notification.from_row(row) for row in rows]


def _update(conn: sa.Connection, notification_id: int, **values: Any) -> None:
    # Delivered is final: a late failure report from a slow worker does not undo it.
    result = conn.execute(
        outbox.update()
        .where(outbox.c.id == notification_id, outbox.c.status != "delivered")
        .values(**values)
    )
    if (
        result.rowcount == 0
        and conn.scalar(sa.select(outbox.c.id).where(outbox.c.id == notification_id)) is None
    ):
        raise NotificationNotFound(f"no notification {notification_id} in the outbox")


# An account kept under review by its activity is decided again after each trigger's cooldown:
# the customer is told once a day of the same review, not at every re-decision.
NOTICE_REPEAT_MS = 86_400_000


def told_already(conn: sa.Connection, record: DecisionRecord) -> bool:
    """Whether the customer was told of an account `review` with the same reasons in the last
    `NOTICE_REPEAT_MS` (a notice enqueued for such a decision)."""
    if record.subject_type != "account" or record.action != "review":
        return False
    told = sa.exists().where(outbox.c.decision_id == decisions.c.decision_id)
    query = sa.select(decisions.c.reasons).where(
        decisions.c.account_id == record.account_id,
        decisions.c.created_at >= record.created_at - NOTICE_REPEAT_MS,
        decisions.c.subject_type == "account", decisions.c.action == "review", told,
    )  # fmt: skip
    codes = [reason.code for reason in record.reasons]
    for (reasons,) in conn.execute(query):
        listed = json.loads(reasons) if isinstance(reasons, str) else reasons
        if [r.get("code") for r in listed or ()] == codes:
            return True
    return False
