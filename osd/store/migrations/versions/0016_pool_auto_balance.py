"""Pools may rebalance by themselves once their drives drift apart.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(
            sa.Column("auto_balance", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column(
                "auto_balance_threshold_percent",
                sa.Float(),
                nullable=False,
                server_default="10",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("auto_balance_threshold_percent")
        batch.drop_column("auto_balance")
