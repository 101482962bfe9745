"""Volume labels in a table of their own, indexed by (key, value) in the
volume list's order and kept by triggers, so that ListVolumes filtered by a
label reads the volumes that carry it instead of every volume; and a
partial index of the image snapshots in list order, for ListSnapshots
images_only; how many snapshots each cluster holds, kept by triggers, for
the status and capacity figures without a count of every snapshot; and the
volumes' indexes of state, template, parent snapshot and datastore version
extended by the list order (cluster, name), so that a list filtered by one
of them reads its page instead of sorting every match; likewise the jobs
in their list's order (newest first) and a node's attachments by volume;
and a partial index of the volumes that may lack a live copy, in list
order, for the degraded list.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

TRIGGERS = ("volume_labels_insert", "volume_labels_delete", "volume_labels_update")
SNAPSHOT_TRIGGERS = ("snapshot_counts_insert", "snapshot_counts_delete", "snapshot_counts_update")
COUNT_SNAPSHOT = (
    "INSERT INTO snapshot_counts (cluster_id, count) VALUES (NEW.cluster_id, 1) "
    "ON CONFLICT (cluster_id) DO UPDATE SET count = snapshot_counts.count + 1"
)
UNCOUNT_SNAPSHOT = (
    "UPDATE snapshot_counts SET count = count - 1 WHERE cluster_id = OLD.cluster_id",
    "DELETE FROM snapshot_counts WHERE cluster_id = OLD.cluster_id AND count <= 0",
)
COLUMNS = "volume_id, key, value, cluster_id, name"
# DEGRADED, DOWN or DATA_LOST, or degraded since a time (osd.store.models).
MAYBE_DEGRADED = "state IN (3, 4, 5) OR degraded_time IS NOT NULL"
# The single-column index each ordered one replaces (the column's own name).
ORDERED = {
    "ix_volumes_state": ("ix_volumes_state_order", "state"),
    "ix_volumes_template_id": ("ix_volumes_template_order", "template_id"),
    "ix_volumes_parent_snapshot_id": ("ix_volumes_parent_snapshot_order", "parent_snapshot_id"),
    "ix_volumes_datastore_version_id": (
        "ix_volumes_datastore_version_order",
        "datastore_version_id",
    ),
}


def _sqlite_rows(row: str) -> str:
    """The label rows of the volume ``row`` (NEW, or a table alias). Labels
    are a JSON object; anything else stored there has no labels to index."""
    return (
        f"SELECT {row}.id, l.key, l.value, {row}.cluster_id, {row}.name "
        f"FROM json_each(CASE WHEN json_type({row}.labels) = 'object' "
        f"THEN {row}.labels ELSE '{{}}' END) AS l"
    )


def _postgres_rows(row: str) -> str:
    return (
        f"SELECT {row}.id, l.key, l.value, {row}.cluster_id, {row}.name "
        f"FROM json_each_text(CASE WHEN json_typeof({row}.labels) = 'object' "
        f"THEN {row}.labels ELSE '{{}}'::json END) AS l"
    )


def upgrade() -> None:
    _count_snapshots(op.get_bind().dialect.name == "postgresql")
    for old, (new, column) in ORDERED.items():
        op.create_index(new, "volumes", [column, "cluster_id", "name"])
        op.drop_index(old, "volumes")
    op.create_index("ix_jobs_create_time_id", "jobs", ["create_time", "id"])
    op.create_index(
        "ix_volumes_maybe_degraded",
        "volumes",
        ["cluster_id", "name"],
        sqlite_where=sa.text(MAYBE_DEGRADED),
        postgresql_where=sa.text(MAYBE_DEGRADED),
    )
    op.create_index("ix_attachments_node_volume", "attachments", ["node_id", "volume_id"])
    op.drop_index("ix_attachments_node_id", "attachments")
    op.create_index(
        "ix_snapshots_images",
        "snapshots",
        ["cluster_id", "name"],
        sqlite_where=sa.text("image = 1"),
        postgresql_where=sa.text("image = true"),
    )
    op.create_table(
        "volume_labels",
        sa.Column("volume_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.String(253), nullable=False),
        sa.Column("cluster_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
    )
    op.create_index(
        "ix_volume_labels_key_value", "volume_labels", ["key", "value", "cluster_id", "name"]
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION volume_labels_keep() RETURNS trigger AS $$
            BEGIN
                IF TG_OP IN ('DELETE', 'UPDATE') THEN
                    DELETE FROM volume_labels WHERE volume_id = OLD.id;
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    INSERT INTO volume_labels ({COLUMNS}) {_postgres_rows("NEW")};
                END IF;
                RETURN NULL;
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER volume_labels_insert AFTER INSERT ON volumes "
            "FOR EACH ROW EXECUTE FUNCTION volume_labels_keep()"
        )
        op.execute(
            "CREATE TRIGGER volume_labels_delete AFTER DELETE ON volumes "
            "FOR EACH ROW EXECUTE FUNCTION volume_labels_keep()"
        )
        # json has no equality: its text is compared.
        op.execute(
            "CREATE TRIGGER volume_labels_update AFTER UPDATE ON volumes FOR EACH ROW "
            "WHEN (OLD.labels::text IS DISTINCT FROM NEW.labels::text "
            "OR OLD.cluster_id IS DISTINCT FROM NEW.cluster_id "
            "OR OLD.name IS DISTINCT FROM NEW.name) "
            "EXECUTE FUNCTION volume_labels_keep()"
        )
        op.execute(
            f"INSERT INTO volume_labels ({COLUMNS}) "
            f"SELECT v.id, l.key, l.value, v.cluster_id, v.name FROM volumes v "
            f"CROSS JOIN LATERAL json_each_text(CASE WHEN json_typeof(v.labels) = 'object' "
            f"THEN v.labels ELSE '{{}}'::json END) AS l"
        )
    else:
        insert = f"INSERT INTO volume_labels ({COLUMNS}) {_sqlite_rows('NEW')}"
        remove = "DELETE FROM volume_labels WHERE volume_id = OLD.id"
        after = "CREATE TRIGGER volume_labels_{} AFTER {} ON volumes BEGIN {}; END"
        op.execute(after.format("insert", "INSERT", insert))
        op.execute(after.format("delete", "DELETE", remove))
        op.execute(
            "CREATE TRIGGER volume_labels_update AFTER UPDATE ON volumes "
            "WHEN OLD.labels IS NOT NEW.labels OR OLD.cluster_id IS NOT NEW.cluster_id "
            "OR OLD.name IS NOT NEW.name "
            f"BEGIN {remove}; {insert}; END"
        )
        op.execute(
            f"INSERT INTO volume_labels ({COLUMNS}) "
            f"SELECT v.id, l.key, l.value, v.cluster_id, v.name FROM volumes v, "
            f"json_each(CASE WHEN json_type(v.labels) = 'object' "
            f"THEN v.labels ELSE '{{}}' END) AS l"
        )


def _count_snapshots(pg: bool) -> None:
    op.create_table(
        "snapshot_counts",
        sa.Column("cluster_id", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    if pg:
        op.execute(
            f"""
            CREATE FUNCTION snapshot_counts_keep() RETURNS trigger AS $$
            BEGIN
                IF TG_OP IN ('DELETE', 'UPDATE') THEN
                    {"; ".join(UNCOUNT_SNAPSHOT)};
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    {COUNT_SNAPSHOT};
                END IF;
                RETURN NULL;
            END
            $$ LANGUAGE plpgsql
            """
        )
        for name, event in (("insert", "INSERT"), ("delete", "DELETE")):
            op.execute(
                f"CREATE TRIGGER snapshot_counts_{name} AFTER {event} ON snapshots "
                f"FOR EACH ROW EXECUTE FUNCTION snapshot_counts_keep()"
            )
        op.execute(
            "CREATE TRIGGER snapshot_counts_update AFTER UPDATE ON snapshots FOR EACH ROW "
            "WHEN (OLD.cluster_id IS DISTINCT FROM NEW.cluster_id) "
            "EXECUTE FUNCTION snapshot_counts_keep()"
        )
    else:
        uncount = "; ".join(UNCOUNT_SNAPSHOT)
        op.execute(
            f"CREATE TRIGGER snapshot_counts_insert AFTER INSERT ON snapshots "
            f"BEGIN {COUNT_SNAPSHOT}; END"
        )
        op.execute(
            f"CREATE TRIGGER snapshot_counts_delete AFTER DELETE ON snapshots BEGIN {uncount}; END"
        )
        op.execute(
            f"CREATE TRIGGER snapshot_counts_update AFTER UPDATE ON snapshots "
            f"WHEN OLD.cluster_id IS NOT NEW.cluster_id BEGIN {uncount}; {COUNT_SNAPSHOT}; END"
        )
    op.execute(
        "INSERT INTO snapshot_counts (cluster_id, count) "
        "SELECT cluster_id, count(*) FROM snapshots GROUP BY cluster_id"
    )


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for old, (new, column) in ORDERED.items():
        op.create_index(old, "volumes", [column])
        op.drop_index(new, "volumes")
    op.create_index("ix_attachments_node_id", "attachments", ["node_id"])
    op.drop_index("ix_attachments_node_volume", "attachments")
    op.drop_index("ix_jobs_create_time_id", "jobs")
    op.drop_index("ix_volumes_maybe_degraded", "volumes")
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON volumes" if pg else ""))
    for name in SNAPSHOT_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON snapshots" if pg else ""))
    if pg:
        op.execute("DROP FUNCTION IF EXISTS volume_labels_keep()")
        op.execute("DROP FUNCTION IF EXISTS snapshot_counts_keep()")
    op.drop_table("snapshot_counts")
    op.drop_index("ix_volume_labels_key_value", "volume_labels")
    op.drop_table("volume_labels")
    op.drop_index("ix_snapshots_images", "snapshots")
