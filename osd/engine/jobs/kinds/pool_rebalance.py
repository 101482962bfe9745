"""POOL_REBALANCE: restore missing copies, then even out a pool's drives
(Service.StartPoolRebalance).

Each step does one move (see :mod:`osd.engine.jobs.kinds.moves`):

1. Rebuild: a copy of one of the pool's volumes that is lost (its
   allocation was released by ForgetDrive) or UNAVAILABLE on an EJECTED or
   FAILED drive is created anew on a drive its placement allows, from the
   volume's other available copies. A copy that cannot be rebuilt now (no
   available source, or no drive may take it) is skipped, and tried again
   at the end should it have become possible meanwhile.
2. Balance: the move of one of the pool's copies between ONLINE member
   drives that most lowers sum(used^2 / total) over the drives, which is
   least when every drive is used to the same fraction of its size. Each
   move strictly lowers it, so the job ends; it ends when no move within the
   placement rules lowers it any more.

The job reaches its goal only when no copy is missing: it then ends DONE
with a complete result. When copies are still missing once nothing else can
be done, it ends FAILED (FAILED_PRECONDITION) with reason NO_VALID_TARGET
(some copy has no drive its placement allows that has room) or
DATA_UNAVAILABLE (too few copies to rebuild from), and its result says so:
complete false, that reason, and counts of what it did and what is missing
(``moved_copies``, ``rebuilt_copies``, ``moved_bytes``, ``missing_copies``).
A cancel or a failure also sets the result. Every end sets it.

Progress never shows more done than total: the totals are what is done
plus what the current plan still holds (the rebuilds to try and the balance
moves), and, for a job that fell short, plus the copies still missing.

A cancel or a failure leaves the moves already made and undoes the one in
flight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from sqlalchemy.orm import Session

from osd.engine.jobs import moves
from osd.engine.jobs.handler import JobContext, JobHandler
from osd.engine.jobs.models import JobResult
from osd.engine.jobs.records import Record
from osd.engine.placement.cluster_view import ClusterView, Disk
from osd.engine.placement.rules import (
    DEAD_DRIVE_STATES,
    Rules,
    copies_to_read,
    expected_copies,
    rules_of,
)
from osd.engine.shared import validation as v
from osd.engine.shared.allocation_math import allocation_sizes
from osd.engine.shared.refusals import check_no_job
from osd.engine.shared.sizes import human
from osd.enums import AllocationState, DriveState, DurabilityType, JobKind, VolumeState
from osd.enums import ObjectKind as OK
from osd.errors import FailedPrecondition, NotFound
from osd.store import jobs as repo
from osd.store import pools as pool_repo
from osd.store.models import AllocationRow, DriveRow, JobRow, PoolRow, VolumeRow, utcnow

_HEALTH = (VolumeState.UP, VolumeState.DEGRADED, VolumeState.DOWN)
MAX_PLAN = 10_000

# Why a missing copy cannot be rebuilt (the reasons a rebalance that falls short
# ends with): no drive its placement allows has room for it; too few available
# copies of its data to rebuild it from.
NO_VALID_TARGET = "NO_VALID_TARGET"
DATA_UNAVAILABLE = "DATA_UNAVAILABLE"


@dataclass(frozen=True)
class Need:
    """A copy to rebuild: its volume, index and size, and its allocation on a
    dead drive (None when the allocation was released)."""

    volume: VolumeRow
    index: int
    nbytes: int
    alloc: AllocationRow | None

    @property
    def key(self) -> str:
        return f"{self.volume.id}:{self.index}"


def rebuild_needs(
    view: ClusterView, volumes: list[VolumeRow], allocs: list[AllocationRow]
) -> list[Need]:
    """Copies of ``volumes`` that are lost or on EJECTED or FAILED drives."""
    by_volume: dict[str, list[AllocationRow]] = {}
    for a in allocs:
        by_volume.setdefault(a.volume_id or "", []).append(a)
    out: list[Need] = []
    for vol in volumes:
        if vol.state not in _HEALTH:
            continue
        mine = by_volume.get(vol.id, [])
        for a in mine:
            disk = view.disks.get(a.drive_id)
            dead = disk is None or disk.state in DEAD_DRIVE_STATES
            if dead and a.state == AllocationState.UNAVAILABLE:
                out.append(Need(vol, a.index, a.bytes, a))
        present = {a.index for a in mine}
        sizes = allocation_sizes(
            vol.size_bytes,
            vol.durability_type,
            vol.replicas or 3,
            vol.data_fragments or 4,
            vol.redundancy_fragments or 2,
            vol.snapshot_factor,
        )
        share = max((a.bytes for a in mine), default=0)
        for index in range(expected_copies(vol)):
            if index not in present:
                out.append(Need(vol, index, share or sizes[index], None))
    return out


def spread_percent(s: Session, pool_id: str) -> float:
    """Used fraction of the fullest ONLINE member drive minus the emptiest's, in points."""
    members = pool_repo.effective_drive_ids(s, pool_id)
    return spread(
        (d.used_bytes, d.total_bytes)
        for d in (s.get(DriveRow, i) for i in members)
        if d is not None and d.state == DriveState.ONLINE and not d.journal
    )


def spread(drives: Iterable[tuple[int, int]]) -> float:
    """The used fraction of the fullest of (used, total) drives minus the
    emptiest's, in percentage points; 0 for fewer than two drives with a size."""
    fractions = [used / total for used, total in drives if total]
    if len(fractions) < 2:
        return 0.0
    return round((max(fractions) - min(fractions)) * 100, 6)


def missing_copies(s: Session, pool: PoolRow) -> int:
    volumes = repo.volumes_of_pool(s, pool.id)
    allocs = repo.allocations_of_volumes(s, [vol.id for vol in volumes])
    return len(rebuild_needs(ClusterView(s, pool.cluster_id), volumes, allocs))


class Balancer:
    """Plans the balance moves of one pool on a copy of the topology."""

    def __init__(
        self,
        s: Session,
        view: ClusterView,
        pool_id: str,
        volumes: list[VolumeRow],
        allocs: list[AllocationRow],
    ) -> None:
        self.view = view.clone()
        members = self.view.members(pool_id)
        self.disks = [self.view.disks[d] for d in sorted(members) if d in self.view.disks]
        self.disks = [d for d in self.disks if d.takes_new]
        self.in_pool = {d.id for d in self.disks}
        healthy = {vol.id for vol in volumes if vol.state in _HEALTH}
        self.where = {a.id: a.drive_id for a in allocs}
        self.by_volume: dict[str, list[AllocationRow]] = {}
        for a in allocs:
            self.by_volume.setdefault(a.volume_id or "", []).append(a)
        self.rules: dict[str, Rules] = {}
        self.movable: list[AllocationRow] = []
        for a in allocs:
            if a.state != AllocationState.ACTIVE or a.volume_id not in healthy:
                continue
            if a.drive_id not in self.in_pool:
                continue
            rules = rules_of(s, a.volume_id, None, a.index)
            if rules.pool_id == pool_id:
                self.rules[a.id] = rules
                self.movable.append(a)

    def best(self) -> tuple[AllocationRow, Disk] | None:
        """The move that most lowers the potential, from the fullest drive that has one."""
        if len(self.disks) < 2:
            return None
        for src in sorted(self.disks, key=lambda d: (-d.fraction(), d.id)):
            best: tuple[Fraction, AllocationRow, Disk] | None = None
            for a in self.movable:
                if self.where[a.id] != src.id:
                    continue
                siblings = [
                    self.where[x.id] for x in self.by_volume[a.volume_id or ""] if x.id != a.id
                ]
                for t in self.view.eligible(self.rules[a.id], siblings, [src.id]):
                    if t.id not in self.in_pool or t.free < a.bytes:
                        continue
                    x = a.bytes
                    delta = Fraction(
                        (x - 2 * src.used) * t.total + (2 * t.used + x) * src.total,
                        src.total * t.total,
                    )
                    if delta < 0 and (best is None or (delta, t.id) < (best[0], best[2].id)):
                        best = (delta, a, t)
            if best is not None:
                return best[1], best[2]
        return None

    def apply(self, alloc: AllocationRow, target: Disk) -> None:
        self.view.disks[self.where[alloc.id]].used -= alloc.bytes
        target.used += alloc.bytes
        self.where[alloc.id] = target.id

    def plan(self, limit: int = MAX_PLAN) -> list[tuple[AllocationRow, Disk]]:
        out: list[tuple[AllocationRow, Disk]] = []
        while len(out) < limit:
            move = self.best()
            if move is None:
                break
            out.append((move[0], dataclasses.replace(move[1])))
            self.apply(*move)
        return out


@dataclass(frozen=True)
class PoolRebalanceSpec(Record):
    """The pool to rebalance (both what a start takes and what the job keeps)."""

    pool_id: str


@dataclass
class PoolRebalanceCheckpoint(moves.MovesCheckpoint):
    """The moves' checkpoint, the copies (``volume id:index``) found that cannot
    be rebuilt now, which later steps skip, and how many of the moves done were
    rebuilds of missing copies."""

    skipped: list[str] = field(default_factory=list)
    rebuilt: int = 0


Context = JobContext[PoolRebalanceSpec, PoolRebalanceCheckpoint]


class PoolRebalance(JobHandler[PoolRebalanceSpec, PoolRebalanceSpec, PoolRebalanceCheckpoint]):
    kind = JobKind.POOL_REBALANCE
    target_kind = OK.POOL
    request_type = PoolRebalanceSpec
    spec_type = PoolRebalanceSpec
    checkpoint_type = PoolRebalanceCheckpoint

    def existing(self, s: Session, request: PoolRebalanceSpec) -> JobRow | None:
        pool_id = request.pool_id
        if not v.ID_RE.fullmatch(pool_id):
            return None
        return repo.unfinished(s, self.kind, pool_id)

    def begin(self, s: Session, job: JobRow, request: PoolRebalanceSpec) -> PoolRebalanceSpec:
        pool_id = v.check_id(request.pool_id, "pool_id")
        pool = s.get(PoolRow, pool_id)
        if pool is None:
            raise NotFound.object("pool", "pool_id", pool_id)
        check_no_job(s, "pool", pool.id, pool.active_job_id)
        online = [
            d
            for d in (s.get(DriveRow, i) for i in pool_repo.effective_drive_ids(s, pool.id))
            if d is not None and d.state == DriveState.ONLINE and not d.journal
        ]
        if not online:
            raise FailedPrecondition(
                f"pool {pool.name} has no ONLINE drive to rebalance over",
                reason="POOL_EMPTY",
                metadata={"pool_id": pool.id},
            )
        pool.active_job_id = job.id
        pool.update_time = utcnow()
        pool.generation = job.generation
        job.cluster_id = pool.cluster_id
        job.target_id = pool.id
        return PoolRebalanceSpec(pool.id)

    def step(self, ctx: Context) -> bool:
        self._settle(ctx)
        skipped = set(ctx.checkpoint.skipped)
        newly: list[str] = []
        move: moves.Move | None = None
        unmet: list[tuple[Need, str]] = []
        retry: set[str] = set()
        with ctx.store.read() as s:
            view = ClusterView(s, ctx.cluster_id)
            volumes = repo.volumes_of_pool(s, ctx.target_id)
            allocs = repo.allocations_of_volumes(s, [vol.id for vol in volumes])
            missing = rebuild_needs(view, volumes, allocs)
            needs = [n for n in missing if n.key not in skipped]
            for need in needs:
                found = self._rebuild(s, view, need, allocs)
                if isinstance(found, moves.Move):
                    move = found
                    break
                newly.append(need.key)
            balance = Balancer(s, view, ctx.target_id, volumes, allocs).plan()
            if move is None and balance:
                alloc, target = balance[0]
                move = moves.Move(
                    allocation_id=alloc.id,
                    volume_id=alloc.volume_id,
                    snapshot_id=None,
                    index=alloc.index,
                    nbytes=alloc.bytes,
                    source_drive_id=alloc.drive_id,
                    rebuild=False,
                    target_drive_id=target.id,
                    target_node_id=target.node_id,
                )
            if move is None:
                # Nothing left to do: what is still missing, and why.
                for need in missing:
                    found = self._rebuild(s, view, need, allocs)
                    if isinstance(found, moves.Move):
                        retry.add(need.key)
                    else:
                        unmet.append((need, found))
        if move is None:
            return self._end(ctx, skipped | set(newly), retry, unmet)
        if newly:
            with ctx.write():
                ctx.checkpoint.skipped = sorted(skipped | set(newly))
        rebuilds = [n for n in needs if n.key not in newly]
        ctx.progress.total_steps = ctx.progress.done_steps + len(rebuilds) + len(balance)
        ctx.progress.total_bytes = (
            ctx.progress.done_bytes
            + sum(n.nbytes for n in rebuilds)
            + sum(a.bytes for a, _ in balance)
        )
        n, total = ctx.progress.done_steps + 1, ctx.progress.total_steps
        verb = "rebuilding copy" if move.rebuild else "moving allocation"
        done = ctx.progress.done_steps
        moves.perform(ctx, move, f"{verb} {n} of about {total}")
        if move.rebuild and ctx.progress.done_steps > done:
            ctx.checkpoint.rebuilt += 1
        return False

    @staticmethod
    def _settle(ctx: Context) -> None:
        """Finishes what a previous run left (see :func:`moves.settle`), counting a
        rebuild it completes."""
        inflight, done = ctx.checkpoint.inflight, ctx.progress.done_steps
        moves.settle(ctx)
        if inflight is not None and inflight.rebuild and ctx.progress.done_steps > done:
            ctx.checkpoint.rebuilt += 1

    def _end(
        self, ctx: Context, skipped: set[str], retry: set[str], unmet: list[tuple[Need, str]]
    ) -> bool:
        """The last step: True when no copy is missing; False to try again the skipped
        copies that can now be rebuilt; otherwise the job fails with a result that
        says what is missing and why."""
        with ctx.write():
            ctx.checkpoint.skipped = sorted(skipped - retry)
            if retry:
                return False
            ctx.progress.total_steps = ctx.progress.done_steps + len(unmet)
            ctx.progress.total_bytes = ctx.progress.done_bytes + sum(n.nbytes for n, _ in unmet)
            if unmet:
                ctx.result = self._short(ctx, unmet)
                ctx.progress.message = ctx.result.summary
        if not unmet:
            return True
        assert ctx.result is not None
        raise FailedPrecondition(
            ctx.result.summary,
            reason=ctx.result.reason,
            metadata={
                "pool_id": ctx.target_id,
                "missing_copies": str(len(unmet)),
                "volume_id": unmet[0][0].volume.id,
            },
        )

    @staticmethod
    def _short(ctx: Context, unmet: list[tuple[Need, str]]) -> JobResult:
        """The result of a rebalance that could not restore the copies of ``unmet``."""
        why = {reason for _, reason in unmet}
        reason = NO_VALID_TARGET if NO_VALID_TARGET in why else DATA_UNAVAILABLE
        no_target = sum(1 for _, r in unmet if r == NO_VALID_TARGET)
        parts = []
        if no_target:
            parts.append(f"{no_target} with no drive its placement allows that has room")
        if len(unmet) > no_target:
            parts.append(f"{len(unmet) - no_target} with too few available copies to rebuild from")
        summary = (
            f"{_copies(len(unmet))} of the pool's volumes still missing "
            f"({'; '.join(parts)}); {_done(ctx)}"
        )
        return JobResult(False, reason, summary, _counts(ctx, len(unmet)))

    @staticmethod
    def _rebuild(
        s: Session, view: ClusterView, need: Need, allocs: list[AllocationRow]
    ) -> moves.Move | str:
        """The move that rebuilds ``need``, or why it cannot be rebuilt now
        (DATA_UNAVAILABLE or NO_VALID_TARGET)."""
        mine = [
            a
            for a in allocs
            if a.volume_id == need.volume.id and (need.alloc is None or a.id != need.alloc.id)
        ]
        available = [a for a in mine if a.state == AllocationState.ACTIVE]
        if (
            len(available) < copies_to_read(need.volume)
            or need.volume.durability_type == DurabilityType.NONE
        ):
            return DATA_UNAVAILABLE
        try:
            target = view.choose(
                rules_of(s, need.volume.id, None, need.index),
                need.nbytes,
                [a.drive_id for a in mine],
            )
        except FailedPrecondition:
            return NO_VALID_TARGET
        return moves.Move(
            allocation_id=need.alloc.id if need.alloc else None,
            volume_id=need.volume.id,
            snapshot_id=None,
            index=need.index,
            nbytes=need.nbytes,
            source_drive_id=need.alloc.drive_id if need.alloc else None,
            rebuild=True,
            target_drive_id=target.id,
            target_node_id=target.node_id,
        )

    def finish(self, ctx: Context, s: Session, generation: int) -> None:
        ctx.result = JobResult(
            True,
            summary=f"no copy is missing; {_done(ctx)}",
            counts=_counts(ctx, 0),
        )

    def undo(self, ctx: Context) -> None:
        moves.undo(ctx)

    def abort(self, ctx: Context, s: Session, generation: int) -> None:
        moves.forget(ctx)
        if ctx.result is not None and not ctx.result.complete:
            return  # the step that found copies missing said what it could not do
        row = s.get(JobRow, ctx.job_id)
        cancelled = row is not None and row.cancel_requested
        pool = s.get(PoolRow, ctx.target_id)
        missing = missing_copies(s, pool) if pool is not None else 0
        how = "cancelled" if cancelled else "stopped by an error"
        ctx.result = JobResult(
            False,
            "CANCELLED" if cancelled else "JOB_FAILED",
            f"{how}; {_done(ctx)}; the moves made stay where they went; "
            f"{_copies(missing)} of the pool's volumes missing",
            _counts(ctx, missing),
        )


def _counts(ctx: Context, missing: int) -> dict[str, int]:
    return {
        "moved_copies": ctx.progress.done_steps,
        "rebuilt_copies": ctx.checkpoint.rebuilt,
        "moved_bytes": ctx.progress.done_bytes,
        "missing_copies": missing,
    }


def _done(ctx: Context) -> str:
    """What the job has done, for people."""
    return (
        f"placed {_copies(ctx.progress.done_steps)} ({human(ctx.progress.done_bytes)}), "
        f"{ctx.checkpoint.rebuilt} of them rebuilt"
    )


def _copies(n: int) -> str:
    return f"{n} copy" if n == 1 else f"{n} copies"
