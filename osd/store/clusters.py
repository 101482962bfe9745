"""Cluster records."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from osd.store.models import ClusterRow, NodeRow


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
    session.execute(delete(ClusterRow).where(ClusterRow.id == cluster_id))


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


def count_nodes(session: Session, cluster_id: str) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(NodeRow).where(NodeRow.cluster_id == cluster_id)
        )
        or 0
    )


def belongings(session: Session, cluster_id: str) -> dict[str, int]:
    """How many objects of each kind belong to the cluster, by plural kind name.

    Every table that references a cluster adds its count here, so delete and
    status see it.
    """
    return {"nodes": count_nodes(session, cluster_id)}


def capacity(session: Session, cluster_id: str) -> tuple[int, int]:
    """Total and used bytes over the cluster's drives.

    The schema has no drive table yet (drives land with the topology
    capability), so a cluster has no capacity to sum.
    """
    return 0, 0


def provisioned_bytes(session: Session, cluster_id: str) -> int:
    """Bytes promised to the cluster's volumes.

    The schema has no volume table yet (volumes land with the volume
    capability), so nothing is provisioned.
    """
    return 0
