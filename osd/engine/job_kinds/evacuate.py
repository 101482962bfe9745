"""Jobs that empty drives: soft eject (DRIVE_EVACUATE) and node drain
(NODE_DRAIN), on a base that drive replace shares.

Each step moves one allocation off the source drives (see
:mod:`osd.engine.job_kinds.moves`), choosing its target under the copy's
placement rules at that moment. A copy whose drive can no longer be read
(EJECTED or FAILED) is rebuilt on the target from the volume's other copies.
A cancel or a failure leaves the copies already moved where they went and
returns the source to service; DONE leaves the source empty.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from osd.engine import validation as v
from osd.engine.enums import AllocationState, DriveState, DurabilityType, JobKind, NodeState
from osd.engine.enums import ObjectKind as OK
from osd.engine.job_kinds import moves
from osd.engine.job_kinds.base import JobContext, JobHandler
from osd.engine.job_kinds.placement import (
    DEAD_DRIVE_STATES,
    Disk,
    Topology,
    copies_to_read,
    rules_for,
)
from osd.engine.topology import job_in_progress
from osd.errors import FailedPrecondition, NotFound
from osd.store import drives as drive_repo
from osd.store import jobs as repo
from osd.store import nodes as node_repo
from osd.store.models import (
    AllocationRow,
    DriveRow,
    JobRow,
    NodeRow,
    SnapshotRow,
    VolumeRow,
    utcnow,
)

MOVABLE = (AllocationState.ACTIVE, AllocationState.UNAVAILABLE)
# How long a step waits for allocations another change holds (PENDING, RELEASING).
BUSY_WAIT_SECONDS = 0.5
BUSY_WAITS_MAX = 120


def check_readable(s: Session, alloc: AllocationRow) -> None:
    """Refuses (DATA_UNAVAILABLE) a copy that can be neither read nor rebuilt: its
    drive is gone and too few other copies of its data are available."""
    owner: VolumeRow | SnapshotRow | None
    if alloc.volume_id is not None:
        owner, kind, oid = s.get(VolumeRow, alloc.volume_id), "volume", alloc.volume_id
    else:
        owner, kind = s.get(SnapshotRow, alloc.snapshot_id), "snapshot"
        oid = alloc.snapshot_id or ""
    others = [
        a
        for a in repo.allocations_of_owner(
            s, volume_id=alloc.volume_id, snapshot_id=alloc.snapshot_id
        )
        if a.id != alloc.id and a.state == AllocationState.ACTIVE
    ]
    needed = 1 if owner is None else copies_to_read(owner)
    if owner is not None and owner.durability_type == DurabilityType.NONE:
        needed = 1 + len(others)  # a single copy has nothing to be rebuilt from
    if len(others) < needed:
        raise FailedPrecondition(
            f"the copy of {kind} {oid} on drive {alloc.drive_id} is lost and "
            f"{len(others)} other copies are available; {needed} are needed to rebuild it",
            reason="DATA_UNAVAILABLE",
            metadata={f"{kind}_id": oid, "drive_id": alloc.drive_id},
        )


def unreadable(topo: Topology, alloc: AllocationRow) -> bool:
    """Whether a copy's drive is gone (EJECTED, FAILED or unknown)."""
    source = topo.disks.get(alloc.drive_id)
    return source is None or source.state in DEAD_DRIVE_STATES


def plan(
    s: Session, topo: Topology, alloc: AllocationRow, target: Disk, rebuild: bool | None = None
) -> moves.Move:
    """The move of ``alloc`` to ``target``; a rebuild when its drive cannot be read."""
    if rebuild is None:
        rebuild = unreadable(topo, alloc)
    if rebuild:
        check_readable(s, alloc)
    return moves.Move(
        allocation_id=alloc.id,
        volume_id=alloc.volume_id,
        snapshot_id=alloc.snapshot_id,
        index=alloc.index,
        nbytes=alloc.bytes,
        source_drive_id=alloc.drive_id,
        rebuild=rebuild,
        target_drive_id=target.id,
        target_node_id=target.node_id,
    )


def siblings_of(
    s: Session, alloc: AllocationRow, where: Mapping[str, str] | None = None
) -> list[str]:
    """The drives of the owner's other copies (``where`` overrides a copy's drive)."""
    where = where or {}
    return [
        where.get(a.id, a.drive_id)
        for a in repo.allocations_of_owner(
            s, volume_id=alloc.volume_id, snapshot_id=alloc.snapshot_id
        )
        if a.id != alloc.id
    ]


def check_feasible(s: Session, cluster_id: str, sources: Sequence[str]) -> None:
    """Refuses an evacuation whose data has nowhere to go (PLACEMENT_IMPOSSIBLE,
    INSUFFICIENT_CAPACITY, DATA_UNAVAILABLE), planning every move at once."""
    topo = Topology(s, cluster_id)
    planned: dict[str, str] = {}
    for alloc in repo.allocations_on_drives(s, sources):
        if alloc.state not in MOVABLE:
            continue
        disk = topo.choose(
            rules_for(s, alloc), alloc.bytes, siblings_of(s, alloc, planned), sources
        )
        plan(s, topo, alloc, disk)
        disk.used += alloc.bytes
        planned[alloc.id] = disk.id


class Evacuation(JobHandler):
    """Moves every allocation off ``sources``; subclasses pick the targets."""

    def sources(self, s: Session, ctx: JobContext) -> list[str]:
        raise NotImplementedError

    def target(
        self, s: Session, ctx: JobContext, topo: Topology, alloc: AllocationRow, sources: list[str]
    ) -> Disk:
        return topo.choose(rules_for(s, alloc), alloc.bytes, siblings_of(s, alloc), sources)

    def unreadable(self, ctx: JobContext, topo: Topology, alloc: AllocationRow) -> bool:
        return unreadable(topo, alloc)

    def step(self, ctx: JobContext) -> bool:
        moves.settle(ctx)
        with ctx.store.read() as s:
            sources = self.sources(s, ctx)
            allocs = repo.allocations_on_drives(s, sources)
            movable = [a for a in allocs if a.state in MOVABLE]
            if not movable:
                if any(a.job_id != ctx.job_id for a in allocs):
                    return self._wait_busy(ctx, allocs[0])
                return True
            alloc = movable[0]
            topo = Topology(s, ctx.cluster_id)
            target = self.target(s, ctx, topo, alloc, sources)
            move = plan(s, topo, alloc, target, self.unreadable(ctx, topo, alloc))
        ctx.progress.total_steps = ctx.progress.done_steps + len(movable)
        ctx.progress.total_bytes = ctx.progress.done_bytes + sum(a.bytes for a in movable)
        n = ctx.progress.done_steps + 1
        verb = "rebuilding" if move.rebuild else "moving"
        moves.perform(ctx, move, f"{verb} allocation {n} of {ctx.progress.total_steps}")
        return False

    def _wait_busy(self, ctx: JobContext, alloc: AllocationRow) -> bool:
        waits = int(ctx.checkpoint.get("busy_waits", 0))
        if waits >= BUSY_WAITS_MAX:
            raise FailedPrecondition(
                f"allocation {alloc.id} is held by another change in progress",
                reason="ALLOCATION_BUSY",
                metadata={"allocation_id": alloc.id},
            )
        with ctx.write():
            ctx.checkpoint["busy_waits"] = waits + 1
            ctx.progress.message = "waiting for a change in progress on the drive"
        time.sleep(BUSY_WAIT_SECONDS)
        return False

    def undo(self, ctx: JobContext) -> None:
        moves.undo(ctx)

    def abort(self, ctx: JobContext, s: Session, generation: int) -> None:
        moves.forget(ctx)


def stamp(row: DriveRow | NodeRow, generation: int) -> None:
    row.update_time = utcnow()
    row.generation = generation


def get_drive(s: Session, drive_id: str, field: str = "drive_id") -> DriveRow:
    v.check_id(drive_id, field)
    row = s.get(DriveRow, drive_id)
    if row is None:
        raise NotFound.object("drive", field, drive_id)
    return row


def get_node(s: Session, node_id: str, field: str = "node_id") -> NodeRow:
    v.check_id(node_id, field)
    row = s.get(NodeRow, node_id)
    if row is None:
        raise NotFound.object("node", field, node_id)
    return row


def check_no_job(s: Session, kind: str, object_id: str, active_job_id: str | None) -> None:
    job_id = node_repo.unfinished_job_id(s, object_id, active_job_id)
    if job_id:
        raise job_in_progress(kind, object_id, job_id)


class DriveEvacuate(Evacuation):
    """Soft eject: the drive SOFT_EJECTING while its copies move; EJECTED when DONE,
    ONLINE again when cancelled or failed."""

    kind = JobKind.DRIVE_EVACUATE
    target_kind = OK.DRIVE

    def existing(self, s: Session, spec: Mapping[str, Any]) -> JobRow | None:
        drive_id = str(spec.get("drive_id", ""))
        if not v.ID_RE.fullmatch(drive_id):
            return None
        row = s.get(DriveRow, drive_id)
        if row is None or row.state != DriveState.SOFT_EJECTING:
            return None
        return repo.unfinished(s, int(self.kind), drive_id)

    def begin(self, s: Session, job: JobRow, spec: Mapping[str, Any]) -> None:
        drive = get_drive(s, str(spec.get("drive_id", "")))
        check_no_job(s, "drive", drive.id, drive.active_job_id)
        if drive.state != DriveState.ONLINE:
            state = DriveState(drive.state).name
            raise FailedPrecondition(
                f"drive {drive.id} is {state}: only an ONLINE drive can be soft-ejected",
                reason="DRIVE_NOT_ONLINE",
                metadata={"drive_id": drive.id, "state": state},
            )
        check_feasible(s, drive.cluster_id, [drive.id])
        drive.state = int(DriveState.SOFT_EJECTING)
        drive.active_job_id = job.id
        stamp(drive, job.generation)
        job.cluster_id = drive.cluster_id
        job.target_id = drive.id
        job.related = [{"kind": int(OK.NODE), "id": drive.node_id}]
        job.spec = {"drive_id": drive.id}
        job.progress_total_bytes = drive.used_bytes

    def sources(self, s: Session, ctx: JobContext) -> list[str]:
        return [ctx.target_id]

    def finish(self, ctx: JobContext, s: Session, generation: int) -> None:
        drive = s.get(DriveRow, ctx.target_id)
        if drive is not None and drive.state == DriveState.SOFT_EJECTING:
            drive.state = int(DriveState.EJECTED)
            stamp(drive, generation)

    def abort(self, ctx: JobContext, s: Session, generation: int) -> None:
        super().abort(ctx, s, generation)
        drive = s.get(DriveRow, ctx.target_id)
        if drive is not None and drive.state == DriveState.SOFT_EJECTING:
            drive.state = int(DriveState.ONLINE)
            stamp(drive, generation)


class NodeDrain(Evacuation):
    """Drain: the node DRAINING while its drives' copies move to other nodes; in
    MAINTENANCE when DONE, ONLINE again when cancelled or failed."""

    kind = JobKind.NODE_DRAIN
    target_kind = OK.NODE

    def existing(self, s: Session, spec: Mapping[str, Any]) -> JobRow | None:
        node_id = str(spec.get("node_id", ""))
        if not v.ID_RE.fullmatch(node_id):
            return None
        row = s.get(NodeRow, node_id)
        if row is None or row.state != NodeState.DRAINING:
            return None
        return repo.unfinished(s, int(self.kind), node_id)

    def begin(self, s: Session, job: JobRow, spec: Mapping[str, Any]) -> None:
        node = get_node(s, str(spec.get("node_id", "")))
        check_no_job(s, "node", node.id, node.active_job_id)
        drives = drive_repo.of_node(s, node.id)
        for d in drives:
            check_no_job(s, "drive", d.id, d.active_job_id)
        if node.state != NodeState.ONLINE:
            state = NodeState(node.state).name
            raise FailedPrecondition(
                f"node {node.name} is {state}: only an ONLINE node can be drained",
                reason="NODE_NOT_ONLINE",
                metadata={"node_id": node.id, "state": state},
            )
        check_feasible(s, node.cluster_id, [d.id for d in drives])
        node.state = int(NodeState.DRAINING)
        node.active_job_id = job.id
        stamp(node, job.generation)
        job.cluster_id = node.cluster_id
        job.target_id = node.id
        job.spec = {"node_id": node.id}
        job.progress_total_bytes = sum(d.used_bytes for d in drives)

    def sources(self, s: Session, ctx: JobContext) -> list[str]:
        return [d.id for d in drive_repo.of_node(s, ctx.target_id)]

    def finish(self, ctx: JobContext, s: Session, generation: int) -> None:
        node = s.get(NodeRow, ctx.target_id)
        if node is not None and node.state == NodeState.DRAINING:
            node.state = int(NodeState.MAINTENANCE)
            stamp(node, generation)

    def abort(self, ctx: JobContext, s: Session, generation: int) -> None:
        super().abort(ctx, s, generation)
        node = s.get(NodeRow, ctx.target_id)
        if node is not None and node.state == NodeState.DRAINING:
            node.state = int(NodeState.ONLINE)
            stamp(node, generation)
