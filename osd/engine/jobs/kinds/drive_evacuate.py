"""Soft eject (DRIVE_EVACUATE): the drive SOFT_EJECTING while its copies move
to other drives; EJECTED when DONE, ONLINE again when cancelled or failed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from osd.engine.jobs.handler import JobContext
from osd.engine.jobs.kinds.evacuation import Evacuation, check_feasible
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
        return repo.unfinished(s, self.kind, drive_id)

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
        drive.state = DriveState.SOFT_EJECTING
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
            drive.state = DriveState.EJECTED
            stamp(drive, generation)

    def abort(self, ctx: JobContext, s: Session, generation: int) -> None:
        super().abort(ctx, s, generation)
        drive = s.get(DriveRow, ctx.target_id)
        if drive is not None and drive.state == DriveState.SOFT_EJECTING:
            drive.state = DriveState.ONLINE
            stamp(drive, generation)
