"""Allocations are indexed by state: start-up recovery and placement look up
the few that are not ACTIVE, and read every allocation without it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_allocations_state", "allocations", ["state"])


def downgrade() -> None:
    op.drop_index("ix_allocations_state", table_name="allocations")
