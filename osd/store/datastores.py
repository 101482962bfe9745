"""Datastore and datastore version records.

Datastores are global (not per cluster). A version names its datastore and
its image snapshot by foreign key; volumes name the version they were
provisioned from (``volumes.datastore_version_id``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from osd.store.models import DatastoreRow, DatastoreVersionRow, SnapshotRow, VolumeRow, utcnow

# -- datastores -----------------------------------------------------------------


def get(session: Session, datastore_id: str) -> DatastoreRow | None:
    return session.get(DatastoreRow, datastore_id)


def get_by_name(session: Session, name: str) -> DatastoreRow | None:
    return session.scalars(select(DatastoreRow).where(DatastoreRow.name == name)).one_or_none()


def add(session: Session, row: DatastoreRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, datastore_id: str) -> None:
    session.execute(delete(DatastoreRow).where(DatastoreRow.id == datastore_id))


def scan_by_name(session: Session, after: str | None, batch: int) -> Iterator[DatastoreRow]:
    """Datastores in name order after ``after``, fetched ``batch`` rows at a time."""
    while True:
        stmt = select(DatastoreRow).order_by(DatastoreRow.name).limit(batch)
        if after is not None:
            stmt = stmt.where(DatastoreRow.name > after)
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].name


def version_counts(session: Session, datastore_ids: Collection[str]) -> dict[str, int]:
    """How many versions each of ``datastore_ids`` has (absent: none)."""
    if not datastore_ids:
        return {}
    rows = session.execute(
        select(DatastoreVersionRow.datastore_id, func.count())
        .where(DatastoreVersionRow.datastore_id.in_(list(datastore_ids)))
        .group_by(DatastoreVersionRow.datastore_id)
    ).all()
    return {ds_id: int(n) for ds_id, n in rows}


def defaults(session: Session, datastore_ids: Collection[str]) -> dict[str, DatastoreVersionRow]:
    """The default version of each of ``datastore_ids`` that has one."""
    if not datastore_ids:
        return {}
    rows = session.scalars(
        select(DatastoreVersionRow).where(
            DatastoreVersionRow.datastore_id.in_(list(datastore_ids)),
            DatastoreVersionRow.is_default.is_(True),
        )
    )
    return {row.datastore_id: row for row in rows}


# -- versions -------------------------------------------------------------------


def get_version(session: Session, version_id: str) -> DatastoreVersionRow | None:
    return session.get(DatastoreVersionRow, version_id)


def get_version_by_name(
    session: Session, datastore_id: str, name: str
) -> DatastoreVersionRow | None:
    return session.scalars(
        select(DatastoreVersionRow).where(
            DatastoreVersionRow.datastore_id == datastore_id, DatastoreVersionRow.name == name
        )
    ).one_or_none()


def add_version(session: Session, row: DatastoreVersionRow) -> None:
    session.add(row)
    session.flush()


def remove_version(session: Session, version_id: str) -> None:
    session.execute(delete(DatastoreVersionRow).where(DatastoreVersionRow.id == version_id))


def clear_default(
    session: Session, datastore_id: str, *, keep: str | None, generation: int
) -> list[str]:
    """Clears ``is_default`` on the datastore's versions other than ``keep``.

    Stamps each cleared version with ``generation`` (and the time) and returns
    their ids. Run it in the transaction that sets the new default, so that at most one
    version per datastore is the default at every commit.
    """
    stmt = select(DatastoreVersionRow).where(
        DatastoreVersionRow.datastore_id == datastore_id,
        DatastoreVersionRow.is_default.is_(True),
    )
    if keep is not None:
        stmt = stmt.where(DatastoreVersionRow.id != keep)
    cleared: list[str] = []
    now = utcnow()
    for row in session.scalars(stmt):
        row.is_default = False
        row.generation = generation
        row.update_time = now
        cleared.append(row.id)
    if cleared:
        session.flush()
    return cleared


def scan_versions(
    session: Session,
    after: tuple[str, str] | None,
    batch: int,
    *,
    datastore_id: str | None = None,
    active_only: bool = False,
) -> Iterator[tuple[DatastoreVersionRow, DatastoreRow]]:
    """Versions with their datastore, in (datastore name, version name) order.

    Starts after the key ``after`` and fetches ``batch`` rows at a time; the
    filters are applied in the query.
    """
    while True:
        stmt = (
            select(DatastoreVersionRow, DatastoreRow)
            .join(DatastoreRow, DatastoreRow.id == DatastoreVersionRow.datastore_id)
            .order_by(DatastoreRow.name, DatastoreVersionRow.name)
            .limit(batch)
        )
        if datastore_id is not None:
            stmt = stmt.where(DatastoreVersionRow.datastore_id == datastore_id)
        if active_only:
            stmt = stmt.where(DatastoreVersionRow.active.is_(True))
        if after is not None:
            ds_name, name = after
            stmt = stmt.where(
                or_(
                    DatastoreRow.name > ds_name,
                    and_(DatastoreRow.name == ds_name, DatastoreVersionRow.name > name),
                )
            )
        rows = [(v, d) for v, d in session.execute(stmt)]
        yield from rows
        if len(rows) < batch:
            return
        last_version, last_datastore = rows[-1]
        after = (last_datastore.name, last_version.name)


def volume_counts(session: Session, version_ids: Collection[str]) -> dict[str, int]:
    """How many existing volumes were provisioned from each of ``version_ids``."""
    if not version_ids:
        return {}
    rows = session.execute(
        select(VolumeRow.datastore_version_id, func.count())
        .where(VolumeRow.datastore_version_id.in_(list(version_ids)))
        .group_by(VolumeRow.datastore_version_id)
    ).all()
    return {str(version_id): int(n) for version_id, n in rows}


# -- images ---------------------------------------------------------------------


def get_snapshot(session: Session, snapshot_id: str) -> SnapshotRow | None:
    """The snapshot a version would use as its image (whatever its image flag)."""
    return session.get(SnapshotRow, snapshot_id)


def versions_using_snapshot(session: Session, snapshot_id: str) -> int:
    """How many datastore versions use the snapshot as their image.

    For the snapshot code: a snapshot with a non-zero count cannot be deleted
    nor have its ``image`` flag cleared (reason SNAPSHOT_IN_USE_AS_IMAGE).
    Call it inside the write transaction that would delete or unmark the
    snapshot, after ``bump_generation``: writers are serialised, so no version
    can start using the snapshot before that transaction commits.
    """
    return (
        session.scalar(
            select(func.count())
            .select_from(DatastoreVersionRow)
            .where(DatastoreVersionRow.image_snapshot_id == snapshot_id)
        )
        or 0
    )


def version_ids_using_snapshot(session: Session, snapshot_id: str, limit: int = 10) -> list[str]:
    """Up to ``limit`` ids of the versions that use the snapshot as their image,
    for the ``datastore_version_ids`` metadata of SNAPSHOT_IN_USE_AS_IMAGE."""
    return list(
        session.scalars(
            select(DatastoreVersionRow.id)
            .where(DatastoreVersionRow.image_snapshot_id == snapshot_id)
            .order_by(DatastoreVersionRow.id)
            .limit(limit)
        )
    )
