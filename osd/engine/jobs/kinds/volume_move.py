"""VOLUME_MOVE: a volume's copies move to where a new placement puts them
(VolumeService.UpdateVolume of placement, when the copies do not obey it).

Started in UpdateVolume's transaction, on a volume that is UP or DEGRADED
with no change in progress. The copies that obey the new placement stay
(the first of each failure domain, in copy order); each other one gets a
drive under the new placement, in a failure domain no staying copy is in
(the tail copy in the tail pool), where its bytes are reserved PENDING.
Steps: each copy is copied to its new drive (or, when its drive is EJECTED or
FAILED, rebuilt there from the other copies); the switch then moves every
one in the books at once (each keeps its allocation, and so its name in the
driver), records the new placement, and deletes the old copies. Until the
switch the volume serves from its old copies under its old placement;
failed or cancelled, it is as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from osd.engine.jobs.kinds.evacuation import check_readable
from osd.engine.jobs.kinds.volume_job import (
    Context,
    VolumeJob,
    VolumeJobSpec,
    Work,
    activate,
    domain_key,
    make_from_nothing,
    mark,
    place_new,
    reserve,
    reserved,
    room_at,
    set_totals,
)
from osd.engine.jobs.records import Record
from osd.engine.placement.rules import DEAD_DRIVE_STATES
from osd.engine.shared.rows import stamp
from osd.engine.volumes import specs
from osd.engine.volumes.guards import get_volume, require_no_job, require_serving, require_settled
from osd.engine.volumes.models import Placement
from osd.engine.volumes.views import durability_of
from osd.enums import DurabilityType, FailureDomain, JobKind
from osd.errors import FailedPrecondition
from osd.store import allocations
from osd.store import volumes as vol_repo
from osd.store.models import AllocationRow, DriveRow, JobRow, VolumeRow

FIELD = "placement"


def split(
    s: Session, row: VolumeRow, where: Placement, allocs: Sequence[AllocationRow]
) -> tuple[list[AllocationRow], list[AllocationRow]]:
    """(the copies that obey ``where`` and stay, the copies that move), in copy order."""
    domain = FailureDomain(where.failure_domain or FailureDomain.ZONE)
    views = vol_repo.drive_views(s, {a.drive_id for a in allocs})
    members = vol_repo.pool_members(s, where.pool_id) if where.pool_id else None
    tail = vol_repo.pool_members(s, where.tail_pool_id) if where.tail_pool_id else None
    tail_index = tail_index_of(row, where)
    node_sel, drive_sel = where.node_selector.items(), where.drive_selector.items()
    taken: set[str] = set()
    stay: list[AllocationRow] = []
    move: list[AllocationRow] = []
    for alloc in sorted(allocs, key=lambda a: a.index):
        view = views.get(alloc.drive_id)
        pool = tail if tail is not None and alloc.index == tail_index else members
        obeys = (
            view is not None
            and (pool is None or alloc.drive_id in pool)
            and node_sel <= view.node_labels.items()
            and drive_sel <= view.labels.items()
            and domain_key(view, domain) not in taken
        )
        if obeys and view is not None:
            taken.add(domain_key(view, domain))
            stay.append(alloc)
        else:
            move.append(alloc)
    return stay, move


def tail_index_of(row: VolumeRow, where: Placement) -> int | None:
    """The index of the copy that goes to the tail pool, if ``where`` has one."""
    if where.tail_pool_id and row.durability_type == DurabilityType.REPLICATE:
        return (row.replicas or specs.REPLICAS_DEFAULT) - 1
    return None


@dataclass(frozen=True)
class VolumeMoveRequest(Record):
    """A move to start: the volume and its new placement (normalized)."""

    volume_id: str
    placement: Placement


@dataclass(frozen=True, kw_only=True)
class VolumeMoveSpec(VolumeJobSpec):
    """A move as the job keeps it: the new placement, and a copy to make on a new
    drive for each copy that moves."""

    placement: Placement


class VolumeMove(VolumeJob[VolumeMoveRequest, VolumeMoveSpec]):
    kind = JobKind.VOLUME_MOVE
    verb = "copying allocation"
    request_type = VolumeMoveRequest
    spec_type = VolumeMoveSpec

    def begin(self, s: Session, job: JobRow, request: VolumeMoveRequest) -> VolumeMoveSpec:
        row = get_volume(s, request.volume_id)
        where = request.placement
        require_no_job(row)
        require_serving(row)
        allocs = require_settled(s, row)
        stay, move = split(s, row, where, allocs)
        tail_index = tail_index_of(row, where)
        # The tail copy, if it moves, goes last: placement puts the last in the tail pool.
        move.sort(key=lambda a: (a.index == tail_index, a.index))
        rooms = specs.room_sizes(row.size_bytes, durability_of(row), row.snapshot_factor)
        shares = specs.share_sizes(row.size_bytes, durability_of(row))
        picks = place_new(
            s,
            row,
            where,
            stay,
            [room_at(rooms, a.index) for a in move],
            tail_last=bool(move) and move[-1].index == tail_index,
            field=FIELD,
        )
        works = []
        for alloc, pick in zip(move, picks, strict=True):
            drive = s.get(DriveRow, alloc.drive_id)
            rebuild = drive is None or drive.state in DEAD_DRIVE_STATES
            if rebuild:
                check_readable(s, alloc)
            res = reserve(s, job, row, pick, nbytes=alloc.bytes, index=alloc.index)
            works.append(
                Work(
                    res.id,
                    res.drive_id,
                    alloc.id,
                    room_at(shares, alloc.index),
                    alloc.index,
                    source_drive_id=alloc.drive_id,
                    allocation_id=alloc.id,
                    rebuild=rebuild,
                )
            )
        mark(row, job)
        set_totals(job, works)
        return VolumeMoveSpec(volume_id=row.id, placement=where, work=tuple(works))

    def make(self, ctx: Context[VolumeMoveSpec], work: Work) -> None:
        if work.rebuild:
            make_from_nothing(ctx, ctx.spec.volume_id, work)
        else:
            ctx.driver.copy_replica(
                work.source_drive_id, work.drive_id, work.replica_id, work.nbytes
            )

    def switch(
        self, ctx: Context[VolumeMoveSpec], s: Session, generation: int, row: VolumeRow
    ) -> list[tuple[str, str]]:
        cleanup: list[tuple[str, str]] = []
        for work in ctx.spec.work:
            res = reserved(s, ctx, work)
            alloc = s.get(AllocationRow, work.allocation_id)
            if alloc is None or alloc.drive_id != work.source_drive_id:
                raise FailedPrecondition(
                    f"copy {work.index} of volume {row.name} left drive {work.source_drive_id} "
                    "while it was being moved",
                    reason="ALLOCATION_MOVED",
                    metadata={"volume_id": row.id, "allocation_id": work.allocation_id},
                )
            node_id = res.node_id
            allocations.release(s, res)
            allocations.move(s, alloc, drive_id=work.drive_id, node_id=node_id)
            activate(s, alloc)
            cleanup.append((work.source_drive_id, work.replica_id))
        where = ctx.spec.placement
        row.placement = specs.placement_to_json(where)
        row.pool_id = where.pool_id or None
        row.tail_pool_id = where.tail_pool_id or None
        stamp(row, generation)
        return cleanup
