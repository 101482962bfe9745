"""Node records."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from osd.enums import AllocationState, AttachMode, CoordinatorRole, DriveState, ObjectKind
from osd.store import events, keyset
from osd.store.jobs import UNFINISHED_STATES
from osd.store.models import (
    AllocationRow,
    AttachmentRow,
    DriveRow,
    JobRow,
    NodeRow,
    SnapshotAttachmentRow,
    VolumeRow,
    copies_to_read,
)

# The jobs that still hold their target.
# The states of drives that serve the data they hold.
SERVING_DRIVE_STATES = (
    DriveState.ONLINE,
    DriveState.SOFT_EJECTING,
    DriveState.REPLACING,
    DriveState.OFFLINE,
)

# Labels every node carries for placement, whatever its own labels say: its
# zone and its name, so that a node_selector (a CSI plugin's topology among
# them) can ask for a zone or a node.
ZONE_LABEL = "osd.dev/zone"
NODE_LABEL = "osd.dev/node"


def placement_labels(labels: dict[str, str], zone: str, name: str) -> dict[str, str]:
    """A node's labels as placement matches them: its own, with its zone and
    name under the well-known keys."""
    return {**labels, ZONE_LABEL: zone, NODE_LABEL: name}


def get(session: Session, node_id: str) -> NodeRow | None:
    return session.get(NodeRow, node_id)


def get_by_name(session: Session, cluster_id: str, name: str) -> NodeRow | None:
    return session.scalars(
        select(NodeRow).where(NodeRow.cluster_id == cluster_id, NodeRow.name == name)
    ).one_or_none()


def of_cluster(session: Session, cluster_id: str) -> list[NodeRow]:
    return list(
        session.scalars(
            select(NodeRow).where(NodeRow.cluster_id == cluster_id).order_by(NodeRow.name)
        )
    )


def ids_of_cluster(session: Session, cluster_id: str) -> list[str]:
    return list(session.scalars(select(NodeRow.id).where(NodeRow.cluster_id == cluster_id)))


def add(session: Session, row: NodeRow) -> None:
    session.add(row)
    session.flush()


def remove(session: Session, node_id: str) -> None:
    session.execute(delete(NodeRow).where(NodeRow.id == node_id))
    events.deleted(session, ObjectKind.NODE, node_id)


def scan(
    session: Session, cluster_id: str | None, after: tuple[str, str] | None, batch: int
) -> Iterator[NodeRow]:
    """Nodes in (cluster id, name) order after ``after``, ``batch`` rows at a time."""
    while True:
        stmt = select(NodeRow).order_by(NodeRow.cluster_id, NodeRow.name).limit(batch)
        if cluster_id is not None:
            stmt = stmt.where(NodeRow.cluster_id == cluster_id)
        if after is not None:
            c, n = after
            stmt = stmt.where(keyset.after(NodeRow.cluster_id, NodeRow.name, (c, n)))
        rows = list(session.scalars(stmt))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].cluster_id, rows[-1].name)


@dataclass(frozen=True)
class NodeUsage:
    """Totals over a node's data drives, and how many drives it has in all."""

    total_bytes: int = 0
    used_bytes: int = 0
    drive_count: int = 0


def usage(session: Session, node_ids: Collection[str]) -> dict[str, NodeUsage]:
    ids = list(node_ids)
    if not ids:
        return {}
    data = func.coalesce(
        func.sum(DriveRow.total_bytes).filter(DriveRow.journal.is_(False)), 0
    ).label("total")
    used = func.coalesce(func.sum(DriveRow.used_bytes).filter(DriveRow.journal.is_(False)), 0)
    rows = session.execute(
        select(DriveRow.node_id, data, used, func.count())
        .where(DriveRow.node_id.in_(ids))
        .group_by(DriveRow.node_id)
    ).all()
    out = {n: NodeUsage() for n in ids}
    for node_id, total, used_bytes, count in rows:
        out[node_id] = NodeUsage(int(total), int(used_bytes), int(count))
    return out


def belongings(session: Session, node_id: str) -> dict[str, int]:
    """What still ties a node down: its drives, allocations and attachments."""

    def count(
        model: type[DriveRow]
        | type[AllocationRow]
        | type[AttachmentRow]
        | type[SnapshotAttachmentRow],
    ) -> int:
        return (
            session.scalar(select(func.count()).select_from(model).where(model.node_id == node_id))
            or 0
        )

    return {
        "drives": count(DriveRow),
        "allocations": count(AllocationRow),
        "attachments": count(AttachmentRow),
        "snapshot_attachments": count(SnapshotAttachmentRow),
    }


def allocation_count(session: Session, node_id: str) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(AllocationRow).where(AllocationRow.node_id == node_id)
        )
        or 0
    )


def unfinished_job_id(session: Session, object_id: str, active_job_id: str | None) -> str | None:
    """The unfinished job (PENDING, RUNNING or PAUSED) that targets an object or that the
    object's ``active_job_id`` names, if any."""
    cond = JobRow.target_id == object_id
    if active_job_id:
        cond = cond | (JobRow.id == active_job_id)
    return session.scalars(
        select(JobRow.id).where(cond, JobRow.state.in_(UNFINISHED_STATES)).limit(1)
    ).first()


def set_availability(session: Session, node_id: str, available: bool) -> tuple[set[str], set[str]]:
    """Marks a node's allocations UNAVAILABLE (``available`` False) or ACTIVE again.

    Going unavailable turns every ACTIVE allocation on the node UNAVAILABLE.
    Coming back turns UNAVAILABLE allocations ACTIVE, but only on drives that
    serve data (ONLINE, SOFT_EJECTING, REPLACING, OFFLINE), and only those that
    are not stale: a copy that may have missed writes while the node was away
    stays UNAVAILABLE until the repair controller resyncs it (see
    :func:`mark_stale`). PENDING and RELEASING allocations belong to a change
    in progress and are left to it. Used bytes do not change.

    Returns the ids of the volumes and of the snapshots whose allocations changed.
    """
    where: tuple[ColumnElement[bool], ...]
    if available:
        serving = select(DriveRow.id).where(
            DriveRow.node_id == node_id, DriveRow.state.in_(SERVING_DRIVE_STATES)
        )
        where = (
            AllocationRow.node_id == node_id,
            AllocationRow.state == AllocationState.UNAVAILABLE,
            AllocationRow.stale.is_(False),
            AllocationRow.drive_id.in_(serving),
        )
        new_state = AllocationState.ACTIVE
    else:
        where = (AllocationRow.node_id == node_id, AllocationRow.state == AllocationState.ACTIVE)
        new_state = AllocationState.UNAVAILABLE
    return set_allocation_states(session, where, new_state)


def set_allocation_states(
    session: Session, where: tuple[ColumnElement[bool], ...], new_state: AllocationState
) -> tuple[set[str], set[str]]:
    """Sets the state of the allocations ``where`` selects (used bytes do not
    change), then marks stale the copies this leaves behind (:func:`mark_stale`).

    Returns the ids of the volumes and of the snapshots whose allocations changed.
    """
    owners = session.execute(
        select(AllocationRow.volume_id, AllocationRow.snapshot_id).where(*where)
    ).all()
    if owners:
        values: dict[str, object] = {"state": new_state}
        if new_state == AllocationState.ACTIVE:
            values["stale"] = False
        session.execute(
            update(AllocationRow)
            .where(*where)
            .values(**values)
            .execution_options(synchronize_session="fetch")
        )
    volumes = {v for v, _ in owners if v is not None}
    snapshots = {s for _, s in owners if s is not None}
    mark_stale(session, volumes)
    return volumes, snapshots


def mark_stale(session: Session, volume_ids: Collection[str]) -> None:
    """Marks stale the UNAVAILABLE copies of those of ``volume_ids`` that can be
    written without them: attached read-write somewhere, with enough copies
    live (ACTIVE, or RELEASING as the source of a move) to be read.

    Called whenever copies turn UNAVAILABLE or ACTIVE and whenever a volume is
    attached, this keeps one rule: a copy that was away while its volume could
    be written is stale, and only a resync brings it back. A copy that went
    away with the last readable ones is not, and serves again when it returns
    (the copies that stayed longer hold the newest data); nor is one whose
    volume was not attached read-write meanwhile (a size change and a revert
    wait for every copy), so a node that reboots under detached volumes is not
    rebuilt. Snapshots never change, so their copies are never stale."""
    if not volume_ids:
        return
    session.flush()
    writable = (
        select(AttachmentRow.volume_id)
        .where(
            AttachmentRow.volume_id.in_(volume_ids),
            AttachmentRow.mode == AttachMode.READ_WRITE,
        )
        .distinct()
    )
    live = dict(
        session.execute(
            select(AllocationRow.volume_id, func.count())
            .where(
                AllocationRow.volume_id.in_(writable),
                AllocationRow.state.in_((AllocationState.ACTIVE, AllocationState.RELEASING)),
            )
            .group_by(AllocationRow.volume_id)
        ).all()
    )
    if not live:
        return
    rows = session.scalars(select(VolumeRow).where(VolumeRow.id.in_(list(live)))).all()
    readable = [row.id for row in rows if live[row.id] >= copies_to_read(row)]
    if readable:
        session.execute(
            update(AllocationRow)
            .where(
                AllocationRow.volume_id.in_(readable),
                AllocationRow.state == AllocationState.UNAVAILABLE,
                AllocationRow.stale.is_(False),
            )
            .values(stale=True)
            .execution_options(synchronize_session="fetch")
        )


def with_role(session: Session, cluster_id: str, role: CoordinatorRole) -> list[NodeRow]:
    """The nodes of a cluster whose coordinator role is ``role``, by id."""
    return list(
        session.scalars(
            select(NodeRow)
            .where(NodeRow.cluster_id == cluster_id, NodeRow.coordinator_role == role)
            .order_by(NodeRow.id)
        )
    )
