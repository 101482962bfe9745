"""Drive records. A drive's ``used_bytes`` is never written here: only
osd.store.allocations changes it."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from osd.enums import AllocationState, DriveState, ObjectKind
from osd.store import events, keyset
from osd.store import nodes as node_repo
from osd.store import pools as pool_repo
from osd.store.models import AllocationRow, DriveRow, NodeRow, PoolDriveRow


def get(session: Session, drive_id: str) -> DriveRow | None:
    return session.get(DriveRow, drive_id)


def get_by_device(session: Session, node_id: str, device_path: str) -> DriveRow | None:
    return session.scalars(
        select(DriveRow).where(DriveRow.node_id == node_id, DriveRow.device_path == device_path)
    ).one_or_none()


def of_node(session: Session, node_id: str) -> list[DriveRow]:
    """A node's drives in device path order."""
    return list(
        session.scalars(
            select(DriveRow).where(DriveRow.node_id == node_id).order_by(DriveRow.device_path)
        )
    )


def of_cluster(session: Session, cluster_id: str) -> list[DriveRow]:
    """A cluster's drives, by node and device path."""
    return list(
        session.scalars(
            select(DriveRow)
            .where(DriveRow.cluster_id == cluster_id)
            .order_by(DriveRow.node_id, DriveRow.device_path)
        )
    )


def states_of_cluster(session: Session, cluster_id: str) -> list[tuple[str, str, int, str]]:
    """(id, node id, state, device path) of a cluster's drives, in
    :func:`of_cluster`'s order: what their health shows, without the rows."""
    rows = session.connection().execute(
        select(DriveRow.id, DriveRow.node_id, DriveRow.state, DriveRow.device_path)
        .where(DriveRow.cluster_id == cluster_id)
        .order_by(DriveRow.node_id, DriveRow.device_path)
    )
    return [(d, n, int(state), path) for d, n, state, path in rows.all()]


def by_ids(session: Session, drive_ids: Collection[str]) -> list[DriveRow]:
    """The drives of ``drive_ids`` that exist, in (node id, device path) order."""
    ids = list(drive_ids)
    if not ids:
        return []
    return list(
        session.scalars(
            select(DriveRow)
            .where(DriveRow.id.in_(ids))
            .order_by(DriveRow.node_id, DriveRow.device_path)
        )
    )


def add(session: Session, row: DriveRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, drive_id: str) -> None:
    """Deletes a drive (which must hold no allocations) and its pool memberships."""
    session.execute(delete(PoolDriveRow).where(PoolDriveRow.drive_id == drive_id))
    session.execute(delete(DriveRow).where(DriveRow.id == drive_id))
    events.deleted(session, ObjectKind.DRIVE, drive_id)


def left_adding(session: Session) -> list[DriveRow]:
    """Drives still ADDING whose add no unfinished job carries on: a crash left them."""
    rows = session.scalars(select(DriveRow).where(DriveRow.state == DriveState.ADDING)).all()
    return [r for r in rows if node_repo.unfinished_job_id(session, r.id, r.active_job_id) is None]


def scan(
    session: Session,
    *,
    node_id: str | None,
    cluster_id: str | None,
    pool_id: str | None,
    after: tuple[str, str] | None,
    batch: int,
) -> Iterator[DriveRow]:
    """Drives in (node id, device path) order after ``after``, ``batch`` rows at a time."""
    while True:
        stmt = select(DriveRow).order_by(DriveRow.node_id, DriveRow.device_path).limit(batch)
        if node_id is not None:
            stmt = stmt.where(DriveRow.node_id == node_id)
        if cluster_id is not None:
            stmt = stmt.where(DriveRow.cluster_id == cluster_id)
        if pool_id is not None:
            members = pool_repo.effective_drive_ids_select(pool_id).subquery()
            stmt = stmt.where(DriveRow.id.in_(select(members.c.drive_id)))
        if after is not None:
            n, p = after
            stmt = stmt.where(keyset.after(DriveRow.node_id, DriveRow.device_path, (n, p)))
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].node_id, rows[-1].device_path)


def allocation_counts(session: Session, drive_ids: Collection[str]) -> dict[str, int]:
    ids = list(drive_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(AllocationRow.drive_id, func.count())
        .where(AllocationRow.drive_id.in_(ids))
        .group_by(AllocationRow.drive_id)
    ).all()
    out = dict.fromkeys(ids, 0)
    out.update({d: int(n) for d, n in rows})
    return out


def allocations(session: Session, drive_id: str) -> list[tuple[AllocationRow, str]]:
    """Every allocation on a drive with its node's zone, ordered by volume
    (or snapshot) id, then index."""
    owner = func.coalesce(AllocationRow.volume_id, AllocationRow.snapshot_id)
    rows = session.execute(
        select(AllocationRow, NodeRow.zone)
        .join(NodeRow, NodeRow.id == AllocationRow.node_id)
        .where(AllocationRow.drive_id == drive_id)
        .order_by(owner, AllocationRow.index, AllocationRow.id)
    ).all()
    return [(a, zone) for a, zone in rows]


def unavailable_rows(session: Session, drive_id: str) -> list[AllocationRow]:
    """The UNAVAILABLE allocations on a drive, by id."""
    return list(
        session.scalars(
            select(AllocationRow)
            .where(
                AllocationRow.drive_id == drive_id,
                AllocationRow.state == AllocationState.UNAVAILABLE,
            )
            .order_by(AllocationRow.id)
        )
    )


def live_copies_elsewhere(session: Session, volume_id: str, drive_id: str) -> int:
    """How many ACTIVE allocations a volume has on drives other than ``drive_id``."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(AllocationRow)
            .where(
                AllocationRow.volume_id == volume_id,
                AllocationRow.drive_id != drive_id,
                AllocationRow.state == AllocationState.ACTIVE,
            )
        )
        or 0
    )


def allocation_rows(session: Session, drive_id: str) -> list[AllocationRow]:
    return list(
        session.scalars(
            select(AllocationRow)
            .where(AllocationRow.drive_id == drive_id)
            .order_by(AllocationRow.id)
        )
    )


def make_unavailable(session: Session, drive_id: str) -> tuple[set[str], set[str]]:
    """Turns every ACTIVE allocation on a drive UNAVAILABLE (a hard eject, a failure).

    PENDING and RELEASING allocations belong to a change in progress and are
    left to it. Returns the ids of the volumes and snapshots whose allocations
    changed.
    """
    return node_repo.set_allocation_states(
        session,
        (AllocationRow.drive_id == drive_id, AllocationRow.state == AllocationState.ACTIVE),
        AllocationState.UNAVAILABLE,
    )
