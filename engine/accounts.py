"""Account status (active or suspended) and the append-only log of every change to it.

An account with no row has never been suspended: it is active. Each change writes the new
status and one `suspension_events` row (from, to, the decision or objection behind it, the
actor, the reason, the time) in the caller's transaction; setting the status an account
already has changes nothing and records nothing. Changes to one account are serialized (on
PostgreSQL by a transaction-scoped advisory lock on the account, on SQLite by the write lock),
so each event's `from_status` is the previous event's `to_status`. Each change is also an event
of the audit trail (`engine.audit`), in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import sqlalchemy as sa

from engine import audit
from engine.errors import InvalidAccountStatus
from engine.schema import account_status, suspension_events

AccountStatus = Literal["active", "suspended"]
_ACCOUNT_LOCK = 0x41524241  # "ARBA": advisory lock class of account status changes


@dataclass(frozen=True)
class AccountState:
    account_id: str
    status: AccountStatus
    since: int | None  # None: active since it was first seen, never suspended
    decision_id: str | None  # the decision that set the status, if one did
    updated_at: int | None


@dataclass(frozen=True)
class SuspensionEvent:
    id: int
    account_id: str
    from_status: AccountStatus
    to_status: AccountStatus
    decision_id: str | None
    objection_id: str | None
    actor: str
    reason: str
    at: int

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> SuspensionEvent:
        return cls(**row._asdict())


def read(conn: sa.Connection, account_id: str) -> AccountState:
    row = conn.execute(
        sa.select(account_status).where(account_status.c.account_id == account_id)
    ).first()
    if row is None:
        return AccountState(account_id, "active", None, None, None)
    return AccountState(account_id, row.status, row.since, row.decision_id, row.updated_at)


def change(
    conn: sa.Connection,
    account_id: str,
    to: AccountStatus,
    *,
    actor: str,
    reason: str,
    at: int,
    decision_id: str | None = None,
    objection_id: str | None = None,
) -> tuple[AccountState, bool]:
    """Set the account's status; the state after, and whether it changed."""
    if to not in get_args(AccountStatus):
        raise InvalidAccountStatus(f"account status {to!r} is neither active nor suspended")
    if not actor or not reason:
        raise InvalidAccountStatus("a status change needs an actor and a reason")
    lock(conn, account_id)
    before = read(conn, account_id)
    if before.status == to:
        return before, False
    values = {"status": to, "since": at, "decision_id": decision_id, "updated_at": at}
    if before.updated_at is None:
        conn.execute(account_status.insert().values(account_id=account_id, **values))
    else:
        conn.execute(
            account_status.update().where(account_status.c.account_id == account_id).values(values)
        )
    conn.execute(
        suspension_events.insert().values(
            account_id=account_id, from_status=before.status, to_status=to,
            decision_id=decision_id, objection_id=objection_id, actor=actor, reason=reason, at=at,
        )
    )  # fmt: skip
    audit.append(
        conn, actor=actor, action="account.status", subject_type="account",
        subject_id=account_id, account_id=account_id, at=at,
        details={"from": before.status, "to": to, "decision_id": decision_id,
                 "objection_id": objection_id, "reason": reason},
    )  # fmt: skip
    return AccountState(account_id, to, at, decision_id, at), True


def lock(conn: sa.Connection, account_id: str) -> None:
    """Serialize changes to one account until the transaction ends (PostgreSQL; SQLite's write
    lock already does). Lock order, everywhere: the decision chain, then accounts (sorted by
    id when several), then the audit trail."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock(_ACCOUNT_LOCK, sa.func.hashtext(account_id)))
        )


def history(conn: sa.Connection, account_id: str) -> list[SuspensionEvent]:
    rows = conn.execute(
        sa.select(suspension_events)
        .where(suspension_events.c.account_id == account_id)
        .order_by(suspension_events.c.id)
    )
    return [SuspensionEvent.from_row(row) for row in rows]
