"""Audit records: written once, listed newest first, pruned by age."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from osd.store import keyset
from osd.store.models import AuditRow, AuditTargetRow


def add(session: Session, records: Sequence[tuple[AuditRow, Sequence[str]]]) -> None:
    """Inserts ``records``, each a row with the ids it targets, in two
    statements for the lot."""
    session.add_all([row for row, _ in records])
    session.flush()
    session.add_all(
        [
            AuditTargetRow(record_id=row.id, target_id=target)
            for row, target_ids in records
            for target in dict.fromkeys(target_ids)
        ]
    )
    session.flush()


@dataclass(frozen=True)
class AuditFilter:
    subject: str = ""
    method: str = ""
    target_id: str = ""
    codes: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


def scan(
    session: Session, where: AuditFilter, after: tuple[datetime, str] | None, batch: int
) -> Iterator[tuple[AuditRow, list[str]]]:
    """Records newest first (time, then id, descending) after ``after``,
    ``batch`` at a time, each with its target ids."""
    base = select(AuditRow).order_by(AuditRow.time.desc(), AuditRow.id.desc()).limit(batch)
    if where.subject:
        base = base.where(AuditRow.subject == where.subject)
    if where.method:
        base = base.where(AuditRow.method == where.method)
    if where.target_id:
        named = select(AuditTargetRow.record_id).where(AuditTargetRow.target_id == where.target_id)
        base = base.where(AuditRow.id.in_(named))
    if where.codes:
        base = base.where(AuditRow.code.in_(list(where.codes)))
    if where.since is not None:
        base = base.where(AuditRow.time >= where.since)
    if where.until is not None:
        base = base.where(AuditRow.time < where.until)
    while True:
        stmt = base
        if after is not None:
            t, i = after
            stmt = stmt.where(keyset.before(AuditRow.time, AuditRow.id, (t, i)))
        rows = list(session.scalars(stmt))
        targets: dict[str, list[str]] = {}
        if rows:
            for record_id, target in session.execute(
                select(AuditTargetRow.record_id, AuditTargetRow.target_id)
                .where(AuditTargetRow.record_id.in_([r.id for r in rows]))
                .order_by(AuditTargetRow.record_id, AuditTargetRow.target_id)
            ):
                targets.setdefault(record_id, []).append(target)
        yield from ((r, targets.get(r.id, [])) for r in rows)
        if len(rows) < batch:
            return
        after = (rows[-1].time, rows[-1].id)


def prune(session: Session, before: datetime) -> int:
    """Deletes the records older than ``before``; returns how many."""
    old = select(AuditRow.id).where(AuditRow.time < before)
    session.execute(delete(AuditTargetRow).where(AuditTargetRow.record_id.in_(old)))
    result = session.execute(delete(AuditRow).where(AuditRow.time < before))
    return int(getattr(result, "rowcount", 0) or 0)
