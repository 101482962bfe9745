"""VOLUME_COPY: a new volume filled with the data of another
(VolumeService.CreateVolume with source.volume_id).

The new volume has the source's durability and placement unless the
request gives its own, so a copy is as safe as its source (a template's
are weaker than the source's; see :mod:`osd.engine.volumes.create_plan`,
which resolves the request).

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

from dataclasses import dataclass

from sqlalchemy.orm import Session

from osd.engine.jobs.kinds.volume_job import (
    Context,
    VolumeJob,
    VolumeJobSpec,
    Work,
    activate,
    mark,
    reserve,
    reserved,
    set_totals,
    unfinished,
)
from osd.engine.jobs.records import Record, RecordError
from osd.engine.shared.rows import stamp
from osd.engine.volumes import create_plan as volume_create
from osd.engine.volumes import specs
from osd.engine.volumes.guards import SERVING
from osd.engine.volumes.models import Durability, Placement, Qos, Source
from osd.enums import AllocationState, JobKind, Provisioning, VolumeKind, VolumeState
from osd.enums import ObjectKind as OK
from osd.errors import FailedPrecondition, NotFound
from osd.store import allocations
from osd.store import grants as grant_repo
from osd.store import jobs as repo
from osd.store import volumes as vol_repo
from osd.store.models import ClusterRow, JobRow, PoolRow, VolumeRow


def source_not_available(source: VolumeRow, why: str, **extra: str) -> FailedPrecondition:
    state = VolumeState(source.state).name
    return FailedPrecondition(
        f"source volume {source.name} ({source.id}) {why}",
        reason="SOURCE_NOT_AVAILABLE",
        metadata={"volume_id": source.id, "state": state, **extra},
    )


@dataclass(frozen=True, kw_only=True)
class VolumeCopyRequest(Record):
    """A copy to start: the new volume's id, and the create request resolved (a
    :class:`~osd.engine.volumes.create_plan.Plan`) as plain data, whose
    cluster and pools are read again by id when the job is recorded."""

    volume_id: str
    cluster_id: str
    name: str
    kind: VolumeKind
    size_bytes: int
    size_field: str
    durability: Durability
    placement: Placement
    provisioning: Provisioning
    snapshot_factor: float
    qos: Qos
    labels: dict[str, str]
    template_id: str
    source: Source
    multi_attach: bool
    parent_snapshot_id: str | None = None
    datastore_version_id: str | None = None

    @classmethod
    def of(cls, plan: volume_create.Plan, volume_id: str) -> VolumeCopyRequest:
        return cls(
            volume_id=volume_id,
            cluster_id=plan.cluster.id,
            name=plan.name,
            kind=plan.kind,
            size_bytes=plan.size_bytes,
            size_field=plan.size_field,
            durability=plan.durability,
            placement=plan.placement,
            provisioning=plan.provisioning,
            snapshot_factor=plan.snapshot_factor,
            qos=plan.qos,
            labels=dict(plan.labels),
            template_id=plan.template_id,
            source=plan.source,
            multi_attach=plan.multi_attach,
            parent_snapshot_id=plan.parent_snapshot_id,
            datastore_version_id=plan.datastore_version_id,
        )

    def plan(self, s: Session) -> volume_create.Plan:
        """The plan this request holds, with its cluster and pools read from ``s``."""
        cluster = s.get(ClusterRow, self.cluster_id)
        if cluster is None:
            raise NotFound.object("cluster", "cluster_id", self.cluster_id)
        pools = {
            pool_id: pool
            for pool_id in (self.placement.pool_id, self.placement.tail_pool_id)
            if pool_id and (pool := s.get(PoolRow, pool_id)) is not None
        }
        return volume_create.Plan(
            cluster=cluster,
            name=self.name,
            kind=self.kind,
            size_bytes=self.size_bytes,
            size_field=self.size_field,
            durability=self.durability,
            placement=self.placement,
            provisioning=self.provisioning,
            snapshot_factor=self.snapshot_factor,
            qos=self.qos,
            labels=dict(self.labels),
            template_id=self.template_id,
            source=self.source,
            multi_attach=self.multi_attach,
            parent_snapshot_id=self.parent_snapshot_id,
            datastore_version_id=self.datastore_version_id,
            pools=pools,
            # A copy is its source's, as every clone is: read from the source
            # here, since the job, not the caller's thread, makes the row.
            ownership=volume_create.ownership_of(s, source.owner, source)
            if (source := s.get(VolumeRow, self.source.id)) is not None
            else volume_create.Ownership(""),
        )


@dataclass(frozen=True, kw_only=True)
class VolumeCopySpec(VolumeJobSpec):
    """A copy as the job keeps it: the new volume, its copies to fill, and the
    volume they are filled from."""

    source_volume_id: str


class VolumeCopy(VolumeJob[VolumeCopyRequest, VolumeCopySpec]):
    kind = JobKind.VOLUME_COPY
    verb = "filling copy"
    request_type = VolumeCopyRequest
    spec_type = VolumeCopySpec

    def begin(self, s: Session, job: JobRow, request: VolumeCopyRequest) -> VolumeCopySpec:
        plan = request.plan(s)
        volume_id = request.volume_id
        source = s.get(VolumeRow, plan.source.id)
        if source is None:
            raise NotFound.object("volume", "source.volume_id", plan.source.id)
        if source.state not in SERVING:
            raise source_not_available(source, "is not UP or DEGRADED")
        self._claim(s, source, job)
        picks = volume_create.place(s, plan)
        row = volume_create.new_row(plan, volume_id, job.generation)
        vol_repo.add(s, row)
        grant_repo.add(s, row.id, plan.ownership.grants)
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
        set_totals(job, works)
        return VolumeCopySpec(volume_id=row.id, source_volume_id=source.id, work=tuple(works))

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

    def make(self, ctx: Context[VolumeCopySpec], work: Work) -> None:
        source_id = ctx.spec.source_volume_id
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
        self, ctx: Context[VolumeCopySpec], s: Session, generation: int, row: VolumeRow
    ) -> list[tuple[str, str]]:
        for work in ctx.spec.work:
            activate(s, reserved(s, ctx, work))
        if row.state == VolumeState.CREATING:
            row.state = VolumeState.UP  # the availability listener corrects it
        stamp(row, generation)
        self._release_source(ctx, s, generation)
        return []

    def restore(self, ctx: Context[VolumeCopySpec], s: Session, generation: int) -> None:
        row = s.get(VolumeRow, ctx.target_id)
        if row is not None and row.state == VolumeState.CREATING:
            for alloc in vol_repo.allocations(s, row.id):
                allocations.release(s, alloc)
            vol_repo.remove(s, row.id)
        self._release_source(ctx, s, generation)

    @staticmethod
    def _release_source(ctx: Context[VolumeCopySpec], s: Session, generation: int) -> None:
        """Hands the source's mark to another copy that reads it, or clears it."""
        source = s.get(VolumeRow, ctx.spec.source_volume_id)
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
    """The volume the VOLUME_COPY ``job`` reads ("" when its spec cannot be read)."""
    try:
        return VolumeCopySpec.from_json(job.spec).source_volume_id
    except RecordError:
        return ""
