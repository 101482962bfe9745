"""How many volumes of each cluster have each layout, kept by triggers, so
that GetCapacitySummary and GetClusterStatus read a few rows instead of
grouping every volume; and allocations indexed by (volume, node), for the
volume list filtered by node.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

COLUMNS = (
    "cluster_id",
    "size_bytes",
    "durability_type",
    "replicas",
    "data_fragments",
    "redundancy_fragments",
    "snapshot_factor",
)
KEY = ", ".join(COLUMNS)
TRIGGERS = ("volume_layouts_insert", "volume_layouts_delete", "volume_layouts_update")


def _values(row: str) -> str:
    return ", ".join(f"{row}.{c}" for c in COLUMNS)


def _matches(row: str) -> str:
    return " AND ".join(f"{c} = {row}.{c}" for c in COLUMNS)


def _count(row: str) -> str:
    """Counts the volume ``row`` (NEW) in."""
    return (
        f"INSERT INTO volume_layout_counts ({KEY}, count) VALUES ({_values(row)}, 1) "
        f"ON CONFLICT ({KEY}) DO UPDATE SET count = volume_layout_counts.count + 1"
    )


def _uncount(row: str) -> list[str]:
    """Counts the volume ``row`` (OLD) out; a layout left with none goes."""
    return [
        f"UPDATE volume_layout_counts SET count = count - 1 WHERE {_matches(row)}",
        f"DELETE FROM volume_layout_counts WHERE {_matches(row)} AND count <= 0",
    ]


def upgrade() -> None:
    op.create_index("ix_allocations_volume_node", "allocations", ["volume_id", "node_id"])
    op.create_table(
        "volume_layout_counts",
        sa.Column("cluster_id", sa.String(32), primary_key=True),
        sa.Column("size_bytes", sa.BigInteger(), primary_key=True),
        sa.Column("durability_type", sa.Integer(), primary_key=True),
        sa.Column("replicas", sa.Integer(), primary_key=True),
        sa.Column("data_fragments", sa.Integer(), primary_key=True),
        sa.Column("redundancy_fragments", sa.Integer(), primary_key=True),
        sa.Column("snapshot_factor", sa.Float(), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in COLUMNS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION volume_layouts_count() RETURNS trigger AS $$
            BEGIN
                IF TG_OP IN ('DELETE', 'UPDATE') THEN
                    {"; ".join(_uncount("OLD"))};
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    {_count("NEW")};
                END IF;
                RETURN NULL;
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER volume_layouts_insert AFTER INSERT ON volumes "
            "FOR EACH ROW EXECUTE FUNCTION volume_layouts_count()"
        )
        op.execute(
            "CREATE TRIGGER volume_layouts_delete AFTER DELETE ON volumes "
            "FOR EACH ROW EXECUTE FUNCTION volume_layouts_count()"
        )
        op.execute(
            f"CREATE TRIGGER volume_layouts_update AFTER UPDATE ON volumes "
            f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION volume_layouts_count()"
        )
    else:
        sqlite_changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in COLUMNS)
        op.execute(
            f"CREATE TRIGGER volume_layouts_insert AFTER INSERT ON volumes "
            f"BEGIN {_count('NEW')}; END"
        )
        op.execute(
            f"CREATE TRIGGER volume_layouts_delete AFTER DELETE ON volumes "
            f"BEGIN {'; '.join(_uncount('OLD'))}; END"
        )
        op.execute(
            f"CREATE TRIGGER volume_layouts_update AFTER UPDATE ON volumes "
            f"WHEN {sqlite_changed} "
            f"BEGIN {'; '.join(_uncount('OLD'))}; {_count('NEW')}; END"
        )
    op.execute(
        f"INSERT INTO volume_layout_counts ({KEY}, count) "
        f"SELECT {KEY}, count(*) FROM volumes GROUP BY {KEY}"
    )


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON volumes" if _pg() else ""))
    if _pg():
        op.execute("DROP FUNCTION IF EXISTS volume_layouts_count()")
    op.drop_table("volume_layout_counts")
    op.drop_index("ix_allocations_volume_node", "allocations")


def _pg() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")
