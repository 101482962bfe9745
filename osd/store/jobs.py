"""Job records, the marks jobs leave on the objects they act on, and the
allocation queries the job kinds share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from osd.enums import AllocationState, JobKind, JobState
from osd.store import keyset
from osd.store.models import (
    AllocationRow,
    DriveRow,
    JobRow,
    NodeRow,
    PoolRow,
    VolumeRow,
)

# Jobs that hold a slot of the runner.
SLOT_STATES = (JobState.PENDING, JobState.RUNNING)
# Jobs that still hold their target.
UNFINISHED_STATES = tuple(state for state in JobState if not state.final)
FINAL_STATES = tuple(state for state in JobState if state.final)


def get(session: Session, job_id: str, *, for_update: bool = False) -> JobRow | None:
    stmt = select(JobRow).where(JobRow.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def add(session: Session, row: JobRow) -> None:
    session.add(row)
    session.flush()


def count_active(session: Session) -> int:
    """Jobs PENDING or RUNNING in the whole store (a PAUSED job holds no slot)."""
    return (
        session.scalar(
            select(func.count()).select_from(JobRow).where(JobRow.state.in_(SLOT_STATES))
        )
        or 0
    )


def scan(
    session: Session,
    *,
    after: tuple[datetime, str] | None,
    batch: int,
    kinds: Sequence[int] = (),
    states: Sequence[int] = (),
    target_kind: int = 0,
    target_id: str = "",
    cluster_id: str = "",
) -> Iterator[JobRow]:
    """Jobs newest first (create time, then id, descending), ``batch`` rows at a time.

    ``kinds``, ``states`` and ``target_kind`` are JobKind, JobState and ObjectKind
    numbers (the columns refuse any other); empty or 0 does not filter.
    """
    base = select(JobRow)
    if kinds:
        base = base.where(JobRow.kind.in_(kinds))
    if states:
        base = base.where(JobRow.state.in_(states))
    if target_kind:
        base = base.where(JobRow.target_kind == target_kind)
    if target_id:
        base = base.where(JobRow.target_id == target_id)
    if cluster_id:
        base = base.where(JobRow.cluster_id == cluster_id)
    base = base.order_by(JobRow.create_time.desc(), JobRow.id.desc()).limit(batch)
    while True:
        stmt = base
        if after is not None:
            t, i = after
            stmt = stmt.where(keyset.before(JobRow.create_time, JobRow.id, (t, i)))
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].create_time, rows[-1].id)


def latest(session: Session, kind: JobKind, target_id: str) -> JobRow | None:
    """The newest job of ``kind`` whose target is ``target_id``."""
    return session.scalars(
        select(JobRow)
        .where(JobRow.kind == kind, JobRow.target_id == target_id)
        .order_by(JobRow.create_time.desc(), JobRow.id.desc())
        .limit(1)
    ).first()


def unfinished(session: Session, kind: JobKind, target_id: str) -> JobRow | None:
    """The unfinished job of ``kind`` whose target is ``target_id``, if any."""
    return session.scalars(
        select(JobRow)
        .where(
            JobRow.kind == kind,
            JobRow.target_id == target_id,
            JobRow.state.in_(UNFINISHED_STATES),
        )
        .limit(1)
    ).first()


def newest_of_kind(session: Session, kind: JobKind, cluster_id: str) -> Iterator[JobRow]:
    """Jobs of ``kind`` in a cluster, newest first."""
    return iter(
        session.scalars(
            select(JobRow)
            .where(JobRow.kind == kind, JobRow.cluster_id == cluster_id)
            .order_by(JobRow.create_time.desc(), JobRow.id.desc())
        )
    )


def next_pending(session: Session) -> JobRow | None:
    """The oldest PENDING job nobody asked to cancel."""
    return session.scalars(
        select(JobRow)
        .where(JobRow.state == JobState.PENDING, JobRow.cancel_requested.is_(False))
        .order_by(JobRow.create_time, JobRow.id)
        .limit(1)
        .with_for_update()
    ).first()


def in_state(session: Session, states: Sequence[JobState]) -> list[JobRow]:
    return list(
        session.scalars(
            select(JobRow).where(JobRow.state.in_(states)).order_by(JobRow.create_time, JobRow.id)
        )
    )


def heartbeat(session: Session, job_ids: Sequence[str], owner: str, now: datetime) -> None:
    """Stamps the RUNNING jobs ``owner`` runs as alive."""
    if not job_ids:
        return
    session.execute(
        update(JobRow)
        .where(JobRow.id.in_(job_ids), JobRow.owner == owner, JobRow.state == JobState.RUNNING)
        .values(heartbeat_time=now)
    )


def pending_allocations(session: Session, job_id: str) -> list[AllocationRow]:
    """The PENDING allocations a job reserved and has not settled yet."""
    return list(
        session.scalars(
            select(AllocationRow)
            .where(AllocationRow.job_id == job_id, AllocationRow.state == AllocationState.PENDING)
            .order_by(AllocationRow.id)
        )
    )


def clear_marks(session: Session, job_id: str) -> None:
    """Clears ``active_job_id`` wherever it names the job."""
    for model in (NodeRow, DriveRow, PoolRow, VolumeRow):
        session.execute(
            update(model).where(model.active_job_id == job_id).values(active_job_id=None)
        )


# -- shared reads for the job kinds -------------------------------------------------


def allocations_on_drives(session: Session, drive_ids: Sequence[str]) -> list[AllocationRow]:
    if not drive_ids:
        return []
    return list(
        session.scalars(
            select(AllocationRow)
            .where(AllocationRow.drive_id.in_(drive_ids))
            .order_by(AllocationRow.id)
        )
    )


def allocations_of_owner(
    session: Session, *, volume_id: str | None, snapshot_id: str | None
) -> list[AllocationRow]:
    """Every allocation of one volume or one snapshot."""
    if volume_id is not None:
        cond = AllocationRow.volume_id == volume_id
    else:
        cond = AllocationRow.snapshot_id == snapshot_id
    return list(session.scalars(select(AllocationRow).where(cond).order_by(AllocationRow.index)))


def allocations_of_volumes(session: Session, volume_ids: Sequence[str]) -> list[AllocationRow]:
    if not volume_ids:
        return []
    return list(
        session.scalars(
            select(AllocationRow)
            .where(AllocationRow.volume_id.in_(volume_ids))
            .order_by(AllocationRow.volume_id, AllocationRow.index, AllocationRow.id)
        )
    )


def volumes_of_pool(session: Session, pool_id: str) -> list[VolumeRow]:
    """Volumes whose placement names the pool, as pool_id or tail_pool_id."""
    return list(
        session.scalars(
            select(VolumeRow)
            .where(or_(VolumeRow.pool_id == pool_id, VolumeRow.tail_pool_id == pool_id))
            .order_by(VolumeRow.id)
        )
    )


def cluster_drives(session: Session, cluster_id: str) -> list[DriveRow]:
    return list(
        session.scalars(
            select(DriveRow).where(DriveRow.cluster_id == cluster_id).order_by(DriveRow.id)
        )
    )


def volumes_on_node(session: Session, node_id: str) -> list[VolumeRow]:
    """Volumes with an allocation on the node."""
    ids = select(AllocationRow.volume_id).where(
        AllocationRow.node_id == node_id, AllocationRow.volume_id.is_not(None)
    )
    return list(
        session.scalars(select(VolumeRow).where(VolumeRow.id.in_(ids)).order_by(VolumeRow.id))
    )


def pending_on_node(session: Session, node_id: str) -> list[AllocationRow]:
    """PENDING allocations on a node that a job reserved."""
    return list(
        session.scalars(
            select(AllocationRow).where(
                AllocationRow.node_id == node_id,
                AllocationRow.state == AllocationState.PENDING,
                AllocationRow.job_id.is_not(None),
            )
        )
    )


def prune_finished(session: Session, before: datetime) -> int:
    """Deletes the final jobs (DONE, FAILED, CANCELLED) that ended before
    ``before``; returns how many. Unfinished jobs are never touched."""
    result = session.execute(
        delete(JobRow).where(JobRow.state.in_(FINAL_STATES), JobRow.end_time < before)
    )
    return int(getattr(result, "rowcount", 0) or 0)
