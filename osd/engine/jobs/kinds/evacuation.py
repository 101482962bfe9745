"""Emptying drives, the base of soft eject, node drain and drive replace.

Each step moves one allocation off the source drives (see
:mod:`osd.engine.jobs.moves`), choosing its target under the copy's
placement rules at that moment. A copy whose drive can no longer be read
(EJECTED or FAILED) is rebuilt on the target from the volume's other copies.
A cancel or a failure leaves the copies already moved where they went and
returns the source to service; DONE leaves the source empty.

The copies moved before a cancel or a failure are not moved back: they
stay where they went (a later rebalance may move them again). The job's
result says what moved (:func:`moved_result`, counts ``moved_copies``,
``moved_bytes`` and ``remaining_copies``); soft eject and node drain set it
on every end."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from osd.engine.jobs import moves
from osd.engine.jobs.handler import JobContext, JobHandler, RequestT, SpecT
from osd.engine.jobs.models import JobResult
from osd.engine.placement.cluster_view import ClusterView, Disk
from osd.engine.placement.rules import DEAD_DRIVE_STATES, copies_to_read, rules_for
from osd.engine.shared.sizes import human
from osd.enums import AllocationState, DurabilityType
from osd.errors import FailedPrecondition
from osd.store import jobs as repo
from osd.store.models import (
    AllocationRow,
    JobRow,
    SnapshotRow,
    VolumeRow,
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


def unreadable(view: ClusterView, alloc: AllocationRow) -> bool:
    """Whether a copy's drive is gone (EJECTED, FAILED or unknown)."""
    source = view.disks.get(alloc.drive_id)
    return source is None or source.state in DEAD_DRIVE_STATES


def plan(
    s: Session, view: ClusterView, alloc: AllocationRow, target: Disk, rebuild: bool | None = None
) -> moves.Move:
    """The move of ``alloc`` to ``target``; a rebuild when its drive cannot be read."""
    if rebuild is None:
        rebuild = unreadable(view, alloc)
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
    view = ClusterView(s, cluster_id)
    planned: dict[str, str] = {}
    for alloc in repo.allocations_on_drives(s, sources):
        if alloc.state not in MOVABLE:
            continue
        disk = view.choose(
            rules_for(s, alloc), alloc.bytes, siblings_of(s, alloc, planned), sources
        )
        plan(s, view, alloc, disk)
        disk.used += alloc.bytes
        planned[alloc.id] = disk.id


def moved_result(
    ctx: JobContext[Any, Any], s: Session, sources: Sequence[str], what: str, *, done: bool
) -> JobResult:
    """What an evacuation of ``sources`` (``what``, e.g. "drive d1", for people)
    did, as its result: complete when ``done`` (its final state is DONE);
    otherwise CANCELLED or JOB_FAILED, saying that the copies moved so far stay
    where they went. Called in the job's final transaction."""
    moved, nbytes = ctx.progress.done_steps, ctx.progress.done_bytes
    remaining = sum(1 for a in repo.allocations_on_drives(s, sources) if a.state in MOVABLE)
    counts = {"moved_copies": moved, "moved_bytes": nbytes, "remaining_copies": remaining}
    if done:
        return JobResult(
            True, summary=f"moved {moved} copies ({human(nbytes)}) off {what}", counts=counts
        )
    row = s.get(JobRow, ctx.job_id)
    cancelled = row is not None and row.cancel_requested
    how = "cancelled" if cancelled else "stopped by an error"
    return JobResult(
        False,
        "CANCELLED" if cancelled else "JOB_FAILED",
        f"{how} after moving {moved} copies ({human(nbytes)}) off {what}: they stay where "
        f"they went (a later rebalance may move them back); {remaining} copies are still "
        f"on {what}",
        counts,
    )


@dataclass
class EvacuationCheckpoint(moves.MovesCheckpoint):
    """The moves' checkpoint, and how many times a step has waited for a change
    in progress on the sources."""

    busy_waits: int = 0


Context = JobContext[SpecT, EvacuationCheckpoint]


class Evacuation(JobHandler[RequestT, SpecT, EvacuationCheckpoint]):
    """Moves every allocation off ``sources``; subclasses pick the targets."""

    checkpoint_type = EvacuationCheckpoint

    def sources(self, s: Session, ctx: Context[SpecT]) -> list[str]:
        raise NotImplementedError

    def target(
        self,
        s: Session,
        ctx: Context[SpecT],
        view: ClusterView,
        alloc: AllocationRow,
        sources: list[str],
    ) -> Disk:
        return view.choose(rules_for(s, alloc), alloc.bytes, siblings_of(s, alloc), sources)

    def unreadable(self, ctx: Context[SpecT], view: ClusterView, alloc: AllocationRow) -> bool:
        return unreadable(view, alloc)

    def step(self, ctx: Context[SpecT]) -> bool:
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
            view = ClusterView(s, ctx.cluster_id)
            target = self.target(s, ctx, view, alloc, sources)
            move = plan(s, view, alloc, target, self.unreadable(ctx, view, alloc))
        ctx.progress.total_steps = ctx.progress.done_steps + len(movable)
        ctx.progress.total_bytes = ctx.progress.done_bytes + sum(a.bytes for a in movable)
        n = ctx.progress.done_steps + 1
        verb = "rebuilding" if move.rebuild else "moving"
        moves.perform(ctx, move, f"{verb} allocation {n} of {ctx.progress.total_steps}")
        return False

    def _wait_busy(self, ctx: Context[SpecT], alloc: AllocationRow) -> bool:
        waits = ctx.checkpoint.busy_waits
        if waits >= BUSY_WAITS_MAX:
            raise FailedPrecondition(
                f"allocation {alloc.id} is held by another change in progress",
                reason="ALLOCATION_BUSY",
                metadata={"allocation_id": alloc.id},
            )
        if waits == 0:
            # Said once; the count itself is saved with the step's next write,
            # not on every wait (a write bumps the store's generation).
            with ctx.write():
                ctx.progress.message = "waiting for a change in progress on the drive"
        ctx.checkpoint.busy_waits = waits + 1
        time.sleep(BUSY_WAIT_SECONDS)
        return False

    def undo(self, ctx: Context[SpecT]) -> None:
        moves.undo(ctx)

    def abort(self, ctx: Context[SpecT], s: Session, generation: int) -> None:
        moves.forget(ctx)
