"""Attachment records: a volume held by a node."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from osd.store import grants, keyset
from osd.store.models import AttachmentRow, VolumeRow


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
