"""POOL_REBALANCE: restore missing copies, then even out a pool's drives
(Service.StartPoolRebalance).

Each step does one move (see :mod:`osd.engine.jobs.kinds.moves`):

1. Rebuild: a copy of one of the pool's volumes that is lost (its
   allocation was released by ForgetDrive) or UNAVAILABLE on an EJECTED or
   FAILED drive is created anew on a drive its placement allows, from the
   volume's other available copies. A copy that cannot be rebuilt now (no
   available source, or no drive may take it) is skipped and reported.
2. Balance: the move of one of the pool's copies between ONLINE member
   drives that most lowers sum(used^2 / total) over the drives, which is
   least when every drive is used to the same fraction of its size. Each
   move strictly lowers it, so the job ends; it ends when no move within the
   placement rules lowers it any more.

A cancel or a failure leaves the moves already made and undoes the one in
flight.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction

from sqlalchemy.orm import Session

from osd.engine.jobs import moves
from osd.engine.jobs.handler import JobContext, JobHandler
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
from osd.enums import AllocationState, DriveState, DurabilityType, JobKind, VolumeState
from osd.enums import ObjectKind as OK
from osd.errors import FailedPrecondition, NotFound
from osd.store import jobs as repo
from osd.store import pools as pool_repo
from osd.store.models import AllocationRow, DriveRow, JobRow, PoolRow, VolumeRow, utcnow

_HEALTH = (VolumeState.UP, VolumeState.DEGRADED, VolumeState.DOWN)
MAX_PLAN = 10_000


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
    fractions = [
        d.used_bytes / d.total_bytes
        for d in (s.get(DriveRow, i) for i in members)
        if d is not None and d.state == DriveState.ONLINE and not d.journal and d.total_bytes
    ]
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
    """The moves' checkpoint, and the copies (``volume id:index``) found that
    cannot be rebuilt now, which later steps skip."""

    skipped: list[str] = field(default_factory=list)


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
        moves.settle(ctx)
        skipped = set(ctx.checkpoint.skipped)
        newly: list[str] = []
        move: moves.Move | None = None
        with ctx.store.read() as s:
            view = ClusterView(s, ctx.cluster_id)
            volumes = repo.volumes_of_pool(s, ctx.target_id)
            allocs = repo.allocations_of_volumes(s, [vol.id for vol in volumes])
            needs = [n for n in rebuild_needs(view, volumes, allocs) if n.key not in skipped]
            for need in needs:
                move = self._rebuild(s, view, need, allocs)
                if move is not None:
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
        rebuilds = len(needs) - len(newly)
        if newly or move is None:
            with ctx.write():
                ctx.checkpoint.skipped = sorted(skipped | set(newly))
                if ctx.checkpoint.skipped:
                    ctx.progress.message = (
                        f"{len(ctx.checkpoint.skipped)} copies could not be rebuilt"
                    )
        if move is None:
            return True
        ctx.progress.total_steps = ctx.progress.done_steps + rebuilds + len(balance)
        n, total = ctx.progress.done_steps + 1, ctx.progress.total_steps
        verb = "rebuilding copy" if move.rebuild else "moving allocation"
        moves.perform(ctx, move, f"{verb} {n} of about {total}")
        return False

    @staticmethod
    def _rebuild(
        s: Session, view: ClusterView, need: Need, allocs: list[AllocationRow]
    ) -> moves.Move | None:
        """The move that rebuilds ``need``, or None when it cannot be rebuilt now."""
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
            return None
        try:
            target = view.choose(
                rules_of(s, need.volume.id, None, need.index),
                need.nbytes,
                [a.drive_id for a in mine],
            )
        except FailedPrecondition:
            return None
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

    def undo(self, ctx: Context) -> None:
        moves.undo(ctx)

    def abort(self, ctx: Context, s: Session, generation: int) -> None:
        moves.forget(ctx)
