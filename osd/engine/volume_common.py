"""What the volume, snapshot and attachment engines share: stored rows as
domain objects, the refusals they have in common, and driver error mapping."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from osd.engine import specs
from osd.engine.drivers import DriverError
from osd.engine.enums import (
    AllocationState,
    AttachMode,
    FailureDomain,
    Provisioning,
    SnapshotState,
    SourceKind,
    VolumeKind,
    VolumeState,
)
from osd.engine.volume_models import (
    Attachment,
    Durability,
    Placement,
    Qos,
    Snapshot,
    Source,
    Usage,
    Volume,
)
from osd.errors import FailedPrecondition, NotFound, Unavailable
from osd.store import attachments as attach_repo
from osd.store import snapshots as snap_repo
from osd.store import volumes as repo
from osd.store.models import AllocationRow, AttachmentRow, SnapshotRow, VolumeRow

log = logging.getLogger("osd.engine.volumes")

# States in which a volume serves I/O (attach, snapshot, resize).
SERVING = (VolumeState.UP, VolumeState.DEGRADED)


# -- rows as domain objects ----------------------------------------------------


def durability_of(row: VolumeRow | SnapshotRow) -> Durability:
    return Durability(
        row.durability_type, row.replicas, row.data_fragments, row.redundancy_fragments
    )


def placement_of(row: VolumeRow) -> Placement:
    return specs.placement_from_json(row.placement) or Placement(
        failure_domain=int(FailureDomain.ZONE)
    )


def volume_of(row: VolumeRow, allocated: int, attachments: int, snapshots: int) -> Volume:
    durability = durability_of(row)
    size = row.size_bytes
    factor = row.snapshot_factor
    return Volume(
        id=row.id,
        cluster_id=row.cluster_id,
        name=row.name,
        kind=VolumeKind(row.kind),
        size_bytes=size,
        durability=durability,
        placement=placement_of(row),
        provisioning=Provisioning(row.provisioning),
        snapshot_factor=factor,
        qos=Qos(row.qos_iops_limit, row.qos_bandwidth_limit_bytes),
        labels=dict(row.labels),
        template_id=row.template_id or "",
        source=Source(SourceKind(row.source_kind), row.source_id or ""),
        parent_snapshot_id=row.parent_snapshot_id or "",
        multi_attach=row.multi_attach,
        state=VolumeState(row.state),
        usage=Usage(sum(specs.room_sizes(size, durability, factor)), allocated, row.stored_bytes),
        attachment_count=attachments,
        snapshot_count=snapshots,
        active_job_id=row.active_job_id or "",
        create_time=row.create_time,
        update_time=row.update_time,
        generation=row.generation,
    )


def volumes_of(session: Session, rows: Sequence[VolumeRow]) -> list[Volume]:
    """Volumes with their usage and counts, in one query for the lot."""
    stats = repo.usage_counts(session, [r.id for r in rows])
    return [volume_of(r, *stats.get(r.id, (0, 0, 0))) for r in rows]


def volume_from(session: Session, row: VolumeRow) -> Volume:
    [volume] = volumes_of(session, [row])
    return volume


def attachment_of(row: AttachmentRow) -> Attachment:
    return Attachment(
        volume_id=row.volume_id,
        node_id=row.node_id,
        mode=AttachMode(row.mode),
        device_path=row.device_path,
        attach_time=row.attach_time,
        generation=row.generation,
    )


def snapshots_of(session: Session, rows: Sequence[SnapshotRow]) -> list[Snapshot]:
    """Snapshots with their space used and dependants.

    A snapshot's space used is what deleting it would free: the bytes of the
    allocations it holds of its own when no other snapshot of its volume
    remains to take them over; otherwise nothing.
    """
    ids = [r.id for r in rows]
    own = snap_repo.own_bytes(session, ids)
    owners = {r.volume_id for r in rows if own.get(r.id)}
    siblings = snap_repo.live_counts(session, owners)
    clones = snap_repo.clone_counts(session, ids)
    images = snap_repo.image_use_counts(session, ids)
    out = []
    for r in rows:
        held = own.get(r.id, 0)
        alone = held and siblings.get(r.volume_id, 0) <= 1
        out.append(
            Snapshot(
                id=r.id,
                cluster_id=r.cluster_id,
                name=r.name,
                auto_named=r.auto_named,
                volume_id=r.volume_id,
                size_bytes=r.size_bytes,
                durability=durability_of(r),
                labels=dict(r.labels),
                image=r.image,
                state=SnapshotState(r.state),
                space_used_bytes=held if alone else 0,
                clone_count=clones.get(r.id, 0),
                datastore_version_count=images.get(r.id, 0),
                create_time=r.create_time,
                update_time=r.update_time,
                generation=r.generation,
            )
        )
    return out


def snapshot_from(session: Session, row: SnapshotRow) -> Snapshot:
    [snap] = snapshots_of(session, [row])
    return snap


# -- shared look-ups and refusals ----------------------------------------------


def get_volume(session: Session, volume_id: str, field: str = "volume_id") -> VolumeRow:
    row = repo.get(session, volume_id)
    if row is None:
        raise NotFound.object("volume", field, volume_id)
    return row


def get_snapshot(session: Session, snapshot_id: str, field: str = "snapshot_id") -> SnapshotRow:
    row = snap_repo.get(session, snapshot_id)
    if row is None:
        raise NotFound.object("snapshot", field, snapshot_id)
    return row


def not_available(row: VolumeRow, why: str = "") -> FailedPrecondition:
    state = VolumeState(row.state).name
    return FailedPrecondition(
        f"volume {row.name} ({row.id}) is {state}{why}",
        reason="VOLUME_NOT_AVAILABLE",
        metadata={"volume_id": row.id, "state": state},
    )


def require_serving(row: VolumeRow) -> None:
    """VOLUME_NOT_AVAILABLE unless the volume is UP or DEGRADED."""
    if row.state not in SERVING:
        raise not_available(row, "; it must be UP or DEGRADED")


def require_no_job(row: VolumeRow) -> None:
    if row.active_job_id:
        raise FailedPrecondition(
            f"volume {row.name} ({row.id}) is the target of unfinished job {row.active_job_id}",
            reason="JOB_IN_PROGRESS",
            metadata={"job_id": row.active_job_id, "volume_id": row.id},
        )


def require_settled(session: Session, row: VolumeRow) -> list[AllocationRow]:
    """The volume's allocations, when no change is in progress on any of them."""
    allocs = repo.allocations(session, row.id)
    busy = [a for a in allocs if a.job_id or a.state == AllocationState.PENDING]
    if busy:
        jobs = repo.job_ids(session, {a.job_id for a in busy if a.job_id})
        if jobs:
            job_id = sorted(jobs)[0]
            raise FailedPrecondition(
                f"volume {row.name} ({row.id}) has copies moved by job {job_id}",
                reason="JOB_IN_PROGRESS",
                metadata={"job_id": job_id, "volume_id": row.id},
            )
        raise not_available(row, " with a change in progress; retry")
    return allocs


def require_all_available(row: VolumeRow, allocs: Sequence[AllocationRow]) -> None:
    """VOLUME_NOT_AVAILABLE while a copy is unavailable (a size change or a
    revert must reach every copy)."""
    away = [a for a in allocs if a.state != AllocationState.ACTIVE]
    if away:
        raise not_available(
            row, f" with {len(away)} of its copies unavailable; retry once they are back"
        )


def require_detached(session: Session, row: VolumeRow) -> None:
    held = attach_repo.of_volume(session, row.id)
    if held:
        nodes = [a.node_id for a in held]
        raise FailedPrecondition(
            f"volume {row.name} ({row.id}) is attached to {len(nodes)} node(s); detach it first",
            reason="VOLUME_ATTACHED",
            metadata={"node_ids": ",".join(nodes), "volume_id": row.id},
        )


def driver_failed(what: str, exc: DriverError) -> Unavailable:
    """The error a call answers when the storage driver failed and the change
    was rolled back (or, for deletes, left to finish on retry)."""
    return Unavailable(
        f"{what}: the storage driver failed: {exc}",
        reason="DRIVER_ERROR",
        metadata={"retryable": str(exc.retryable).lower()},
    )


def best_effort(what: str, fn: Callable[..., None], *args: Any) -> bool:
    """Calls a driver undo step; logs and swallows its failure."""
    try:
        fn(*args)
    except DriverError as exc:
        log.warning("%s failed (left for the operator): %s", what, exc)
        return False
    return True
