"""Moving (or rebuilding) one copy as a resumable unit of a job.

One move, in phases:

1. write: reserve the bytes on the target as a PENDING allocation tagged
   with the job; the checkpoint records the move as ``inflight``;
2. driver, no transaction open: ``copy_replica`` from the copy's drive to
   the target, which copies the copy's snapshots with it; or, to rebuild a
   copy whose drive is gone, ``create_replica`` on the target (the storage
   engine fills a new copy from the others; a snapshot chain whose volume is
   gone has no copy of its own to create) and ``copy_snapshots`` from one of
   the owner's readable copies, so the rebuilt copy carries that copy's
   snapshots;
3. write: release the reservation and move the allocation to the target
   (the copy keeps its allocation id, which is its name in the driver), or,
   for a copy that was lost, make the reservation the copy; set its state;
   tell the volume engine; the checkpoint drops ``inflight`` and records
   ``cleanup``;
4. driver: purge the old copy, its snapshots with it (best effort; repeated
   after a crash).

The rule: moving data never makes a snapshot unusable. A snapshot lives on
the drives of the copies of its chain (see
:func:`osd.engine.volumes.phases.snapshot_drives`); every move puts the
copy's snapshots where the copy goes, and the allocation books (the
volume's, or the holding snapshot's) follow the copy unchanged.

A daemon that resumes the job finishes an ``inflight`` move whose
reservation still exists; a rollback purges the copy (and the snapshots
copied with it) on the target and the runner releases the reservation, so a
move happens whole or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from osd.engine.drivers import DriverError
from osd.engine.jobs.handler import JobContext
from osd.engine.jobs.records import Record
from osd.engine.placement.rules import available_state, drive_and_node
from osd.enums import AllocationState, Provisioning
from osd.errors import FailedPrecondition
from osd.store import allocations
from osd.store import jobs as jobs_repo
from osd.store import nodes as node_repo
from osd.store import snapshots as snap_repo
from osd.store.models import AllocationRow, SnapshotRow, VolumeRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move(Record):
    """One copy to put on ``target_drive_id``.

    ``allocation_id`` is the copy's allocation on ``source_drive_id`` (None
    for a copy that was lost and is made anew). ``rebuild``: the source's data
    cannot be read (its drive is EJECTED or FAILED, or there is none), so the
    copy is created on the target rather than copied.
    """

    allocation_id: str | None
    volume_id: str | None
    snapshot_id: str | None
    index: int
    nbytes: int
    source_drive_id: str | None
    rebuild: bool
    target_drive_id: str
    target_node_id: str
    replica_id: str = ""

    def reserved(self, reservation_id: str) -> Inflight:
        """This move, its bytes reserved on the target as ``reservation_id``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(Move)}
        return Inflight(**fields, reservation_id=reservation_id)


@dataclass(frozen=True, kw_only=True)
class Inflight(Move):
    """A move whose bytes are reserved on the target, and whose copy may be made."""

    reservation_id: str


@dataclass
class MovesCheckpoint(Record):
    """The checkpoint of a job that moves copies: the move in flight, and the old
    copy still to delete from its drive ([drive id, replica id])."""

    inflight: Inflight | None = None
    cleanup: tuple[str, str] | None = None


C = TypeVar("C", bound=MovesCheckpoint)


def settle(ctx: JobContext[Any, C]) -> None:
    """Finishes what a previous run left: the old copy's cleanup, and a move in
    flight whose reservation still exists (one whose reservation is gone is
    dropped)."""
    cleanup = ctx.checkpoint.cleanup
    if cleanup:
        purge_copy(ctx, cleanup[0], cleanup[1])
        ctx.checkpoint.cleanup = None
    inflight = ctx.checkpoint.inflight
    if inflight is None:
        return
    with ctx.store.read() as s:
        res = s.get(AllocationRow, inflight.reservation_id)
        alive = (
            res is not None and res.state == AllocationState.PENDING and res.job_id == ctx.job_id
        )
    if alive:
        _copy_and_commit(ctx, inflight, inflight.reservation_id)
    else:
        with ctx.write():
            ctx.checkpoint.inflight = None


def perform(ctx: JobContext[Any, C], move: Move, message: str) -> bool:
    """Does one move whole; False (nothing done) when the allocation is no longer
    where the move expects it."""
    with ctx.write() as (s, _generation):
        if move.allocation_id is not None:
            row = s.get(AllocationRow, move.allocation_id)
            if row is None or row.drive_id != move.source_drive_id:
                return False
        res = allocations.reserve(
            s,
            drive_id=move.target_drive_id,
            node_id=move.target_node_id,
            nbytes=move.nbytes,
            index=move.index,
            state=AllocationState.PENDING,
            volume_id=move.volume_id,
            snapshot_id=move.snapshot_id,
            job_id=ctx.job_id,
        )
        move = replace(move, replica_id=move.allocation_id or res.id)
        ctx.checkpoint.inflight = move.reserved(res.id)
        ctx.progress.message = message
    _copy_and_commit(ctx, move, res.id)
    return True


def _make_copy(ctx: JobContext[Any, C], move: Move) -> None:
    """Puts the copy, with its snapshots, on the target (driver calls only)."""
    if not move.rebuild:
        assert move.source_drive_id is not None
        ctx.driver.copy_replica(
            move.source_drive_id, move.target_drive_id, move.replica_id, move.nbytes
        )
        return
    source = _snapshot_source(ctx, move)
    if move.volume_id is not None:
        ctx.driver.create_replica(
            move.target_drive_id, move.replica_id, move.nbytes, thick=is_thick(ctx, move.volume_id)
        )
    if source is not None:
        ctx.driver.copy_snapshots(source[0], source[1], move.target_drive_id, move.replica_id)


def is_thick(ctx: JobContext[Any, Any], volume_id: str) -> bool:
    """Whether a volume's copies take their space in full (THICK): a copy
    rebuilt from nothing is made so too."""
    with ctx.store.read() as s:
        row = s.get(VolumeRow, volume_id)
        return row is not None and row.provisioning == Provisioning.THICK


def _snapshot_source(ctx: JobContext[Any, C], move: Move) -> tuple[str, str] | None:
    with ctx.store.read() as s:
        return snapshot_source(
            s,
            volume_id=move.volume_id,
            snapshot_id=move.snapshot_id,
            skip={i for i in (move.allocation_id, move.replica_id) if i},
            target_drive_id=move.target_drive_id,
            index=move.index,
        )


def snapshot_source(
    s: Session,
    *,
    volume_id: str | None,
    snapshot_id: str | None,
    skip: Collection[str],
    target_drive_id: str,
    index: int,
) -> tuple[str, str] | None:
    """The readable copy ([drive id, replica id]) a copy made from nothing
    (rebuilt, or added by a replica change) takes its snapshots from: another
    ACTIVE copy of the same owner, not one of ``skip`` (the copy in the
    making and the one it replaces), the same ``index`` first. None when the
    chain has no snapshot; DATA_UNAVAILABLE when it has some and no copy that
    holds them can be read."""
    chain = volume_id
    if chain is None and snapshot_id is not None:
        holder = s.get(SnapshotRow, snapshot_id)
        chain = holder.volume_id if holder is not None else None
    if chain is None or not snap_repo.of_volume(s, chain):
        return None
    readable = sorted(
        (
            a
            for a in jobs_repo.allocations_of_owner(s, volume_id=volume_id, snapshot_id=snapshot_id)
            if a.id not in skip
            and a.state == AllocationState.ACTIVE
            and a.drive_id != target_drive_id
        ),
        key=lambda a: (a.index != index, a.index, a.id),
    )
    if not readable:
        owner = volume_id or snapshot_id or ""
        raise FailedPrecondition(
            f"no copy of {owner} that holds its snapshots can be read to make "
            f"the copy on drive {target_drive_id}",
            reason="DATA_UNAVAILABLE",
            metadata={"drive_id": target_drive_id},
        )
    return readable[0].drive_id, readable[0].id


def _copy_and_commit(ctx: JobContext[Any, C], move: Move, reservation_id: str) -> None:
    _make_copy(ctx, move)
    with ctx.write() as (s, _generation):
        res = s.get(AllocationRow, reservation_id)
        if res is None or res.state != AllocationState.PENDING or res.job_id != ctx.job_id:
            raise FailedPrecondition(
                f"the reservation for a copy on drive {move.target_drive_id} is gone",
                reason="RESERVATION_LOST",
            )
        drive, node = drive_and_node(s, move.target_drive_id)
        state = available_state(node.state, drive.state)
        cleanup: tuple[str, str] | None = None
        source = s.get(AllocationRow, move.allocation_id) if move.allocation_id else None
        moved_away = (
            source is not None
            and move.source_drive_id is not None
            and source.drive_id != move.source_drive_id
        )
        if move.allocation_id is not None and (source is None or moved_away):
            # The copy was deleted, or another job moved it, meanwhile: drop
            # what was made for it (unless that job put it on the same drive,
            # where the copy made is the copy it keeps).
            allocations.release(s, res)
            if source is None or source.drive_id != move.target_drive_id:
                cleanup = (move.target_drive_id, move.replica_id)
        elif source is not None:
            allocations.release(s, res)
            allocations.move(s, source, drive_id=drive.id, node_id=node.id)
            source.state = state
            source.stale = False  # made from a live copy
            if source.volume_id:
                node_repo.mark_stale(s, [source.volume_id])
            source.job_id = None
            if move.source_drive_id:
                cleanup = (move.source_drive_id, move.replica_id)
        else:
            res.state = state
            res.job_id = None
        ctx.notify(s, [move.volume_id], [move.snapshot_id])
        ctx.checkpoint.inflight = None
        if cleanup:
            ctx.checkpoint.cleanup = cleanup
        ctx.progress.done_steps += 1
        ctx.progress.done_bytes += move.nbytes
    if cleanup:
        purge_copy(ctx, cleanup[0], cleanup[1])
        ctx.checkpoint.cleanup = None


def purge_copy(ctx: JobContext[Any, Any], drive_id: str, rid: str) -> None:
    """Purges a copy that left the volume, with the snapshots it holds there
    (best effort: a failure is logged and left for the operator)."""
    try:
        ctx.driver.purge_replica(drive_id, rid)
    except DriverError as exc:
        log.warning(
            "job %s: deleting copy %s on drive %s failed (left for the operator): %s",
            ctx.job_id,
            rid,
            drive_id,
            exc,
        )


def undo(ctx: JobContext[Any, C]) -> None:
    """Purges the copy (and the snapshots copied with it) a move in flight may have
    made on its target (best effort).

    The runner releases the reservation; :func:`forget` clears the checkpoint.
    """
    inflight = ctx.checkpoint.inflight
    if inflight is not None:
        purge_copy(ctx, inflight.target_drive_id, inflight.replica_id)


def forget(ctx: JobContext[Any, C]) -> None:
    ctx.checkpoint.inflight = None
    ctx.checkpoint.cleanup = None
