"""Account lifecycle: when activity after a closure reopened the account, so that the closure
sent again (a retried event batch) does not close it a second time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("account_lifecycle", sa.Column("reopened_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("account_lifecycle") as batch:
        batch.drop_column("reopened_at")
