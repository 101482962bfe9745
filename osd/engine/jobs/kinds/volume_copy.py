"""VOLUME_COPY: a new volume filled with the data of another
(VolumeService.CreateVolume with source.volume_id).

Started in CreateVolume's transaction: the new volume is recorded CREATING
with its copies placed and reserved (PENDING, tagged with the job), and both
volumes name the job as their active job: the source can be neither deleted,
resized nor reshaped while it is read (other copies of the same source share
its mark). Steps: one copy of the new volume per step, filled by the driver
from an ACTIVE copy of the source; then the switch makes the copies ACTIVE
and the volume UP. Failed or cancelled: the copies made are deleted and the
new volume is gone, as if it had never been asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from osd.engine.jobs.handler import JobContext
from osd.engine.jobs.kinds.volume_job import (
    VolumeJob,
    Work,
    activate,
    mark,
    reserve,
    reserved,
    set_totals,
    unfinished,
    works_of,
)
from osd.engine.volumes import create_plan as volume_create
from osd.engine.volumes import specs
from osd.engine.volumes.guards import SERVING
from osd.engine.volumes.phases import stamp
from osd.enums import AllocationState, JobKind, VolumeState
from osd.enums import ObjectKind as OK
from osd.errors import FailedPrecondition, NotFound
from osd.store import allocations
from osd.store import jobs as repo
from osd.store import volumes as vol_repo
from osd.store.models import JobRow, VolumeRow


def source_not_available(source: VolumeRow, why: str, **extra: str) -> FailedPrecondition:
    state = VolumeState(source.state).name
    return FailedPrecondition(
        f"source volume {source.name} ({source.id}) {why}",
        reason="SOURCE_NOT_AVAILABLE",
        metadata={"volume_id": source.id, "state": state, **extra},
    )


class VolumeCopy(VolumeJob):
    kind = JobKind.VOLUME_COPY
    verb = "filling copy"

    def begin(self, s: Session, job: JobRow, spec: Mapping[str, Any]) -> None:
        """``spec``: "plan" (the resolved :class:`~osd.engine.volume_create.Plan`)
        and "volume_id" (the new volume's id)."""
        plan: volume_create.Plan = spec["plan"]
        volume_id = str(spec["volume_id"])
        source = s.get(VolumeRow, plan.source.id)
        if source is None:
            raise NotFound.object("volume", "source.volume_id", plan.source.id)
        if source.state not in SERVING:
            raise source_not_available(source, "is not UP or DEGRADED")
        self._claim(s, source, job)
        picks = volume_create.place(s, plan)
        row = volume_create.new_row(plan, volume_id, job.generation)
        vol_repo.add(s, row)
        reserve_sizes = specs.reserved_sizes(
            plan.size_bytes, plan.durability, plan.snapshot_factor, plan.provisioning
        )
        shares = specs.share_sizes(plan.size_bytes, plan.durability)
        works = []
        for index, (pick, nbytes) in enumerate(zip(picks, reserve_sizes, strict=True)):
            res = reserve(s, job, row, pick, nbytes=nbytes, index=index)
            works.append(Work(res.id, res.drive_id, res.id, shares[index], index))
        mark(row, job)
        job.related = [{"kind": int(OK.VOLUME), "id": source.id}]
        job.spec = {
            "volume_id": row.id,
            "source_volume_id": source.id,
            "work": [w.to_json() for w in works],
        }
        set_totals(job, works)

    @staticmethod
    def _claim(s: Session, source: VolumeRow, job: JobRow) -> None:
        """Marks the source as read by ``job``; a source another copy already reads
        keeps that copy's mark. Any other unfinished job on the source refuses."""
        if source.active_job_id:
            other = s.get(JobRow, source.active_job_id)
            if unfinished(other):
                assert other is not None
                if other.kind == JobKind.VOLUME_COPY and _source_of(other) == source.id:
                    return
                raise source_not_available(
                    source,
                    f"is the target of unfinished job {other.id}",
                    job_id=other.id,
                )
        source.active_job_id = job.id
        stamp(source, job.generation)

    def make(self, ctx: JobContext, work: Work) -> None:
        source_id = str(ctx.spec["source_volume_id"])
        with ctx.store.read() as s:
            source = s.get(VolumeRow, source_id)
            if source is None:
                raise NotFound.object("volume", "source.volume_id", source_id)
            readable = [
                a for a in vol_repo.allocations(s, source_id) if a.state == AllocationState.ACTIVE
            ]
            if source.state not in SERVING or not readable:
                raise source_not_available(source, "has no copy that can be read")
            pick = next((a for a in readable if a.index == work.index), readable[0])
        ctx.driver.clone_replica(
            pick.drive_id, pick.id, work.drive_id, work.replica_id, work.nbytes
        )

    def switch(
        self, ctx: JobContext, s: Session, generation: int, row: VolumeRow
    ) -> list[list[str]]:
        for work in works_of(ctx):
            activate(s, reserved(s, ctx, work))
        if row.state == VolumeState.CREATING:
            row.state = VolumeState.UP  # the availability listener corrects it
        stamp(row, generation)
        self._release_source(ctx, s, generation)
        return []

    def restore(self, ctx: JobContext, s: Session, generation: int) -> None:
        row = s.get(VolumeRow, ctx.target_id)
        if row is not None and row.state == VolumeState.CREATING:
            for alloc in vol_repo.allocations(s, row.id):
                allocations.release(s, alloc)
            vol_repo.remove(s, row.id)
        self._release_source(ctx, s, generation)

    @staticmethod
    def _release_source(ctx: JobContext, s: Session, generation: int) -> None:
        """Hands the source's mark to another copy that reads it, or clears it."""
        source = s.get(VolumeRow, ctx.spec.get("source_volume_id", ""))
        if source is None or source.active_job_id != ctx.job_id:
            return
        heirs = [
            j
            for j in repo.in_state(s, list(repo.UNFINISHED_STATES))
            if j.kind == JobKind.VOLUME_COPY and j.id != ctx.job_id and _source_of(j) == source.id
        ]
        source.active_job_id = heirs[0].id if heirs else None
        stamp(source, generation)


def _source_of(job: JobRow) -> str:
    return str((job.spec or {}).get("source_volume_id", ""))
