"""Volume records, their allocations as seen from a volume, and placement inputs.

Allocation rows themselves change only through :mod:`osd.store.allocations`;
this module reads them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Select,
    String,
    bindparam,
    case,
    delete,
    exists,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from osd.enums import AllocationState, DriveState, JobKind, NodeState, ObjectKind, VolumeState
from osd.store import events, grants, keyset, pools
from osd.store import nodes as node_repo
from osd.store.jobs import UNFINISHED_STATES
from osd.store.models import (
    MAYBE_DEGRADED,
    AllocationRow,
    AttachmentRow,
    ClusterRow,
    DriveRow,
    JobRow,
    NodeRow,
    PoolRow,
    SnapshotCountRow,
    SnapshotRow,
    VolumeLabelRow,
    VolumeRow,
)


def get(session: Session, volume_id: str) -> VolumeRow | None:
    return session.get(VolumeRow, volume_id)


def get_by_name(session: Session, cluster_id: str, name: str) -> VolumeRow | None:
    return session.scalars(
        select(VolumeRow).where(VolumeRow.cluster_id == cluster_id, VolumeRow.name == name)
    ).one_or_none()


def add(session: Session, row: VolumeRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, volume_id: str) -> None:
    """Deletes the volume row; its allocations and attachments must be gone."""
    session.execute(delete(VolumeRow).where(VolumeRow.id == volume_id))
    events.deleted(session, ObjectKind.VOLUME, volume_id)


def by_states(session: Session, states: Collection[VolumeState]) -> list[VolumeRow]:
    return list(
        session.scalars(
            select(VolumeRow).where(VolumeRow.state.in_(list(states))).order_by(VolumeRow.id)
        )
    )


@dataclass(frozen=True)
class VolumeFilter:
    """The filters of a volume list that the database applies."""

    cluster_id: str = ""
    pool_id: str = ""
    node_id: str = ""
    states: tuple[int, ...] = ()
    template_id: str = ""
    datastore_version_id: str = ""
    parent_snapshot_id: str = ""
    # Only volumes that may lack a live copy: DEGRADED, DOWN or DATA_LOST, or
    # degraded since a time (the engine checks each copy of these).
    maybe_degraded: bool = False
    # Only volumes this caller (subject, groups) may read; None for all.
    readable_by: tuple[str, frozenset[str]] | None = None
    # Only volumes with each of these (key, value) labels.
    labels: tuple[tuple[str, str], ...] = ()
    # Only volumes an unfinished VOLUME_REPAIR job works on.
    repairing: bool = False


def _count_columns() -> tuple[Any, Any]:
    """Per volume row: attachments and snapshots (correlated)."""
    attached = (
        select(func.count())
        .select_from(AttachmentRow)
        .where(AttachmentRow.volume_id == VolumeRow.id)
        .scalar_subquery()
    )
    snapshots = (
        select(func.count())
        .select_from(SnapshotRow)
        .where(SnapshotRow.volume_id == VolumeRow.id)
        .scalar_subquery()
    )
    return attached, snapshots


def scan(
    session: Session, where: VolumeFilter, after: tuple[str, str] | None, batch: int
) -> Iterator[VolumeRow]:
    """Volumes in (cluster id, name) order after ``after``, ``batch`` rows at a
    time. (Their usage is read for the page alone, by :func:`copy_views` and
    :func:`attachment_and_snapshot_counts`: rows the engine's own filters
    turn down cost no counting.)"""
    return _scan(where, after, batch, select(VolumeRow), session.scalars)


@dataclass(frozen=True)
class VolumeKey:
    """A volume's id and place in the list, all a filter on its name needs."""

    id: str
    cluster_id: str
    name: str


def scan_keys(
    session: Session, where: VolumeFilter, after: tuple[str, str] | None, batch: int
) -> Iterator[VolumeKey]:
    """What :func:`scan` gives, as keys alone: for a filter the engine
    applies to names, which then loads the rows it keeps (:func:`rows_of`)
    rather than every row it looks at."""
    keys = select(VolumeRow.id, VolumeRow.cluster_id, VolumeRow.name)

    def run(stmt: Any) -> list[VolumeKey]:
        return [VolumeKey(*row) for row in session.connection().execute(stmt).all()]

    return _scan(where, after, batch, keys, run)


def rows_of(session: Session, keys: Sequence[VolumeKey]) -> list[VolumeRow]:
    """The rows of ``keys``, in their order (those gone since, left out)."""
    if not keys:
        return []
    found = {
        r.id: r
        for r in session.scalars(select(VolumeRow).where(VolumeRow.id.in_([k.id for k in keys])))
    }
    return [found[k.id] for k in keys if k.id in found]


def _scan(
    where: VolumeFilter,
    after: tuple[str, str] | None,
    batch: int,
    base: Any,
    run: Callable[[Any], Iterable[Any]],
) -> Iterator[Any]:
    # The list's order, (cluster id, name): the volume's own columns, or with
    # a label asked for, the copies its label rows hold, so that the walk is
    # down that label's index and reads only the volumes that carry it.
    cluster: Any = VolumeRow.cluster_id
    name: Any = VolumeRow.name
    labels = list(where.labels)
    if labels:
        key, value = labels.pop(0)
        label = VolumeLabelRow
        cluster, name = label.cluster_id, label.name
        base = base.join(label, label.volume_id == VolumeRow.id).where(
            label.key == key, label.value == value
        )
    base = base.order_by(cluster, name).limit(batch)
    if where.repairing:
        # The volumes under repair are the few ids the unfinished jobs name,
        # read by primary key and sorted: the cluster is asked of the jobs
        # (a repair's cluster is its volume's), as a cluster on the volumes
        # would have SQLite walk the whole cluster for them.
        repairs = select(JobRow.target_id).where(
            JobRow.kind == JobKind.VOLUME_REPAIR, JobRow.state.in_(UNFINISHED_STATES)
        )
        if where.cluster_id:
            repairs = repairs.where(JobRow.cluster_id == where.cluster_id)
        base = base.where(VolumeRow.id.in_(repairs))
    elif where.cluster_id:
        base = base.where(cluster == where.cluster_id)
    if where.pool_id:
        base = base.where(
            (VolumeRow.pool_id == where.pool_id) | (VolumeRow.tail_pool_id == where.pool_id)
        )
    if where.node_id:
        # Correlated, row by row in page order: an IN read every volume id on the node.
        base = base.where(
            exists().where(
                AllocationRow.volume_id == VolumeRow.id, AllocationRow.node_id == where.node_id
            )
        )
    if where.states:
        base = base.where(VolumeRow.state.in_(list(where.states)))
    if where.template_id:
        base = base.where(VolumeRow.template_id == where.template_id)
    if where.parent_snapshot_id:
        base = base.where(VolumeRow.parent_snapshot_id == where.parent_snapshot_id)
    if where.datastore_version_id:
        base = base.where(VolumeRow.datastore_version_id == where.datastore_version_id)
    if where.maybe_degraded:
        # In the words of the partial index ix_volumes_maybe_degraded, so that
        # the walk is down it: literals, not parameters.
        base = base.where(text(f"({MAYBE_DEGRADED})"))
    if where.readable_by is not None:
        base = base.where(grants.readable_volumes(*where.readable_by))
    for key, value in labels:
        # Any label past the first, in the database too (json_extract, ->>):
        # a row turned down there is never loaded, its labels never decoded.
        base = base.where(VolumeRow.labels[key].as_string() == value)
    while True:
        stmt = base
        if after is not None:
            c, n = after
            if where.cluster_id:
                stmt = stmt.where(name > n)
            else:
                stmt = stmt.where(keyset.after(cluster, name, (c, n)))
        rows = list(run(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].cluster_id, rows[-1].name)


def attachment_and_snapshot_counts(
    session: Session, volume_ids: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """Per volume: (attachments, snapshots), in one query. (Its allocated
    bytes are its copy views', :func:`copy_views`.)"""
    if not volume_ids:
        return {}
    attached, snapshots = _count_columns()
    # On the connection: a select of columns needs none of the ORM's work.
    rows = session.connection().execute(
        select(VolumeRow.id, attached, snapshots).where(VolumeRow.id.in_(list(volume_ids)))
    )
    return {vid: (int(n), int(k)) for vid, n, k in rows}


# -- allocations ---------------------------------------------------------------


def allocations(session: Session, volume_id: str) -> list[AllocationRow]:
    """The volume's allocations by index."""
    return list(
        session.scalars(
            select(AllocationRow)
            .where(AllocationRow.volume_id == volume_id)
            .order_by(AllocationRow.index, AllocationRow.id)
        )
    )


def allocations_with_zone(
    session: Session, *, volume_id: str | None = None, snapshot_id: str | None = None
) -> list[tuple[AllocationRow, str]]:
    """The allocations of a volume or a snapshot by index, each with its node's zone."""
    stmt = select(AllocationRow, NodeRow.zone).join(NodeRow, NodeRow.id == AllocationRow.node_id)
    if volume_id is not None:
        stmt = stmt.where(AllocationRow.volume_id == volume_id)
    else:
        stmt = stmt.where(AllocationRow.snapshot_id == snapshot_id)
    rows = session.execute(stmt.order_by(AllocationRow.index, AllocationRow.id)).all()
    return [(a, zone) for a, zone in rows]


def job_ids(session: Session, ids: Collection[str]) -> set[str]:
    """Which of ``ids`` are jobs (as opposed to the operation ids of a change)."""
    if not ids:
        return set()
    return set(session.scalars(select(JobRow.id).where(JobRow.id.in_(list(ids)))))


def pending_allocations(session: Session) -> list[AllocationRow]:
    """PENDING allocations of volumes, whatever reserved them."""
    return list(
        session.scalars(
            select(AllocationRow)
            .where(
                AllocationRow.state == AllocationState.PENDING, AllocationRow.volume_id.is_not(None)
            )
            .order_by(AllocationRow.volume_id, AllocationRow.index)
        )
    )


# -- placement inputs ----------------------------------------------------------


@dataclass(frozen=True)
class DriveView:
    """A drive as placement sees it."""

    drive_id: str
    node_id: str
    zone: str
    free_bytes: int
    labels: dict[str, str]
    node_labels: dict[str, str]
    usable: bool


def _drive_select() -> Any:
    return select(
        DriveRow.id,
        DriveRow.node_id,
        NodeRow.zone,
        DriveRow.total_bytes - DriveRow.used_bytes,
        DriveRow.labels,
        NodeRow.labels,
        (DriveRow.state == DriveState.ONLINE) & (NodeRow.state == NodeState.ONLINE),
        NodeRow.name,
    ).join(NodeRow, NodeRow.id == DriveRow.node_id)


def _view(row: Any) -> DriveView:
    drive_id, node_id, zone, free, labels, node_labels, usable, node_name = row
    return DriveView(
        drive_id,
        node_id,
        zone,
        free,
        labels,
        node_repo.placement_labels(node_labels, zone, node_name),
        usable,
    )


def candidates(
    session: Session, cluster_id: str, within: Collection[str] | None = None
) -> list[DriveView]:
    """The ONLINE data drives of ONLINE nodes of a cluster, by id; only ``within``
    (drive ids) when given."""
    stmt = _drive_select().where(DriveRow.cluster_id == cluster_id, pools.takes_data())
    if within is not None:
        stmt = stmt.where(DriveRow.id.in_(list(within)))
    rows = session.execute(stmt.order_by(DriveRow.id)).all()
    return [_view(r) for r in rows]


def drive_views(session: Session, drive_ids: Collection[str]) -> dict[str, DriveView]:
    """The given drives whatever their state (``usable`` tells)."""
    if not drive_ids:
        return {}
    rows = session.execute(_drive_select().where(DriveRow.id.in_(list(drive_ids)))).all()
    return {r[0]: _view(r) for r in rows}


def pool_members(session: Session, pool_id: str) -> set[str]:
    return pools.effective_drive_ids(session, pool_id)


def get_pool(session: Session, pool_id: str) -> PoolRow | None:
    return session.get(PoolRow, pool_id)


def only_cluster_id(session: Session) -> str | None:
    """The id of the only cluster, or None when there are none or several."""
    ids = list(session.scalars(select(ClusterRow.id).limit(2)))
    return ids[0] if len(ids) == 1 else None


# -- capacity ------------------------------------------------------------------


def _free_expr() -> Any:
    free = DriveRow.total_bytes - DriveRow.used_bytes
    return func.coalesce(func.sum(case((free > 0, free), else_=0)), 0)


def available_bytes(session: Session, cluster_id: str, within: Any | None = None) -> int:
    """Free bytes on the ONLINE data drives of ONLINE nodes (of ``within``, a
    select of drive ids, when given)."""
    stmt = (
        select(_free_expr())
        .join(NodeRow, NodeRow.id == DriveRow.node_id)
        .where(DriveRow.cluster_id == cluster_id, pools.takes_data())
    )
    if within is not None:
        stmt = stmt.where(DriveRow.id.in_(within))
    return int(session.scalar(stmt) or 0)


def volume_totals(session: Session, cluster_id: str) -> tuple[int, int]:
    """(volume count, sum of sizes) of a cluster."""
    count, logical = session.execute(
        select(func.count(), func.coalesce(func.sum(VolumeRow.size_bytes), 0)).where(
            VolumeRow.cluster_id == cluster_id
        )
    ).one()
    return int(count), int(logical)


def snapshot_total(session: Session, cluster_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(SnapshotRow)
            .where(SnapshotRow.cluster_id == cluster_id)
        )
        or 0
    )


def cluster_rows(session: Session, cluster_id: str = "") -> list[ClusterRow]:
    stmt = select(ClusterRow).order_by(ClusterRow.name)
    if cluster_id:
        stmt = stmt.where(ClusterRow.id == cluster_id)
    return list(session.scalars(stmt))


def pool_rows(session: Session, cluster_id: str) -> list[PoolRow]:
    return list(
        session.scalars(
            select(PoolRow).where(PoolRow.cluster_id == cluster_id).order_by(PoolRow.name)
        )
    )


def pool_member_select(pool_id: str) -> Any:
    return pools.effective_drive_ids_select(pool_id)


# -- repair ---------------------------------------------------------------------


@dataclass(frozen=True)
class CopyView:
    """A volume's allocation with the states of its drive and node."""

    allocation_id: str
    volume_id: str
    index: int
    state: AllocationState
    nbytes: int
    drive_id: str
    drive_state: DriveState
    node_id: str
    node_state: NodeState


def copy_views(session: Session, volume_ids: Collection[str]) -> dict[str, list[CopyView]]:
    """The allocations of ``volume_ids`` by index, per volume, in one query."""
    out: dict[str, list[CopyView]] = {v: [] for v in volume_ids}
    if not volume_ids:
        return out
    # On the connection: a select of columns needs none of the ORM's work.
    rows = (
        session.connection()
        .execute(
            select(
                AllocationRow.id,
                AllocationRow.volume_id,
                AllocationRow.index,
                AllocationRow.state,
                AllocationRow.bytes,
                AllocationRow.drive_id,
                DriveRow.state,
                AllocationRow.node_id,
                NodeRow.state,
            )
            .join(DriveRow, DriveRow.id == AllocationRow.drive_id)
            .join(NodeRow, NodeRow.id == AllocationRow.node_id)
            .where(AllocationRow.volume_id.in_(list(volume_ids)))
            .order_by(AllocationRow.index, AllocationRow.id)
        )
        .all()
    )
    # The states load as their enums (IntEnumType).
    for aid, vid, index, state, nbytes, drive_id, drive_state, node_id, node_state in rows:
        volume_id = str(vid)
        out.setdefault(volume_id, []).append(
            CopyView(
                aid, volume_id, index, state, nbytes, drive_id, drive_state, node_id, node_state
            )
        )
    return out


def unfinished_jobs_of_kind(
    session: Session, kind: JobKind, *, cluster_id: str = "", target_ids: Collection[str] = ()
) -> list[JobRow]:
    """Unfinished jobs of ``kind``, of one cluster or on some targets, oldest first."""
    stmt = select(JobRow).where(JobRow.kind == kind, JobRow.state.in_(UNFINISHED_STATES))
    if cluster_id:
        stmt = stmt.where(JobRow.cluster_id == cluster_id)
    if target_ids:
        stmt = stmt.where(JobRow.target_id.in_(list(target_ids)))
    return list(session.scalars(stmt.order_by(JobRow.create_time, JobRow.id)))


def job_reservations(session: Session, job_ids: Collection[str]) -> list[AllocationRow]:
    """The PENDING allocations that the jobs ``job_ids`` hold."""
    if not job_ids:
        return []
    return list(
        session.scalars(
            select(AllocationRow).where(
                AllocationRow.state == AllocationState.PENDING,
                AllocationRow.job_id.in_(list(job_ids)),
            )
        )
    )


def degraded_in_cluster(session: Session, cluster_id: str) -> list[VolumeRow]:
    """The volumes of a cluster that may lack a live copy: ``degraded_time`` set,
    or DEGRADED."""
    return list(
        session.scalars(
            select(VolumeRow)
            .where(
                VolumeRow.cluster_id == cluster_id,
                or_(
                    VolumeRow.degraded_time.is_not(None),
                    VolumeRow.state == VolumeState.DEGRADED,
                ),
            )
            .order_by(VolumeRow.id)
        )
    )


def repair_reserved_bytes(session: Session, cluster_id: str) -> int:
    """Bytes the unfinished VOLUME_REPAIR jobs of a cluster hold reserved."""
    repairs = select(JobRow.id).where(
        JobRow.kind == JobKind.VOLUME_REPAIR,
        JobRow.cluster_id == cluster_id,
        JobRow.state.in_(UNFINISHED_STATES),
    )
    return int(
        session.scalar(
            select(func.coalesce(func.sum(AllocationRow.bytes), 0)).where(
                AllocationRow.state == AllocationState.PENDING,
                AllocationRow.job_id.in_(repairs),
            )
        )
        or 0
    )


# -- capacity, grouped -------------------------------------------------------------
#
# The capacity functions above for every cluster (or pool) at once: one grouped
# statement each, with the same filters; only ``cluster_id`` when given.


# Built once, per whether a cluster is asked for (its id a bound parameter):
# building these statements cost more than running them.
CLUSTER_ID = bindparam("cluster_id", type_=String)


def _for(cluster_id: str) -> dict[str, str]:
    return {"cluster_id": cluster_id} if cluster_id else {}


@functools.cache
def _cluster_space_stmt(by_cluster: bool) -> Select[Any]:
    stmt = (
        select(
            DriveRow.cluster_id,
            func.coalesce(func.sum(DriveRow.total_bytes), 0),
            func.coalesce(func.sum(DriveRow.used_bytes), 0),
            _free_expr(),
        )
        .join(NodeRow, NodeRow.id == DriveRow.node_id)
        .where(pools.takes_data())
        .group_by(DriveRow.cluster_id)
    )
    return stmt.where(DriveRow.cluster_id == CLUSTER_ID) if by_cluster else stmt


def cluster_space(session: Session, cluster_id: str = "") -> dict[str, tuple[int, int, int]]:
    """Per cluster: (total, used) as :func:`osd.store.clusters.capacity` counts
    them and :func:`available_bytes`, over the drives that take data. Clusters
    without such drives are absent."""
    rows = session.connection().execute(_cluster_space_stmt(bool(cluster_id)), _for(cluster_id))
    return {cid: (int(t), int(u), int(a)) for cid, t, u, a in rows}


@functools.cache
def _pool_space_stmt(by_cluster: bool) -> Select[Any]:
    members = pools.effective_members_select(CLUSTER_ID if by_cluster else None).subquery()
    free = DriveRow.total_bytes - DriveRow.used_bytes
    available = func.coalesce(
        func.sum(case(((DriveRow.cluster_id == PoolRow.cluster_id) & (free > 0), free), else_=0)),
        0,
    )
    return (
        select(
            members.c.pool_id,
            func.coalesce(func.sum(DriveRow.total_bytes), 0),
            func.coalesce(func.sum(DriveRow.used_bytes), 0),
            available,
        )
        .select_from(members)
        .join(PoolRow, PoolRow.id == members.c.pool_id)
        .join(DriveRow, DriveRow.id == members.c.drive_id)
        .join(NodeRow, NodeRow.id == DriveRow.node_id)
        .where(pools.takes_data())
        .group_by(members.c.pool_id)
    )


def pool_space(session: Session, cluster_id: str = "") -> dict[str, tuple[int, int, int]]:
    """Per pool: (total, used) as :func:`osd.store.pools.capacity` counts them
    (member drives that take data, whatever their cluster) and
    :func:`available_bytes` of the pool's cluster within its members. Pools
    without such members are absent."""
    rows = session.connection().execute(_pool_space_stmt(bool(cluster_id)), _for(cluster_id))
    return {pid: (int(t), int(u), int(a)) for pid, t, u, a in rows}


def pool_rows_by_cluster(session: Session, cluster_id: str = "") -> dict[str, list[PoolRow]]:
    """Per cluster: its pools by name (:func:`pool_rows` for every cluster)."""
    stmt = select(PoolRow).order_by(PoolRow.cluster_id, PoolRow.name)
    if cluster_id:
        stmt = stmt.where(PoolRow.cluster_id == cluster_id)
    out: dict[str, list[PoolRow]] = {}
    for row in session.scalars(stmt):
        out.setdefault(row.cluster_id, []).append(row)
    return out


def snapshot_totals(session: Session, cluster_id: str = "") -> dict[str, int]:
    """Per cluster: how many snapshots it holds, from the counts the store
    keeps (:class:`SnapshotCountRow`). Clusters without snapshots are absent."""
    stmt = select(SnapshotCountRow.cluster_id, SnapshotCountRow.count)
    if cluster_id:
        stmt = stmt.where(SnapshotCountRow.cluster_id == cluster_id)
    return {cid: int(n) for cid, n in session.connection().execute(stmt) if n > 0}


@functools.cache
def _repair_reserved_stmt(by_cluster: bool) -> Select[str, int]:
    stmt = (
        select(JobRow.cluster_id, func.coalesce(func.sum(AllocationRow.bytes), 0))
        .join(JobRow, JobRow.id == AllocationRow.job_id)
        .where(
            AllocationRow.state == AllocationState.PENDING,
            JobRow.kind == JobKind.VOLUME_REPAIR,
            JobRow.state.in_(UNFINISHED_STATES),
        )
        .group_by(JobRow.cluster_id)
    )
    return stmt.where(JobRow.cluster_id == CLUSTER_ID) if by_cluster else stmt


def repair_reserved_by_cluster(session: Session, cluster_id: str = "") -> dict[str, int]:
    """Per cluster: :func:`repair_reserved_bytes`. Clusters without such
    reservations are absent."""
    rows = session.connection().execute(_repair_reserved_stmt(bool(cluster_id)), _for(cluster_id))
    return {cid: int(n) for cid, n in rows}
