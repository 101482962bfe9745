"""SNAPSHOT_COPY: a snapshot taken as a full copy of each of a volume's copies,
where their drives share no blocks (VolumeService.CreateSnapshot; see
:meth:`~osd.engine.drivers.base.SnapshotOps.shares_blocks`).

Started in CreateSnapshot's transaction: the snapshot is recorded CREATING and
the volume names the job as its active job, so that while its data is read
it can be neither deleted, resized, reverted nor reshaped. A snapshot must be
of one moment, and a copy of data being written is of none: the start is
refused while the volume is attached read-write (VOLUME_ATTACHED), and a
read-write attach is refused while the job runs (JOB_IN_PROGRESS).

Steps: one copy of the volume's data per step, made by the driver on the
drive the copy is on, with the bytes copied reported as progress. A cancel
or a pause asked mid-copy stops the copy (its half-file is deleted) and is
honoured at once. When every copy is made the snapshot is READY. Failed or
cancelled, the copies made are deleted and the snapshot is gone, as if it
had never been asked for. A resumed job makes the unfinished copy again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from osd.engine.jobs.handler import Interrupted, JobContext, JobHandler
from osd.engine.jobs.records import Record
from osd.engine.shared.rows import stamp
from osd.engine.volumes.guards import require_no_job, require_serving, require_settled
from osd.enums import AllocationState, AttachMode, JobKind, JobState, SnapshotState
from osd.enums import ObjectKind as OK
from osd.errors import FailedPrecondition, NotFound
from osd.store import attachments as attach_repo
from osd.store import jobs as repo
from osd.store import snapshots as snap_repo
from osd.store.models import JobRow, SnapshotRow, VolumeRow

# How often, at most, a copy's progress is written to the store.
PROGRESS_SECONDS = 1.0


@dataclass(frozen=True, kw_only=True)
class SnapshotCopyRequest(Record):
    """The snapshot to take, recorded CREATING in the same transaction."""

    snapshot_id: str


@dataclass(frozen=True)
class CopyWork(Record):
    """One copy of the volume to snapshot: where it is, and its size."""

    drive_id: str
    replica_id: str
    nbytes: int


@dataclass(frozen=True, kw_only=True)
class SnapshotCopySpec(Record):
    snapshot_id: str
    volume_id: str
    work: tuple[CopyWork, ...]


@dataclass
class SnapshotCopyCheckpoint(Record):
    """The copies (replica ids) whose snapshot is made."""

    made: list[str] = field(default_factory=list)


Context = JobContext[SnapshotCopySpec, SnapshotCopyCheckpoint]


def copy_job_of(s: Session, snapshot_id: str) -> JobRow | None:
    """The unfinished SNAPSHOT_COPY job taking ``snapshot_id``, if any."""
    job = repo.latest(s, JobKind.SNAPSHOT_COPY, snapshot_id)
    return job if job is not None and not JobState(job.state).final else None


def copying(s: Session, volume: VolumeRow) -> JobRow | None:
    """The unfinished SNAPSHOT_COPY job reading ``volume``, if any."""
    if not volume.active_job_id:
        return None
    job = s.get(JobRow, volume.active_job_id)
    if job is None or job.kind != JobKind.SNAPSHOT_COPY or JobState(job.state).final:
        return None
    return job


class SnapshotCopy(JobHandler[SnapshotCopyRequest, SnapshotCopySpec, SnapshotCopyCheckpoint]):
    kind = JobKind.SNAPSHOT_COPY
    target_kind = OK.SNAPSHOT
    request_type = SnapshotCopyRequest
    spec_type = SnapshotCopySpec
    checkpoint_type = SnapshotCopyCheckpoint

    def begin(self, s: Session, job: JobRow, request: SnapshotCopyRequest) -> SnapshotCopySpec:
        snap = s.get(SnapshotRow, request.snapshot_id)
        if snap is None or snap.state != SnapshotState.CREATING:
            raise NotFound.object("snapshot", "snapshot_id", request.snapshot_id)
        volume = s.get(VolumeRow, snap.volume_id)
        if volume is None:
            raise NotFound.object("volume", "volume_id", snap.volume_id)
        require_serving(volume)
        require_no_job(volume)
        writers = [
            a.node_id
            for a in attach_repo.of_volume(s, volume.id)
            if a.mode == AttachMode.READ_WRITE
        ]
        if writers:
            raise FailedPrecondition(
                f"volume {volume.name} ({volume.id}) is attached read-write to node "
                f"{writers[0]}; its drives share no blocks, so a snapshot is a full copy, "
                "which is of no single moment while the volume is written: detach it, or "
                "attach it read-only, first",
                reason="VOLUME_ATTACHED",
                metadata={"volume_id": volume.id, "node_id": writers[0]},
            )
        allocs = require_settled(s, volume)
        works = tuple(
            CopyWork(a.drive_id, a.id, volume.size_bytes)
            for a in sorted(allocs, key=lambda a: a.index)
            if a.state == AllocationState.ACTIVE
        )
        volume.active_job_id = job.id
        stamp(volume, job.generation)
        job.cluster_id = volume.cluster_id
        job.target_id = snap.id
        job.related = [{"kind": int(OK.VOLUME), "id": volume.id}]
        job.progress_total_steps = len(works)
        job.progress_total_bytes = sum(w.nbytes for w in works)
        return SnapshotCopySpec(snapshot_id=snap.id, volume_id=volume.id, work=works)

    def step(self, ctx: Context) -> bool:
        made = set(ctx.checkpoint.made)
        todo = [w for w in ctx.spec.work if w.replica_id not in made]
        if not todo:
            return True
        work = todo[0]
        before = sum(w.nbytes for w in ctx.spec.work if w.replica_id in made)
        ctx.driver.create_snapshot(
            work.drive_id,
            work.replica_id,
            ctx.spec.snapshot_id,
            progress=_reporter(ctx, before, work.nbytes),
        )
        with ctx.write():
            ctx.checkpoint.made = sorted(made | {work.replica_id})
            ctx.progress.done_steps = len(made) + 1
            ctx.progress.done_bytes = before + work.nbytes
            ctx.progress.message = f"copied {len(made) + 1} of {len(ctx.spec.work)}"
        return len(todo) == 1

    def finish(self, ctx: Context, s: Session, generation: int) -> None:
        snap = snap_repo.get(s, ctx.spec.snapshot_id)
        if snap is not None and snap.state == SnapshotState.CREATING:
            snap.state = SnapshotState.READY
            stamp(snap, generation)
        self._release(ctx, s, generation)

    def undo(self, ctx: Context) -> None:
        """Deletes the snapshot's copies made so far, and the one in the making."""
        for work in ctx.spec.work:
            try:
                ctx.driver.delete_snapshot(work.drive_id, ctx.spec.snapshot_id)
            except Exception:  # best effort: a drive that is gone took its data along
                continue

    def abort(self, ctx: Context, s: Session, generation: int) -> None:
        snap = snap_repo.get(s, ctx.spec.snapshot_id)
        if snap is not None and snap.state == SnapshotState.CREATING:
            snap_repo.remove(s, snap.id)
        ctx.checkpoint.made = []
        self._release(ctx, s, generation)

    @staticmethod
    def _release(ctx: Context, s: Session, generation: int) -> None:
        volume = s.get(VolumeRow, ctx.spec.volume_id)
        if volume is not None and volume.active_job_id == ctx.job_id:
            volume.active_job_id = None
            stamp(volume, generation)


def _reporter(ctx: Context, before: int, nbytes: int) -> Callable[[int], None]:
    """A progress callback for one copy: writes the bytes copied at most every
    PROGRESS_SECONDS, and stops the copy (Interrupted) once a cancel or a
    pause is asked."""
    last = time.monotonic()

    def report(copied: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_SECONDS:
            return
        last = now
        with ctx.write() as (s, _):
            row = s.get_one(JobRow, ctx.job_id)
            if row.cancel_requested or row.pause_requested:
                raise Interrupted(ctx.job_id)
            ctx.progress.done_bytes = before + min(copied, nbytes)

    return report
