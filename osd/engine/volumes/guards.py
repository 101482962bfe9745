"""Look-ups and refusals the volume, snapshot and attachment operations share.
(How a storage driver failure is answered is osd.engine.shared.phased's.)"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session

from osd.engine.shared.rows import require
from osd.enums import (
    AllocationState,
    VolumeState,
)
from osd.errors import FailedPrecondition
from osd.store import attachments as attach_repo
from osd.store import volumes as repo
from osd.store.models import AllocationRow, SnapshotRow, VolumeRow

log = logging.getLogger("osd.engine.volumes")


# States in which a volume serves I/O (attach, snapshot, resize).
SERVING = (VolumeState.UP, VolumeState.DEGRADED)


def get_volume(session: Session, volume_id: str, field: str = "volume_id") -> VolumeRow:
    return require(session, VolumeRow, volume_id, field)


def get_snapshot(session: Session, snapshot_id: str, field: str = "snapshot_id") -> SnapshotRow:
    return require(session, SnapshotRow, snapshot_id, field)


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
