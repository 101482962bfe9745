"""Daemons that share the store register and beat; a change in phases
records the daemon that runs it, so that another takes it over only once
that daemon is gone. A daemon may be a node's agent: driver work for the
node is queued for it (node_work), and the node goes OFFLINE while it has
none (nodes.agent_offline).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from osd.store.models import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("op_owner", sa.String(120), nullable=True))
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("op_owner", sa.String(120), nullable=True))
    op.create_table(
        "daemons",
        sa.Column("id", sa.String(120), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(32), nullable=True),
        sa.Column("start_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("stop_time", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_daemons_heartbeat_time", "daemons", ["heartbeat_time"])
    op.create_index("ix_daemons_node_id", "daemons", ["node_id"])
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("agent_offline", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "node_work",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("node_id", sa.String(32), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(120), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_node_work_node_state", "node_work", ["node_id", "state", "seq"])


def downgrade() -> None:
    op.drop_index("ix_node_work_node_state", "node_work")
    op.drop_table("node_work")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("agent_offline")
    op.drop_index("ix_daemons_node_id", "daemons")
    op.drop_index("ix_daemons_heartbeat_time", "daemons")
    op.drop_table("daemons")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("op_owner")
    with op.batch_alter_table("volumes") as batch:
        batch.drop_column("op_owner")
