"""Ownership: each volume's and snapshot's owner, a volume's public flag, and
its access list.

Volumes and snapshots made before this revision have no owner (""), which
only callers with role admin may act on once authentication is on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(
            sa.Column("owner", sa.String(length=200), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_volumes_owner", ["owner"])
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(
            sa.Column("owner", sa.String(length=200), nullable=False, server_default="")
        )
        batch.create_index("ix_snapshots_owner", ["owner"])
    op.create_table(
        "volume_grants",
        sa.Column(
            "volume_id",
            sa.String(length=32),
            sa.ForeignKey("volumes.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("grantee_kind", sa.String(length=8), primary_key=True),
        sa.Column("grantee", sa.String(length=200), primary_key=True),
        sa.Column("access", sa.Integer(), nullable=False),
    )
    op.create_index("ix_volume_grants_grantee", "volume_grants", ["grantee_kind", "grantee"])


def downgrade() -> None:
    op.drop_index("ix_volume_grants_grantee", table_name="volume_grants")
    op.drop_table("volume_grants")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_index("ix_snapshots_owner")
        batch.drop_column("owner")
    with op.batch_alter_table("volumes") as batch:
        batch.drop_index("ix_volumes_owner")
        batch.drop_column("public")
        batch.drop_column("owner")
