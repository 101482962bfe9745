"""Pool records and their members.

A pool's members are the drives added alone (``pool_drives``) and the data
drives of the nodes added whole (``pool_nodes``): a drive that a member node
gains later is a member too. :func:`effective_drive_ids` is that union.

Membership is not the right to take data: a member drive takes data only
while it is an ONLINE data drive of an ONLINE node (:func:`takes_data`), so
a node's EJECTED, FAILED, SOFT_EJECTING, REPLACING or ADDING drive, or any
drive of a node that is not ONLINE, stays a member but is no placement
target, and a pool's capacity (:func:`capacity`) counts only the member
drives that take data.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, select, union
from sqlalchemy.orm import Session

from osd.enums import DriveState, NodeState, ObjectKind
from osd.store import events, keyset
from osd.store.models import (
    AllocationRow,
    DriveRow,
    NodeRow,
    PoolDriveRow,
    PoolNodeRow,
    PoolRow,
    SnapshotRow,
    TemplateRow,
    VolumeRow,
)


def takes_data() -> ColumnElement[bool]:
    """The condition on a drive row, joined with its node's row, that the drive
    can take data: an ONLINE data (non-journal) drive of an ONLINE node. A drive
    in any other state (ADDING, SOFT_EJECTING, EJECTED, FAILED, REPLACING,
    OFFLINE) or of
    a node that is OFFLINE, in MAINTENANCE or DRAINING takes none."""
    return and_(
        DriveRow.state == DriveState.ONLINE,
        DriveRow.journal.is_(False),
        NodeRow.state == NodeState.ONLINE,
    )


def effective_drive_ids_select(pool_id: str) -> Select[tuple[str]]:
    """The SELECT of :func:`effective_drive_ids`, to use as a subquery."""
    alone = (
        select(PoolDriveRow.drive_id.label("drive_id"))
        .join(DriveRow, DriveRow.id == PoolDriveRow.drive_id)
        .where(PoolDriveRow.pool_id == pool_id, DriveRow.state != DriveState.EJECTED)
    )
    through_nodes = (
        select(DriveRow.id.label("drive_id"))
        .join(PoolNodeRow, PoolNodeRow.node_id == DriveRow.node_id)
        .where(
            PoolNodeRow.pool_id == pool_id,
            DriveRow.journal.is_(False),
            DriveRow.state != DriveState.EJECTED,
        )
    )
    u = union(alone, through_nodes).subquery()
    return select(u.c.drive_id)


def effective_members_select(cluster_id: Any = None) -> Select[tuple[str, str]]:
    """(pool id, drive id) for every member drive of every pool (of the
    pools of ``cluster_id``, a value or a bound parameter, when not None):
    :func:`effective_drive_ids_select` for all those pools at once, each
    pair once, to use as a subquery."""
    alone = (
        select(PoolDriveRow.pool_id.label("pool_id"), PoolDriveRow.drive_id.label("drive_id"))
        .join(DriveRow, DriveRow.id == PoolDriveRow.drive_id)
        .where(DriveRow.state != DriveState.EJECTED)
    )
    through_nodes = (
        select(PoolNodeRow.pool_id.label("pool_id"), DriveRow.id.label("drive_id"))
        .join(PoolNodeRow, PoolNodeRow.node_id == DriveRow.node_id)
        .where(DriveRow.journal.is_(False), DriveRow.state != DriveState.EJECTED)
    )
    if cluster_id is not None:
        alone = alone.join(PoolRow, PoolRow.id == PoolDriveRow.pool_id).where(
            PoolRow.cluster_id == cluster_id
        )
        through_nodes = through_nodes.join(PoolRow, PoolRow.id == PoolNodeRow.pool_id).where(
            PoolRow.cluster_id == cluster_id
        )
    u = union(alone, through_nodes).subquery()
    return select(u.c.pool_id, u.c.drive_id)


def effective_drive_ids(session: Session, pool_id: str) -> set[str]:
    """The ids of every member drive of a pool, whatever the drive's state.

    Members are the drives added alone (``pool_drives``) together with every
    data (non-journal) drive of the nodes that are whole members
    (``pool_nodes``), including drives those nodes gained after they joined;
    either way not a drive EJECTED: an ejected drive is out of service, and a
    drive replace leaves its source EJECTED and out of its pools. Other states are
    not looked at: membership makes no drive a placement target, which must
    also satisfy :func:`takes_data`. An unknown pool has no members.
    """
    return set(session.scalars(effective_drive_ids_select(pool_id)))


def of_cluster(session: Session, cluster_id: str) -> list[PoolRow]:
    """A cluster's pools, by name."""
    return list(
        session.scalars(
            select(PoolRow).where(PoolRow.cluster_id == cluster_id).order_by(PoolRow.name)
        )
    )


def auto_balanced(session: Session) -> list[PoolRow]:
    """The pools whose auto_balance is on, by id."""
    return list(
        session.scalars(select(PoolRow).where(PoolRow.auto_balance.is_(True)).order_by(PoolRow.id))
    )


def get(session: Session, pool_id: str) -> PoolRow | None:
    return session.get(PoolRow, pool_id)


def get_by_name(session: Session, cluster_id: str, name: str) -> PoolRow | None:
    return session.scalars(
        select(PoolRow).where(PoolRow.cluster_id == cluster_id, PoolRow.name == name)
    ).one_or_none()


def add(session: Session, row: PoolRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, pool_id: str) -> None:
    session.execute(delete(PoolDriveRow).where(PoolDriveRow.pool_id == pool_id))
    session.execute(delete(PoolNodeRow).where(PoolNodeRow.pool_id == pool_id))
    session.execute(delete(PoolRow).where(PoolRow.id == pool_id))
    events.deleted(session, ObjectKind.POOL, pool_id)


def scan(
    session: Session, cluster_id: str | None, after: tuple[str, str] | None, batch: int
) -> Iterator[PoolRow]:
    """Pools in (cluster id, name) order after ``after``, ``batch`` rows at a time."""
    while True:
        stmt = select(PoolRow).order_by(PoolRow.cluster_id, PoolRow.name).limit(batch)
        if cluster_id is not None:
            stmt = stmt.where(PoolRow.cluster_id == cluster_id)
        if after is not None:
            c, n = after
            stmt = stmt.where(keyset.after(PoolRow.cluster_id, PoolRow.name, (c, n)))
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].cluster_id, rows[-1].name)


# -- members -------------------------------------------------------------------


def member_drive_ids(session: Session, pool_id: str) -> set[str]:
    """Drives that are members on their own (not through a whole node)."""
    return set(
        session.scalars(select(PoolDriveRow.drive_id).where(PoolDriveRow.pool_id == pool_id))
    )


def member_node_ids(session: Session, pool_id: str) -> set[str]:
    """Nodes that are whole members."""
    return set(session.scalars(select(PoolNodeRow.node_id).where(PoolNodeRow.pool_id == pool_id)))


def add_drives(session: Session, pool_id: str, drive_ids: Collection[str]) -> None:
    have = member_drive_ids(session, pool_id)
    session.add_all(PoolDriveRow(pool_id=pool_id, drive_id=d) for d in drive_ids if d not in have)
    session.flush()


def add_nodes(session: Session, pool_id: str, node_ids: Collection[str]) -> None:
    have = member_node_ids(session, pool_id)
    session.add_all(PoolNodeRow(pool_id=pool_id, node_id=n) for n in node_ids if n not in have)
    session.flush()


def remove_drives(session: Session, pool_id: str, drive_ids: Collection[str]) -> None:
    if drive_ids:
        session.execute(
            delete(PoolDriveRow).where(
                PoolDriveRow.pool_id == pool_id, PoolDriveRow.drive_id.in_(list(drive_ids))
            )
        )


def remove_nodes(session: Session, pool_id: str, node_ids: Collection[str]) -> None:
    if node_ids:
        session.execute(
            delete(PoolNodeRow).where(
                PoolNodeRow.pool_id == pool_id, PoolNodeRow.node_id.in_(list(node_ids))
            )
        )


def pools_of_drives(session: Session, drive_ids: Collection[str]) -> dict[str, list[str]]:
    """The pools each drive is a member of (alone or through its node, as
    :func:`effective_drive_ids` counts), sorted."""
    ids = list(drive_ids)
    out: dict[str, set[str]] = {d: set() for d in ids}
    if not ids:
        return {}
    for drive_id, pool_id in session.execute(
        select(PoolDriveRow.drive_id, PoolDriveRow.pool_id)
        .join(DriveRow, DriveRow.id == PoolDriveRow.drive_id)
        .where(PoolDriveRow.drive_id.in_(ids), DriveRow.state != DriveState.EJECTED)
    ):
        out[drive_id].add(pool_id)
    for drive_id, pool_id in session.execute(
        select(DriveRow.id, PoolNodeRow.pool_id)
        .join(PoolNodeRow, PoolNodeRow.node_id == DriveRow.node_id)
        .where(
            DriveRow.id.in_(ids),
            DriveRow.journal.is_(False),
            DriveRow.state != DriveState.EJECTED,
        )
    ):
        out[drive_id].add(pool_id)
    return {d: sorted(p) for d, p in out.items()}


def drop_drive(session: Session, drive_id: str) -> None:
    """Removes a drive from every pool it is a member of on its own."""
    session.execute(delete(PoolDriveRow).where(PoolDriveRow.drive_id == drive_id))


def drop_node(session: Session, node_id: str) -> None:
    """Removes a node from every pool it is a whole member of."""
    session.execute(delete(PoolNodeRow).where(PoolNodeRow.node_id == node_id))


# -- usage ---------------------------------------------------------------------


def capacity(session: Session, pool_id: str) -> tuple[int, int]:
    """Total and used bytes over the pool's member drives that take data
    (:func:`takes_data`): a member that is EJECTED, say, adds nothing."""
    members = effective_drive_ids_select(pool_id).subquery()
    total, used = session.execute(
        select(
            func.coalesce(func.sum(DriveRow.total_bytes), 0),
            func.coalesce(func.sum(DriveRow.used_bytes), 0),
        )
        .join(NodeRow, NodeRow.id == DriveRow.node_id)
        .where(DriveRow.id.in_(select(members.c.drive_id)), takes_data())
    ).one()
    return int(total), int(used)


def volume_count(session: Session, pool_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(VolumeRow)
            .where((VolumeRow.pool_id == pool_id) | (VolumeRow.tail_pool_id == pool_id))
        )
        or 0
    )


def snapshot_count(session: Session, pool_id: str) -> int:
    """Snapshots of volumes placed in the pool (a snapshot keeps its volume's placement)."""
    placed = select(VolumeRow.id).where(
        (VolumeRow.pool_id == pool_id) | (VolumeRow.tail_pool_id == pool_id)
    )
    return (
        session.scalar(
            select(func.count()).select_from(SnapshotRow).where(SnapshotRow.volume_id.in_(placed))
        )
        or 0
    )


def template_ids_using(session: Session, cluster_id: str, pool_id: str) -> list[str]:
    """Templates of the cluster whose placement names the pool."""
    rows = session.execute(
        select(TemplateRow.id, TemplateRow.placement).where(TemplateRow.cluster_id == cluster_id)
    ).all()
    out: list[str] = []
    for template_id, placement in rows:
        placement = placement or {}
        if pool_id in (placement.get("pool_id"), placement.get("tail_pool_id")):
            out.append(template_id)
    return sorted(out)


def allocations_placed_through(
    session: Session, pool_id: str, drive_ids: Collection[str]
) -> dict[str, int]:
    """Per drive of ``drive_ids``: the allocations of volumes (and their snapshots)
    placed in the pool."""
    ids = list(drive_ids)
    if not ids:
        return {}
    placed = select(VolumeRow.id).where(
        (VolumeRow.pool_id == pool_id) | (VolumeRow.tail_pool_id == pool_id)
    )
    placed_snapshots = select(SnapshotRow.id).where(SnapshotRow.volume_id.in_(placed))
    rows = session.execute(
        select(AllocationRow.drive_id, func.count())
        .where(
            AllocationRow.drive_id.in_(ids),
            AllocationRow.volume_id.in_(placed) | AllocationRow.snapshot_id.in_(placed_snapshots),
        )
        .group_by(AllocationRow.drive_id)
    ).all()
    return {d: int(n) for d, n in rows}
