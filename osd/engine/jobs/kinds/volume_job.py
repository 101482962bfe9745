"""What the volume jobs share: VOLUME_COPY, VOLUME_REPLICA_CHANGE and VOLUME_MOVE
(see :mod:`~osd.engine.jobs.kinds.volume_copy`,
:mod:`~osd.engine.jobs.kinds.volume_replica_change` and
:mod:`~osd.engine.jobs.kinds.volume_move`).

Each makes the new copies a volume needs before it changes anything the
volume serves from, so that until its last step the volume is as it was:

1. ``begin``, in the transaction of the call that starts the job: places the
   new copies (:func:`osd.engine.placement.place`, so a topology that cannot
   take them is refused before any job exists), reserves their bytes as
   PENDING allocations tagged with the job, marks the volume
   (``active_job_id``) and records the work in the job's spec;
2. one step per new copy: the driver makes it with no transaction open, then
   the checkpoint records it as made (a resumed job makes it again: driver
   calls are idempotent);
3. the switch, one last step: a single transaction commits what the kind
   changes (new copies ACTIVE, moved copies on their new drives, removed
   copies released, the volume's new shape), unless a cancel was asked
   first; then the copies it left behind are deleted from their drives (best
   effort, repeated by a resumed job). Once switched a job cannot be
   cancelled: its change is made.

A failure or a cancel before the switch deletes the copies made (``undo``),
the runner releases the reservations, and the kind puts the volume back
(``abort``): the books and the volume are as they were before the job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from sqlalchemy.orm import Session

from osd.engine.jobs import moves
from osd.engine.jobs.handler import JobContext, JobHandler, RequestT
from osd.engine.jobs.records import Record
from osd.engine.placement import place as placement
from osd.engine.placement.rules import available_state, drive_and_node
from osd.engine.shared.rows import stamp
from osd.engine.volumes.models import Placement
from osd.enums import AllocationState, FailureDomain, JobState
from osd.enums import ObjectKind as OK
from osd.errors import FailedPrecondition
from osd.store import allocations
from osd.store import nodes as node_repo
from osd.store import volumes as vol_repo
from osd.store.models import AllocationRow, JobRow, VolumeRow
from osd.store.volumes import DriveView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work(Record):
    """One new copy: its reservation, where it goes and how the driver makes it.

    ``replica_id`` is the copy's name in the driver (the reservation's id for
    a new copy; for a move, the id of the allocation it replaces, which keeps
    its name). ``nbytes`` is the copy's size in the driver. A move also names
    the allocation it replaces and its drive, and whether the copy is rebuilt
    from the other copies rather than copied from that drive.
    """

    reservation_id: str
    drive_id: str
    replica_id: str
    nbytes: int
    index: int
    source_drive_id: str = ""
    allocation_id: str = ""
    rebuild: bool = False


@dataclass(frozen=True, kw_only=True)
class VolumeJobSpec(Record):
    """What the specs of the volume jobs share: the volume, and the new copies to
    make, in the order the steps make them."""

    volume_id: str
    work: tuple[Work, ...]


@dataclass
class VolumeJobCheckpoint(Record):
    """What a volume job has done: the copies made (their reservation ids); once
    ``switched``, the copies left behind ([drive id, replica id]) to delete."""

    made: list[str] = field(default_factory=list)
    switched: bool = False
    cleanup: list[tuple[str, str]] = field(default_factory=list)


SpecT = TypeVar("SpecT", bound=VolumeJobSpec)
Context = JobContext[SpecT, VolumeJobCheckpoint]


def domain_key(view: DriveView, domain: FailureDomain) -> str:
    if domain == FailureDomain.DRIVE:
        return view.drive_id
    return view.node_id if domain == FailureDomain.NODE else view.zone


def place_new(
    s: Session,
    row: VolumeRow,
    where: Placement,
    keep: Sequence[AllocationRow],
    sizes: Sequence[int],
    *,
    tail_last: bool,
    field: str,
) -> list[placement.Candidate]:
    """Drives for new copies of ``row`` (room ``sizes`` each) under ``where``, in
    failure domains that none of ``keep`` (the copies that stay) is in; the
    last one in the tail pool when ``tail_last``.

    Raises PLACEMENT_IMPOSSIBLE (metadata "field", and "needed" and "available"
    counting the copies that stay) or INSUFFICIENT_CAPACITY.
    """
    domain = FailureDomain(where.failure_domain or FailureDomain.ZONE)
    members = vol_repo.pool_members(s, where.pool_id) if where.pool_id else None
    tail = (
        vol_repo.pool_members(s, where.tail_pool_id) if tail_last and where.tail_pool_id else None
    )
    within = None if members is None else members | (tail or set())
    taken = {
        domain_key(view, domain)
        for view in vol_repo.drive_views(s, {a.drive_id for a in keep}).values()
    }
    candidates = [
        placement.Candidate(d.drive_id, d.node_id, d.zone, d.free_bytes, d.labels, d.node_labels)
        for d in vol_repo.candidates(s, row.cluster_id, within)
        if domain_key(d, domain) not in taken
    ]
    request = placement.Request(
        sizes=list(sizes),
        failure_domain=domain,
        pool=members,
        tail_pool=tail,
        node_selector=where.node_selector,
        drive_selector=where.drive_selector,
        copies_field=field,
    )
    try:
        return placement.place(candidates, request)
    except FailedPrecondition as exc:
        if exc.reason != "PLACEMENT_IMPOSSIBLE" or exc.metadata.get("field") != field:
            raise
        needed = len(keep) + len(sizes)
        available = len(taken) + int(exc.metadata.get("available", "0"))
        raise FailedPrecondition(
            f"placement impossible: volume {row.name} needs {needed} copies in distinct "
            f"{domain.name.lower()}s, but only {available} match its placement",
            reason="PLACEMENT_IMPOSSIBLE",
            metadata={
                **exc.metadata,
                "needed": str(needed),
                "available": str(available),
                "volume_id": row.id,
            },
        ) from None


def reserve(
    s: Session,
    job: JobRow,
    row: VolumeRow,
    pick: placement.Candidate,
    *,
    nbytes: int,
    index: int,
) -> AllocationRow:
    """A PENDING reservation tagged with ``job`` for a new copy of ``row``."""
    return allocations.reserve(
        s,
        drive_id=pick.drive_id,
        node_id=pick.node_id,
        nbytes=nbytes,
        index=index,
        state=AllocationState.PENDING,
        volume_id=row.id,
        job_id=job.id,
    )


def reserved(s: Session, ctx: JobContext[Any, Any], work: Work) -> AllocationRow:
    """The reservation of ``work``; RESERVATION_LOST when it is gone (e.g. its
    drive was forgotten)."""
    res = s.get(AllocationRow, work.reservation_id)
    if res is None or res.state != AllocationState.PENDING or res.job_id != ctx.job_id:
        raise FailedPrecondition(
            f"the reservation for a copy on drive {work.drive_id} is gone",
            reason="RESERVATION_LOST",
            metadata={"drive_id": work.drive_id},
        )
    return res


def activate(s: Session, alloc: AllocationRow) -> None:
    """Settles an allocation: ACTIVE, or UNAVAILABLE when its drive or node is not serving."""
    drive, node = drive_and_node(s, alloc.drive_id)
    alloc.state = available_state(node.state, drive.state)
    alloc.stale = False
    alloc.job_id = None
    if alloc.volume_id:
        node_repo.mark_stale(s, [alloc.volume_id])


def live_ids(s: Session, allocs: Sequence[AllocationRow]) -> set[str]:
    """The ids of the live copies among ``allocs``: ACTIVE, on a drive and a node
    that serve (a copy on an ejected drive or an OFFLINE node is not live,
    whatever its state says)."""
    out = set()
    for alloc in allocs:
        if alloc.state != AllocationState.ACTIVE:
            continue
        drive, node = drive_and_node(s, alloc.drive_id)
        if available_state(node.state, drive.state) == AllocationState.ACTIVE:
            out.add(alloc.id)
    return out


def mark(row: VolumeRow, job: JobRow) -> None:
    """Makes ``job`` the volume's active job, and ``row`` the job's target."""
    row.active_job_id = job.id
    stamp(row, job.generation)
    job.cluster_id = row.cluster_id
    job.target_id = row.id


def set_totals(job: JobRow, works: Sequence[Work]) -> None:
    """One step per copy to make, and one for the switch."""
    job.progress_total_steps = len(works) + 1
    job.progress_total_bytes = sum(w.nbytes for w in works)


def unfinished(job: JobRow | None) -> bool:
    return job is not None and not JobState(job.state).final


class VolumeJob(JobHandler[RequestT, SpecT, VolumeJobCheckpoint]):
    """A job on one volume that makes copies, then switches (see the module doc)."""

    target_kind = OK.VOLUME
    checkpoint_type = VolumeJobCheckpoint
    verb: ClassVar[str] = "making copy"

    # -- what each kind does ------------------------------------------------------

    def make(self, ctx: Context[SpecT], work: Work) -> None:
        """Makes one new copy through the driver (no transaction open)."""
        raise NotImplementedError

    def switch(
        self, ctx: Context[SpecT], s: Session, generation: int, row: VolumeRow
    ) -> list[tuple[str, str]]:
        """Commits the change; returns the copies ([drive id, replica id]) to delete."""
        raise NotImplementedError

    def restore(self, ctx: Context[SpecT], s: Session, generation: int) -> None:
        """Puts the volume back as it was before the job (the reservations are released)."""
        row = s.get(VolumeRow, ctx.target_id)
        if row is not None:
            stamp(row, generation)

    # -- the contract -------------------------------------------------------------

    def cancellable(self, job: JobRow) -> bool:
        return not self.checkpoint_type.from_json(job.checkpoint).switched

    def step(self, ctx: Context[SpecT]) -> bool:
        if ctx.checkpoint.switched:
            _clean(ctx)
            return True
        works = ctx.spec.work
        made = set(ctx.checkpoint.made)
        todo = [w for w in works if w.reservation_id not in made]
        if todo:
            work = todo[0]
            with ctx.store.read() as s:
                reserved(s, ctx, work)
            self.make(ctx, work)
            with ctx.write():
                ctx.checkpoint.made = sorted(made | {work.reservation_id})
                ctx.progress.done_steps += 1
                ctx.progress.done_bytes += work.nbytes
                ctx.progress.message = f"{self.verb} {len(made) + 1} of {len(works)}"
            return False
        with ctx.write() as (s, generation):
            if s.get_one(JobRow, ctx.job_id).cancel_requested:
                return False  # the runner rolls back: nothing is switched
            row = s.get(VolumeRow, ctx.target_id)
            if row is None:
                raise FailedPrecondition(
                    f"volume {ctx.target_id} is gone", reason="VOLUME_NOT_AVAILABLE"
                )
            cleanup = self.switch(ctx, s, generation, row)
            ctx.notify(s, [row.id])
            ctx.checkpoint.switched = True
            ctx.checkpoint.cleanup = cleanup
            ctx.progress.done_steps += 1
            ctx.progress.message = "switched over; deleting the copies left behind"
        _clean(ctx)
        return True

    def finish(self, ctx: Context[SpecT], s: Session, generation: int) -> None:
        row = s.get(VolumeRow, ctx.target_id)
        if row is not None and row.active_job_id == ctx.job_id:
            row.active_job_id = None
            stamp(row, generation)

    def undo(self, ctx: Context[SpecT]) -> None:
        """Deletes the copies made so far, and the one that may be in the making."""
        if ctx.checkpoint.switched:
            return
        made = set(ctx.checkpoint.made)
        works = ctx.spec.work
        todo = [w for w in works if w.reservation_id not in made]
        for work in [w for w in works if w.reservation_id in made] + todo[:1]:
            moves.purge_copy(ctx, work.drive_id, work.replica_id)

    def abort(self, ctx: Context[SpecT], s: Session, generation: int) -> None:
        if ctx.checkpoint.switched:
            return
        ctx.checkpoint.made = []
        self.restore(ctx, s, generation)


def _clean(ctx: JobContext[Any, VolumeJobCheckpoint]) -> None:
    for drive_id, replica_id in ctx.checkpoint.cleanup:
        moves.purge_copy(ctx, drive_id, replica_id)


def make_from_nothing(ctx: JobContext[Any, Any], volume_id: str, work: Work) -> None:
    """Creates a new copy of ``volume_id`` (the storage engine fills it from the
    others, as for a rebuild) and gives it the snapshots the volume's copies
    hold, from a readable one: a copy without them could not be reverted."""
    ctx.driver.create_replica(
        work.drive_id, work.replica_id, work.nbytes, thick=moves.is_thick(ctx, volume_id)
    )
    with ctx.store.read() as s:
        source = moves.snapshot_source(
            s,
            volume_id=volume_id,
            snapshot_id=None,
            skip={work.replica_id},
            target_drive_id=work.drive_id,
            index=work.index,
        )
    if source is not None:
        ctx.driver.copy_snapshots(source[0], source[1], work.drive_id, work.replica_id)


def room_at(sizes: Sequence[int], index: int) -> int:
    return sizes[min(index, len(sizes) - 1)]
