"""Who may do what with a volume and its snapshots and attachments.

A caller with role admin has ACCESS_ADMIN on every volume. Otherwise the
volume's owner has ACCESS_ADMIN, each entry of its access list that names the
caller (its subject, or one of its groups) gives that entry's access, and a
public volume gives everyone ACCESS_READ. A snapshot's owner has
ACCESS_ADMIN on it; otherwise a snapshot gives what its volume gives.

A volume or snapshot the caller may not read answers exactly as a missing
one: NOT_FOUND naming the same field with the same message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from osd.engine.access.principal import Principal, current
from osd.engine.volumes.models import Grant, Volume
from osd.enums import Access
from osd.errors import FieldViolation, NotFound, PermissionDenied
from osd.store import grants
from osd.store.models import SnapshotRow, VolumeRow

_VERBS = {Access.READ: "read", Access.WRITE: "change", Access.ADMIN: "administer"}


def _granted(public: bool, acl: Iterable[tuple[str, str, int]], who: Principal) -> Access | None:
    """What a public flag and an access list of (kind, name, access) give ``who``,
    who is neither admin nor the owner."""
    best: Access | None = Access.READ if public else None
    for kind, name, level in acl:
        named = (kind == grants.USER and name == who.subject) or (
            kind == grants.GROUP and name in who.groups
        )
        if named and (best is None or level > best):
            best = Access(level)
    return best


def volume_access(s: Session, row: VolumeRow, who: Principal) -> Access | None:
    if who.is_admin:
        return Access.ADMIN
    if who.subject and row.owner == who.subject:
        return Access.ADMIN
    acl = grants.of_volumes(s, [row.id]).get(row.id, [])
    return _granted(row.public, ((g.grantee_kind, g.grantee, g.access) for g in acl), who)


def access_to(volume: Volume, who: Principal) -> Access | None:
    """As :func:`volume_access`, from a volume already read with its access list."""
    if who.is_admin:
        return Access.ADMIN
    if who.subject and volume.owner == who.subject:
        return Access.ADMIN
    return _granted(volume.public, ((g.kind, g.name, g.access) for g in volume.acl), who)


def snapshot_access(s: Session, snap: SnapshotRow, who: Principal) -> Access | None:
    if who.is_admin:
        return Access.ADMIN
    if who.subject and snap.owner == who.subject:
        return Access.ADMIN
    volume = s.get(VolumeRow, snap.volume_id)
    return None if volume is None else volume_access(s, volume, who)


def _require(
    have: Access | None, need: Access, kind: str, field: str, object_id: str, name: str
) -> None:
    if have is None:
        raise NotFound.object(kind, field, object_id)
    if have < need:
        raise PermissionDenied(
            f"you may not {_VERBS[need]} {kind} {name} ({object_id}): it needs "
            f"{Access(need).name.lower()} access and you have {Access(have).name.lower()}",
            reason="ACCESS_DENIED",
            metadata={"field": field, "needed": Access(need).name, "have": Access(have).name},
        )


def require_volume(s: Session, row: VolumeRow, need: Access, field: str = "volume_id") -> None:
    """NOT_FOUND when the caller may not read the volume, PERMISSION_DENIED
    when it may but needs more."""
    _require(volume_access(s, row, current()), need, "volume", field, row.id, row.name)


def require_read(volume: Volume, need: Access, field: str = "volume_id") -> None:
    """As :func:`require_volume`, for a volume already read with its access list."""
    _require(access_to(volume, current()), need, "volume", field, volume.id, volume.name)


def require_snapshot(
    s: Session, snap: SnapshotRow, need: Access, field: str = "snapshot_id"
) -> None:
    _require(snapshot_access(s, snap, current()), need, "snapshot", field, snap.id, snap.name)


def may_read_volume(s: Session, row: VolumeRow) -> bool:
    return volume_access(s, row, current()) is not None


def list_filter() -> tuple[str, frozenset[str]] | None:
    """The (subject, groups) a list is limited to; None when the caller sees all."""
    who = current()
    return None if who.is_admin else (who.subject, who.groups)


def caller() -> Principal:
    return current()


ACL_MAX = 100
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def subject_violation(field: str, value: str) -> FieldViolation | None:
    if not _PRINTABLE.fullmatch(value):
        return FieldViolation(field, "must be 1 to 200 printable characters")
    return None


def acl_violations(acl: Sequence[Grant]) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if len(acl) > ACL_MAX:
        return [FieldViolation("acl", f"has {len(acl)} entries; at most {ACL_MAX}")]
    seen: set[tuple[str, str]] = set()
    for i, grant in enumerate(acl):
        where = f"acl[{i}]"
        if grant.kind not in (grants.USER, grants.GROUP):
            out.append(FieldViolation(where, "names no user and no group"))
            continue
        bad = subject_violation(f"{where}.{grant.kind}", grant.name)
        if bad:
            out.append(bad)
        if grant.access not in (Access.READ, Access.WRITE, Access.ADMIN):
            out.append(
                FieldViolation(
                    f"{where}.access", "must be ACCESS_READ, ACCESS_WRITE or ACCESS_ADMIN"
                )
            )
        if (grant.kind, grant.name) in seen:
            out.append(FieldViolation(where, f"{grant.kind} {grant.name[:80]!r} is listed twice"))
        seen.add((grant.kind, grant.name))
    return out


class Visibility:
    """Which volume and snapshot ids the caller of this call may see, asked
    one id at a time within one session and remembered. Admins see all
    without a query; others do not see the id of a volume or snapshot that
    is gone, since they can no longer be shown to have read it."""

    def __init__(self, s: Session) -> None:
        self._s = s
        self._who = current()
        self._seen: dict[str, bool] = {}

    @property
    def all(self) -> bool:
        return self._who.is_admin

    def volume(self, volume_id: str) -> bool:
        if self._who.is_admin or not volume_id:
            return True
        if volume_id not in self._seen:
            row = self._s.get(VolumeRow, volume_id)
            self._seen[volume_id] = (
                row is not None and volume_access(self._s, row, self._who) is not None
            )
        return self._seen[volume_id]

    def snapshot(self, snapshot_id: str) -> bool:
        if self._who.is_admin or not snapshot_id:
            return True
        if snapshot_id not in self._seen:
            row = self._s.get(SnapshotRow, snapshot_id)
            self._seen[snapshot_id] = (
                row is not None and snapshot_access(self._s, row, self._who) is not None
            )
        return self._seen[snapshot_id]
