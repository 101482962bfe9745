"""Soft eject (DRIVE_EVACUATE): the drive SOFT_EJECTING while its copies move
to other drives; EJECTED when DONE, ONLINE again when cancelled or failed.

A cancel (or a failure) does not move back what already moved: those copies
stay on the drives they went to (a later rebalance may move them back), and
the job's result says so, counting ``moved_copies``, ``moved_bytes`` and the
``remaining_copies`` still on the drive. DONE also sets the result."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from osd.engine.jobs.kinds.evacuation import (
    Context,
    Evacuation,
    check_feasible,
    moved_result,
)
from osd.engine.jobs.records import Record
from osd.engine.shared import validation as v
from osd.engine.shared.refusals import check_no_job
from osd.engine.shared.rows import get_drive, stamp
from osd.enums import DriveState, JobKind
from osd.enums import ObjectKind as OK
from osd.errors import FailedPrecondition
from osd.store import jobs as repo
from osd.store.models import (
    DriveRow,
    JobRow,
)


@dataclass(frozen=True)
class DriveEvacuateSpec(Record):
    """The drive to empty (both what a start takes and what the job keeps)."""

    drive_id: str


class DriveEvacuate(Evacuation[DriveEvacuateSpec, DriveEvacuateSpec]):
    """Soft eject: the drive SOFT_EJECTING while its copies move; EJECTED when DONE,
    ONLINE again when cancelled or failed."""

    kind = JobKind.DRIVE_EVACUATE
    target_kind = OK.DRIVE
    request_type = DriveEvacuateSpec
    spec_type = DriveEvacuateSpec

    def existing(self, s: Session, request: DriveEvacuateSpec) -> JobRow | None:
        drive_id = request.drive_id
        if not v.ID_RE.fullmatch(drive_id):
            return None
        row = s.get(DriveRow, drive_id)
        if row is None or row.state != DriveState.SOFT_EJECTING:
            return None
        return repo.unfinished(s, self.kind, drive_id)

    def begin(self, s: Session, job: JobRow, request: DriveEvacuateSpec) -> DriveEvacuateSpec:
        drive = get_drive(s, request.drive_id)
        check_no_job(s, "drive", drive.id, drive.active_job_id)
        if drive.state != DriveState.ONLINE:
            state = DriveState(drive.state).name
            raise FailedPrecondition(
                f"drive {drive.id} is {state}: only an ONLINE drive can be soft-ejected",
                reason="DRIVE_NOT_ONLINE",
                metadata={"drive_id": drive.id, "state": state},
            )
        check_feasible(s, drive.cluster_id, [drive.id])
        drive.state = DriveState.SOFT_EJECTING
        drive.active_job_id = job.id
        stamp(drive, job.generation)
        job.cluster_id = drive.cluster_id
        job.target_id = drive.id
        job.related = [{"kind": int(OK.NODE), "id": drive.node_id}]
        job.progress_total_bytes = drive.used_bytes
        return DriveEvacuateSpec(drive.id)

    def sources(self, s: Session, ctx: Context[DriveEvacuateSpec]) -> list[str]:
        return [ctx.target_id]

    def finish(self, ctx: Context[DriveEvacuateSpec], s: Session, generation: int) -> None:
        ctx.result = moved_result(ctx, s, [ctx.target_id], f"drive {ctx.target_id}", done=True)
        drive = s.get(DriveRow, ctx.target_id)
        if drive is not None and drive.state == DriveState.SOFT_EJECTING:
            drive.state = DriveState.EJECTED
            stamp(drive, generation)

    def abort(self, ctx: Context[DriveEvacuateSpec], s: Session, generation: int) -> None:
        super().abort(ctx, s, generation)
        ctx.result = moved_result(ctx, s, [ctx.target_id], f"drive {ctx.target_id}", done=False)
        drive = s.get(DriveRow, ctx.target_id)
        if drive is not None and drive.state == DriveState.SOFT_EJECTING:
            drive.state = DriveState.ONLINE
            stamp(drive, generation)
