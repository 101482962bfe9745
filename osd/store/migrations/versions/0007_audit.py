"""The audit trail: one row per recorded call, and the object ids it named.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from osd.store.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("issuer", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=200), nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
    )
    op.create_index("ix_audit_records_time", "audit_records", ["time"])
    op.create_index("ix_audit_records_subject", "audit_records", ["subject"])
    op.create_index("ix_audit_records_method", "audit_records", ["method"])
    op.create_table(
        "audit_targets",
        sa.Column(
            "record_id",
            sa.String(length=32),
            sa.ForeignKey("audit_records.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("target_id", sa.String(length=32), primary_key=True),
    )
    op.create_index("ix_audit_targets_target_id", "audit_targets", ["target_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_targets_target_id", table_name="audit_targets")
    op.drop_table("audit_targets")
    op.drop_index("ix_audit_records_method", table_name="audit_records")
    op.drop_index("ix_audit_records_subject", table_name="audit_records")
    op.drop_index("ix_audit_records_time", table_name="audit_records")
    op.drop_table("audit_records")
