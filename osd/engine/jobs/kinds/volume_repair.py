"""VOLUME_REPAIR: rebuild the copies a volume lost (the repair controller of
:mod:`osd.engine.volumes.repair`, and VolumeService.RepairVolume).

Started on a volume that is UP or DEGRADED, has enough live copies to be
read, and no other job in progress; it marks the volume (``active_job_id``)
and records, in its spec, the copies to rebuild: each by index, with the
allocation that holds it UNAVAILABLE (on an ejected drive, or an OFFLINE or
MAINTENANCE node), or none when the allocation is gone (its drive was
forgotten). At most ``max_repairs`` repairs are unfinished in a cluster at
once: one more is refused (REPAIR_LIMIT).

Each step rebuilds one copy as a move of :mod:`osd.engine.jobs.moves`: the
bytes are reserved PENDING on a drive the copy's placement allows (in its
pool, with its selectors, outside the failure domains of the volume's other
copies, on a drive that fewer than ``max_per_drive`` other repairs write
to), the driver creates the copy there from the volume's live copies, and
one transaction switches over: the copy's allocation moves to the new drive
(or the reservation becomes the copy of a lost index), ACTIVE, and the old
copy is deleted from its drive. A copy that came back meanwhile (its node
is ONLINE again) is left alone; one that cannot be rebuilt now (too few
live copies, no drive may take it) is skipped and reported in the result.

A cancel or a failure keeps the copies already rebuilt and undoes the one in
flight. The job's result counts the copies rebuilt, skipped and found back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from osd.engine.jobs import moves
from osd.engine.jobs.handler import JobContext, JobHandler
from osd.engine.jobs.models import JobResult
from osd.engine.jobs.records import Record
from osd.engine.placement.cluster_view import ClusterView
from osd.engine.placement.rules import copies_to_read, rules_of
from osd.engine.shared import validation as v
from osd.engine.shared.rows import stamp
from osd.engine.volumes.guards import get_volume, require_no_job, require_serving, require_settled
from osd.engine.volumes.health import LIVE, health_of
from osd.enums import AllocationState, DurabilityType, JobKind, ObjectKind
from osd.errors import FailedPrecondition, ResourceExhausted
from osd.store import volumes as vol_repo
from osd.store.models import AllocationRow, JobRow, VolumeRow

# How long a step waits for a drive that other repairs write to, and how often.
BUSY_WAIT_SECONDS = 0.5
BUSY_WAITS_MAX = 240


@dataclass(frozen=True)
class Lost(Record):
    """A copy to rebuild: its index, and the allocation that holds it UNAVAILABLE
    ("" when the allocation is gone)."""

    index: int
    allocation_id: str = ""

    @property
    def key(self) -> str:
        return str(self.index)


@dataclass(frozen=True)
class VolumeRepairRequest(Record):
    """A repair to start. ``indices`` limits it to some copies (the controller
    leaves out those it must not rebuild yet); empty means every missing copy.
    ``max_repairs`` and ``max_per_drive`` are the cluster's limits in force."""

    volume_id: str
    indices: tuple[int, ...] = ()
    max_repairs: int = 1
    max_per_drive: int = 1


@dataclass(frozen=True)
class VolumeRepairSpec(Record):
    """A repair as the job keeps it: the volume, the copies to rebuild and the
    per-drive limit."""

    volume_id: str
    lost: tuple[Lost, ...]
    max_per_drive: int = 1


@dataclass
class VolumeRepairCheckpoint(moves.MovesCheckpoint):
    """The moves' checkpoint; the copies (by key) rebuilt, found live again, or
    skipped with the reason; how long the current copy has waited for a drive."""

    rebuilt: list[str] = field(default_factory=list)
    back: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    busy_waits: int = 0
    current: str = ""


Context = JobContext[VolumeRepairSpec, VolumeRepairCheckpoint]


class VolumeRepair(JobHandler[VolumeRepairRequest, VolumeRepairSpec, VolumeRepairCheckpoint]):
    kind = JobKind.VOLUME_REPAIR
    target_kind = ObjectKind.VOLUME
    request_type = VolumeRepairRequest
    spec_type = VolumeRepairSpec
    checkpoint_type = VolumeRepairCheckpoint

    def existing(self, s: Session, request: VolumeRepairRequest) -> JobRow | None:
        if not v.ID_RE.fullmatch(request.volume_id):
            return None
        found = vol_repo.unfinished_jobs_of_kind(s, self.kind, target_ids=[request.volume_id])
        return found[0] if found else None

    def begin(self, s: Session, job: JobRow, request: VolumeRepairRequest) -> VolumeRepairSpec:
        volume_id = v.check_id(request.volume_id, "volume_id")
        row = get_volume(s, volume_id)
        # Writers are serialised here: a repair another daemon started wins.
        other = self.existing(s, request)
        if other is not None:
            raise FailedPrecondition(
                f"volume {row.name} ({row.id}) is being repaired by job {other.id}",
                reason="JOB_IN_PROGRESS",
                metadata={"job_id": other.id, "volume_id": row.id},
            )
        require_no_job(row)
        require_serving(row)
        require_settled(s, row)
        health = health_of(row, vol_repo.copy_views(s, [row.id]).get(row.id, []))
        wanted = set(request.indices)
        lost = tuple(
            Lost(m.index, m.allocation_id)
            for m in health.missing
            if not wanted or m.index in wanted
        )
        if not lost:
            raise FailedPrecondition(
                f"volume {row.name} ({row.id}) has all its {health.declared} copies live",
                reason="NOTHING_TO_REPAIR",
                metadata={"volume_id": row.id},
            )
        if row.durability_type == DurabilityType.NONE or health.live < health.needed:
            raise FailedPrecondition(
                f"volume {row.name} ({row.id}) has {health.live} live copies; "
                f"{health.needed} are needed to rebuild the others",
                reason="DATA_UNAVAILABLE",
                metadata={"volume_id": row.id},
            )
        running = vol_repo.unfinished_jobs_of_kind(s, self.kind, cluster_id=row.cluster_id)
        limit = max(1, request.max_repairs)
        if len(running) >= limit:
            raise ResourceExhausted(
                f"{len(running)} repairs are unfinished in the cluster, the most its "
                "repair policy allows; retry later",
                reason="REPAIR_LIMIT",
                metadata={"max_repairs": str(limit), "cluster_id": row.cluster_id},
            )
        row.active_job_id = job.id
        stamp(row, job.generation)
        job.cluster_id = row.cluster_id
        job.target_id = row.id
        job.progress_total_steps = len(lost)
        indices = {x.index for x in lost}
        job.progress_total_bytes = sum(m.nbytes for m in health.missing if m.index in indices)
        return VolumeRepairSpec(row.id, lost, max(1, request.max_per_drive))

    # -- the steps ------------------------------------------------------------------

    def step(self, ctx: Context) -> bool:
        moves.settle(ctx)
        cp = ctx.checkpoint
        done = set(cp.rebuilt) | set(cp.back) | set(cp.skipped)
        todo = [lost for lost in ctx.spec.lost if lost.key not in done]
        if not todo:
            return True
        lost = todo[0]
        with ctx.store.read() as s:
            outcome = self._plan(s, ctx, lost)
        if isinstance(outcome, moves.Move):
            n = len(done) + 1
            # Saved with the move's reservation: a resumed job that finds the
            # copy live counts it as rebuilt, not as back by itself.
            ctx.checkpoint.current = lost.key
            if not moves.perform(ctx, outcome, f"rebuilding copy {n} of {len(ctx.spec.lost)}"):
                return False  # the copy moved meanwhile: plan it again
            outcome = "rebuilt"
        if outcome == "busy":
            return self._wait_busy(ctx, lost)
        with ctx.write():
            cp = ctx.checkpoint
            if outcome == "rebuilt" or (outcome == "back" and cp.current == lost.key):
                cp.rebuilt = sorted(set(cp.rebuilt) | {lost.key})  # the move counted its step
            elif outcome == "back":
                cp.back = sorted(set(cp.back) | {lost.key})
                ctx.progress.message = f"copy {lost.index} is live again"
                ctx.progress.done_steps += 1
            else:
                cp.skipped = {**cp.skipped, lost.key: outcome}
                ctx.progress.message = f"copy {lost.index} cannot be rebuilt now: {outcome}"
                ctx.progress.done_steps += 1
            cp.current = ""
            cp.busy_waits = 0
        return False

    def _plan(self, s: Session, ctx: Context, lost: Lost) -> moves.Move | str:
        """The move that rebuilds ``lost``; or "back" when it is live again, "busy"
        when only drives at their repair limit could take it, or why it cannot be
        rebuilt now."""
        row = s.get(VolumeRow, ctx.target_id)
        if row is None:
            return "VOLUME_GONE"
        allocs = vol_repo.allocations(s, row.id)
        source = s.get(AllocationRow, lost.allocation_id) if lost.allocation_id else None
        if source is not None and source.volume_id != row.id:
            source = None
        at_index = [
            a for a in allocs if a.index == lost.index and a.state != AllocationState.PENDING
        ]
        if any(a.state in LIVE for a in at_index):
            return "back"
        if source is None and at_index:
            source = at_index[0]  # the copy is still held, by another allocation
        others = [a for a in allocs if source is None or a.id != source.id]
        live = [a for a in others if a.state == AllocationState.ACTIVE]
        if row.durability_type == DurabilityType.NONE or len(live) < copies_to_read(row):
            return "DATA_UNAVAILABLE"
        nbytes = source.bytes if source is not None else max((a.bytes for a in allocs), default=0)
        view = ClusterView(s, ctx.cluster_id)
        rules = rules_of(s, row.id, None, lost.index)
        siblings = [a.drive_id for a in others]
        exclude = [source.drive_id] if source is not None else []
        busy = self._busy_drives(s, ctx)
        try:
            target = view.choose(rules, nbytes, siblings, [*exclude, *busy])
        except FailedPrecondition as exc:
            if busy:
                try:
                    view.choose(rules, nbytes, siblings, exclude)
                except FailedPrecondition:
                    return exc.reason
                return "busy"
            return exc.reason
        return moves.Move(
            allocation_id=source.id if source is not None else None,
            volume_id=row.id,
            snapshot_id=None,
            index=lost.index,
            nbytes=nbytes,
            source_drive_id=source.drive_id if source is not None else None,
            rebuild=True,
            target_drive_id=target.id,
            target_node_id=target.node_id,
        )

    def _busy_drives(self, s: Session, ctx: Context) -> list[str]:
        """Drives that ``max_per_drive`` other unfinished repairs write to."""
        others = [
            j.id
            for j in vol_repo.unfinished_jobs_of_kind(s, self.kind, cluster_id=ctx.cluster_id)
            if j.id != ctx.job_id
        ]
        counts: dict[str, int] = {}
        for res in vol_repo.job_reservations(s, others):
            counts[res.drive_id] = counts.get(res.drive_id, 0) + 1
        return sorted(d for d, n in counts.items() if n >= ctx.spec.max_per_drive)

    def _wait_busy(self, ctx: Context, lost: Lost) -> bool:
        waits = ctx.checkpoint.busy_waits
        if waits >= BUSY_WAITS_MAX:
            with ctx.write():
                ctx.checkpoint.skipped = {**ctx.checkpoint.skipped, lost.key: "DRIVES_BUSY"}
                ctx.checkpoint.busy_waits = 0
                ctx.progress.done_steps += 1
            return False
        if waits == 0:
            # Said once; the count itself is saved with the step's next write,
            # not on every wait (a write bumps the store's generation).
            with ctx.write():
                ctx.progress.message = "waiting for a drive that other repairs write to"
        ctx.checkpoint.busy_waits = waits + 1
        time.sleep(BUSY_WAIT_SECONDS)
        return False

    # -- the end --------------------------------------------------------------------

    def finish(self, ctx: Context, s: Session, generation: int) -> None:
        self._release(ctx, s, generation)
        ctx.result = self._result(ctx)

    def undo(self, ctx: Context) -> None:
        moves.undo(ctx)

    def abort(self, ctx: Context, s: Session, generation: int) -> None:
        moves.forget(ctx)
        self._release(ctx, s, generation)
        ctx.result = self._result(ctx, ended_early=True)

    @staticmethod
    def _release(ctx: Context, s: Session, generation: int) -> None:
        row = s.get(VolumeRow, ctx.target_id)
        if row is not None and row.active_job_id == ctx.job_id:
            row.active_job_id = None
            stamp(row, generation)
        ctx.notify(s, [ctx.target_id])

    @staticmethod
    def _result(ctx: Context, *, ended_early: bool = False) -> JobResult:
        cp = ctx.checkpoint
        rebuilt, back, skipped = len(cp.rebuilt), len(cp.back), len(cp.skipped)
        left = len(ctx.spec.lost) - rebuilt - back - skipped
        parts = [f"rebuilt {rebuilt} of {len(ctx.spec.lost)} copies"]
        if back:
            parts.append(f"{back} came back by themselves")
        if skipped:
            why = ", ".join(f"copy {k}: {r}" for k, r in sorted(cp.skipped.items()))
            parts.append(f"{skipped} could not be rebuilt ({why})")
        complete = not skipped and not ended_early and left <= 0
        reason = ""
        if skipped:
            reason = "COPIES_NOT_REBUILT"
        elif not complete:
            reason = "ENDED_EARLY"
        return JobResult(
            complete=complete,
            reason=reason,
            summary=f"volume {ctx.target_id}: " + "; ".join(parts),
            counts={"rebuilt": rebuilt, "back": back, "skipped": skipped, "left": max(0, left)},
        )
