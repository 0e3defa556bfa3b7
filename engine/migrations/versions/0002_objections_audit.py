"""Right to object: objection cases and their events, the audit trail, policy versions, label
events, account closure and legal holds, tombstones on decisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types of engine/schema.py at this revision.
SerialKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Id = sa.String(128)
Hash = sa.String(64)
Ms = sa.BigInteger
STATUSES = (
    "received", "acknowledged", "under_review", "awaiting_customer", "decided", "notified",
    "closed", "withdrawn", "rejected",
)  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("purged_at", Ms, nullable=True))

    op.create_table(
        "objections",
        sa.Column("objection_id", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
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
        sa.PrimaryKeyConstraint("objection_id", name=op.f("pk_objections")),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decisions.decision_id"],
            name=op.f("fk_objections_decision_id_decisions"),
        ),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
            name=op.f("ck_objections_status"),
        ),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('upheld', 'overturned', 'modified')",
            name=op.f("ck_objections_outcome"),
        ),
    )
    op.create_index(op.f("ix_objections_status_deadline_at"), "objections",
                    ["status", "deadline_at"])  # fmt: skip
    op.create_index(op.f("ix_objections_decision_id"), "objections", ["decision_id"])
    op.create_index(op.f("ix_objections_account_id"), "objections", ["account_id"])

    op.create_table(
        "objection_events",
        sa.Column("id", SerialKey, autoincrement=True, nullable=False),
        sa.Column("objection_id", sa.String(64), nullable=False),
        sa.Column("at", Ms, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(24), nullable=True),
        sa.Column("to_status", sa.String(24), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("deadline_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objection_events")),
        sa.ForeignKeyConstraint(
            ["objection_id"],
            ["objections.objection_id"],
            name=op.f("fk_objection_events_objection_id_objections"),
        ),
    )
    op.create_index(op.f("ix_objection_events_objection_id_id"), "objection_events",
                    ["objection_id", "id"])  # fmt: skip

    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("at", Ms, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_type", sa.String(32), nullable=False),
        sa.Column("subject_id", Id, nullable=False),
        sa.Column("account_id", Id, nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("prev_hash", Hash, nullable=False),
        sa.Column("hash", Hash, nullable=False),
        sa.Column("purged_at", Ms, nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_events_prev_hash")),
    )
    op.create_index(op.f("ix_audit_events_account_id_seq"), "audit_events",
                    ["account_id", "seq"])  # fmt: skip
    op.create_index(op.f("ix_audit_events_subject_type_subject_id"), "audit_events",
                    ["subject_type", "subject_id"])  # fmt: skip

    op.create_table(
        "policy_versions",
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("first_seen_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_policy_versions")),
    )

    op.create_table(
        "label_events",
        sa.Column("id", SerialKey, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("objection_id", sa.String(64), nullable=True),
        sa.Column("event", sa.JSON, nullable=False),
        sa.Column("created_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_label_events_event_id")),
    )

    op.create_table(
        "account_lifecycle",
        sa.Column("account_id", Id, nullable=False),
        sa.Column("closed_at", Ms, nullable=True),
        sa.Column("legal_hold", sa.Boolean, nullable=False),
        sa.Column("hold_reason", sa.Text, nullable=True),
        sa.Column("purged_at", Ms, nullable=True),
        sa.Column("updated_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_lifecycle")),
    )


def downgrade() -> None:
    for table in ("account_lifecycle", "label_events", "policy_versions", "audit_events",
                  "objection_events", "objections"):  # fmt: skip
        op.drop_table(table)
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("purged_at")
