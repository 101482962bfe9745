"""A FILE volume records its filesystem, and an attachment where it is
mounted and with which options.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("filesystem", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("attachments") as batch:
        batch.add_column(
            sa.Column("mount_path", sa.String(4096), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("mount_options", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("attachments") as batch:
        batch.drop_column("mount_options")
        batch.drop_column("mount_path")
    with op.batch_alter_table("volumes") as batch:
        batch.drop_column("filesystem")
