"""Changes to volumes, snapshots, nodes, drives, pools and jobs are recorded
as events, in the transaction that makes them, for WatchService.Watch.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from osd.store.models import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("object_id", sa.String(32), nullable=False),
        sa.Column("action", sa.Integer(), nullable=False),
        sa.Column("time", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_events_generation", "events", ["generation"])
    op.create_index("ix_events_time", "events", ["time"])
    with op.batch_alter_table("osd_state") as batch:
        batch.add_column(
            sa.Column("events_pruned_through", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("osd_state") as batch:
        batch.drop_column("events_pruned_through")
    op.drop_index("ix_events_time", "events")
    op.drop_index("ix_events_generation", "events")
    op.drop_table("events")
