"""Attachment records: a volume (or, read-only, a snapshot) held by a node, and
the attachments a node's flush moved off it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from osd.store import grants, keyset
from osd.store.models import AttachmentRow, FlushMoveRow, SnapshotAttachmentRow, VolumeRow


def get(session: Session, volume_id: str, node_id: str) -> AttachmentRow | None:
    return session.get(AttachmentRow, (volume_id, node_id))


def of_volume(session: Session, volume_id: str) -> list[AttachmentRow]:
    return list(
        session.scalars(
            select(AttachmentRow)
            .where(AttachmentRow.volume_id == volume_id)
            .order_by(AttachmentRow.node_id)
        )
    )


def count_on_node(session: Session, node_id: str) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(AttachmentRow).where(AttachmentRow.node_id == node_id)
        )
        or 0
    )


def counts_on_nodes(session: Session, node_ids: Sequence[str]) -> dict[str, int]:
    """How many volume attachments each of ``node_ids`` holds (absent: none)."""
    if not node_ids:
        return {}
    rows = session.execute(
        select(AttachmentRow.node_id, func.count())
        .where(AttachmentRow.node_id.in_(list(node_ids)))
        .group_by(AttachmentRow.node_id)
    )
    return {node_id: int(n) for node_id, n in rows}


def add(session: Session, row: AttachmentRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, volume_id: str, node_id: str) -> None:
    session.execute(
        delete(AttachmentRow).where(
            AttachmentRow.volume_id == volume_id, AttachmentRow.node_id == node_id
        )
    )
    session.flush()


def scan(
    session: Session,
    *,
    volume_id: str,
    node_id: str,
    cluster_id: str,
    after: tuple[str, str] | None,
    batch: int,
    readable_by: tuple[str, frozenset[str]] | None = None,
) -> Iterator[AttachmentRow]:
    """Attachments in (volume id, node id) order after ``after``, ``batch`` at a time."""
    base = (
        select(AttachmentRow).order_by(AttachmentRow.volume_id, AttachmentRow.node_id).limit(batch)
    )
    if volume_id:
        base = base.where(AttachmentRow.volume_id == volume_id)
    if node_id:
        base = base.where(AttachmentRow.node_id == node_id)
    # Correlated, row by row in page order: an IN over the cluster's volumes
    # read every one of them for each page.
    if cluster_id:
        base = base.where(
            exists().where(
                VolumeRow.id == AttachmentRow.volume_id, VolumeRow.cluster_id == cluster_id
            )
        )
    if readable_by is not None:
        base = base.where(
            exists().where(
                VolumeRow.id == AttachmentRow.volume_id, grants.readable_volumes(*readable_by)
            )
        )
    while True:
        stmt = base
        if after is not None:
            v, n = after
            stmt = stmt.where(keyset.after(AttachmentRow.volume_id, AttachmentRow.node_id, (v, n)))
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].volume_id, rows[-1].node_id)


def on_node(session: Session, node_id: str) -> list[AttachmentRow]:
    return list(
        session.scalars(
            select(AttachmentRow)
            .where(AttachmentRow.node_id == node_id)
            .order_by(AttachmentRow.volume_id)
        )
    )


# -- snapshots ---------------------------------------------------------------------


def snapshot_attachment(
    session: Session, snapshot_id: str, node_id: str
) -> SnapshotAttachmentRow | None:
    return session.get(SnapshotAttachmentRow, (snapshot_id, node_id))


def of_snapshot(session: Session, snapshot_id: str) -> list[SnapshotAttachmentRow]:
    return list(
        session.scalars(
            select(SnapshotAttachmentRow)
            .where(SnapshotAttachmentRow.snapshot_id == snapshot_id)
            .order_by(SnapshotAttachmentRow.node_id)
        )
    )


def count_snapshots_on_node(session: Session, node_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(SnapshotAttachmentRow)
            .where(SnapshotAttachmentRow.node_id == node_id)
        )
        or 0
    )


def remove_snapshot_attachment(session: Session, snapshot_id: str, node_id: str) -> None:
    session.execute(
        delete(SnapshotAttachmentRow).where(
            SnapshotAttachmentRow.snapshot_id == snapshot_id,
            SnapshotAttachmentRow.node_id == node_id,
        )
    )
    session.flush()


# -- flush moves -------------------------------------------------------------------


def flush_move(session: Session, volume_id: str, node_id: str) -> FlushMoveRow | None:
    return session.get(FlushMoveRow, (volume_id, node_id))


def flush_moves_of(session: Session, node_id: str) -> list[FlushMoveRow]:
    """What the flush of ``node_id`` moved off it, by volume."""
    return list(
        session.scalars(
            select(FlushMoveRow)
            .where(FlushMoveRow.node_id == node_id)
            .order_by(FlushMoveRow.volume_id)
        )
    )


def record_flush_move(session: Session, row: FlushMoveRow) -> None:
    forget_flush_move(session, row.volume_id, row.node_id)
    session.add(row)
    session.flush()


def forget_flush_move(session: Session, volume_id: str, node_id: str) -> None:
    session.execute(
        delete(FlushMoveRow).where(
            FlushMoveRow.volume_id == volume_id, FlushMoveRow.node_id == node_id
        )
    )
    session.flush()


def forget_flush_moves_of_node(session: Session, node_id: str) -> None:
    """Drops the flush records that name a node, from or to: it is deleted."""
    session.execute(
        delete(FlushMoveRow).where(
            (FlushMoveRow.node_id == node_id) | (FlushMoveRow.target_node_id == node_id)
        )
    )
