"""Volume template records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from osd.store import keyset
from osd.store.models import TemplateRow, VolumeRow


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
