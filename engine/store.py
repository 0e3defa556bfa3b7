"""The decision store: append-only, hash-chained decision records, with the account status
changes and customer notifications that belong to them, on SQLAlchemy Core.

`append_decision` writes in one transaction the decision (linked to the chain head), the
account's suspension if the decision suspends it, and its notification in the outbox: all of
it is durable when the call returns, or none of it is stored. Appends are serialized, so the
chain never forks: on SQLite by the database write lock (`BEGIN IMMEDIATE`), on PostgreSQL by
a transaction-scoped advisory lock keyed on the decisions table. A payment already decided is
not decided twice: the first decision comes back (`replayed=True`) and nothing is written.

Contributions of allow decisions, computed after the fact, go to `decision_contributions`
bound to their decision's hash; the decision row is never updated. See docs/decisions.md.

Every method takes plain arguments; errors are those of `engine.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine import accounts, ledger, outbox
from engine import rows as rows_sql
from engine.accounts import AccountState, AccountStatus, SuspensionEvent
from engine.chain import (
    GENESIS,
    ChainBreak,
    Deferred,
    contributions_hash,
    first_break,
    to_json,
)
from engine.database import (
    connect,
    is_sqlite,
    migrate,
    reading,
    writing,
)
from engine.errors import (
    AccountNotSuspended,
    ContributionsConflict,
    DecisionNotFound,
    DecisionPurged,
    StoreError,
)
from engine.notices import reinstatement_notice
from engine.outbox import Notification
from engine.records import DecisionRecord, StoredDecision
from engine.schema import account_status, decisions, policy_versions
from engine.schema import decision_contributions as contrib

_ENGINE_ACTOR = "engine"


@dataclass(frozen=True)
class Append:
    """One decision to append, with what goes in its transaction."""

    record: DecisionRecord
    suspend: bool = False
    notification: Mapping[str, Any] | None = None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class DecisionStore:
    def __init__(self, url: str, *, busy_timeout_s: float = 10.0) -> None:
        """`url`: a SQLAlchemy URL, e.g. `sqlite:///var/arbiter.db` or
        `postgresql+psycopg://user@host/db`. Nothing is opened until first use."""
        self.url = url
        self._engine = connect(url, busy_timeout_s=busy_timeout_s)

    @property
    def backend(self) -> str:
        return self._engine.dialect.name

    @property
    def database(self) -> sa.Engine:
        """The SQLAlchemy engine, for the engine's other tables (objections, audit, privacy)."""
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def migrate(self) -> None:
        """Create or upgrade the schema (Alembic, to head); safe from several workers at once."""
        migrate(self._engine)

    # --- decisions --------------------------------------------------------------------------

    def append_decision(
        self, record: DecisionRecord, *, suspend: bool, notification: Mapping[str, Any] | None
    ) -> StoredDecision:
        """Store `record` at the head of the chain, with the account's suspension (`suspend`)
        and the customer `notification` (an outbox entry), in one transaction."""
        return self.append_many([Append(record, suspend, notification)])[0]

    def append_many(
        self, batch: Sequence[Append], *, recover: bool = False
    ) -> list[StoredDecision]:
        """Store a batch of decisions in chain order, in one transaction (one commit, one
        fsync: the group commit of `engine.group_commit`). A payment already decided, in the
        store or earlier in the batch, is not appended again: its first decision comes back,
        `replayed`. All or nothing: a failure stores none of the batch. With `recover` (a retry
        of a batch whose outcome is unknown), a decision whose id is stored already comes back
        as it was stored, not replayed."""
        out: list[StoredDecision | None] = [None] * len(batch)
        with writing(self._engine) as conn:
            ledger.lock_chain(conn)
            recovered: set[int] = set()
            if recover:
                ids = [a.record.decision_id for a in batch]
                for row in conn.execute(ledger.SELECT.where(decisions.c.decision_id.in_(ids))):
                    stored = ledger.stored(row)
                    i = ids.index(stored.record.decision_id)
                    out[i] = stored
                    recovered.add(i)
            # Checked under the lock, so two concurrent retries cannot both append: one query
            # for the whole batch (the decisions found are read whole: a retry, rare).
            payment_ids = sorted({a.record.payment_id for a in batch if a.record.payment_id})
            first: dict[str, StoredDecision] = {}
            known = rows_sql.decided(conn, payment_ids)
            if known:
                for row in conn.execute(ledger.SELECT.where(decisions.c.payment_id.in_(known))):
                    stored = ledger.stored(row)
                    first[str(stored.record.payment_id)] = stored
            head = rows_sql.head(conn)
            seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS)
            rows: list[tuple[Any, ...]] = []
            for i, item in enumerate(batch):
                record = item.record
                if i in recovered:
                    continue
                if record.payment_id is not None and record.payment_id in first:
                    out[i] = replace(first[record.payment_id], replayed=True)
                    continue
                params, digest = rows_sql.decision_row(record, seq, prev_hash)
                rows.append(params)
                stored = StoredDecision(record, seq, prev_hash, digest)
                out[i] = stored
                if record.payment_id is not None:
                    first[record.payment_id] = stored
                seq, prev_hash = seq + 1, digest
            if rows:
                rows_sql.insert(conn, rows)
            # Every account this batch suspends, locked in one order before any change (each
            # change then takes the audit lock: engine.accounts.lock says the order).
            for account_id in sorted({item.record.account_id for item in batch if item.suspend}):
                accounts.lock(conn, account_id)
            for i, (item, done) in enumerate(zip(batch, out, strict=True)):
                assert done is not None
                if done.replayed or i in recovered:
                    continue
                record = item.record
                changed = True
                if item.suspend:
                    why = ", ".join(reason.code for reason in record.reasons) or record.action
                    _, changed = accounts.change(
                        conn, record.account_id, "suspended", actor=_ENGINE_ACTOR, reason=why,
                        at=record.created_at, decision_id=record.decision_id,
                    )  # fmt: skip
                # An account decision that found the account suspended already (decided at
                # once elsewhere) is recorded, and its customer is not told twice.
                repeat = not changed and record.subject_type == "account"
                if (
                    item.notification is not None
                    and not repeat
                    and not outbox.told_already(conn, record)
                ):
                    outbox.enqueue(
                        conn, account_id=record.account_id, decision_id=record.decision_id,
                        payload=item.notification, at=record.created_at,
                    )  # fmt: skip
        return [s for s in out if s is not None]

    def get_decision(self, decision_id: str) -> StoredDecision:
        """The stored decision; `DecisionPurged` for a retention tombstone."""
        with reading(self._engine) as conn:
            found = self._one(conn, decisions.c.decision_id == decision_id)
        if found is None:
            raise DecisionNotFound(f"no decision {decision_id}", decision_id=decision_id)
        if found.purged:
            raise DecisionPurged(
                f"decision {decision_id} was purged under the retention policy: only its place "
                "in the hash chain is kept"
            )
        return found

    def get_by_payment(self, payment_id: str) -> StoredDecision | None:
        """The decision on `payment_id`, or None when the payment was never decided."""
        with reading(self._engine) as conn:
            return self._one(conn, decisions.c.payment_id == payment_id)

    def decisions_since(self, since_ms: int) -> Iterator[StoredDecision]:
        """Decisions made at or after `since_ms`, in chain order, streamed (for backtests)."""
        query = (
            ledger.SELECT.where(decisions.c.created_at >= since_ms, decisions.c.purged_at.is_(None))
            .order_by(decisions.c.seq)
        )  # fmt: skip
        with reading(self._engine) as conn:
            rows = conn.execution_options(yield_per=1000).execute(query)
            try:  # a server-side cursor on PostgreSQL: close it even if the caller stops early
                yield from (ledger.stored(row) for row in rows)
            finally:
                rows.close()

    def decisions_of_account(self, account_id: str, limit: int = 100_000) -> list[StoredDecision]:
        """The account's decisions, oldest first (a data-subject export)."""
        query = (
            ledger.SELECT.where(
                decisions.c.account_id == account_id, decisions.c.purged_at.is_(None)
            )
            .order_by(decisions.c.seq)
            .limit(limit)
        )  # fmt: skip
        with reading(self._engine) as conn:
            return [ledger.stored(row) for row in conn.execute(query)]

    def store_contributions(
        self,
        decision_id: str,
        contributions: Mapping[str, float],
        base_value: float,
        *,
        computed_at: int | None = None,
    ) -> Deferred:
        """Keep the contributions computed after an allow decision, bound to its hash.

        Storing the same values again (a retried worker) returns what is stored; different
        values, or a decision that carries its own, raise `ContributionsConflict`."""
        body = to_json(contributions, f"decision {decision_id}: contributions")
        base = to_json(base_value, f"decision {decision_id}: base_value")
        if not isinstance(body, dict) or not isinstance(base, float | int):
            raise ContributionsConflict(f"decision {decision_id}: contributions must be numbers")
        at = now_ms() if computed_at is None else computed_at
        with writing(self._engine) as conn:
            row = conn.execute(
                sa.select(decisions.c.hash, decisions.c.contributions).where(
                    decisions.c.decision_id == decision_id
                )
            ).first()
            if row is None:
                raise DecisionNotFound(f"no decision {decision_id}", decision_id=decision_id)
            if row.contributions is not None:
                raise ContributionsConflict(
                    f"decision {decision_id} carries its contributions in its record"
                )
            digest = contributions_hash(decision_id, row.hash, body, float(base), at)
            insert = (postgresql.insert if self.backend == "postgresql" else sqlite.insert)(contrib)
            conn.execute(
                insert.values(decision_id=decision_id, contributions=body, base_value=float(base),
                              computed_at=at, hash=digest).on_conflict_do_nothing()
            )  # fmt: skip
            kept = conn.execute(
                sa.select(contrib).where(contrib.c.decision_id == decision_id)
            ).one()
        if kept.contributions != body or kept.base_value != float(base):
            raise ContributionsConflict(f"decision {decision_id} has other contributions stored")
        return Deferred(kept.contributions, kept.base_value, kept.computed_at, kept.hash)

    # --- the chain --------------------------------------------------------------------------

    def chain_head(self) -> tuple[int, str] | None:
        """The (seq, hash) of the newest record, or None when there is none."""
        with reading(self._engine) as conn:
            row = conn.execute(
                sa.select(decisions.c.seq, decisions.c.hash)
                .order_by(decisions.c.seq.desc())
                .limit(1)
            ).first()
        return (row.seq, row.hash) if row else None

    def verify_chain(self, *, through_seq: int | None = None) -> ChainBreak | None:
        """Recompute the chain from the first record (up to `through_seq`); the first record
        that breaks it, or None when it is intact."""
        query = ledger.VERIFY.order_by(decisions.c.seq)
        if through_seq is not None:
            query = query.where(decisions.c.seq <= through_seq)
        with reading(self._engine) as conn:
            rows: sa.CursorResult[Any] = conn.execution_options(yield_per=1000).execute(query)
            try:
                decode = is_sqlite(self._engine)
                broken = first_break(ledger.readable_link(row, decode=decode) for row in rows)
            except ledger.Unreadable as exc:  # the records before it held
                broken = exc.broken
            finally:
                rows.close()
            return broken or ledger.unlisted_tombstone(conn, through_seq)

    # --- policy versions ----------------------------------------------------------------------

    def remember_policy(self, version: str, document: Mapping[str, Any]) -> None:
        """Keep a policy version's validated content (once): rationales state the thresholds
        that applied when a decision was made, whatever the policy is today."""
        with writing(self._engine) as conn:
            known = conn.execute(
                sa.select(policy_versions.c.version).where(policy_versions.c.version == version)
            ).first()
            if known is None:
                conn.execute(policy_versions.insert().values(
                    version=version, document=to_json(dict(document), "policy"),
                    first_seen_at=now_ms(),
                ))  # fmt: skip

    def policy_document(self, version: str) -> dict[str, Any] | None:
        with reading(self._engine) as conn:
            row = conn.execute(
                sa.select(policy_versions.c.document).where(policy_versions.c.version == version)
            ).first()
        return dict(row.document) if row else None

    # --- accounts ---------------------------------------------------------------------------

    def account_status(self, account_id: str) -> AccountState:
        """The account's status; an account never suspended is active (`since` None)."""
        with reading(self._engine) as conn:
            return accounts.read(conn, account_id)

    def set_account_status(
        self,
        account_id: str,
        status: AccountStatus,
        *,
        actor: str,
        reason: str,
        decision_id: str | None = None,
        objection_id: str | None = None,
        notification: Mapping[str, Any] | None = None,
        at: int | None = None,
    ) -> AccountState:
        """Change the status (a reinstatement, an objection's outcome, a manual suspension),
        recorded with who and why, with its notification, in one transaction."""
        when = now_ms() if at is None else at
        with writing(self._engine) as conn:
            state, changed = accounts.change(
                conn, account_id, status, actor=actor, reason=reason, at=when,
                decision_id=decision_id, objection_id=objection_id,
            )  # fmt: skip
            if changed and notification is not None:
                outbox.enqueue(conn, account_id=account_id, decision_id=decision_id,
                               payload=notification, at=when)  # fmt: skip
        return state

    def reinstate(self, account_id: str, *, actor: str, reason: str) -> AccountState:
        """Lift the account's suspension by a person's authority (`actor`, with `reason`),
        outside an objection: the status change (recorded with the decision that suspended
        it), its audit entry and the customer's notice, in one transaction.
        `AccountNotSuspended` when there is nothing to lift."""
        when = now_ms()
        with writing(self._engine) as conn:
            accounts.lock(conn, account_id)
            before = accounts.read(conn, account_id)
            if before.status != "suspended":
                raise AccountNotSuspended(f"account {account_id} is not suspended")
            state, _ = accounts.change(
                conn, account_id, "active", actor=actor, reason=reason, at=when,
                decision_id=before.decision_id,
            )  # fmt: skip
            outbox.enqueue(
                conn, account_id=account_id, decision_id=before.decision_id, at=when,
                payload=reinstatement_notice(account_id, before.decision_id, when),
            )  # fmt: skip
        return state

    def suspended_accounts(self) -> dict[str, str | None]:
        """Every suspended account and the decision that suspended it (for the Redis flags)."""
        query = sa.select(account_status.c.account_id, account_status.c.decision_id).where(
            account_status.c.status == "suspended"
        )
        with reading(self._engine) as conn:
            return {row.account_id: row.decision_id for row in conn.execute(query)}

    def suspension_events(self, account_id: str) -> list[SuspensionEvent]:
        """Every status change of the account, oldest first."""
        with reading(self._engine) as conn:
            return accounts.history(conn, account_id)

    # --- outbox -----------------------------------------------------------------------------

    def pending_notifications(
        self, now_ms: int, limit: int = 100, *, lease_ms: int = 30_000
    ) -> list[Notification]:
        """Due notifications, oldest first, each leased to the caller for `lease_ms` (0: just
        look): other workers do not get them until the lease ends or they are marked."""
        with writing(self._engine) as conn:
            return outbox.claim(conn, now=now_ms, limit=limit, lease_ms=lease_ms)

    def mark_delivered(self, notification_id: int, *, at: int | None = None) -> None:
        with writing(self._engine) as conn:
            outbox.mark_delivered(conn, notification_id, at=now_ms() if at is None else at)

    def mark_failed(
        self, notification_id: int, error: str, next_attempt_at: int, dead: bool
    ) -> None:
        """Record a failed attempt: retried from `next_attempt_at`, or given up if `dead`."""
        with writing(self._engine) as conn:
            outbox.mark_failed(
                conn, notification_id, error=error, next_attempt_at=next_attempt_at, dead=dead
            )

    def notifications_for(self, decision_id: str) -> list[Notification]:
        with reading(self._engine) as conn:
            return outbox.for_decision(conn, decision_id)

    def notification_counts(self) -> dict[outbox.OutboxStatus, int]:
        """How many outbox entries are pending, delivered and dead."""
        with reading(self._engine) as conn:
            return outbox.counts(conn)

    def requeue_dead_notifications(
        self, ids: Sequence[int] | None = None, *, at: int | None = None
    ) -> list[int]:
        """Dead entries (`ids`, or all) due again now with their retries afresh; the ids
        requeued (an id that is not dead is left alone)."""
        with writing(self._engine) as conn:
            return outbox.requeue_dead(conn, ids, now=now_ms() if at is None else at)

    def dead_notifications(self, limit: int = 100) -> list[Notification]:
        """Entries given up after their last attempt (kept for ops), newest first."""
        with reading(self._engine) as conn:
            return outbox.with_status(conn, "dead", limit=limit)

    # --- health -----------------------------------------------------------------------------

    def schema_problem(self) -> str | None:
        """Why the schema does not fit this code (not migrated, or to another revision)."""
        with reading(self._engine) as conn:
            return ledger.schema_problem(conn)

    def writable_problem(self) -> str | None:
        """Why the store cannot take a decision now (for /readyz), or None when it can."""
        try:
            with writing(self._engine) as conn:
                if not is_sqlite(self._engine) and conn.scalar(
                    sa.text("SELECT current_setting('transaction_read_only')")
                ) == "on":  # fmt: skip
                    return "the database is read-only"
                return ledger.schema_problem(conn)
        except StoreError as exc:
            return exc.message

    def is_writable(self) -> bool:
        return self.writable_problem() is None

    # --- rows -------------------------------------------------------------------------------

    @staticmethod
    def _one(conn: sa.Connection, where: sa.ColumnElement[bool]) -> StoredDecision | None:
        row = conn.execute(ledger.SELECT.where(where)).first()
        return ledger.stored(row) if row else None
