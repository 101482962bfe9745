"""Cluster records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from osd.enums import ObjectKind
from osd.store import events
from osd.store.jobs import FINAL_STATES, UNFINISHED_STATES
from osd.store.models import (
    ClusterRow,
    DriveRow,
    JobRow,
    NodeRow,
    PoolRow,
    SnapshotCountRow,
    SnapshotRow,
    TemplateRow,
    VolumeLayoutCountRow,
    VolumeRow,
)
from osd.store.pools import takes_data

# The jobs that still hold their target.


def get(session: Session, cluster_id: str, *, for_update: bool = False) -> ClusterRow | None:
    stmt = select(ClusterRow).where(ClusterRow.id == cluster_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def get_by_name(session: Session, name: str) -> ClusterRow | None:
    return session.scalars(select(ClusterRow).where(ClusterRow.name == name)).one_or_none()


def add(session: Session, row: ClusterRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, cluster_id: str) -> None:
    """Deletes an empty cluster with its finished jobs, the history of objects
    gone with it (an unfinished job keeps the cluster: see :func:`belongings`)."""
    session.execute(
        delete(JobRow).where(JobRow.cluster_id == cluster_id, JobRow.state.in_(FINAL_STATES))
    )
    session.execute(delete(ClusterRow).where(ClusterRow.id == cluster_id))
    events.deleted(session, ObjectKind.CLUSTER, cluster_id)


def scan_by_name(session: Session, after: str | None, batch: int) -> Iterator[ClusterRow]:
    """Clusters in name order after ``after``, fetched ``batch`` rows at a time."""
    while True:
        stmt = select(ClusterRow).order_by(ClusterRow.name).limit(batch)
        if after is not None:
            stmt = stmt.where(ClusterRow.name > after)
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].name


def _count(session: Session, model: type[Any], cluster_id: str) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(model).where(model.cluster_id == cluster_id)
        )
        or 0
    )


def belongings(session: Session, cluster_id: str) -> dict[str, int]:
    """How many objects of each kind belong to the cluster, by plural kind name.

    Every table that references a cluster is counted here, so delete and
    status see it.
    """
    counts = {
        "nodes": _count(session, NodeRow, cluster_id),
        "drives": _count(session, DriveRow, cluster_id),
        "pools": _count(session, PoolRow, cluster_id),
        "templates": _count(session, TemplateRow, cluster_id),
        "volumes": _count(session, VolumeRow, cluster_id),
        "snapshots": _count(session, SnapshotRow, cluster_id),
    }
    counts["jobs"] = (
        session.scalar(
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.cluster_id == cluster_id, JobRow.state.in_(UNFINISHED_STATES))
        )
        or 0
    )
    return counts


def status_counts(session: Session, cluster_id: str) -> dict[str, int]:
    """The counts a cluster's status shows, in one statement: its nodes,
    drives and pools, and its volumes and snapshots from the counts the
    store keeps (:class:`VolumeLayoutCountRow`, :class:`SnapshotCountRow`)
    rather than a count of every one."""

    def counted(model: type[Any]) -> Any:
        return (
            select(func.count())
            .select_from(model)
            .where(model.cluster_id == cluster_id)
            .scalar_subquery()
        )

    c = VolumeLayoutCountRow
    volumes = (
        select(func.coalesce(func.sum(c.count), 0))
        .where(c.cluster_id == cluster_id)
        .scalar_subquery()
    )
    snapshots = (
        select(func.coalesce(func.sum(SnapshotCountRow.count), 0))
        .where(SnapshotCountRow.cluster_id == cluster_id)
        .scalar_subquery()
    )
    row = (
        session.connection()
        .execute(select(counted(NodeRow), counted(DriveRow), counted(PoolRow), snapshots, volumes))
        .one()
    )
    return dict(
        zip(("nodes", "drives", "pools", "snapshots", "volumes"), map(int, row), strict=True)
    )


def capacity(session: Session, cluster_id: str) -> tuple[int, int]:
    """Total and used bytes over the cluster's drives that take data
    (:func:`osd.store.pools.takes_data`): journal drives, drives that are
    EJECTED, FAILED or on their way out, and the drives of a node that is not
    ONLINE add nothing, as for a pool."""
    total, used = session.execute(
        select(
            func.coalesce(func.sum(DriveRow.total_bytes), 0),
            func.coalesce(func.sum(DriveRow.used_bytes), 0),
        )
        .join(NodeRow, NodeRow.id == DriveRow.node_id)
        .where(DriveRow.cluster_id == cluster_id, takes_data())
    ).one()
    return int(total), int(used)


def volume_layouts(
    session: Session, cluster_id: str
) -> list[tuple[int, int, int, int, int, float]]:
    """(size, durability type, replicas, data, redundancy, snapshot factor) per volume."""
    rows = session.execute(
        select(
            VolumeRow.size_bytes,
            VolumeRow.durability_type,
            VolumeRow.replicas,
            VolumeRow.data_fragments,
            VolumeRow.redundancy_fragments,
            VolumeRow.snapshot_factor,
        ).where(VolumeRow.cluster_id == cluster_id)
    ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


Layout = tuple[int, int, int, int, int, float]


def volume_layout_counts(
    session: Session, cluster_id: str = ""
) -> dict[str, list[tuple[Layout, int]]]:
    """Per cluster (only ``cluster_id`` when given): each distinct
    :func:`volume_layouts` tuple (size, durability type, replicas, data,
    redundancy, snapshot factor) with how many of its volumes have it, from
    the counts the store keeps (:class:`VolumeLayoutCountRow`), not a scan
    of the volumes. Clusters without volumes are absent."""
    c = VolumeLayoutCountRow
    stmt = select(
        c.cluster_id,
        c.size_bytes,
        c.durability_type,
        c.replicas,
        c.data_fragments,
        c.redundancy_fragments,
        c.snapshot_factor,
        c.count,
    ).where(c.count > 0)
    if cluster_id:
        stmt = stmt.where(c.cluster_id == cluster_id)
    out: dict[str, list[tuple[Layout, int]]] = {}
    for cid, size, durability, replicas, data, redundancy, factor, count in session.execute(stmt):
        key: Layout = (size, durability, replicas, data, redundancy, factor)
        out.setdefault(cid, []).append((key, int(count)))
    return out
