"""The decision store's tables (SQLAlchemy Core). Alembic migrations create them; a test checks
that `engine/migrations` and this metadata describe the same schema.

JSON columns are `JSON`, not `JSONB`: PostgreSQL's `json` keeps the text as written (the
canonical JSON of `engine.chain`), while `jsonb` would rewrite numbers (1e300 comes back as an
integer) and break the hashes. Times are integers, ms since the epoch, UTC.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# An auto-incrementing 64-bit key (SQLite only auto-increments an INTEGER PRIMARY KEY).
SerialKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ms = sa.BigInteger
Id = sa.String(128)
Hash = sa.String(64)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("subject_type", sa.String(16), nullable=False),
    sa.Column("subject_id", Id, nullable=False),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("payment_id", Id, nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("score", sa.Double, nullable=True),
    sa.Column("raw_margin", sa.Double, nullable=True),
    sa.Column("model_name", sa.String(256), nullable=True),
    sa.Column("model_version", sa.String(64), nullable=True),
    sa.Column("model_run_id", sa.String(64), nullable=True),
    sa.Column("feature_spec_version", sa.String(64), nullable=False),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("segment", sa.String(128), nullable=True),
    sa.Column("rules_fired", sa.JSON, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("contributions", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("base_value", sa.Double, nullable=True),
    sa.Column("degraded", sa.Boolean, nullable=False),
    sa.Column("shadow", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("timings", sa.JSON, nullable=False),
    sa.Column("prev_hash", Hash, nullable=False),
    sa.Column("hash", Hash, nullable=False),
    # Retention's tombstone: the personal content removed, seq and hashes kept (docs/objections.md)
    sa.Column("purged_at", Ms, nullable=True),
    # The chain order has no gaps and no forks: one record per seq and per prev_hash.
    sa.UniqueConstraint("seq"),
    sa.UniqueConstraint("prev_hash"),
    # The idempotency key; NULLs (account decisions) do not collide.
    sa.UniqueConstraint("payment_id"),
    sa.CheckConstraint("subject_type IN ('payment', 'account')", name="subject_type"),
    sa.CheckConstraint(
        "action IN ('allow', 'review', 'decline', 'suspend_account')", name="action"
    ),
    sa.Index(None, "account_id", "created_at"),
    sa.Index(None, "created_at"),
)

decision_contributions = sa.Table(
    "decision_contributions",
    metadata,
    sa.Column(
        "decision_id", sa.String(64), sa.ForeignKey("decisions.decision_id"), primary_key=True
    ),
    sa.Column("contributions", sa.JSON, nullable=False),
    sa.Column("base_value", sa.Double, nullable=False),
    sa.Column("computed_at", Ms, nullable=False),
    sa.Column("hash", Hash, nullable=False),
)

account_status = sa.Table(
    "account_status",
    metadata,
    sa.Column("account_id", Id, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("since", Ms, nullable=False),
    sa.Column("decision_id", sa.String(64), nullable=True),
    sa.Column("updated_at", Ms, nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name="status"),
)

suspension_events = sa.Table(
    "suspension_events",
    metadata,
    sa.Column("id", SerialKey, primary_key=True, autoincrement=True),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("from_status", sa.String(16), nullable=False),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("decision_id", sa.String(64), nullable=True),
    sa.Column("objection_id", sa.String(64), nullable=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", Ms, nullable=False),
    sa.Index(None, "account_id", "at"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", SerialKey, primary_key=True, autoincrement=True),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("decision_id", sa.String(64), nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", Ms, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", Ms, nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
    # The delivery worker's query: due entries, oldest first.
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "decision_id"),
)

# --- right to object (docs/objections.md) ------------------------------------------------------

OBJECTION_STATUSES = (
    "received", "acknowledged", "under_review", "awaiting_customer", "decided", "notified",
    "closed", "withdrawn", "rejected",
)  # fmt: skip

objections = sa.Table(
    "objections",
    metadata,
    sa.Column("objection_id", sa.String(64), primary_key=True),
    sa.Column("decision_id", sa.String(64), sa.ForeignKey("decisions.decision_id"), nullable=False),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("jurisdiction", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("statement", sa.Text, nullable=False),
    sa.Column("opened_by", sa.String(128), nullable=False),
    sa.Column("received_at", Ms, nullable=False),
    sa.Column("ack_due_at", Ms, nullable=False),
    sa.Column("acknowledged_at", Ms, nullable=True),
    sa.Column("deadline_at", Ms, nullable=False),
    sa.Column("extended_at", Ms, nullable=True),
    sa.Column("extension_reason", sa.Text, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("new_action", sa.String(32), nullable=True),
    sa.Column("review_rationale", sa.Text, nullable=True),
    sa.Column("departed_from_model", sa.Boolean, nullable=True),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("decided_at", Ms, nullable=True),
    sa.Column("closed_at", Ms, nullable=True),
    sa.Column("updated_at", Ms, nullable=False),
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in OBJECTION_STATUSES) + ")", name="status"
    ),
    sa.CheckConstraint(
        "outcome IS NULL OR outcome IN ('upheld', 'overturned', 'modified')", name="outcome"
    ),
    # The queue: open cases by deadline.
    sa.Index(None, "status", "deadline_at"),
    sa.Index(None, "decision_id"),
    sa.Index(None, "account_id"),
)

objection_events = sa.Table(
    "objection_events",
    metadata,
    sa.Column("id", SerialKey, primary_key=True, autoincrement=True),
    sa.Column(
        "objection_id", sa.String(64), sa.ForeignKey("objections.objection_id"), nullable=False
    ),
    sa.Column("at", Ms, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("from_status", sa.String(24), nullable=True),
    sa.Column("to_status", sa.String(24), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("deadline_at", Ms, nullable=False),
    sa.Index(None, "objection_id", "id"),
)

# The audit trail: who read or changed what, append-only and hash-chained like the decisions.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", Ms, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject_type", sa.String(32), nullable=False),
    sa.Column("subject_id", Id, nullable=False),
    sa.Column("account_id", Id, nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", Hash, nullable=False),
    sa.Column("hash", Hash, nullable=False),
    sa.Column("purged_at", Ms, nullable=True),  # a tombstone: content removed, link kept
    sa.UniqueConstraint("prev_hash"),
    sa.Index(None, "account_id", "seq"),
    sa.Index(None, "subject_type", "subject_id"),
)

# Every policy version that decided something, as validated: a rationale written years later
# states the thresholds that applied, not today's.
policy_versions = sa.Table(
    "policy_versions",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("first_seen_at", Ms, nullable=False),
)

# Label events for retraining (an overturned objection: not fraud), exported as JSONL.
label_events = sa.Table(
    "label_events",
    metadata,
    sa.Column("id", SerialKey, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("objection_id", sa.String(64), nullable=True),
    sa.Column("event", sa.JSON, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.UniqueConstraint("event_id"),
)

# Closure (from `account_closed` events) and legal holds: what retention needs to know.
account_lifecycle = sa.Table(
    "account_lifecycle",
    metadata,
    sa.Column("account_id", Id, primary_key=True),
    sa.Column("closed_at", Ms, nullable=True),
    sa.Column("legal_hold", sa.Boolean, nullable=False),
    sa.Column("hold_reason", sa.Text, nullable=True),
    sa.Column("purged_at", Ms, nullable=True),
    sa.Column("updated_at", Ms, nullable=False),
    # The latest activity that reopened it after a closure (migration 0004): an older closure
    # sent again (a retried batch) does not close it again.
    sa.Column("reopened_at", Ms, nullable=True),
)

# API keys (engine/keys.py): only a hash of each secret is kept.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("secret_hash", Hash, nullable=False),
    sa.Column("created_at", Ms, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("revoked_at", Ms, nullable=True),
    sa.Index(None, "name"),
)
