"""VOLUME_REPLICA_CHANGE: a REPLICATE volume gets more or fewer copies
(VolumeService.UpdateVolume of durability.replicas). A single-copy volume
(durability NONE) given 2 or more becomes REPLICATE; a REPLICATE volume
given 1 (confirmed by the caller) becomes a single copy, at the switch.

Started in UpdateVolume's transaction, on a volume that is UP or DEGRADED
with no change in progress. The count is one of live copies: ACTIVE copies
on a drive and node that serve (see :func:`~osd.engine.jobs.kinds.volume_job.live_ids`);
a copy on a forgotten drive has no allocation left, one on an ejected drive
or an OFFLINE node is UNAVAILABLE, and neither counts.

More copies: the job makes as many new copies as the new count of live
copies needs (more than the difference of the counts when copies are lost
or unavailable). Each is placed in a failure domain no live copy is in
(within its pool; the tail copy stays the tail copy, and when the tail copy
is lost or unavailable the last new copy goes to the tail pool in its
place), reserved PENDING and created by the driver (the storage engine
fills a new copy from the others, as for a rebuild); the switch makes them
ACTIVE and records the count.

Fewer copies: no copy is made; the switch records the count.

Either way the switch releases the copies beyond the new count, and only
those: unavailable ones first, then live ones from the last, never the live
tail copy (an unavailable tail copy may go, leaving the volume's last copy
outside its tail pool until a placement change moves it). It decides which
from the copies' states at the switch, not at the start, so a copy lost in
between is dropped before a live one. A change never leaves fewer live
copies than the smaller of the live copies before it and the new count.
The released copies' data is deleted afterwards. Until the switch the
volume keeps its copies and its count; failed or cancelled, it is as it
was.
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
    live_ids,
    make_from_nothing,
    mark,
    place_new,
    reserve,
    reserved,
    room_at,
    set_totals,
)
from osd.engine.jobs.records import Record
from osd.engine.shared.rows import stamp
from osd.engine.volumes import specs
from osd.engine.volumes.guards import (
    get_volume,
    require_no_job,
    require_serving,
    require_settled,
)
from osd.engine.volumes.models import Durability
from osd.engine.volumes.views import durability_of, placement_of
from osd.enums import DurabilityType, JobKind
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
    copies to make, and the allocations the start expected to release (the
    switch decides again from the copies' states then). ``tail_new``: the
    last new copy replaces a lost or unavailable tail copy."""

    replicas: int
    previous: int
    remove: tuple[str, ...]
    tail_new: bool = False


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
        before = specs.copies(durability_of(row))
        live = live_ids(s, allocs)
        tail = _old_tail(row, allocs, before)
        missing = wanted - len(live) if wanted > before else 0
        tail_new = missing > 0 and bool(row.tail_pool_id) and (tail is None or tail.id not in live)
        works = (
            self._place(s, job, row, allocs, live, wanted, missing, tail_new=tail_new)
            if missing > 0
            else []
        )
        removed = _to_remove(allocs, live, tail, len(allocs) + len(works) - wanted)
        mark(row, job)
        set_totals(job, works)
        return VolumeReplicaChangeSpec(
            volume_id=row.id,
            replicas=wanted,
            previous=before,
            work=tuple(works),
            remove=tuple(a.id for a in removed),
            tail_new=tail_new,
        )

    @staticmethod
    def _place(
        s: Session,
        job: JobRow,
        row: VolumeRow,
        allocs: list[AllocationRow],
        live: set[str],
        wanted: int,
        count: int,
        *,
        tail_new: bool,
    ) -> list[Work]:
        """Places and reserves ``count`` new copies beside the live ones; they end
        the copy order, so their sizes are those of the last ``count`` copies."""
        layout = Durability(int(DurabilityType.REPLICATE), wanted)
        rooms = specs.room_sizes(row.size_bytes, layout, row.snapshot_factor)
        sizes = specs.reserved_sizes(row.size_bytes, layout, row.snapshot_factor, row.provisioning)
        shares = specs.share_sizes(row.size_bytes, layout)
        positions = range(wanted - count, wanted)
        picks = place_new(
            s,
            row,
            placement_of(row),
            [a for a in allocs if a.id in live],
            [room_at(rooms, p) for p in positions],
            # The tail copy stays; new copies go to the main pool, unless one
            # replaces a tail copy that is lost or unavailable.
            tail_last=tail_new,
            field=FIELD,
        )
        # Indices after every copy's, so none is shared until the switch renumbers.
        first = max((a.index for a in allocs), default=-1) + 1
        works = []
        for offset, (position, pick) in enumerate(zip(positions, picks, strict=True)):
            index = first + offset
            res = reserve(s, job, row, pick, nbytes=room_at(sizes, position), index=index)
            works.append(Work(res.id, res.drive_id, res.id, room_at(shares, position), index))
        return works

    def make(self, ctx: Context[VolumeReplicaChangeSpec], work: Work) -> None:
        make_from_nothing(ctx, ctx.spec.volume_id, work)

    def switch(
        self, ctx: Context[VolumeReplicaChangeSpec], s: Session, generation: int, row: VolumeRow
    ) -> list[tuple[str, str]]:
        spec = ctx.spec
        wanted, before = spec.replicas, spec.previous
        added = [reserved(s, ctx, w) for w in spec.work]
        for res in added:
            activate(s, res)
        new_ids = {a.id for a in added}
        allocs = vol_repo.allocations(s, row.id)
        old = [a for a in allocs if a.id not in new_ids]
        tail = added[-1] if spec.tail_new and added else _old_tail(row, old, before)
        removed = _to_remove(allocs, live_ids(s, allocs), tail, len(allocs) - wanted)
        gone = {a.id for a in removed}
        cleanup = [(a.drive_id, a.id) for a in removed]
        for alloc in removed:
            allocations.release(s, alloc)
        # Copy indices from 0: the copies kept, then the new ones, each in their
        # order; the tail copy, when the volume has one, is copy wanted - 1 even
        # while copies before it are lost (their indices are the ones missing).
        for index, alloc in enumerate(_kept(old, gone, tail) + _kept(added, gone, tail)):
            alloc.index = index
        if tail is not None and tail.id not in gone:
            tail.index = wanted - 1
        if wanted == 1:
            row.durability_type, row.replicas = DurabilityType.NONE, 0
        else:
            row.durability_type, row.replicas = DurabilityType.REPLICATE, wanted
        stamp(row, generation)
        s.flush()
        return cleanup


def _kept(
    group: list[AllocationRow], gone: set[str], tail: AllocationRow | None
) -> list[AllocationRow]:
    """The copies of ``group`` that stay, but the tail copy, in copy order."""
    return sorted((a for a in group if a.id not in gone and a is not tail), key=lambda a: a.index)


def _old_tail(row: VolumeRow, allocs: list[AllocationRow], count: int) -> AllocationRow | None:
    """The tail copy among ``allocs`` of a volume of ``count`` copies that has a
    tail pool (the last copy, index count - 1); None when it has none or lost it."""
    if not row.tail_pool_id:
        return None
    return next((a for a in allocs if a.index == count - 1), None)


def _to_remove(
    allocs: list[AllocationRow], live: set[str], tail: AllocationRow | None, count: int
) -> list[AllocationRow]:
    """The ``count`` copies to drop: the ones not live (``live`` holds the ids of
    the live ones) first, then live ones from the last; never the live tail
    copy. A live copy goes only once every other one has, so at least
    min(live copies, copies kept) stay live."""
    if count <= 0:
        return []
    choices = sorted(
        (a for a in allocs if not (a is tail and a.id in live)),
        key=lambda a: (a.id in live, -a.index),
    )
    return choices[:count]
