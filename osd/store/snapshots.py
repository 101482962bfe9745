"""Snapshot records.

While its volume exists a snapshot shares the volume's allocations; once the
volume is deleted or frozen, the newest remaining snapshot of that volume
holds the allocations of its own (see osd.engine.snapshots).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, true, update
from sqlalchemy.orm import Session

from osd.enums import ObjectKind, SnapshotState
from osd.store import events, grants, keyset
from osd.store.models import AllocationRow, DatastoreVersionRow, SnapshotRow, VolumeRow


def get(session: Session, snapshot_id: str) -> SnapshotRow | None:
    return session.get(SnapshotRow, snapshot_id)


def get_by_name(session: Session, cluster_id: str, name: str) -> SnapshotRow | None:
    return session.scalars(
        select(SnapshotRow).where(SnapshotRow.cluster_id == cluster_id, SnapshotRow.name == name)
    ).one_or_none()


def add(session: Session, row: SnapshotRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, snapshot_id: str) -> None:
    """Deletes the snapshot row; its allocations must be gone."""
    session.execute(delete(SnapshotRow).where(SnapshotRow.id == snapshot_id))
    events.deleted(session, ObjectKind.SNAPSHOT, snapshot_id)


def of_volume(session: Session, volume_id: str) -> list[SnapshotRow]:
    """The snapshots taken from a volume, newest first."""
    return list(
        session.scalars(
            select(SnapshotRow)
            .where(SnapshotRow.volume_id == volume_id)
            .order_by(SnapshotRow.create_time.desc(), SnapshotRow.id.desc())
        )
    )


def by_states(session: Session, states: Collection[SnapshotState]) -> list[SnapshotRow]:
    return list(
        session.scalars(
            select(SnapshotRow).where(SnapshotRow.state.in_(list(states))).order_by(SnapshotRow.id)
        )
    )


def allocations(session: Session, snapshot_id: str) -> list[AllocationRow]:
    """The allocations the snapshot holds of its own, by index."""
    return list(
        session.scalars(
            select(AllocationRow)
            .where(AllocationRow.snapshot_id == snapshot_id)
            .order_by(AllocationRow.index, AllocationRow.id)
        )
    )


@dataclass(frozen=True)
class SnapshotFilter:
    volume_id: str = ""
    cluster_id: str = ""
    images_only: bool = False
    parent_snapshot_id: str = ""
    # Only snapshots this caller (subject, groups) may read; None for all.
    readable_by: tuple[str, frozenset[str]] | None = None


def scan(
    session: Session, where: SnapshotFilter, after: tuple[str, str] | None, batch: int
) -> Iterator[SnapshotRow]:
    """Snapshots in (cluster id, name) order after ``after``, ``batch`` rows at a time."""
    base = select(SnapshotRow).order_by(SnapshotRow.cluster_id, SnapshotRow.name).limit(batch)
    if where.cluster_id:
        base = base.where(SnapshotRow.cluster_id == where.cluster_id)
    if where.volume_id:
        base = base.where(SnapshotRow.volume_id == where.volume_id)
    if where.images_only:
        # "= true", not "IS true": SQLite takes the partial index
        # ix_snapshots_images only for the words of its own condition.
        base = base.where(SnapshotRow.image == true())
    if where.parent_snapshot_id:
        base = base.where(SnapshotRow.parent_snapshot_id == where.parent_snapshot_id)
    if where.readable_by is not None:
        base = base.where(grants.readable_snapshots(*where.readable_by))
    while True:
        stmt = base
        if after is not None:
            c, n = after
            stmt = stmt.where(keyset.after(SnapshotRow.cluster_id, SnapshotRow.name, (c, n)))
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].cluster_id, rows[-1].name)


def relink_children(session: Session, snapshot_id: str, parent_id: str | None) -> None:
    """Gives the snapshots whose parent is ``snapshot_id`` its parent instead:
    a deleted snapshot's children stay in its chain."""
    session.execute(
        update(SnapshotRow)
        .where(SnapshotRow.parent_snapshot_id == snapshot_id)
        .values(parent_snapshot_id=parent_id)
        .execution_options(synchronize_session="fetch")
    )


def own_bytes(session: Session, snapshot_ids: Sequence[str]) -> dict[str, int]:
    """The bytes of the allocations each snapshot holds of its own."""
    if not snapshot_ids:
        return {}
    rows = session.execute(
        select(AllocationRow.snapshot_id, func.sum(AllocationRow.bytes))
        .where(AllocationRow.snapshot_id.in_(list(snapshot_ids)))
        .group_by(AllocationRow.snapshot_id)
    ).all()
    return {sid: int(n) for sid, n in rows if sid is not None}


def live_counts(session: Session, volume_ids: Collection[str]) -> dict[str, int]:
    """How many snapshots (not being deleted) each volume id has."""
    if not volume_ids:
        return {}
    rows = session.execute(
        select(SnapshotRow.volume_id, func.count())
        .where(
            SnapshotRow.volume_id.in_(list(volume_ids)), SnapshotRow.state != SnapshotState.DELETING
        )
        .group_by(SnapshotRow.volume_id)
    ).all()
    return {vid: int(n) for vid, n in rows}


def existing_volume_ids(session: Session, volume_ids: Collection[str]) -> set[str]:
    if not volume_ids:
        return set()
    return set(session.scalars(select(VolumeRow.id).where(VolumeRow.id.in_(list(volume_ids)))))


def clone_counts(session: Session, snapshot_ids: Sequence[str]) -> dict[str, int]:
    """How many volumes depend on each snapshot (clones, datastore provisions)."""
    if not snapshot_ids:
        return {}
    rows = session.execute(
        select(VolumeRow.parent_snapshot_id, func.count())
        .where(VolumeRow.parent_snapshot_id.in_(list(snapshot_ids)))
        .group_by(VolumeRow.parent_snapshot_id)
    ).all()
    return {sid: int(n) for sid, n in rows if sid is not None}


def clone_ids(session: Session, snapshot_id: str, limit: int = 10) -> list[str]:
    return list(
        session.scalars(
            select(VolumeRow.id)
            .where(VolumeRow.parent_snapshot_id == snapshot_id)
            .order_by(VolumeRow.id)
            .limit(limit)
        )
    )


def image_use_counts(session: Session, snapshot_ids: Sequence[str]) -> dict[str, int]:
    """How many datastore versions use each snapshot as their image."""
    if not snapshot_ids:
        return {}
    rows = session.execute(
        select(DatastoreVersionRow.image_snapshot_id, func.count())
        .where(DatastoreVersionRow.image_snapshot_id.in_(list(snapshot_ids)))
        .group_by(DatastoreVersionRow.image_snapshot_id)
    ).all()
    return {sid: int(n) for sid, n in rows}
