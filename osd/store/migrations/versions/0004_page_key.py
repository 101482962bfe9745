"""The key that signs page tokens, one per store, so that a token this store
issued is accepted by every daemon on it and a forged or edited one by none.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("osd_state") as batch:
        batch.add_column(sa.Column("page_key", sa.String(length=64), nullable=True))
    state = sa.table("osd_state", sa.column("id", sa.Integer()), sa.column("page_key", sa.String()))
    op.execute(state.update().where(state.c.id == 1).values(page_key=secrets.token_hex(32)))


def downgrade() -> None:
    with op.batch_alter_table("osd_state") as batch:
        batch.drop_column("page_key")
