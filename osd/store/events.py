"""Changes to watched objects, recorded as events (EventRow) in the
transaction that makes them.

Every write transaction bumps the store's generation first
(:func:`osd.store.state.bump_generation` keeps it in ``session.info``); when
the session flushes, each watched row it adds or changes becomes an event
under that generation, and the repositories record the rows they delete.
A write that bumps no generation (a heartbeat, a lease) records nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import delete, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from osd.enums import ObjectKind
from osd.store.models import (
    ClusterRow,
    DriveRow,
    EventRow,
    JobRow,
    NodeRow,
    PoolRow,
    SnapshotRow,
    StateRow,
    VolumeRow,
    utcnow,
)

CREATED, UPDATED, DELETED = 1, 2, 3
WATCHED: dict[type, ObjectKind] = {
    ClusterRow: ObjectKind.CLUSTER,
    VolumeRow: ObjectKind.VOLUME,
    SnapshotRow: ObjectKind.SNAPSHOT,
    NodeRow: ObjectKind.NODE,
    DriveRow: ObjectKind.DRIVE,
    PoolRow: ObjectKind.POOL,
    JobRow: ObjectKind.JOB,
}


def kind_of(row: Any) -> int | None:
    kind = WATCHED.get(type(row))
    return int(kind) if kind is not None else None


def _record(session: Session, kind: int, object_id: str, action: int) -> None:
    generation = session.info.get("generation")
    if generation is None or not object_id:
        return
    # One event per object and action in a transaction, however often it flushes.
    recorded = session.info.setdefault("events_recorded", set())
    key = (generation, kind, object_id, action)
    if key in recorded:
        return
    recorded.add(key)
    session.add(
        EventRow(
            generation=generation, kind=kind, object_id=object_id, action=action, time=utcnow()
        )
    )


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get("generation") is None:
        return
    for row in list(session.new):
        kind = kind_of(row)
        if kind is not None:
            _record(session, kind, row.id, CREATED)
    for row in list(session.dirty):
        kind = kind_of(row)
        if kind is not None and session.is_modified(row, include_collections=False):
            _record(session, kind, row.id, UPDATED)
    for row in list(session.deleted):
        kind = kind_of(row)
        if kind is not None:
            _record(session, kind, row.id, DELETED)


def install(factory: sessionmaker[Session]) -> None:
    """Records events for the sessions ``factory`` makes."""
    event.listen(factory, "before_flush", _before_flush)


def deleted(session: Session, kind: ObjectKind, object_id: str) -> None:
    """Records the delete of a row removed by a statement (not the ORM)."""
    _record(session, int(kind), object_id, DELETED)


def since(session: Session, generation: int, kinds: Collection[int], limit: int) -> list[EventRow]:
    stmt = select(EventRow).where(EventRow.generation > generation)
    if kinds:
        stmt = stmt.where(EventRow.kind.in_(list(kinds)))
    return list(session.scalars(stmt.order_by(EventRow.seq).limit(limit)))


def prune(session: Session, before: datetime) -> int:
    """Forgets the events older than ``before``, noting through which
    generation they are gone."""
    through = session.scalar(select(func.max(EventRow.generation)).where(EventRow.time < before))
    if through is None:
        return 0
    done = session.execute(
        delete(EventRow)
        .where(EventRow.generation <= through)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(StateRow)
        .where(StateRow.id == 1, StateRow.events_pruned_through < through)
        .values(events_pruned_through=through)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def pruned_through(session: Session) -> int:
    value = session.scalar(select(StateRow.events_pruned_through).where(StateRow.id == 1))
    return int(value or 0)
