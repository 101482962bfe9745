"""Initial schema: the store state, clusters and nodes.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from osd.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    state = op.create_table(
        "osd_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "generation": 0}])
    op.create_table(
        "clusters",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("block", sa.Boolean, nullable=False),
        sa.Column("file", sa.Boolean, nullable=False),
        sa.Column("create_time", UTCDateTime, nullable=False),
        sa.Column("update_time", UTCDateTime, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("name", name="uq_clusters_name"),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "cluster_id",
            sa.String(32),
            sa.ForeignKey("clusters.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("zone", sa.String(200), nullable=False),
        sa.Column("management_address", sa.String(255), nullable=False),
        sa.Column("storage_address", sa.String(255), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("create_time", UTCDateTime, nullable=False),
        sa.Column("update_time", UTCDateTime, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("cluster_id", "name", name="uq_nodes_cluster_name"),
    )
    op.create_index("ix_nodes_cluster_id", "nodes", ["cluster_id"])


def downgrade() -> None:
    op.drop_index("ix_nodes_cluster_id", table_name="nodes")
    op.drop_table("nodes")
    op.drop_table("clusters")
    op.drop_table("osd_state")
