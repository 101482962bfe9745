"""Self-healing: each cluster's repair policy, and since when a volume has
lacked a live copy.

The policy columns are NULL where the cluster keeps the daemon's setting.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from osd.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(
            sa.Column("repair_paused", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("repair_delay_seconds", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("repair_maintenance_timeout_seconds", sa.BigInteger(), nullable=True)
        )
        batch.add_column(sa.Column("repair_max", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("repair_max_per_drive", sa.Integer(), nullable=True))
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("degraded_time", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.drop_column("degraded_time")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("repair_max_per_drive")
        batch.drop_column("repair_max")
        batch.drop_column("repair_maintenance_timeout_seconds")
        batch.drop_column("repair_delay_seconds")
        batch.drop_column("repair_paused")
