"""Volume access lists, and the SQL that keeps unreadable volumes out of lists."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, and_, delete, false, or_, select
from sqlalchemy.orm import Session

from osd.store.models import SnapshotRow, VolumeGrantRow, VolumeRow

USER = "user"
GROUP = "group"


def of_volumes(session: Session, volume_ids: Collection[str]) -> dict[str, list[VolumeGrantRow]]:
    """Each volume's access list, ordered by kind and name."""
    out: dict[str, list[VolumeGrantRow]] = {}
    if not volume_ids:
        return out
    rows = session.scalars(
        select(VolumeGrantRow)
        .where(VolumeGrantRow.volume_id.in_(list(volume_ids)))
        .order_by(VolumeGrantRow.volume_id, VolumeGrantRow.grantee_kind, VolumeGrantRow.grantee)
    )
    for row in rows:
        out.setdefault(row.volume_id, []).append(row)
    return out


def replace(session: Session, volume_id: str, grants: Sequence[tuple[str, str, int]]) -> None:
    """Sets the volume's access list to ``grants`` of (kind, name, access)."""
    session.execute(delete(VolumeGrantRow).where(VolumeGrantRow.volume_id == volume_id))
    add(session, volume_id, grants)


def add(session: Session, volume_id: str, grants: Sequence[tuple[str, str, int]]) -> None:
    """Gives a new volume, which has none yet, the access list ``grants``."""
    if not grants:
        return
    for kind, name, access in grants:
        session.add(
            VolumeGrantRow(volume_id=volume_id, grantee_kind=kind, grantee=name, access=access)
        )
    session.flush()


def _granted(subject: str, groups: Collection[str]) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if subject:
        conditions.append(
            and_(VolumeGrantRow.grantee_kind == USER, VolumeGrantRow.grantee == subject)
        )
    if groups:
        conditions.append(
            and_(VolumeGrantRow.grantee_kind == GROUP, VolumeGrantRow.grantee.in_(list(groups)))
        )
    return or_(*conditions) if conditions else false()


def readable_volumes(subject: str, groups: Collection[str]) -> ColumnElement[bool]:
    """Volumes the caller owns, that are public, or that grant it any access."""
    granted = select(VolumeGrantRow.volume_id).where(_granted(subject, groups))
    conditions: list[ColumnElement[bool]] = [VolumeRow.public.is_(True), VolumeRow.id.in_(granted)]
    if subject:
        conditions.append(VolumeRow.owner == subject)
    return or_(*conditions)


def readable_snapshots(subject: str, groups: Collection[str]) -> ColumnElement[bool]:
    """Snapshots the caller owns, or whose volume it may read."""
    volumes = select(VolumeRow.id).where(readable_volumes(subject, groups))
    conditions: list[ColumnElement[bool]] = [SnapshotRow.volume_id.in_(volumes)]
    if subject:
        conditions.append(SnapshotRow.owner == subject)
    return or_(*conditions)
