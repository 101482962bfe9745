"""Typed SQLAlchemy models. The schema itself is owned by the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from osd.enums import (
    AllocationState,
    AttachMode,
    CoordinatorRole,
    DomainState,
    DriveState,
    DurabilityType,
    JobKind,
    JobState,
    NodeState,
    ObjectKind,
    Provisioning,
    SnapshotState,
    SourceKind,
    VolumeKind,
    VolumeState,
)
from osd.store.types import IntEnumType

# A pool's auto-balance threshold unless set: the spread, in percentage
# points between its fullest and emptiest drive, that starts a rebalance.
DEFAULT_BALANCE_THRESHOLD = 10.0


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, dict[str, str]: JSON, list[str]: JSON}


class StateRow(Base):
    """Store-wide singletons: the change counter and the key that signs page
    tokens (64 hex digits)."""

    __tablename__ = "osd_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    page_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Events up to this generation have been pruned: a watch resuming from
    # before it has missed some.
    events_pruned_through: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )


class ClusterRow(Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("name", name="uq_clusters_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False, default=dict)
    block: Mapped[bool] = mapped_column(Boolean, nullable=False)
    file: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # The repair policy; NULL keeps the daemon's setting.
    repair_paused: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    repair_delay_seconds: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    repair_maintenance_timeout_seconds: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True
    )
    repair_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    repair_max_per_drive: Mapped[int | None] = mapped_column(Integer, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class NodeRow(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("cluster_id", "name", name="uq_nodes_cluster_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clusters.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    zone: Mapped[str] = mapped_column(String(200), nullable=False)
    management_addresses: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    storage_addresses: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    state: Mapped[NodeState] = mapped_column(IntEnumType(NodeState), nullable=False)
    coordinator_role: Mapped[CoordinatorRole] = mapped_column(
        IntEnumType(CoordinatorRole), nullable=False
    )
    domain_state: Mapped[DomainState] = mapped_column(IntEnumType(DomainState), nullable=False)
    active_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # OFFLINE because its agent (a daemon acting for it) went: ONLINE again
    # when an agent returns. A node set OFFLINE by hand stays so.
    agent_offline: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class DriveRow(Base):
    """A block device of a node.

    ``used_bytes`` is the sum of the bytes of the allocations on the drive. It
    changes only through osd.store.allocations, in the same transaction as
    the allocation rows, and ``osd db check`` proves it.
    """

    __tablename__ = "drives"
    __table_args__ = (
        UniqueConstraint("node_id", "device_path", name="uq_drives_node_device"),
        CheckConstraint("used_bytes >= 0", name="ck_drives_used_not_negative"),
        CheckConstraint("total_bytes >= 0", name="ck_drives_total_not_negative"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clusters.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    node_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("nodes.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    device_path: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str] = mapped_column(String(30), nullable=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    journal: Mapped[bool] = mapped_column(Boolean, nullable=False)
    state: Mapped[DriveState] = mapped_column(IntEnumType(DriveState), nullable=False)
    total_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    used_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    serial: Mapped[str] = mapped_column(String(200), nullable=False)
    ssd: Mapped[bool] = mapped_column(Boolean, nullable=False)
    active_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class PoolRow(Base):
    __tablename__ = "pools"
    __table_args__ = (UniqueConstraint("cluster_id", "name", name="uq_pools_cluster_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clusters.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    active_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Rebalance by itself when the spread reaches the threshold (points).
    auto_balance: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    auto_balance_threshold_percent: Mapped[float] = mapped_column(
        Float, nullable=False, default=DEFAULT_BALANCE_THRESHOLD, server_default="10"
    )


class PoolDriveRow(Base):
    """A drive that is a member of a pool on its own."""

    __tablename__ = "pool_drives"

    pool_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True
    )
    drive_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("drives.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class PoolNodeRow(Base):
    """A node that is a whole member of a pool: every data drive of it is a member."""

    __tablename__ = "pool_nodes"

    pool_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class TemplateRow(Base):
    """StorPool's volume template: named defaults for new volumes (0/empty: no default)."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("cluster_id", "name", name="uq_templates_cluster_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clusters.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    # kind, durability_type and provisioning hold a VolumeKind, DurabilityType and
    # Provisioning number, or 0 for "no default": none of those enums has a 0
    # member, so these columns are plain integers.
    kind: Mapped[int] = mapped_column(Integer, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    durability_type: Mapped[int] = mapped_column(Integer, nullable=False)
    replicas: Mapped[int] = mapped_column(Integer, nullable=False)
    data_fragments: Mapped[int] = mapped_column(Integer, nullable=False)
    redundancy_fragments: Mapped[int] = mapped_column(Integer, nullable=False)
    placement: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    provisioning: Mapped[int] = mapped_column(Integer, nullable=False)
    snapshot_factor: Mapped[float] = mapped_column(Float, nullable=False)
    qos_iops_limit: Mapped[int] = mapped_column(BigInteger, nullable=False)
    qos_bandwidth_limit_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # The subject that created it ("" while authentication was off).
    owner: Mapped[str] = mapped_column(String(200), nullable=False, server_default="")


# DEGRADED, DOWN or DATA_LOST, or degraded since a time: a volume that may
# lack a live copy (the literal states, as a partial index needs them).
MAYBE_DEGRADED = (
    f"state IN ({int(VolumeState.DEGRADED)}, {int(VolumeState.DOWN)}, "
    f"{int(VolumeState.DATA_LOST)}) OR degraded_time IS NOT NULL"
)


class VolumeRow(Base):
    """A volume. ``placement`` holds the Placement message's fields as JSON;
    ``pool_id`` and ``tail_pool_id`` repeat its pools for filtering and for
    the foreign keys that keep a used pool from being deleted."""

    __tablename__ = "volumes"
    __table_args__ = (
        UniqueConstraint("cluster_id", "name", name="uq_volumes_cluster_name"),
        # A list filtered by state seeks its page (migration 0011).
        Index("ix_volumes_cluster_state_name", "cluster_id", "state", "name"),
        # A list filtered by one of these, in any cluster, reads its page in
        # list order instead of sorting every match (migration 0021).
        Index("ix_volumes_state_order", "state", "cluster_id", "name"),
        Index("ix_volumes_template_order", "template_id", "cluster_id", "name"),
        Index("ix_volumes_parent_snapshot_order", "parent_snapshot_id", "cluster_id", "name"),
        Index("ix_volumes_datastore_version_order", "datastore_version_id", "cluster_id", "name"),
        # The volumes that may lack a live copy, in list order: the few a
        # degraded list reads (a partial index, used by a query that states
        # MAYBE_DEGRADED in the same words; see store.volumes.scan).
        Index(
            "ix_volumes_maybe_degraded",
            "cluster_id",
            "name",
            sqlite_where=text(MAYBE_DEGRADED),
            postgresql_where=text(MAYBE_DEGRADED),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clusters.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[VolumeKind] = mapped_column(IntEnumType(VolumeKind), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    durability_type: Mapped[DurabilityType] = mapped_column(
        IntEnumType(DurabilityType), nullable=False
    )
    replicas: Mapped[int] = mapped_column(Integer, nullable=False)
    data_fragments: Mapped[int] = mapped_column(Integer, nullable=False)
    redundancy_fragments: Mapped[int] = mapped_column(Integer, nullable=False)
    placement: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    pool_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("pools.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    tail_pool_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("pools.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    provisioning: Mapped[Provisioning] = mapped_column(IntEnumType(Provisioning), nullable=False)
    snapshot_factor: Mapped[float] = mapped_column(Float, nullable=False)
    qos_iops_limit: Mapped[int] = mapped_column(BigInteger, nullable=False)
    qos_bandwidth_limit_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    template_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("templates.id", ondelete="RESTRICT"), nullable=True
    )
    # Which VolumeSource field was set (SourceKind.NONE when none was).
    source_kind: Mapped[SourceKind] = mapped_column(IntEnumType(SourceKind), nullable=False)
    source_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    parent_snapshot_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("snapshots.id", ondelete="RESTRICT"), nullable=True
    )
    datastore_version_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("datastore_versions.id", ondelete="RESTRICT"), nullable=True
    )
    multi_attach: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # A FILE volume's Filesystem; 0 for a BLOCK volume.
    filesystem: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    state: Mapped[VolumeState] = mapped_column(IntEnumType(VolumeState), nullable=False)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    active_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The daemon (DaemonRow.id) that runs the change in phases the volume is
    # in (CREATING, DELETING, a resize or revert); another daemon finishes or
    # undoes it only once that daemon is gone.
    op_owner: Mapped[str | None] = mapped_column(String(120), nullable=True)
    # Since when it has had fewer live copies than declared (None while all are).
    degraded_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # The subject that owns it ("" when made while authentication was off),
    # and whether every authenticated caller may read it.
    owner: Mapped[str] = mapped_column(String(200), nullable=False, default="", index=True)
    public: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class VolumeGrantRow(Base):
    """One entry of a volume's access list: a user or group and its access
    (osd.enums.Access). Deleted with its volume."""

    __tablename__ = "volume_grants"
    __table_args__ = (Index("ix_volume_grants_grantee", "grantee_kind", "grantee"),)

    volume_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("volumes.id", ondelete="CASCADE"), primary_key=True
    )
    grantee_kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # "user" or "group"
    grantee: Mapped[str] = mapped_column(String(200), primary_key=True)
    access: Mapped[int] = mapped_column(Integer, nullable=False)


class SnapshotRow(Base):
    """A snapshot. ``volume_id`` is kept after its volume is deleted, so it has no
    foreign key."""

    __tablename__ = "snapshots"
    __table_args__ = (
        UniqueConstraint("cluster_id", "name", name="uq_snapshots_cluster_name"),
        # The few image snapshots in list order (a partial index: a list of
        # images reads them alone, not every snapshot). A query uses it when
        # it says ``image = true`` in those words (see store.snapshots.scan).
        Index(
            "ix_snapshots_images",
            "cluster_id",
            "name",
            sqlite_where=text("image = 1"),
            postgresql_where=text("image = true"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clusters.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    auto_named: Mapped[bool] = mapped_column(Boolean, nullable=False)
    volume_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    durability_type: Mapped[DurabilityType] = mapped_column(
        IntEnumType(DurabilityType), nullable=False
    )
    replicas: Mapped[int] = mapped_column(Integer, nullable=False)
    data_fragments: Mapped[int] = mapped_column(Integer, nullable=False)
    redundancy_fragments: Mapped[int] = mapped_column(Integer, nullable=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    image: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # Indexed (migration 0022): each heartbeat looks for snapshots left
    # CREATING or DELETING, the few a crash leaves, not every snapshot.
    state: Mapped[SnapshotState] = mapped_column(
        IntEnumType(SnapshotState), nullable=False, index=True
    )
    space_used_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # What storage measured the snapshot holds alone (None where the driver
    # does not measure); see osd.engine.volumes.usage.
    measured_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The daemon that runs the change in phases it is in (CREATING, DELETING).
    op_owner: Mapped[str | None] = mapped_column(String(120), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Its volume's owner (when it was taken, and after each change of owner).
    owner: Mapped[str] = mapped_column(String(200), nullable=False, default="", index=True)
    # The snapshot its data was taken on top of (its chain's lineage; no
    # foreign key: deleting a parent links its children to its own parent).
    parent_snapshot_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


def copies_to_read(v: VolumeRow | SnapshotRow) -> int:
    """How many available copies (fragments) the data needs to be readable."""
    return (v.data_fragments or 4) if v.durability_type == DurabilityType.ERASURE else 1


class AllocationRow(Base):
    """Bytes reserved on one drive for one copy or fragment of a volume or snapshot.

    Rows are written only through osd.store.allocations, which keeps
    ``drives.used_bytes`` equal to the sum of ``bytes`` per drive. ``job_id``
    names the job or change that reserved a PENDING allocation, so recovery
    can finish or undo it.
    """

    __tablename__ = "allocations"
    __table_args__ = (
        CheckConstraint("bytes >= 0", name="ck_allocations_bytes_not_negative"),
        CheckConstraint(
            "(volume_id IS NULL) <> (snapshot_id IS NULL)", name="ck_allocations_one_owner"
        ),
        # A volume list filtered by node asks, volume by volume, for a copy on
        # the node: both columns, so that no planner seeks by node alone and
        # reads every copy the node holds for each volume (migration 0020).
        Index("ix_allocations_volume_node", "volume_id", "node_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    volume_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("volumes.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    snapshot_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("snapshots.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    drive_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("drives.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    node_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("nodes.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Indexed for the few that are not ACTIVE (PENDING, RELEASING, ...), which
    # start-up recovery and the placement inputs look up.
    state: Mapped[AllocationState] = mapped_column(
        IntEnumType(AllocationState), nullable=False, index=True
    )
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # An UNAVAILABLE copy of a volume that could be written without it: it may
    # have missed writes, so it never turns ACTIVE again as it is. The repair
    # controller rebuilds it from a live copy (a resync).
    stale: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )


class AttachmentRow(Base):
    __tablename__ = "attachments"
    # A node's attachments in list order, (volume, node) (migration 0021).
    __table_args__ = (Index("ix_attachments_node_volume", "node_id", "volume_id"),)

    volume_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("volumes.id", ondelete="RESTRICT"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("nodes.id", ondelete="RESTRICT"), primary_key=True
    )
    mode: Mapped[AttachMode] = mapped_column(IntEnumType(AttachMode), nullable=False)
    device_path: Mapped[str] = mapped_column(String(255), nullable=False)
    attach_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Where the node mounts the volume's filesystem ("" for the device alone).
    mount_path: Mapped[str] = mapped_column(
        String(4096), nullable=False, default="", server_default=""
    )
    mount_options: Mapped[list[str]] = mapped_column(
        JSON, nullable=False, default=list, server_default=text("'[]'")
    )


class SnapshotAttachmentRow(Base):
    """A snapshot attached to a node, always read-only."""

    __tablename__ = "snapshot_attachments"

    snapshot_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("snapshots.id", ondelete="RESTRICT"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("nodes.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    device_path: Mapped[str] = mapped_column(String(255), nullable=False)
    attach_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class FlushMoveRow(Base):
    """An attachment a node's flush moved off it (``node_id``) onto
    ``target_node_id``: what ReadyNode takes back. Written in the transaction
    that moves the attachment's record, so no move is ever unrecorded. No
    foreign keys: a record whose volume or node is gone is dropped when read."""

    __tablename__ = "flush_moves"

    volume_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    target_node_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    mode: Mapped[AttachMode] = mapped_column(IntEnumType(AttachMode), nullable=False)
    move_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class JobRow(Base):
    """A persistent unit of long-running work.

    ``spec`` holds the job's parameters and ``checkpoint`` what it has done
    so far, both as JSON the job's kind defines; a restarted daemon resumes
    from the checkpoint or rolls back. ``owner`` and ``heartbeat_time`` tell
    which daemon runs it, so another daemon sharing the store can tell a
    crashed runner from a live one.
    """

    __tablename__ = "jobs"
    # The job list's order, newest first (migration 0021): a page is read in
    # order instead of sorting every job.
    __table_args__ = (Index("ix_jobs_create_time_id", "create_time", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clusters.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    kind: Mapped[JobKind] = mapped_column(IntEnumType(JobKind), nullable=False)
    target_kind: Mapped[ObjectKind] = mapped_column(IntEnumType(ObjectKind), nullable=False)
    target_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    related: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    state: Mapped[JobState] = mapped_column(IntEnumType(JobState), nullable=False, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False)
    pause_requested: Mapped[bool] = mapped_column(Boolean, nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    progress_done_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    progress_total_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    progress_done_steps: Mapped[int] = mapped_column(BigInteger, nullable=False)
    progress_total_steps: Mapped[int] = mapped_column(BigInteger, nullable=False)
    progress_message: Mapped[str] = mapped_column(String(500), nullable=False)
    error_code: Mapped[int] = mapped_column(Integer, nullable=False)
    error_reason: Mapped[str] = mapped_column(String(100), nullable=False)
    error_message: Mapped[str] = mapped_column(String(2000), nullable=False)
    # What the job achieved once final (JobResult's fields), or None.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    restart_count: Mapped[int] = mapped_column(Integer, nullable=False)
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    heartbeat_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class DatastoreRow(Base):
    __tablename__ = "datastores"
    __table_args__ = (UniqueConstraint("name", name="uq_datastores_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class DatastoreVersionRow(Base):
    """One version of a datastore. At most one version per datastore has
    ``is_default`` set (enforced by the engine inside the write transaction)."""

    __tablename__ = "datastore_versions"
    __table_args__ = (
        UniqueConstraint("datastore_id", "name", name="uq_datastore_versions_datastore_name"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    datastore_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("datastores.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    manager: Mapped[str] = mapped_column(String(200), nullable=False)
    image_snapshot_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("snapshots.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    packages: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ApiKeyRow(Base):
    """A static API key. Only a SHA-256 digest of its secret is kept: the key
    itself is shown once, when it is made."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(64), nullable=False)
    description: Mapped[str] = mapped_column(String(200), nullable=False)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoke_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditRow(Base):
    """One recorded call (see proto/osd/v1/audit.proto). ``seq`` orders
    records made in the same instant."""

    __tablename__ = "audit_records"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    subject: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    roles: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    via: Mapped[str] = mapped_column(String(16), nullable=False)
    issuer: Mapped[str] = mapped_column(String(200), nullable=False)
    method: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    code: Mapped[int] = mapped_column(Integer, nullable=False)
    request_id: Mapped[str] = mapped_column(String(128), nullable=False)
    # How many calls the record stands for: above 1 for folded refusals.
    count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")


class AuditTargetRow(Base):
    """An object id an audited call named."""

    __tablename__ = "audit_targets"

    record_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("audit_records.id", ondelete="CASCADE"), primary_key=True
    )
    target_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)


class VolumeLayoutCountRow(Base):
    """How many volumes of a cluster have one layout (size, durability and
    snapshot factor), for the capacity figures without a scan of the
    volumes. Kept by triggers on ``volumes`` (migration 0020), so every
    change of a volume, whatever statement makes it, is counted in its own
    transaction; a layout no volume has any longer has no row."""

    __tablename__ = "volume_layout_counts"

    cluster_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    durability_type: Mapped[int] = mapped_column(Integer, primary_key=True)
    replicas: Mapped[int] = mapped_column(Integer, primary_key=True)
    data_fragments: Mapped[int] = mapped_column(Integer, primary_key=True)
    redundancy_fragments: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot_factor: Mapped[float] = mapped_column(Float, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)


class VolumeLabelRow(Base):
    """One label of a volume, with the volume's list order (cluster id,
    name), so that a list filtered by a label walks the index of that label
    in page order and reads only the volumes that carry it. Kept by triggers
    on ``volumes`` (migration 0021), like :class:`VolumeLayoutCountRow`; the
    volume's ``labels`` stays what the API reads."""

    __tablename__ = "volume_labels"
    __table_args__ = (Index("ix_volume_labels_key_value", "key", "value", "cluster_id", "name"),)

    volume_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(253), nullable=False)
    cluster_id: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)


class SnapshotCountRow(Base):
    """How many snapshots a cluster holds, for its status and capacity
    figures without a count of every snapshot. Kept by triggers on
    ``snapshots`` (migration 0021); a cluster without snapshots has no row."""

    __tablename__ = "snapshot_counts"

    cluster_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)


class DaemonRow(Base):
    """A daemon process that shares the store: registered when it starts, its
    heartbeat renewed while it runs, ``stop_time`` set when it stops cleanly.
    ``id`` is the owner name its phased changes and jobs carry
    (``host:pid:run``)."""

    __tablename__ = "daemons"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    address: Mapped[str] = mapped_column(String(255), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    # The node it is the agent of: the node's driver work runs here.
    node_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    heartbeat_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    stop_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class NodeWorkRow(Base):
    """A driver call for a node, queued for the node's agent: ``method`` with
    ``args`` (JSON), claimed by one daemon (``claimed_by``), answered in
    ``result`` or ``error``. The daemon that queued it waits for the answer,
    or, out of time, cancels it while it is still PENDING."""

    __tablename__ = "node_work"
    __table_args__ = (Index("ix_node_work_node_state", "node_id", "state", "seq"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    node_id: Mapped[str] = mapped_column(String(32), nullable=False)
    method: Mapped[str] = mapped_column(String(64), nullable=False)
    args: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    state: Mapped[int] = mapped_column(Integer, nullable=False)
    claimed_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class EventRow(Base):
    """One change to a watched object, recorded in the transaction that made
    it, under that transaction's generation (WatchService.Watch)."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    kind: Mapped[int] = mapped_column(Integer, nullable=False)
    object_id: Mapped[str] = mapped_column(String(32), nullable=False)
    action: Mapped[int] = mapped_column(Integer, nullable=False)
    # Indexed for pruning by age, which runs every heartbeat.
    time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
