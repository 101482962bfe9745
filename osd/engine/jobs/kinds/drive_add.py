"""DRIVE_ADD: a device of a node prepared as a drive (Service.StartDriveAdd).

Started: the drive is recorded ADDING with the size the driver's probe
reported (the call probes before it records). Its one step formats the
device through the driver; finishing makes the drive ONLINE and adds it to
the requested pools (those that still exist). Failed or cancelled: the
device is released and the drive record removed. Not pausable: there is no
safe point inside its single step.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from osd.engine.drivers import DriverError
from osd.engine.jobs.handler import JobContext, JobHandler, NoCheckpoint
from osd.engine.jobs.kinds.drive_replace import Probe, address_of
from osd.engine.jobs.records import Record
from osd.engine.shared import validation as v
from osd.engine.shared.refusals import confirmation_required
from osd.engine.shared.rows import get_node, stamp
from osd.engine.topology.drives import adding_row, prepared_size
from osd.enums import DriveState, JobKind, NodeState
from osd.enums import ObjectKind as OK
from osd.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from osd.store import drives as drive_repo
from osd.store import jobs as repo
from osd.store import pools as pool_repo
from osd.store.models import DriveRow, JobRow, PoolRow


@dataclass(frozen=True)
class DriveAddRequest(Record):
    """A drive add to start: the device, what the drive is to be, and what the
    driver found at the device (if the caller probed it)."""

    node_id: str
    device_path: str
    journal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    pool_ids: tuple[str, ...] = ()
    yes_i_really_mean_it: bool = False
    probe: Probe | None = None


@dataclass(frozen=True)
class DriveAddSpec(Record):
    """A drive add as the job keeps it: the device, where the driver reaches its
    node, and the pools the drive joins."""

    node_id: str
    device_path: str
    address: str
    pool_ids: tuple[str, ...]


Context = JobContext[DriveAddSpec, NoCheckpoint]


class DriveAdd(JobHandler[DriveAddRequest, DriveAddSpec, NoCheckpoint]):
    kind = JobKind.DRIVE_ADD
    target_kind = OK.DRIVE
    pausable = False
    request_type = DriveAddRequest
    spec_type = DriveAddSpec
    checkpoint_type = NoCheckpoint

    def existing(self, s: Session, request: DriveAddRequest) -> JobRow | None:
        node_id = request.node_id
        if not v.ID_RE.fullmatch(node_id):
            return None
        drive = drive_repo.get_by_device(s, node_id, request.device_path)
        if drive is None or drive.state != DriveState.ADDING:
            return None
        return repo.unfinished(s, self.kind, drive.id)

    def begin(self, s: Session, job: JobRow, request: DriveAddRequest) -> DriveAddSpec:
        node = get_node(s, request.node_id)
        device_path = request.device_path
        journal = request.journal
        pools = self._pools(s, node.cluster_id, list(request.pool_ids), journal)
        if drive_repo.get_by_device(s, node.id, device_path) is not None:
            raise AlreadyExists(
                f"{device_path} is already a drive of node {node.name}",
                reason="DRIVE_EXISTS",
                metadata={"device_path": device_path},
            )
        if node.state != NodeState.ONLINE:
            state = NodeState(node.state).name
            raise FailedPrecondition(
                f"node {node.name} is {state}: drives are added only to ONLINE nodes",
                reason="NODE_NOT_ONLINE",
                metadata={"node_id": node.id, "state": state},
            )
        probe = request.probe or Probe()
        if probe.has_data and not request.yes_i_really_mean_it:
            raise confirmation_required(
                f"{device_path} on node {node.name} holds data, which adding it destroys"
            )
        drive = adding_row(
            drive_id=uuid.uuid4().hex,
            node=node,
            device_path=device_path,
            description=request.description,
            labels=dict(request.labels),
            journal=journal,
            size_bytes=probe.size_bytes,
            rotational=probe.rotational,
            generation=job.generation,
            job_id=job.id,
        )
        drive_repo.add(s, drive)
        job.cluster_id = node.cluster_id
        job.target_id = drive.id
        job.related = [{"kind": int(OK.NODE), "id": node.id}] + [
            {"kind": int(OK.POOL), "id": p} for p in pools
        ]
        job.progress_total_steps = 1
        job.progress_total_bytes = drive.total_bytes
        return DriveAddSpec(
            node_id=node.id,
            device_path=device_path,
            address=address_of(node),
            pool_ids=tuple(pools),
        )

    @staticmethod
    def _pools(s: Session, cluster_id: str, pool_ids: list[str], journal: bool) -> list[str]:
        violations: list[FieldViolation] = []
        missing: list[str] = []
        out: list[str] = []
        for i, pool_id in enumerate(pool_ids):
            field = f"pool_ids[{i}]"
            if not v.ID_RE.fullmatch(pool_id):
                violations.append(FieldViolation(field, f"{pool_id[:80]!r} is not an id"))
                continue
            pool = s.get(PoolRow, pool_id)
            if pool is None:
                missing.append(pool_id)
            elif pool.cluster_id != cluster_id:
                violations.append(FieldViolation(field, f"pool {pool_id} is of another cluster"))
            elif journal:
                violations.append(FieldViolation(field, "a journal drive cannot join a pool"))
            elif pool_id not in out:
                out.append(pool_id)
        if violations:
            raise InvalidArgument.fields(violations)
        if missing:
            raise NotFound.object("pool", "pool_ids", missing[0])
        return out

    def step(self, ctx: Context) -> bool:
        usable = ctx.driver.format_drive(ctx.spec.address, ctx.spec.device_path, ctx.target_id)
        with ctx.write() as (s, _generation):
            drive = s.get(DriveRow, ctx.target_id)
            if drive is not None and drive.state == DriveState.ADDING:
                prepared_size(drive, usable)
        return True

    def finish(self, ctx: Context, s: Session, generation: int) -> None:
        drive = s.get_one(DriveRow, ctx.target_id)
        if drive.state == DriveState.ADDING:
            drive.state = DriveState.ONLINE
            stamp(drive, generation)
        for pool_id in ctx.spec.pool_ids:
            if s.get(PoolRow, pool_id) is not None:
                pool_repo.add_drives(s, pool_id, [drive.id])
        ctx.progress.done_bytes = drive.total_bytes

    def undo(self, ctx: Context) -> None:
        with contextlib.suppress(DriverError):
            ctx.driver.release_drive(ctx.spec.address, ctx.spec.device_path, ctx.target_id)

    def abort(self, ctx: Context, s: Session, generation: int) -> None:
        drive = s.get(DriveRow, ctx.target_id)
        if drive is not None and drive.state == DriveState.ADDING:
            drive_repo.remove(s, drive.id)
