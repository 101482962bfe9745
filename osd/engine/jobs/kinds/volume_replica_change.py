"""VOLUME_REPLICA_CHANGE: a REPLICATE volume gets more or fewer copies
(VolumeService.UpdateVolume of durability.replicas).

Started in UpdateVolume's transaction, on a volume that is UP or DEGRADED
with no change in progress. More copies: each new one is placed in a failure
domain none of the volume's copies is in (within its pool; a tail copy stays
the tail copy), reserved PENDING, created by the driver (the storage engine
fills a new copy from the others, as for a rebuild), and the switch makes
them ACTIVE and records the count. Fewer copies: the switch releases the
copies that go (unavailable ones first, never the tail copy) and records the
count; their data is deleted afterwards. Until the switch the volume keeps
its copies and its count; failed or cancelled, it is as it was.
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
    place_new,
    reserve,
    reserved,
    room_at,
    set_totals,
)
from osd.engine.jobs.records import Record
from osd.engine.volumes import specs
from osd.engine.volumes.guards import (
    get_volume,
    not_available,
    require_no_job,
    require_serving,
    require_settled,
)
from osd.engine.volumes.models import Durability
from osd.engine.volumes.phases import stamp
from osd.engine.volumes.views import placement_of
from osd.enums import AllocationState, DurabilityType, JobKind
from osd.store import allocations
from osd.store import volumes as vol_repo
from osd.store.models import AllocationRow, JobRow, VolumeRow

FIELD = "durability.replicas"


@dataclass(frozen=True)
class VolumeReplicaChangeRequest(Record):
    """A change to start: the volume and its new copy count (already valid)."""

    volume_id: str
    replicas: int


@dataclass(frozen=True, kw_only=True)
class VolumeReplicaChangeSpec(VolumeJobSpec):
    """A change as the job keeps it: the new count and the one before; the new
    copies to make (more copies), or the allocations to release (fewer)."""

    replicas: int
    previous: int
    remove: tuple[str, ...]


class VolumeReplicaChange(VolumeJob[VolumeReplicaChangeRequest, VolumeReplicaChangeSpec]):
    kind = JobKind.VOLUME_REPLICA_CHANGE
    verb = "creating new copy"
    request_type = VolumeReplicaChangeRequest
    spec_type = VolumeReplicaChangeSpec

    def begin(
        self, s: Session, job: JobRow, request: VolumeReplicaChangeRequest
    ) -> VolumeReplicaChangeSpec:
        row = get_volume(s, request.volume_id)
        wanted = request.replicas
        require_no_job(row)
        require_serving(row)
        allocs = require_settled(s, row)
        before = row.replicas
        works: list[Work] = []
        removed: list[str] = []
        if wanted > before:
            layout = Durability(int(DurabilityType.REPLICATE), wanted)
            rooms = specs.room_sizes(row.size_bytes, layout, row.snapshot_factor)
            sizes = specs.reserved_sizes(
                row.size_bytes, layout, row.snapshot_factor, row.provisioning
            )
            shares = specs.share_sizes(row.size_bytes, layout)
            indices = range(before, wanted)
            picks = place_new(
                s,
                row,
                placement_of(row),
                allocs,
                [room_at(rooms, i) for i in indices],
                tail_last=False,  # the tail copy stays; new copies go to the main pool
                field=FIELD,
            )
            for index, pick in zip(indices, picks, strict=True):
                res = reserve(s, job, row, pick, nbytes=room_at(sizes, index), index=index)
                works.append(Work(res.id, res.drive_id, res.id, room_at(shares, index), index))
        else:
            removed = [a.id for a in _to_remove(row, allocs, before - wanted)]
        mark(row, job)
        set_totals(job, works)
        return VolumeReplicaChangeSpec(
            volume_id=row.id,
            replicas=wanted,
            previous=before,
            work=tuple(works),
            remove=tuple(removed),
        )

    def make(self, ctx: Context[VolumeReplicaChangeSpec], work: Work) -> None:
        ctx.driver.create_replica(work.drive_id, work.replica_id, work.nbytes)

    def switch(
        self, ctx: Context[VolumeReplicaChangeSpec], s: Session, generation: int, row: VolumeRow
    ) -> list[tuple[str, str]]:
        wanted, before = ctx.spec.replicas, ctx.spec.previous
        added = [reserved(s, ctx, w) for w in ctx.spec.work]
        for res in added:
            activate(s, res)
        cleanup: list[tuple[str, str]] = []
        for alloc_id in ctx.spec.remove:
            alloc = s.get(AllocationRow, alloc_id)
            if alloc is not None:
                cleanup.append((alloc.drive_id, alloc.id))
                allocations.release(s, alloc)
        # Copy indices 0..wanted-1; the tail copy (the last, when the volume has
        # a tail pool) stays the last.
        rest = sorted(
            (a for a in vol_repo.allocations(s, row.id) if a not in added),
            key=lambda a: a.index,
        )
        tail = rest.pop() if row.tail_pool_id and rest and rest[-1].index == before - 1 else None
        ordered = rest + sorted(added, key=lambda a: a.index) + ([tail] if tail else [])
        for index, alloc in enumerate(ordered):
            alloc.index = index
        row.replicas = wanted
        stamp(row, generation)
        s.flush()
        return cleanup


def _to_remove(row: VolumeRow, allocs: list[AllocationRow], count: int) -> list[AllocationRow]:
    """The copies a smaller count drops: unavailable ones first, then the last
    ones; never the tail copy, and never the last copy that can be read."""
    tail_index = row.replicas - 1 if row.tail_pool_id else None
    choices = sorted(
        (a for a in allocs if a.index != tail_index),
        key=lambda a: (a.state == AllocationState.ACTIVE, -a.index),
    )
    removed = choices[:count]
    if not any(a.state == AllocationState.ACTIVE for a in allocs if a not in removed):
        raise not_available(row, " with too few readable copies to drop any")
    return removed
