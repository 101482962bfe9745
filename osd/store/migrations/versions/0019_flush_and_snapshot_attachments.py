"""Snapshots attached read-only to nodes, and the attachments a node's flush
moved off it (which ReadyNode takes back).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from osd.store.models import UTCDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshot_attachments",
        sa.Column(
            "snapshot_id",
            sa.String(32),
            sa.ForeignKey("snapshots.id", ondelete="RESTRICT"),
            primary_key=True,
        ),
        sa.Column(
            "node_id",
            sa.String(32),
            sa.ForeignKey("nodes.id", ondelete="RESTRICT"),
            primary_key=True,
        ),
        sa.Column("device_path", sa.String(255), nullable=False),
        sa.Column("attach_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_snapshot_attachments_node_id", "snapshot_attachments", ["node_id"])
    op.create_table(
        "flush_moves",
        sa.Column("volume_id", sa.String(32), primary_key=True),
        sa.Column("node_id", sa.String(32), primary_key=True),
        sa.Column("target_node_id", sa.String(32), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("move_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_flush_moves_node_id", "flush_moves", ["node_id"])
    op.create_index("ix_flush_moves_target_node_id", "flush_moves", ["target_node_id"])


def downgrade() -> None:
    op.drop_index("ix_flush_moves_target_node_id", "flush_moves")
    op.drop_index("ix_flush_moves_node_id", "flush_moves")
    op.drop_table("flush_moves")
    op.drop_index("ix_snapshot_attachments_node_id", "snapshot_attachments")
    op.drop_table("snapshot_attachments")
