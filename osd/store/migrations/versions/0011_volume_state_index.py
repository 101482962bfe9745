"""Volumes are indexed by cluster, state and name: a list filtered by state
seeks the volumes in that state, in page order, instead of reading every
volume of the cluster to find them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_volumes_cluster_state_name", "volumes", ["cluster_id", "state", "name"])


def downgrade() -> None:
    op.drop_index("ix_volumes_cluster_state_name", table_name="volumes")
