"""Decisions (hash-chained), deferred contributions, account status, suspension events, outbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types of engine/schema.py at this revision (a migration never imports
# the live schema: it must create the same tables in five years).
SerialKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Id = sa.String(128)
Hash = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
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
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("seq", name=op.f("uq_decisions_seq")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_decisions_prev_hash")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_decisions_payment_id")),
        sa.CheckConstraint(
            "subject_type IN ('payment', 'account')", name=op.f("ck_decisions_subject_type")
        ),
        sa.CheckConstraint(
            "action IN ('allow', 'review', 'decline', 'suspend_account')",
            name=op.f("ck_decisions_action"),
        ),
    )
    op.create_index(
        op.f("ix_decisions_account_id_created_at"), "decisions", ["account_id", "created_at"]
    )
    op.create_index(op.f("ix_decisions_created_at"), "decisions", ["created_at"])

    op.create_table(
        "decision_contributions",
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("contributions", sa.JSON, nullable=False),
        sa.Column("base_value", sa.Double, nullable=False),
        sa.Column("computed_at", sa.BigInteger, nullable=False),
        sa.Column("hash", Hash, nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_decision_contributions")),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decisions.decision_id"],
            name=op.f("fk_decision_contributions_decision_id_decisions"),
        ),
    )

    op.create_table(
        "account_status",
        sa.Column("account_id", Id, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_status")),
        sa.CheckConstraint(
            "status IN ('active', 'suspended')", name=op.f("ck_account_status_status")
        ),
    )

    op.create_table(
        "suspension_events",
        sa.Column("id", SerialKey, autoincrement=True, nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("from_status", sa.String(16), nullable=False),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=True),
        sa.Column("objection_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suspension_events")),
    )
    op.create_index(
        op.f("ix_suspension_events_account_id_at"), "suspension_events", ["account_id", "at"]
    )

    op.create_table(
        "outbox",
        sa.Column("id", SerialKey, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name=op.f("ck_outbox_status")
        ),
    )
    op.create_index(
        op.f("ix_outbox_status_next_attempt_at"), "outbox", ["status", "next_attempt_at"]
    )
    op.create_index(op.f("ix_outbox_decision_id"), "outbox", ["decision_id"])


def downgrade() -> None:
    for table in ("outbox", "suspension_events", "account_status", "decision_contributions"):
        op.drop_table(table)
    op.drop_table("decisions")
