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
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from osd.engine.drivers import DriverError
from osd.engine.jobs.handler import JobContext, JobHandler
from osd.engine.jobs.kinds.drive_replace import address_of
from osd.engine.shared import validation as v
from osd.engine.shared.refusals import confirmation_required
from osd.engine.shared.rows import get_node, stamp
from osd.enums import DriveState, JobKind, NodeState
from osd.enums import ObjectKind as OK
from osd.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from osd.store import drives as drive_repo
from osd.store import jobs as repo
from osd.store import pools as pool_repo
from osd.store.models import DriveRow, JobRow, PoolRow, utcnow


class DriveAdd(JobHandler):
    kind = JobKind.DRIVE_ADD
    target_kind = OK.DRIVE
    pausable = False

    def existing(self, s: Session, spec: Mapping[str, Any]) -> JobRow | None:
        node_id = str(spec.get("node_id", ""))
        if not v.ID_RE.fullmatch(node_id):
            return None
        drive = drive_repo.get_by_device(s, node_id, str(spec.get("device_path", "")))
        if drive is None or drive.state != DriveState.ADDING:
            return None
        return repo.unfinished(s, self.kind, drive.id)

    def begin(self, s: Session, job: JobRow, spec: Mapping[str, Any]) -> None:
        node = get_node(s, str(spec.get("node_id", "")))
        device_path = str(spec["device_path"])
        journal = bool(spec.get("journal"))
        pools = self._pools(s, node.cluster_id, list(spec.get("pool_ids") or []), journal)
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
        probe = dict(spec.get("probe") or {})
        if probe.get("has_data") and not spec.get("yes_i_really_mean_it"):
            raise confirmation_required(
                f"{device_path} on node {node.name} holds data, which adding it destroys"
            )
        now = utcnow()
        drive = DriveRow(
            id=uuid.uuid4().hex,
            cluster_id=node.cluster_id,
            node_id=node.id,
            device_path=device_path,
            description=str(spec.get("description", "")),
            labels=dict(spec.get("labels") or {}),
            journal=journal,
            state=DriveState.ADDING,
            total_bytes=int(probe.get("size_bytes", 0)),
            used_bytes=0,
            model="",
            serial="",
            ssd=not probe.get("rotational", False),
            active_job_id=job.id,
            create_time=now,
            update_time=now,
            generation=job.generation,
        )
        drive_repo.add(s, drive)
        job.cluster_id = node.cluster_id
        job.target_id = drive.id
        job.related = [{"kind": int(OK.NODE), "id": node.id}] + [
            {"kind": int(OK.POOL), "id": p} for p in pools
        ]
        job.spec = {
            "node_id": node.id,
            "device_path": device_path,
            "address": address_of(node),
            "pool_ids": pools,
        }
        job.progress_total_steps = 1
        job.progress_total_bytes = drive.total_bytes

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

    def step(self, ctx: JobContext) -> bool:
        ctx.driver.format_drive(ctx.spec["address"], ctx.spec["device_path"], ctx.target_id)
        return True

    def finish(self, ctx: JobContext, s: Session, generation: int) -> None:
        drive = s.get_one(DriveRow, ctx.target_id)
        if drive.state == DriveState.ADDING:
            drive.state = DriveState.ONLINE
            stamp(drive, generation)
        for pool_id in ctx.spec.get("pool_ids", []):
            if s.get(PoolRow, pool_id) is not None:
                pool_repo.add_drives(s, pool_id, [drive.id])
        ctx.progress.done_bytes = drive.total_bytes

    def undo(self, ctx: JobContext) -> None:
        with contextlib.suppress(DriverError):
            ctx.driver.release_drive(ctx.spec["address"], ctx.spec["device_path"], ctx.target_id)

    def abort(self, ctx: JobContext, s: Session, generation: int) -> None:
        drive = s.get(DriveRow, ctx.target_id)
        if drive is not None and drive.state == DriveState.ADDING:
            drive_repo.remove(s, drive.id)
