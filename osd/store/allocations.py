"""Allocations: the only code that changes a drive's ``used_bytes``.

Each function changes allocation rows and the drives' ``used_bytes`` in the
caller's transaction, so the two always move together: at every commit a
drive's used bytes equal the sum of the bytes of its allocations.
:func:`check` proves it on a live store (``osd db check``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from osd.enums import AllocationState
from osd.errors import FailedPrecondition
from osd.store.models import AllocationRow, DriveRow, utcnow

_DRIVES = cast(Table, DriveRow.__table__)
# Built once (these run for every copy of every change): on the table, not
# the mapped class, so no ORM bookkeeping runs; a DriveRow the session holds
# has its used_bytes expired instead (see _add_used).
_ADD_USED = (
    update(_DRIVES)
    .where(_DRIVES.c.id == bindparam("drive_id"))
    .values(used_bytes=_DRIVES.c.used_bytes + bindparam("delta"))
)
_ADD_USED_IF_ROOM = _ADD_USED.where(
    _DRIVES.c.used_bytes + bindparam("delta") <= _DRIVES.c.total_bytes
)


def _add_used(session: Session, drive_id: str, delta: int, *, check_room: bool) -> None:
    stmt = _ADD_USED_IF_ROOM if check_room and delta > 0 else _ADD_USED
    result = session.execute(stmt, {"drive_id": drive_id, "delta": delta})
    held = session.identity_map.get(identity_key(DriveRow, (drive_id,)))
    if held is not None:
        session.expire(held, ["used_bytes"])
    if result.rowcount != 1:  # type: ignore[attr-defined]
        drive = session.get(DriveRow, drive_id)
        if drive is None:
            raise LookupError(f"drive {drive_id} does not exist")
        raise FailedPrecondition(
            f"drive {drive_id} has {drive.total_bytes - drive.used_bytes} free bytes; "
            f"{delta} are needed",
            reason="INSUFFICIENT_CAPACITY",
            metadata={"drive_id": drive_id, "needed": str(delta)},
        )


def reserve(
    session: Session,
    *,
    drive_id: str,
    node_id: str,
    nbytes: int,
    index: int,
    state: AllocationState,
    volume_id: str | None = None,
    snapshot_id: str | None = None,
    job_id: str | None = None,
    check_room: bool = True,
) -> AllocationRow:
    """Reserves ``nbytes`` on a drive for a volume's or snapshot's copy ``index``.

    With ``check_room`` (the default) a drive without that much free space
    raises FailedPrecondition (INSUFFICIENT_CAPACITY) and nothing changes.
    """
    if nbytes < 0:
        raise ValueError("an allocation cannot be negative")
    if (volume_id is None) == (snapshot_id is None):
        raise ValueError("an allocation belongs to exactly one volume or snapshot")
    _add_used(session, drive_id, nbytes, check_room=check_room)
    row = AllocationRow(
        id=uuid.uuid4().hex,
        volume_id=volume_id,
        snapshot_id=snapshot_id,
        drive_id=drive_id,
        node_id=node_id,
        index=index,
        bytes=nbytes,
        state=state,
        job_id=job_id,
        create_time=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def release(session: Session, allocation: AllocationRow) -> None:
    """Deletes an allocation and gives its bytes back to its drive."""
    _add_used(session, allocation.drive_id, -allocation.bytes, check_room=False)
    session.delete(allocation)
    session.flush()


def resize(
    session: Session, allocation: AllocationRow, nbytes: int, *, check_room: bool = True
) -> None:
    """Changes an allocation's size, and its drive's used bytes by the difference."""
    if nbytes < 0:
        raise ValueError("an allocation cannot be negative")
    _add_used(session, allocation.drive_id, nbytes - allocation.bytes, check_room=check_room)
    allocation.bytes = nbytes
    session.flush()


def move(
    session: Session,
    allocation: AllocationRow,
    *,
    drive_id: str,
    node_id: str,
    check_room: bool = True,
) -> None:
    """Moves an allocation's bytes from its drive to another."""
    _add_used(session, drive_id, allocation.bytes, check_room=check_room)
    _add_used(session, allocation.drive_id, -allocation.bytes, check_room=False)
    allocation.drive_id = drive_id
    allocation.node_id = node_id
    session.flush()


@dataclass(frozen=True)
class Discrepancy:
    """A drive whose used bytes differ from the sum of its allocations."""

    drive_id: str
    used_bytes: int
    allocated_bytes: int


def check(session: Session) -> list[Discrepancy]:
    """Every drive whose ``used_bytes`` is not the sum of its allocations."""
    sums = (
        select(AllocationRow.drive_id, func.sum(AllocationRow.bytes).label("allocated"))
        .group_by(AllocationRow.drive_id)
        .subquery()
    )
    rows = session.execute(
        select(DriveRow.id, DriveRow.used_bytes, func.coalesce(sums.c.allocated, 0))
        .outerjoin(sums, sums.c.drive_id == DriveRow.id)
        .where(DriveRow.used_bytes != func.coalesce(sums.c.allocated, 0))
        .order_by(DriveRow.id)
    ).all()
    orphans = session.execute(
        select(AllocationRow.drive_id, func.sum(AllocationRow.bytes))
        .outerjoin(DriveRow, DriveRow.id == AllocationRow.drive_id)
        .where(DriveRow.id.is_(None))
        .group_by(AllocationRow.drive_id)
    ).all()
    out = [Discrepancy(d, int(used), int(alloc)) for d, used, alloc in rows]
    out.extend(Discrepancy(d, 0, int(alloc)) for d, alloc in orphans)
    return out
