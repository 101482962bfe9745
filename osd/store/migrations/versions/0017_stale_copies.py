"""A copy that was away while its volume could be written is stale.

Such a copy stays UNAVAILABLE when its node or drive comes back, until the
repair controller resyncs it. Copies already UNAVAILABLE are marked by the
rule the engine applied before: stale when their volume can be read without
them.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# AllocationState and DurabilityType values, as stored.
ACTIVE, UNAVAILABLE, RELEASING = 2, 3, 4
ERASURE = 3


def upgrade() -> None:
    with op.batch_alter_table("allocations") as batch:
        batch.add_column(
            sa.Column("stale", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        sa.text(
            "UPDATE allocations SET stale = :yes "
            "WHERE state = :unavailable AND volume_id IS NOT NULL AND ("
            " SELECT count(*) FROM allocations AS live"
            " WHERE live.volume_id = allocations.volume_id"
            " AND live.state IN (:active, :releasing)"
            ") >= ("
            " SELECT CASE WHEN v.durability_type = :erasure"
            " THEN COALESCE(NULLIF(v.data_fragments, 0), 4) ELSE 1 END"
            " FROM volumes AS v WHERE v.id = allocations.volume_id"
            ")"
        ).bindparams(
            yes=True,
            unavailable=UNAVAILABLE,
            active=ACTIVE,
            releasing=RELEASING,
            erasure=ERASURE,
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("allocations") as batch:
        batch.drop_column("stale")
