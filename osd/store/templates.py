"""Volume template records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from osd.store import keyset
from osd.store.models import AllocationRow, SnapshotRow, TemplateRow, VolumeRow


def get(session: Session, template_id: str) -> TemplateRow | None:
    return session.get(TemplateRow, template_id)


def get_by_name(session: Session, cluster_id: str, name: str) -> TemplateRow | None:
    return session.scalars(
        select(TemplateRow).where(TemplateRow.cluster_id == cluster_id, TemplateRow.name == name)
    ).one_or_none()


def add(session: Session, row: TemplateRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, template_id: str) -> None:
    session.execute(delete(TemplateRow).where(TemplateRow.id == template_id))


def scan(
    session: Session, cluster_id: str, after: tuple[str, str] | None, batch: int
) -> Iterator[TemplateRow]:
    """Templates in (cluster id, name) order after ``after``, ``batch`` rows at a time."""
    base = select(TemplateRow).order_by(TemplateRow.cluster_id, TemplateRow.name).limit(batch)
    if cluster_id:
        base = base.where(TemplateRow.cluster_id == cluster_id)
    while True:
        stmt = base
        if after is not None:
            c, n = after
            stmt = stmt.where(keyset.after(TemplateRow.cluster_id, TemplateRow.name, (c, n)))
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].cluster_id, rows[-1].name)


def volume_counts(session: Session, template_ids: Sequence[str]) -> dict[str, int]:
    """How many volumes each template is the template of."""
    if not template_ids:
        return {}
    rows = session.execute(
        select(VolumeRow.template_id, func.count())
        .where(VolumeRow.template_id.in_(list(template_ids)))
        .group_by(VolumeRow.template_id)
    ).all()
    return {tid: int(n) for tid, n in rows if tid is not None}


def volumes_of(session: Session, template_id: str) -> list[VolumeRow]:
    """The volumes whose template is ``template_id``, by name."""
    return list(
        session.scalars(
            select(VolumeRow).where(VolumeRow.template_id == template_id).order_by(VolumeRow.name)
        )
    )


@dataclass(frozen=True)
class Usage:
    """What the volumes of a template, and their snapshots, hold."""

    volumes: int = 0
    snapshots: int = 0
    logical_bytes: int = 0
    allocated_bytes: int = 0


def usage(session: Session, template_ids: Sequence[str]) -> dict[str, Usage]:
    """Per template: its volumes and their snapshots, counted, their sizes
    summed, and the bytes their allocations hold (four grouped queries)."""
    if not template_ids:
        return {}
    ids = list(template_ids)
    tid = VolumeRow.template_id
    volumes = {
        t: (int(n), int(b))
        for t, n, b in session.execute(
            select(tid, func.count(), func.coalesce(func.sum(VolumeRow.size_bytes), 0))
            .where(tid.in_(ids))
            .group_by(tid)
        )
    }
    snapshots = {
        t: (int(n), int(b))
        for t, n, b in session.execute(
            select(tid, func.count(), func.coalesce(func.sum(SnapshotRow.size_bytes), 0))
            .join(SnapshotRow, SnapshotRow.volume_id == VolumeRow.id)
            .where(tid.in_(ids))
            .group_by(tid)
        )
    }
    allocated: dict[str, int] = {}
    for stmt in (
        select(tid, func.coalesce(func.sum(AllocationRow.bytes), 0))
        .join(AllocationRow, AllocationRow.volume_id == VolumeRow.id)
        .where(tid.in_(ids))
        .group_by(tid),
        select(tid, func.coalesce(func.sum(AllocationRow.bytes), 0))
        .join(SnapshotRow, SnapshotRow.volume_id == VolumeRow.id)
        .join(AllocationRow, AllocationRow.snapshot_id == SnapshotRow.id)
        .where(tid.in_(ids))
        .group_by(tid),
    ):
        for t, b in session.execute(stmt):
            allocated[str(t)] = allocated.get(str(t), 0) + int(b)
    out = {}
    for t in ids:
        nv, bv = volumes.get(t, (0, 0))
        ns, bs = snapshots.get(t, (0, 0))
        out[t] = Usage(nv, ns, bv + bs, allocated.get(t, 0))
    return out


def of_cluster(session: Session, cluster_id: str) -> list[TemplateRow]:
    """A cluster's templates, by name."""
    return list(
        session.scalars(
            select(TemplateRow)
            .where(TemplateRow.cluster_id == cluster_id)
            .order_by(TemplateRow.name)
        )
    )
