"""Snapshots indexed by state: every heartbeat asks for the few snapshots a
crash left CREATING or DELETING, which without the index read every
snapshot of the store.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_snapshots_state", "snapshots", ["state"])


def downgrade() -> None:
    op.drop_index("ix_snapshots_state", "snapshots")
