"""DRIVE_REPLACE: every allocation of a source drive moves to a target drive of
the same node (Service.StartDriveReplace).

Started: the source becomes REPLACING (no new allocations); the target is an
existing empty ONLINE drive, or a new device recorded ADDING; the target
joins every pool the source is a member of on its own (whole-node pools
cover it already). Steps: prepare a new target (format, ONLINE), then one
allocation per step, each reserved on the target, copied (or, from a FAILED
source, created anew on the target and filled from the other copies), then
moved in the books. DONE: the source is EJECTED, empty and out of its pools.
Failed or cancelled: copies already moved stay on the target; the source
returns to its previous state; a new target that never became ONLINE is
removed.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from osd.engine.drivers import DriverError
from osd.engine.jobs.kinds.evacuation import MOVABLE, Context, Evacuation, check_readable
from osd.engine.jobs.records import Record
from osd.engine.placement.cluster_view import ClusterView, Disk
from osd.engine.placement.rules import rules_for
from osd.engine.shared import validation as v
from osd.engine.shared.refusals import check_no_job, confirmation_required
from osd.engine.shared.rows import get_drive, stamp
from osd.engine.topology.drives import adding_row, prepared_size
from osd.enums import DriveState, JobKind, NodeState
from osd.enums import ObjectKind as OK
from osd.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument
from osd.store import drives as drive_repo
from osd.store import jobs as repo
from osd.store import pools as pool_repo
from osd.store.models import AllocationRow, DriveRow, JobRow, NodeRow


@dataclass(frozen=True)
class Probe(Record):
    """What the driver found at a device: its size, whether it holds data, and
    whether it is a rotational disk."""

    size_bytes: int = 0
    has_data: bool = False
    rotational: bool = False


@dataclass(frozen=True)
class DriveReplaceRequest(Record):
    """A replace to start: the source, and its target, an existing drive
    (``target_drive_id``) or a new device (``target_device_path``, with what the
    driver found there, if the caller probed it)."""

    source_drive_id: str
    target_drive_id: str = ""
    target_device_path: str = ""
    yes_i_really_mean_it: bool = False
    probe: Probe | None = None


@dataclass(frozen=True)
class DriveReplaceSpec(Record):
    """A replace as the job keeps it: the source's state before the job, the target
    drive (a new device still to prepare when ``new_device``) and where the driver
    reaches its node."""

    source_state: DriveState
    target_drive_id: str
    new_device: bool
    device_path: str
    address: str


def address_of(node: NodeRow) -> str:
    """The address the driver manages a node through."""
    return str(node.management_addresses[0])


def too_small(target_bytes: int, source: DriveRow) -> FailedPrecondition:
    return FailedPrecondition(
        f"the target has {target_bytes} bytes, fewer than the {source.total_bytes} "
        f"of drive {source.id}",
        reason="TARGET_TOO_SMALL",
        metadata={"target_bytes": str(target_bytes), "source_bytes": str(source.total_bytes)},
    )


class DriveReplace(Evacuation[DriveReplaceRequest, DriveReplaceSpec]):
    kind = JobKind.DRIVE_REPLACE
    target_kind = OK.DRIVE
    request_type = DriveReplaceRequest
    spec_type = DriveReplaceSpec

    def existing(self, s: Session, request: DriveReplaceRequest) -> JobRow | None:
        source_id = request.source_drive_id
        if not v.ID_RE.fullmatch(source_id):
            return None
        return repo.unfinished(s, self.kind, source_id)

    def begin(self, s: Session, job: JobRow, request: DriveReplaceRequest) -> DriveReplaceSpec:
        source = get_drive(s, request.source_drive_id, "source_drive_id")
        node = s.get_one(NodeRow, source.node_id)
        target_id = request.target_drive_id
        device_path = request.target_device_path
        target = self._existing_target(s, source, target_id) if target_id else None
        if target is None and drive_repo.get_by_device(s, node.id, device_path) is not None:
            raise AlreadyExists(
                f"{device_path} is already a drive of node {node.name}; name it with "
                "target_drive_id",
                reason="DRIVE_EXISTS",
                metadata={"device_path": device_path},
            )
        if source.state not in (DriveState.ONLINE, DriveState.FAILED):
            state = DriveState(source.state).name
            raise FailedPrecondition(
                f"drive {source.id} is {state}: only an ONLINE or FAILED drive can be replaced",
                reason="DRIVE_STATE_CONFLICT",
                metadata={"drive_id": source.id, "state": state},
            )
        if node.state not in (NodeState.ONLINE, NodeState.MAINTENANCE):
            state = NodeState(node.state).name
            raise FailedPrecondition(
                f"node {node.name} is {state}: drives are replaced on ONLINE nodes or nodes "
                "in MAINTENANCE",
                reason="NODE_NOT_ONLINE",
                metadata={"node_id": node.id, "state": state},
            )
        check_no_job(s, "drive", source.id, source.active_job_id)
        if target is not None:
            check_no_job(s, "drive", target.id, target.active_job_id)
            if target.state != DriveState.ONLINE or drive_repo.allocation_counts(
                s, [target.id]
            ).get(target.id, 0):
                raise FailedPrecondition(
                    f"drive {target.id} is {DriveState(target.state).name} with "
                    f"{target.used_bytes} bytes used: the target must be an empty ONLINE drive",
                    reason="TARGET_NOT_EMPTY",
                    metadata={"drive_id": target.id},
                )
            if target.total_bytes < source.total_bytes:
                raise too_small(target.total_bytes, source)
        else:
            target = self._new_target(s, job, source, node, device_path, request)
        if source.state == DriveState.FAILED:
            for alloc in repo.allocations_on_drives(s, [source.id]):
                if alloc.state in MOVABLE:
                    check_readable(s, alloc)
        previous = source.state
        source.state = DriveState.REPLACING
        source.active_job_id = job.id
        stamp(source, job.generation)
        target.active_job_id = job.id
        stamp(target, job.generation)
        for pool_id in pool_repo.pools_of_drives(s, [source.id]).get(source.id, []):
            if source.id in pool_repo.member_drive_ids(s, pool_id):
                pool_repo.add_drives(s, pool_id, [target.id])
        count = drive_repo.allocation_counts(s, [source.id]).get(source.id, 0)
        new_device = target.state == DriveState.ADDING
        job.cluster_id = source.cluster_id
        job.target_id = source.id
        job.related = [{"kind": int(OK.DRIVE), "id": target.id}]
        job.progress_total_steps = count + (1 if new_device else 0)
        job.progress_total_bytes = source.used_bytes
        return DriveReplaceSpec(
            source_state=previous,
            target_drive_id=target.id,
            new_device=new_device,
            device_path=target.device_path,
            address=address_of(node),
        )

    @staticmethod
    def _existing_target(s: Session, source: DriveRow, target_id: str) -> DriveRow:
        target = get_drive(s, target_id, "target_drive_id")
        why = ""
        if target.id == source.id:
            why = "is the source drive itself"
        elif target.node_id != source.node_id:
            why = f"is on node {target.node_id}, not on the source's node {source.node_id}"
        elif target.journal and not source.journal:
            why = "is a journal drive; it cannot hold the data of a data drive"
        if why:
            raise InvalidArgument.fields([FieldViolation("target_drive_id", why)])
        return target

    @staticmethod
    def _new_target(
        s: Session,
        job: JobRow,
        source: DriveRow,
        node: NodeRow,
        device_path: str,
        request: DriveReplaceRequest,
    ) -> DriveRow:
        probe = request.probe or Probe()
        size = probe.size_bytes
        if probe.has_data and not request.yes_i_really_mean_it:
            raise confirmation_required(
                f"{device_path} on node {node.name} holds data, which the replace destroys"
            )
        if size < source.total_bytes:
            raise too_small(size, source)
        node = s.get_one(NodeRow, source.node_id)
        target = adding_row(
            drive_id=uuid.uuid4().hex,
            node=node,
            device_path=device_path,
            description="",
            labels={},
            journal=source.journal,
            size_bytes=size,
            rotational=probe.rotational,
            generation=job.generation,
            job_id=job.id,
        )
        drive_repo.add(s, target)
        return target

    # -- steps ---------------------------------------------------------------------

    def unreadable(
        self, ctx: Context[DriveReplaceSpec], view: ClusterView, alloc: AllocationRow
    ) -> bool:
        # The source is REPLACING now: what it was before tells whether it can be read.
        return ctx.spec.source_state == DriveState.FAILED

    def sources(self, s: Session, ctx: Context[DriveReplaceSpec]) -> list[str]:
        return [ctx.target_id]

    def target(
        self,
        s: Session,
        ctx: Context[DriveReplaceSpec],
        view: ClusterView,
        alloc: AllocationRow,
        sources: list[str],
    ) -> Disk:
        disk = view.disks[ctx.spec.target_drive_id]
        rules = rules_for(s, alloc)
        taken = {
            view.disks[a.drive_id].key(rules.domain)
            for a in repo.allocations_of_owner(
                s, volume_id=alloc.volume_id, snapshot_id=alloc.snapshot_id
            )
            if a.id != alloc.id and a.drive_id in view.disks
        }
        if disk.key(rules.domain) in taken:
            raise FailedPrecondition(
                f"drive {disk.id} already holds a copy of {rules.owner_kind} {rules.owner_id} "
                f"in the same {rules.domain.name}",
                reason="PLACEMENT_IMPOSSIBLE",
                metadata={f"{rules.owner_kind}_id": rules.owner_id},
            )
        return disk

    def step(self, ctx: Context[DriveReplaceSpec]) -> bool:
        target_id = ctx.spec.target_drive_id
        with ctx.store.read() as s:
            target = s.get(DriveRow, target_id)
            adding = target is not None and target.state == DriveState.ADDING
        if adding:
            usable = ctx.driver.format_drive(ctx.spec.address, ctx.spec.device_path, target_id)
            with ctx.write() as (s, generation):
                row = s.get_one(DriveRow, target_id)
                if row.state == DriveState.ADDING:
                    row.state = DriveState.ONLINE
                    prepared_size(row, usable)
                    stamp(row, generation)
                ctx.progress.done_steps += 1
                ctx.progress.message = "target drive prepared"
            return False
        return super().step(ctx)

    def finish(self, ctx: Context[DriveReplaceSpec], s: Session, generation: int) -> None:
        source = s.get(DriveRow, ctx.target_id)
        if source is not None and source.state == DriveState.REPLACING:
            source.state = DriveState.EJECTED
            pool_repo.drop_drive(s, source.id)
            stamp(source, generation)

    def undo(self, ctx: Context[DriveReplaceSpec]) -> None:
        super().undo(ctx)
        if not ctx.spec.new_device:
            return
        with ctx.store.read() as s:
            target = s.get(DriveRow, ctx.spec.target_drive_id)
            adding = target is not None and target.state == DriveState.ADDING
        if adding:
            with contextlib.suppress(DriverError):
                ctx.driver.release_drive(
                    ctx.spec.address, ctx.spec.device_path, ctx.spec.target_drive_id
                )

    def abort(self, ctx: Context[DriveReplaceSpec], s: Session, generation: int) -> None:
        super().abort(ctx, s, generation)
        source = s.get(DriveRow, ctx.target_id)
        if source is not None and source.state == DriveState.REPLACING:
            source.state = ctx.spec.source_state
            stamp(source, generation)
        target = s.get(DriveRow, ctx.spec.target_drive_id)
        if target is not None and target.state == DriveState.ADDING:
            drive_repo.remove(s, target.id)
