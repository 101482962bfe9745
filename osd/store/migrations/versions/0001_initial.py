"""The schema: store state, topology, volumes, snapshots, attachments, templates,
jobs and the datastore registry.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from osd.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("block", sa.Boolean(), nullable=False),
        sa.Column("file", sa.Boolean(), nullable=False),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_clusters_name"),
    )
    op.create_table(
        "datastores",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_datastores_name"),
    )
    state = op.create_table(
        "osd_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(state, [{"id": 1, "generation": 0}])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("target_kind", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.String(length=32), nullable=False),
        sa.Column("related", sa.JSON(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("pause_requested", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("checkpoint", sa.JSON(), nullable=False),
        sa.Column("progress_done_bytes", sa.BigInteger(), nullable=False),
        sa.Column("progress_total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("progress_done_steps", sa.BigInteger(), nullable=False),
        sa.Column("progress_total_steps", sa.BigInteger(), nullable=False),
        sa.Column("progress_message", sa.String(length=500), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=False),
        sa.Column("error_reason", sa.String(length=100), nullable=False),
        sa.Column("error_message", sa.String(length=2000), nullable=False),
        sa.Column("restart_count", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("heartbeat_time", UTCDateTime(timezone=True), nullable=True),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("start_time", UTCDateTime(timezone=True), nullable=True),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_time", UTCDateTime(timezone=True), nullable=True),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_jobs_cluster_id"), "jobs", ["cluster_id"], unique=False)
    op.create_index(op.f("ix_jobs_state"), "jobs", ["state"], unique=False)
    op.create_index(op.f("ix_jobs_target_id"), "jobs", ["target_id"], unique=False)
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("zone", sa.String(length=200), nullable=False),
        sa.Column("management_addresses", sa.JSON(), nullable=False),
        sa.Column("storage_addresses", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("coordinator_role", sa.Integer(), nullable=False),
        sa.Column("domain_state", sa.Integer(), nullable=False),
        sa.Column("active_job_id", sa.String(length=32), nullable=True),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cluster_id", "name", name="uq_nodes_cluster_name"),
    )
    op.create_index(op.f("ix_nodes_cluster_id"), "nodes", ["cluster_id"], unique=False)
    op.create_table(
        "pools",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("active_job_id", sa.String(length=32), nullable=True),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cluster_id", "name", name="uq_pools_cluster_name"),
    )
    op.create_index(op.f("ix_pools_cluster_id"), "pools", ["cluster_id"], unique=False)
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("auto_named", sa.Boolean(), nullable=False),
        sa.Column("volume_id", sa.String(length=32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("durability_type", sa.Integer(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("data_fragments", sa.Integer(), nullable=False),
        sa.Column("redundancy_fragments", sa.Integer(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("image", sa.Boolean(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("space_used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cluster_id", "name", name="uq_snapshots_cluster_name"),
    )
    op.create_index(op.f("ix_snapshots_cluster_id"), "snapshots", ["cluster_id"], unique=False)
    op.create_index(op.f("ix_snapshots_volume_id"), "snapshots", ["volume_id"], unique=False)
    op.create_table(
        "templates",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("durability_type", sa.Integer(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("data_fragments", sa.Integer(), nullable=False),
        sa.Column("redundancy_fragments", sa.Integer(), nullable=False),
        sa.Column("placement", sa.JSON(), nullable=False),
        sa.Column("provisioning", sa.Integer(), nullable=False),
        sa.Column("snapshot_factor", sa.Float(), nullable=False),
        sa.Column("qos_iops_limit", sa.BigInteger(), nullable=False),
        sa.Column("qos_bandwidth_limit_bytes", sa.BigInteger(), nullable=False),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cluster_id", "name", name="uq_templates_cluster_name"),
    )
    op.create_index(op.f("ix_templates_cluster_id"), "templates", ["cluster_id"], unique=False)
    op.create_table(
        "datastore_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("datastore_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("manager", sa.String(length=200), nullable=False),
        sa.Column("image_snapshot_id", sa.String(length=32), nullable=False),
        sa.Column("packages", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["datastore_id"], ["datastores.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["image_snapshot_id"], ["snapshots.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("datastore_id", "name", name="uq_datastore_versions_datastore_name"),
    )
    op.create_index(
        op.f("ix_datastore_versions_datastore_id"),
        "datastore_versions",
        ["datastore_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_datastore_versions_image_snapshot_id"),
        "datastore_versions",
        ["image_snapshot_id"],
        unique=False,
    )
    op.create_table(
        "drives",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("device_path", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=30), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("journal", sa.Boolean(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("serial", sa.String(length=200), nullable=False),
        sa.Column("ssd", sa.Boolean(), nullable=False),
        sa.Column("active_job_id", sa.String(length=32), nullable=True),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("total_bytes >= 0", name="ck_drives_total_not_negative"),
        sa.CheckConstraint("used_bytes >= 0", name="ck_drives_used_not_negative"),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("node_id", "device_path", name="uq_drives_node_device"),
    )
    op.create_index(op.f("ix_drives_cluster_id"), "drives", ["cluster_id"], unique=False)
    op.create_index(op.f("ix_drives_node_id"), "drives", ["node_id"], unique=False)
    op.create_table(
        "pool_nodes",
        sa.Column("pool_id", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pool_id", "node_id"),
    )
    op.create_index(op.f("ix_pool_nodes_node_id"), "pool_nodes", ["node_id"], unique=False)
    op.create_table(
        "pool_drives",
        sa.Column("pool_id", sa.String(length=32), nullable=False),
        sa.Column("drive_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["drive_id"], ["drives.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pool_id", "drive_id"),
    )
    op.create_index(op.f("ix_pool_drives_drive_id"), "pool_drives", ["drive_id"], unique=False)
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("durability_type", sa.Integer(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("data_fragments", sa.Integer(), nullable=False),
        sa.Column("redundancy_fragments", sa.Integer(), nullable=False),
        sa.Column("placement", sa.JSON(), nullable=False),
        sa.Column("pool_id", sa.String(length=32), nullable=True),
        sa.Column("tail_pool_id", sa.String(length=32), nullable=True),
        sa.Column("provisioning", sa.Integer(), nullable=False),
        sa.Column("snapshot_factor", sa.Float(), nullable=False),
        sa.Column("qos_iops_limit", sa.BigInteger(), nullable=False),
        sa.Column("qos_bandwidth_limit_bytes", sa.BigInteger(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("template_id", sa.String(length=32), nullable=True),
        sa.Column("source_kind", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=True),
        sa.Column("parent_snapshot_id", sa.String(length=32), nullable=True),
        sa.Column("datastore_version_id", sa.String(length=32), nullable=True),
        sa.Column("multi_attach", sa.Boolean(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.Column("active_job_id", sa.String(length=32), nullable=True),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(
            ["datastore_version_id"], ["datastore_versions.id"], ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(["parent_snapshot_id"], ["snapshots.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["tail_pool_id"], ["pools.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["template_id"], ["templates.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cluster_id", "name", name="uq_volumes_cluster_name"),
    )
    op.create_index(op.f("ix_volumes_cluster_id"), "volumes", ["cluster_id"], unique=False)
    op.create_index(
        op.f("ix_volumes_datastore_version_id"), "volumes", ["datastore_version_id"], unique=False
    )
    op.create_index(
        op.f("ix_volumes_parent_snapshot_id"), "volumes", ["parent_snapshot_id"], unique=False
    )
    op.create_index(op.f("ix_volumes_pool_id"), "volumes", ["pool_id"], unique=False)
    op.create_index(op.f("ix_volumes_state"), "volumes", ["state"], unique=False)
    op.create_index(op.f("ix_volumes_tail_pool_id"), "volumes", ["tail_pool_id"], unique=False)
    op.create_index(op.f("ix_volumes_template_id"), "volumes", ["template_id"], unique=False)
    op.create_table(
        "allocations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("volume_id", sa.String(length=32), nullable=True),
        sa.Column("snapshot_id", sa.String(length=32), nullable=True),
        sa.Column("drive_id", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("create_time", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(volume_id IS NULL) <> (snapshot_id IS NULL)", name="ck_allocations_one_owner"
        ),
        sa.CheckConstraint("bytes >= 0", name="ck_allocations_bytes_not_negative"),
        sa.ForeignKeyConstraint(["drive_id"], ["drives.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["snapshot_id"], ["snapshots.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["volume_id"], ["volumes.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_allocations_drive_id"), "allocations", ["drive_id"], unique=False)
    op.create_index(op.f("ix_allocations_job_id"), "allocations", ["job_id"], unique=False)
    op.create_index(op.f("ix_allocations_node_id"), "allocations", ["node_id"], unique=False)
    op.create_index(
        op.f("ix_allocations_snapshot_id"), "allocations", ["snapshot_id"], unique=False
    )
    op.create_index(op.f("ix_allocations_volume_id"), "allocations", ["volume_id"], unique=False)
    op.create_table(
        "attachments",
        sa.Column("volume_id", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("device_path", sa.String(length=255), nullable=False),
        sa.Column("attach_time", UTCDateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["volume_id"], ["volumes.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("volume_id", "node_id"),
    )
    op.create_index(op.f("ix_attachments_node_id"), "attachments", ["node_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_attachments_node_id"), table_name="attachments")
    op.drop_table("attachments")
    op.drop_index(op.f("ix_allocations_volume_id"), table_name="allocations")
    op.drop_index(op.f("ix_allocations_snapshot_id"), table_name="allocations")
    op.drop_index(op.f("ix_allocations_node_id"), table_name="allocations")
    op.drop_index(op.f("ix_allocations_job_id"), table_name="allocations")
    op.drop_index(op.f("ix_allocations_drive_id"), table_name="allocations")
    op.drop_table("allocations")
    op.drop_index(op.f("ix_volumes_template_id"), table_name="volumes")
    op.drop_index(op.f("ix_volumes_tail_pool_id"), table_name="volumes")
    op.drop_index(op.f("ix_volumes_state"), table_name="volumes")
    op.drop_index(op.f("ix_volumes_pool_id"), table_name="volumes")
    op.drop_index(op.f("ix_volumes_parent_snapshot_id"), table_name="volumes")
    op.drop_index(op.f("ix_volumes_datastore_version_id"), table_name="volumes")
    op.drop_index(op.f("ix_volumes_cluster_id"), table_name="volumes")
    op.drop_table("volumes")
    op.drop_index(op.f("ix_pool_drives_drive_id"), table_name="pool_drives")
    op.drop_table("pool_drives")
    op.drop_index(op.f("ix_pool_nodes_node_id"), table_name="pool_nodes")
    op.drop_table("pool_nodes")
    op.drop_index(op.f("ix_drives_node_id"), table_name="drives")
    op.drop_index(op.f("ix_drives_cluster_id"), table_name="drives")
    op.drop_table("drives")
    op.drop_index(op.f("ix_datastore_versions_image_snapshot_id"), table_name="datastore_versions")
    op.drop_index(op.f("ix_datastore_versions_datastore_id"), table_name="datastore_versions")
    op.drop_table("datastore_versions")
    op.drop_index(op.f("ix_templates_cluster_id"), table_name="templates")
    op.drop_table("templates")
    op.drop_index(op.f("ix_snapshots_volume_id"), table_name="snapshots")
    op.drop_index(op.f("ix_snapshots_cluster_id"), table_name="snapshots")
    op.drop_table("snapshots")
    op.drop_index(op.f("ix_pools_cluster_id"), table_name="pools")
    op.drop_table("pools")
    op.drop_index(op.f("ix_nodes_cluster_id"), table_name="nodes")
    op.drop_table("nodes")
    op.drop_index(op.f("ix_jobs_target_id"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_state"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_cluster_id"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("osd_state")
    op.drop_table("datastores")
    op.drop_table("clusters")
