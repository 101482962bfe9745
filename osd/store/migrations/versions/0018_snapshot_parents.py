"""A snapshot records its parent in its chain.

Each snapshot's parent is the newest snapshot of the same volume taken
before it (the one its data was taken on top of), else the snapshot its
volume was cloned from.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("parent_snapshot_id", sa.String(32), nullable=True))
        batch.create_index("ix_snapshots_parent_snapshot_id", ["parent_snapshot_id"])
    op.execute(
        "UPDATE snapshots SET parent_snapshot_id = COALESCE("
        " (SELECT earlier.id FROM snapshots AS earlier"
        "  WHERE earlier.volume_id = snapshots.volume_id"
        "  AND (earlier.create_time < snapshots.create_time"
        "   OR (earlier.create_time = snapshots.create_time AND earlier.id < snapshots.id))"
        "  ORDER BY earlier.create_time DESC, earlier.id DESC LIMIT 1),"
        " (SELECT v.parent_snapshot_id FROM volumes AS v WHERE v.id = snapshots.volume_id))"
    )


def downgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_index("ix_snapshots_parent_snapshot_id")
        batch.drop_column("parent_snapshot_id")
