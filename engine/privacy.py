"""Data-subject rights and retention: what Arbiter holds about an account, and forgetting it.

`export_account` gathers everything about one account (its decisions with their rationales,
status changes, objection cases, notifications, label events, the audit entries about them, the
online features held about it, the data categories and purposes) into one portable JSON
document; the export itself is audited.

Retention: an account closes with an `account_closed` event (`close_account`); `purge` removes
the records of accounts closed longer ago than the retention period (seven years by default),
except accounts under legal hold (`set_hold`). The hash chains stay verifiable: a purged
decision or audit entry becomes a tombstone (`purged_at` set, its personal content removed,
its seq, prev_hash and hash kept), which `verify-chain` and `audit verify` check for links only.
Objection cases, notifications, status changes and label events of the account are deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine import accounts, audit
from engine.chain import TOMBSTONE
from engine.database import reading, writing
from engine.ledger import SELECT_LINKS, lock_chain, tombstone_digest
from engine.records import StoredDecision
from engine.schema import (
    account_lifecycle,
    account_status,
    audit_events,
    decision_contributions,
    decisions,
    label_events,
    objection_events,
    objections,
    outbox,
    suspension_events,
)
from features.events import format_ts

RETENTION_DAYS = 7 * 365 + 2  # seven years, leap days included
_DAY_MS = 86_400_000
PURPOSES = [
    "Preventing fraud in payments and account activity (legitimate interest; the privacy "
    "policy's automated decisions).",
    "Explaining automated decisions and handling objections (GDPR Art. 15(1)(h), 22(3)).",
    "Keeping a verifiable record of decisions for audits and disputes.",
]


@dataclass(frozen=True)
class PurgeReport:
    accounts: int
    decisions: int
    objections: int
    notifications: int
    audit_events: int
    held: int  # accounts past retention kept for a legal hold

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def close_account(engine: sa.Engine, account_id: str, at: int) -> None:
    """Record the account's closure (the latest one counts: the retention period runs from
    it; a decision after it means the account is active again, and `purge` keeps it). A
    closure no later than the activity that reopened the account (`reopen_if_active`) is an
    old one sent again: it changes nothing."""
    with writing(engine) as conn:
        accounts.lock(conn, account_id)  # a purge of this account waits, or goes first
        row = _lifecycle(conn, account_id)
        if row is None:
            conn.execute(
                account_lifecycle.insert().values(
                    account_id=account_id, closed_at=at, legal_hold=False, updated_at=at
                )
            )
        elif (row.closed_at is None or row.closed_at < at) and not (
            row.reopened_at is not None and row.reopened_at >= at
        ):
            conn.execute(account_lifecycle.update()
                         .where(account_lifecycle.c.account_id == account_id)
                         .values(closed_at=at, updated_at=at))  # fmt: skip


def reopen_if_active(engine: sa.Engine, last_seen: Mapping[str, int]) -> int:
    """Accounts with activity after their closure (`last_seen`: account -> latest event time of
    a batch) are active again: their closure is cleared, and retention no longer counts from
    it. One statement per batch's closed accounts; how many reopened."""
    if not last_seen:
        return 0
    reopened = 0
    with writing(engine) as conn:
        closed = conn.execute(
            sa.select(account_lifecycle.c.account_id, account_lifecycle.c.closed_at).where(
                account_lifecycle.c.account_id.in_(sorted(last_seen)),
                account_lifecycle.c.closed_at.is_not(None))
        ).all()  # fmt: skip
        for row in closed:
            if last_seen[row.account_id] > row.closed_at:
                accounts.lock(conn, row.account_id)
                conn.execute(
                    account_lifecycle.update()
                    .where(account_lifecycle.c.account_id == row.account_id)
                    .values(
                        closed_at=None,
                        reopened_at=last_seen[row.account_id],
                        updated_at=last_seen[row.account_id],
                    )
                )
                reopened += 1
    return reopened


def set_hold(engine: sa.Engine, account_id: str, *, hold: bool, reason: str, actor: str,
             at: int) -> None:  # fmt: skip
    """Put an account under legal hold (retention skips it) or release it; audited."""
    with writing(engine) as conn:
        accounts.lock(conn, account_id)  # a purge of this account waits, or goes first
        values = {"legal_hold": hold, "hold_reason": reason if hold else None, "updated_at": at}
        if _lifecycle(conn, account_id) is None:
            conn.execute(account_lifecycle.insert().values(account_id=account_id, **values))
        else:
            conn.execute(
                account_lifecycle.update()
                .where(account_lifecycle.c.account_id == account_id)
                .values(values)
            )
        audit.append(conn, actor=actor, action="retention.hold" if hold else "retention.release",
                     subject_type="account", subject_id=account_id, account_id=account_id,
                     at=at, details={"reason": reason})  # fmt: skip


def export_account(
    engine: sa.Engine,
    account_id: str,
    *,
    decisions_of: Callable[[str], list[StoredDecision]],
    rationale_of: Callable[[StoredDecision], dict[str, Any] | None],
    data_categories: list[str],
    actor: str,
    at: int,
    online: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything held about `account_id`, as one JSON document (audited as `account.export`).
    `online`: what the online feature store holds about the account now, if the caller read it."""
    stored = decisions_of(account_id)
    with reading(engine) as conn:
        life = _lifecycle(conn, account_id)
        status = conn.execute(
            sa.select(account_status).where(account_status.c.account_id == account_id)
        ).first()
        history = conn.execute(
            sa.select(suspension_events)
            .where(suspension_events.c.account_id == account_id)
            .order_by(suspension_events.c.id)
        ).all()
        cases = conn.execute(
            sa.select(objections)
            .where(objections.c.account_id == account_id)
            .order_by(objections.c.received_at)
        ).all()
        case_ids = [c.objection_id for c in cases]
        case_events = conn.execute(
            sa.select(objection_events)
            .where(objection_events.c.objection_id.in_(case_ids))
            .order_by(objection_events.c.id)
        ).all()
        notices = conn.execute(
            sa.select(outbox).where(outbox.c.account_id == account_id).order_by(outbox.c.id)
        ).all()
        labels = conn.execute(
            sa.select(label_events)
            .where(label_events.c.account_id == account_id)
            .order_by(label_events.c.id)
        ).all()
        # Every audit event about the account carries its id (rationale reads, case steps,
        # status changes); the trail's own housekeeping (holds, keys, purges) is not theirs.
        trail = [e for e in audit.about(conn, account_id=account_id, limit=None)
                 if not e.action.startswith(("retention.", "key."))]  # fmt: skip
    document = {
        "account_id": account_id,
        "exported_at": format_ts(at),
        "format": "arbiter-account-export/1",
        "purposes": PURPOSES,
        "data_categories": data_categories,
        "status": _row(status) if status else {"status": "active"},
        "closed_at": format_ts(life.closed_at) if life and life.closed_at else None,
        "status_changes": [_row(r) for r in history],
        "online_features": dict(online) if online is not None else None,
        "decisions": [
            {
                **s.record.to_json(),
                "contributions": s.record.contributions or s.contributions,
                "base_value": s.record.base_value
                if s.record.base_value is not None
                else s.base_value,
                "hash": s.hash,
                "rationale": rationale_of(s),
            }
            for s in stored
        ],
        "objections": [
            {
                **_row(c),
                "events": [_row(e) for e in case_events if e.objection_id == c.objection_id],
            }
            for c in cases
        ],
        "notifications": [
            {
                "created_at": format_ts(n.created_at),
                "kind": n.kind,
                "status": n.status,
                "delivered_at": format_ts(n.delivered_at) if n.delivered_at else None,
                "message": n.payload,
            }
            for n in notices
        ],
        "label_events": [dict(r.event) for r in labels],
        "audit_events": [e.to_json() for e in trail],
    }
    with writing(engine) as conn:
        audit.append(conn, actor=actor, action="account.export", subject_type="account",
                     subject_id=account_id, account_id=account_id, at=at,
                     details={"decisions": len(stored), "objections": len(cases)})  # fmt: skip
    return document


def purge(
    engine: sa.Engine, *, now: int, actor: str, retention_days: int = RETENTION_DAYS
) -> PurgeReport:
    """Forget the accounts closed more than `retention_days` ago and not under legal hold, one
    transaction per account (the account locked, so no status change slips in meanwhile). An
    account with a decision after its closure is active again: it is kept."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    cutoff = now - retention_days * _DAY_MS
    counts = dict.fromkeys(("accounts", "decisions", "objections", "notifications",
                            "audit_events", "held"), 0)  # fmt: skip
    run = uuid.uuid4().hex
    with reading(engine) as conn:
        due = conn.execute(
            sa.select(account_lifecycle.c.account_id).where(
                account_lifecycle.c.closed_at.is_not(None), account_lifecycle.c.closed_at < cutoff
            ).order_by(account_lifecycle.c.account_id)
        ).all()  # fmt: skip
    for (account_id,) in due:
        with writing(engine) as conn:
            lock_chain(conn)  # no decision of the account slips in meanwhile
            accounts.lock(conn, account_id)  # nor a hold, a closure or a status change
            life = _lifecycle(conn, account_id)  # read again, under the locks
            if life is None or life.closed_at is None or life.closed_at >= cutoff:
                continue
            if life.legal_hold:
                counts["held"] += 1
                continue
            later = conn.execute(
                sa.select(sa.func.count()).select_from(decisions).where(
                    decisions.c.account_id == account_id, decisions.c.created_at > life.closed_at
                )
            ).scalar()  # fmt: skip
            if later:
                continue
            forgotten = _forget(conn, account_id, now)
            audit.append(conn, actor=actor, action=audit.PURGE_ACCOUNT, subject_type="retention",
                         subject_id=run, at=now, details=forgotten)  # fmt: skip
            counts["accounts"] += 1
            counts["decisions"] += len(forgotten["decision_tombstones"])
            counts["audit_events"] += len(forgotten["audit_tombstones"])
            counts["objections"] += forgotten["objections"]
            counts["notifications"] += forgotten["notifications"]
    report = PurgeReport(**counts)
    with writing(engine) as conn:
        audit.append(conn, actor=actor, action="retention.purge", subject_type="retention",
                     subject_id=run, at=now,
                     details={**report.to_json(), "retention_days": retention_days,
                              "closed_before": format_ts(cutoff)})  # fmt: skip
    return report


def _forget(conn: sa.Connection, account_id: str, now: int) -> dict[str, Any]:
    """Delete or tombstone what is held about the account; what was done, without the account
    (seq numbers are not personal data)."""
    rows = conn.execute(
        sa.select(decisions.c.decision_id, decisions.c.seq).where(
            decisions.c.account_id == account_id)
    ).all()  # fmt: skip
    ids = [r.decision_id for r in rows]
    case_ids = [
        r.objection_id
        for r in conn.execute(
            sa.select(objections.c.objection_id).where(objections.c.account_id == account_id)
        )
    ]
    conn.execute(objection_events.delete().where(objection_events.c.objection_id.in_(case_ids)))
    conn.execute(objections.delete().where(objections.c.account_id == account_id))
    conn.execute(
        decision_contributions.delete().where(decision_contributions.c.decision_id.in_(ids))
    )
    conn.execute(
        decisions.update().where(decisions.c.account_id == account_id).values(
            account_id=TOMBSTONE, score=None, raw_margin=None,
            segment=None, rules_fired=[], reasons=[], features={}, contributions=None,
            base_value=None, shadow=None, timings={}, purged_at=now,
            # A payment decision keeps a payment_id (the record's shape), unique per tombstone.
            payment_id=sa.case(
                (decisions.c.payment_id.is_(None), sa.null()),
                else_=sa.literal(f"{TOMBSTONE}:") + decisions.c.decision_id,
            ),
            subject_id=sa.case(
                (decisions.c.payment_id.is_(None), sa.literal(TOMBSTONE)),
                else_=sa.literal(f"{TOMBSTONE}:") + decisions.c.decision_id,
            ),
        )
    )  # fmt: skip
    notes = conn.execute(outbox.delete().where(outbox.c.account_id == account_id)).rowcount
    conn.execute(suspension_events.delete().where(suspension_events.c.account_id == account_id))
    conn.execute(account_status.delete().where(account_status.c.account_id == account_id))
    conn.execute(label_events.delete().where(label_events.c.account_id == account_id))
    trail = [
        r.seq
        for r in conn.execute(
            sa.select(audit_events.c.seq).where(audit_events.c.account_id == account_id)
        )
    ]
    conn.execute(
        audit_events.update().where(audit_events.c.account_id == account_id)
        .values(subject_id=TOMBSTONE, account_id=None, details={}, purged_at=now)
    )  # fmt: skip
    conn.execute(account_lifecycle.delete().where(account_lifecycle.c.account_id == account_id))
    # What each tombstone holds now, sealed in the purge's audit event: what a tombstone kept
    # (ids, action, times, versions; the audit's actor and action) stays tamper-evident.
    sealed = {
        str(row.seq): tombstone_digest(row)
        for row in conn.execute(SELECT_LINKS.where(decisions.c.seq.in_([r.seq for r in rows])))
    }
    trail_sealed = {str(e.seq): audit.tombstone_digest(e) for e in audit.events(conn, trail)}
    return {"decision_tombstones": sealed, "audit_tombstones": trail_sealed,
            "objections": len(case_ids), "notifications": notes}  # fmt: skip


def labels_since(engine: sa.Engine, since_ms: int = 0) -> list[dict[str, Any]]:
    """Label events recorded since `since_ms` (an overturned objection: not fraud), oldest
    first, as events of the log (`docs/events.md`) ready for `arbiter ingest` and training."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(label_events.c.event)
            .where(label_events.c.created_at >= since_ms)
            .order_by(label_events.c.id)
        ).all()
    return [dict(r.event) for r in rows]


def _lifecycle(conn: sa.Connection, account_id: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(account_lifecycle).where(account_lifecycle.c.account_id == account_id)
    ).first()


def _row(row: sa.Row[Any]) -> dict[str, Any]:
    return dict(row._asdict())
