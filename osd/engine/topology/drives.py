"""Drive operations: adding a device to a node, its labels and description,
hard eject, forget and delete.

Adding a drive runs in phases. The driver probes the device with no
transaction open; one write records the drive as ADDING; the driver formats
the device with no transaction open; one write makes the drive ONLINE, or,
when the driver fails, deletes the record. A daemon that starts finishes (or,
when the driver still fails, deletes) every drive a crash left ADDING that no
unfinished job carries on (see :meth:`DriveEngine.recover`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osd.engine.drivers import DriveInfo, DriverError, StorageDriver
from osd.engine.jobs.models import Started
from osd.engine.placement.rules import DEAD_DRIVE_STATES, available_state, copies_to_read
from osd.engine.shared import paging, pending, phased
from osd.engine.shared import validation as v
from osd.engine.shared.models import Allocation, Changed, Created, Page, allocation_of
from osd.engine.shared.refusals import confirmation_required, job_in_progress
from osd.engine.shared.rows import Unchanged, check_generation, require
from osd.engine.shared.validation import enum_value, id_violations, raise_if
from osd.engine.topology.availability import Availability, AvailabilityListener
from osd.engine.topology.labels import apply_labels, check_label_change
from osd.engine.topology.models import (
    ChangeLabels,
    CreateDrive,
    Drive,
    DriveDetail,
    DriveStateSet,
    Ejected,
    Forgotten,
    ListDrives,
    SetDriveState,
    UpdateDrive,
)
from osd.engine.topology.views import drives_from_rows
from osd.engine.volumes.access import Visibility
from osd.enums import AllocationState, DriveState, NodeState
from osd.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OsdError,
    Unavailable,
)
from osd.store import allocations as books
from osd.store import drives as repo
from osd.store import nodes as node_repo
from osd.store.db import Store
from osd.store.models import AllocationRow, DriveRow, NodeRow, VolumeRow, utcnow
from osd.store.state import bump_generation, current_generation

log = logging.getLogger(__name__)

# StorPool's disk description rule.
DESCRIPTION_RE = re.compile(r"[A-Za-z0-9_\- ]{0,30}")
DEVICE_PATH_MAX = 255
_DEVICE_PATH_RE = re.compile(r"(/[A-Za-z0-9._+:@,=-]+)+")


def description_violation(description: str) -> FieldViolation | None:
    if DESCRIPTION_RE.fullmatch(description):
        return None
    return FieldViolation(
        "description",
        "must be at most 30 characters from letters, digits, space, _ and -",
    )


def device_path_violation(path: str, *, files: bool = False) -> FieldViolation | None:
    """What is wrong with a device path. Only a driver that takes files
    (``files``: the local driver's image files and directories) accepts a
    path outside /dev."""
    if not path:
        return FieldViolation("device_path", "is required")
    if len(path) > DEVICE_PATH_MAX:
        return FieldViolation(
            "device_path", f"is {len(path)} characters long; at most {DEVICE_PATH_MAX}"
        )
    if not _DEVICE_PATH_RE.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        return FieldViolation(
            "device_path",
            "must be an absolute path such as /dev/sdb, from letters, digits and ._+:@,=-",
        )
    if (not path.startswith("/dev/") or path == "/dev/") and not files:
        # A device is named under /dev; a path elsewhere (/etc/passwd) is a file
        # of the host, never something to format.
        return FieldViolation("device_path", "must name a device under /dev, such as /dev/sdb")
    return None


def new_drive_violations(
    node_id: str,
    device_path: str,
    description: str,
    labels: dict[str, str],
    *,
    files: bool = False,
) -> list[FieldViolation]:
    """What is wrong with the fields of a drive to add (CreateDrive, StartDriveAdd)."""
    violations = id_violations(node_id, "node_id")
    for problem in (
        device_path_violation(device_path, files=files),
        description_violation(description),
    ):
        if problem:
            violations.append(problem)
    return violations + v.label_violations(labels)


def adding_row(
    *,
    drive_id: str,
    node: NodeRow,
    device_path: str,
    description: str,
    labels: dict[str, str],
    journal: bool,
    size_bytes: int,
    rotational: bool,
    generation: int,
    job_id: str | None = None,
) -> DriveRow:
    """The row of a drive being added (ADDING, empty), by CreateDrive or by a
    DRIVE_ADD or DRIVE_REPLACE job (``job_id``)."""
    now = utcnow()
    return DriveRow(
        id=drive_id,
        cluster_id=node.cluster_id,
        node_id=node.id,
        device_path=device_path,
        description=description,
        labels=dict(labels),
        journal=journal,
        state=DriveState.ADDING,
        total_bytes=size_bytes,
        used_bytes=0,
        model="",
        serial="",
        ssd=not rotational,
        active_job_id=job_id,
        create_time=now,
        update_time=now,
        generation=generation,
    )


def _address(node: NodeRow) -> str:
    """The address the driver manages a node through."""
    return str(node.management_addresses[0])


def prepared_size(row: DriveRow, usable: int | None) -> None:
    """Records the bytes a driver found usable on a drive it prepared, when
    fewer than the device's (a filesystem's own room); never below what the
    drive's allocations hold."""
    if usable is not None and max(row.used_bytes, 1) <= usable < row.total_bytes:
        row.total_bytes = usable


def takes_files(driver: object) -> bool:
    """Whether a driver takes image files and directories as drives, not only
    devices under /dev."""
    return getattr(driver, "takes_files", False) is True


def probe_device(
    driver: StorageDriver, node_name: str, address: str, device_path: str, field: str
) -> DriveInfo:
    """What the driver finds at ``device_path`` (no transaction open): a
    refusal (:func:`phased.refusal`); UNAVAILABLE when the driver cannot reach
    the node (a retryable error); NOT_FOUND (``field``) when there is no such
    device."""
    try:
        return driver.probe_drive(address, device_path)
    except DriverError as exc:
        if exc.retryable or phased.refusal("", exc) is not None:
            raise _driver_unavailable(exc, "probe_drive", f"reach node {node_name}") from exc
        raise NotFound(
            f"node {node_name} has no device {device_path!r}: {exc}",
            metadata={"kind": "device", "field": field, "id": device_path},
            violations=(FieldViolation(field, f"no such device on {node_name}"),),
        ) from exc


def _driver_unavailable(exc: DriverError, op: str, what: str) -> OsdError:
    refused = phased.refusal(f"the driver cannot {what}", exc, operation=op)
    if refused is not None:
        return refused
    return Unavailable(
        f"the driver failed to {what}: {exc}",
        reason="DRIVER_ERROR",
        metadata={"operation": op, "retryable": str(exc.retryable).lower()},
    )


class DriveEngine:
    """Drives of nodes. ``availability`` is told, inside the same transaction,
    which volumes and snapshots had allocations turn UNAVAILABLE (hard eject)
    or released (forget)."""

    def __init__(
        self,
        store: Store,
        driver: StorageDriver,
        availability: AvailabilityListener,
        evacuate: Callable[[str], Started],
    ) -> None:
        self._store = store
        self._driver = driver
        self._availability = availability
        self._evacuate = evacuate

    # -- create ----------------------------------------------------------

    def create(self, spec: CreateDrive) -> Created[Drive]:
        """Adds a device of an ONLINE node as a drive; see the module docstring.

        A probe that fails with a retryable DriverError means the driver cannot
        reach the node (UNAVAILABLE); a non-retryable one means there is no such
        device (NOT_FOUND, device_path). A drive found still ADDING by another
        call or job is waited for: its outcome is the answer, or ABORTED
        (OPERATION_PENDING) when this call's deadline comes first.
        """
        return pending.create_settled(
            lambda: self._create(spec),
            lambda r: r.created or r.value.state != DriveState.ADDING,
            "drive",
            lambda r: r.value.id,
        )

    def _create(self, spec: CreateDrive) -> Created[Drive]:
        raise_if(
            new_drive_violations(
                spec.node_id,
                spec.device_path,
                spec.description,
                spec.labels,
                files=takes_files(self._driver),
            )
        )
        spec = dataclasses.replace(spec, labels=dict(spec.labels))
        with self._store.read() as s:
            node = require(s, NodeRow, spec.node_id)
            existing = repo.get_by_device(s, spec.node_id, spec.device_path)
            if existing is not None:
                return self._existing(s, existing, spec)
            _require_online(node)
            name, address = node.name, _address(node)
        info = self._probe(name, address, spec)
        drive_id = uuid.uuid4().hex
        try:
            phased.record(self._store, lambda s, g: self._record_adding(s, g, spec, info, drive_id))
        except Unchanged as same:
            found: Created[Drive] = same.value
            return found
        except IntegrityError:
            # Another call added the same device meanwhile.
            with self._store.read() as s:
                existing = repo.get_by_device(s, spec.node_id, spec.device_path)
                if existing is None:
                    raise
                return self._existing(s, existing, spec)
        usable: list[int | None] = []
        return phased.run(
            self._store,
            [
                phased.Step(
                    f"preparing {spec.device_path}",
                    lambda: usable.append(
                        self._driver.format_drive(address, spec.device_path, drive_id)
                    ),
                )
            ],
            finish=lambda s, generation: self._finish_add(
                s, generation, drive_id, usable[-1] if usable else None
            ),
            rollback=lambda: self._undo_add(drive_id),
            failed=lambda exc: (
                _driver_unavailable(
                    exc, "format_drive", f"prepare {spec.device_path} on node {name}"
                )
                if isinstance(exc, DriverError)
                else exc
            ),
            catch=(Exception,),
        )

    def _probe(self, node_name: str, address: str, spec: CreateDrive) -> DriveInfo:
        info = probe_device(self._driver, node_name, address, spec.device_path, "device_path")
        if info.has_data and not spec.yes_i_really_mean_it:
            raise confirmation_required(
                f"{spec.device_path} on node {node_name} holds data, which adding it destroys"
            )
        return info

    def _record_adding(
        self, s: Session, generation: int, spec: CreateDrive, info: DriveInfo, drive_id: str
    ) -> None:
        """Phase 1 of an add: the drive recorded ADDING."""
        node = require(s, NodeRow, spec.node_id)
        existing = repo.get_by_device(s, spec.node_id, spec.device_path)
        if existing is not None:
            raise Unchanged(self._existing(s, existing, spec), generation - 1)
        _require_online(node)
        repo.add(
            s,
            adding_row(
                drive_id=drive_id,
                node=node,
                device_path=spec.device_path,
                description=spec.description,
                labels=spec.labels,
                journal=spec.journal,
                size_bytes=info.size_bytes,
                rotational=info.rotational,
                generation=generation,
            ),
        )

    @staticmethod
    def _finish_add(
        s: Session, generation: int, drive_id: str, usable: int | None = None
    ) -> Created[Drive]:
        """Phase 3 of an add (and of its recovery): the drive ONLINE, with the
        size the driver found usable."""
        row = repo.get(s, drive_id)
        if row is None:
            raise Aborted(
                f"drive {drive_id} was removed while it was being added",
                reason="CONCURRENT_CHANGE",
            )
        if row.state == DriveState.ADDING:
            row.state = DriveState.ONLINE
            prepared_size(row, usable)
            row.update_time = utcnow()
            row.generation = generation
            s.flush()
        return Created(drives_from_rows(s, [row])[0], True, generation)

    def _undo_add(self, drive_id: str) -> None:
        """Deletes a drive record left ADDING by a failed add."""
        with self._store.write() as s:
            bump_generation(s)
            row = repo.get(s, drive_id)
            if row is not None and row.state == DriveState.ADDING:
                repo.remove(s, drive_id)

    @staticmethod
    def _existing(s: Session, row: DriveRow, spec: CreateDrive) -> Created[Drive]:
        same = (
            row.journal == spec.journal
            and row.labels == spec.labels
            and row.description == spec.description
        )
        if not same:
            raise AlreadyExists(
                f"{spec.device_path} is already drive {row.id} of node {row.node_id} "
                "with another spec",
                reason="DRIVE_EXISTS",
                metadata={"device_path": spec.device_path, "drive_id": row.id},
            )
        return Created(drives_from_rows(s, [row])[0], False, current_generation(s))

    def recover(self) -> None:
        """Finishes or undoes every add a crash left ADDING with no unfinished job.

        The driver's calls are idempotent, so the device is formatted again:
        when that works the drive becomes ONLINE (the add had been confirmed
        when it was recorded); when it fails the device is released and the
        record deleted.
        """
        with self._store.read() as s:
            left = [
                (r.id, r.device_path, _address(require(s, NodeRow, r.node_id)))
                for r in repo.left_adding(s)
            ]
        for drive_id, device_path, address in left:
            try:
                usable = self._driver.format_drive(address, device_path, drive_id)
            except Exception:
                log.warning(
                    "drive %s (%s on %s) was left ADDING and cannot be prepared; deleting it",
                    drive_id,
                    device_path,
                    address,
                    exc_info=True,
                )
                self._release_quietly(address, device_path, drive_id)
                self._undo_add(drive_id)
                continue
            with contextlib.suppress(Aborted):
                phased.record(
                    self._store,
                    functools.partial(self._finish_add, drive_id=drive_id, usable=usable),
                )
            log.info(
                "drive %s (%s on %s) left ADDING is now ONLINE", drive_id, device_path, address
            )

    # -- read ------------------------------------------------------------

    def inspect(self, drive_id: str) -> DriveDetail:
        v.check_id(drive_id, "drive_id")
        with self._store.read() as s:
            row = require(s, DriveRow, drive_id)
            seen = Visibility(s)
            allocations = [
                _unnamed(allocation_of(a, zone), seen) for a, zone in repo.allocations(s, drive_id)
            ]
            return DriveDetail(drives_from_rows(s, [row])[0], allocations)

    def list(self, query: ListDrives) -> Page[Drive]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "drive", query)
        after = pages.after_pair(query.page_token, "n", "p")
        violations: list[FieldViolation] = []
        for value, field in (
            (query.node_id, "node_id"),
            (query.cluster_id, "cluster_id"),
            (query.pool_id, "pool_id"),
        ):
            if value:
                violations += id_violations(value, field)
        violations += v.label_violations(query.labels)
        raise_if(violations)
        states = {enum_value(DriveState, st, "states") for st in query.states}
        pattern = v.compile_regex(query.name_regex, "name_regex")
        wanted = dict(query.labels)

        def keep(row: DriveRow) -> bool:
            if states and row.state not in states:
                return False
            if pattern is not None and not (
                pattern.search(row.device_path) or pattern.search(row.description)
            ):
                return False
            return all(row.labels.get(k) == val for k, val in wanted.items())

        with self._store.read() as s:
            rows, token = pages.take(
                repo.scan(
                    s,
                    node_id=query.node_id or None,
                    cluster_id=query.cluster_id or None,
                    pool_id=query.pool_id or None,
                    after=after,
                    batch=size + 1,
                ),
                size,
                keep,
                lambda r: {"n": r.node_id, "p": r.device_path},
            )
            return Page(drives_from_rows(s, rows), token)

    # -- update ----------------------------------------------------------

    def update(self, change: UpdateDrive) -> Changed[Drive]:
        violations = id_violations(change.drive_id, "drive_id")
        if change.description is not None:
            problem = description_violation(change.description)
            if problem:
                violations.append(problem)
        if change.labels is not None:
            violations += v.label_violations(change.labels)
        raise_if(violations)
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(s, DriveRow, change.drive_id)
            check_generation("drive", row.id, row.generation, change.expected_generation)
            if change.description is not None:
                row.description = change.description
            if change.labels is not None:
                row.labels = dict(change.labels)
            return self._stamp(s, row, generation)

    def update_labels(self, change: ChangeLabels) -> Changed[Drive]:
        v.check_id(change.object_id, "drive_id")
        labels = check_label_change(change)
        assert change.operation is not None
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(s, DriveRow, change.object_id)
            check_generation("drive", row.id, row.generation, change.expected_generation)
            row.labels = apply_labels(row.labels, change.operation, labels)
            return self._stamp(s, row, generation)

    # -- out of service ---------------------------------------------------

    def eject(self, drive_id: str, soft: bool, confirmed: bool) -> Ejected:
        """A soft eject starts a DRIVE_EVACUATE job, which moves the data off
        then ejects (the job kind owns its rules); a hard eject is at once."""
        if soft:
            started = self._evacuate(drive_id)
            return Ejected(self.inspect(drive_id).drive, started.job, started.generation)
        hard = self.eject_hard(drive_id, confirmed)
        return Ejected(hard.value, None, hard.generation)

    def eject_hard(self, drive_id: str, confirmed: bool) -> Changed[Drive]:
        """Takes a drive out of service at once: EJECTED, its ACTIVE allocations
        UNAVAILABLE. Ejecting an EJECTED drive changes nothing."""
        v.check_id(drive_id, "drive_id")
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = require(s, DriveRow, drive_id)
                if row.state == DriveState.EJECTED:
                    raise Unchanged(drives_from_rows(s, [row])[0], generation - 1)
                self._check_no_job(s, row)
                if not confirmed:
                    raise confirmation_required(
                        f"a hard eject of drive {row.id} abandons the data on it"
                    )
                row.state = DriveState.EJECTED
                volumes, snapshots = repo.make_unavailable(s, row.id)
                touched = Availability(frozenset(volumes), frozenset(snapshots))
                if touched:
                    self._availability(s, touched)
                return self._stamp(s, row, generation)
        except Unchanged as same:
            drive: Drive = same.value
            return Changed(drive, same.generation)

    def forget(self, drive_id: str, confirmed: bool) -> Forgotten:
        """Drops an EJECTED or FAILED drive, releasing every allocation on it."""
        v.check_id(drive_id, "drive_id")
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(s, DriveRow, drive_id)
            if not confirmed:
                raise confirmation_required(
                    f"forgetting drive {row.id} loses the copies its allocations held"
                )
            self._check_no_job(s, row)
            if row.state not in (DriveState.EJECTED, DriveState.FAILED):
                state = DriveState(row.state).name
                raise FailedPrecondition(
                    f"drive {row.id} is {state}: only an EJECTED or FAILED drive can be "
                    "forgotten; eject it first",
                    reason="DRIVE_NOT_EJECTED",
                    metadata={"state": state},
                )
            volumes: set[str] = set()
            snapshots: set[str] = set()
            for allocation in repo.allocation_rows(s, row.id):
                if allocation.volume_id:
                    volumes.add(allocation.volume_id)
                if allocation.snapshot_id:
                    snapshots.add(allocation.snapshot_id)
                books.release(s, allocation)
            touched = Availability(frozenset(volumes), frozenset(snapshots))
            if touched:
                self._availability(s, touched)
            node = require(s, NodeRow, row.node_id)
            address, device_path = _address(node), row.device_path
            repo.remove(s, row.id)
        self._release_quietly(address, device_path, drive_id)
        return Forgotten(sorted(volumes), sorted(snapshots), generation)

    def set_state(self, change: SetDriveState) -> DriveStateSet:
        """An operator's state for a drive: OFFLINE (out of placement, its
        copies serving), ONLINE (back from OFFLINE; or readmitted from EJECTED
        or FAILED), or FAILED (out of service with its copies, confirmed)."""
        v.check_id(change.drive_id, "drive_id")
        state = enum_value(DriveState, change.state, "state")
        if state not in OPERATOR_STATES:
            raise InvalidArgument.field(
                "state",
                f"only ONLINE, OFFLINE or FAILED can be set here, not {state.name}: "
                "ejecting goes through EjectDrive, replacing through Service.StartDriveReplace",
            )
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = require(s, DriveRow, change.drive_id)
                check_generation("drive", row.id, row.generation, change.expected_generation)
                current = DriveState(row.state)
                if current == state:
                    raise Unchanged(drives_from_rows(s, [row])[0], generation - 1)
                self._check_no_job(s, row)
                if current not in STATES_FROM[state]:
                    raise FailedPrecondition(
                        f"drive {row.id} is {current.name}: it cannot be set {state.name} "
                        f"(only from {', '.join(sorted(x.name for x in STATES_FROM[state]))})",
                        reason="DRIVE_STATE_CONFLICT",
                        metadata={"state": current.name},
                    )
                if state == DriveState.FAILED and not change.confirmed:
                    raise confirmation_required(
                        f"marking drive {row.id} FAILED takes the copies on it out of service"
                    )
                row.state = state
                readmitted = Readmitted()
                if state == DriveState.FAILED:
                    volumes, snapshots = repo.make_unavailable(s, row.id)
                    touched = Availability(frozenset(volumes), frozenset(snapshots))
                elif current in DEAD_DRIVE_STATES:
                    readmitted = self._readmit(s, row)
                    touched = Availability(
                        frozenset(readmitted.restored_volumes | readmitted.resync_volumes),
                        frozenset(readmitted.restored_snapshots),
                    )
                else:
                    # OFFLINE and back: the copies serve throughout. Told all the
                    # same: a drive back ONLINE is room a repair may have lacked.
                    touched = Availability(frozenset(), frozenset())
                self._availability(s, touched)
                changed = self._stamp(s, row, generation)
                return DriveStateSet(
                    changed.value,
                    generation,
                    sorted(readmitted.restored_volumes),
                    sorted(readmitted.resync_volumes),
                    sorted(readmitted.restored_snapshots),
                )
        except Unchanged as same:
            drive: Drive = same.value
            return DriveStateSet(drive, same.generation)

    @staticmethod
    def _readmit(s: Session, row: DriveRow) -> Readmitted:
        """Takes back the copies of a drive that returned from EJECTED or
        FAILED. A snapshot's copy never changes, and a volume that could not
        be read without this copy all the while it was away (it is not stale,
        see :func:`osd.store.nodes.mark_stale`) was not written meanwhile:
        their copies on it are live again. A volume that could be read
        elsewhere may have been written: its copy here stays UNAVAILABLE for
        the repair controller to rebuild from a live copy (the stale one is
        deleted then)."""
        node = require(s, NodeRow, row.node_id)
        if available_state(node.state, DriveState.ONLINE) != AllocationState.ACTIVE:
            # Its copies would come back with the node, stale ones among them.
            state = NodeState(node.state).name
            raise FailedPrecondition(
                f"node {node.name} is {state}: a drive is readmitted on a serving node",
                reason="NODE_NOT_ONLINE",
                metadata={"node_id": node.id, "state": state},
            )
        out = Readmitted()
        back: list[AllocationRow] = []
        for allocation in repo.unavailable_rows(s, row.id):
            if allocation.snapshot_id:
                out.restored_snapshots.add(allocation.snapshot_id)
                back.append(allocation)
                continue
            volume = s.get(VolumeRow, allocation.volume_id)
            if volume is None:
                continue
            elsewhere = repo.live_copies_elsewhere(s, volume.id, row.id)
            if allocation.stale or elsewhere >= copies_to_read(volume):
                out.resync_volumes.add(volume.id)
            else:
                out.restored_volumes.add(volume.id)
                back.append(allocation)
        for allocation in back:
            allocation.state = AllocationState.ACTIVE
            allocation.stale = False
        node_repo.mark_stale(s, out.restored_volumes)
        return out

    def delete(self, drive_id: str) -> int:
        """Deletes a drive that holds no allocations; it leaves every pool."""
        v.check_id(drive_id, "drive_id")
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(s, DriveRow, drive_id)
            self._check_no_job(s, row)
            held = repo.allocation_counts(s, [row.id])[row.id]
            if held:
                raise FailedPrecondition(
                    f"drive {row.id} holds {held} allocations; soft-eject it first",
                    reason="DRIVE_IN_USE",
                    metadata={"allocations": str(held)},
                )
            node = require(s, NodeRow, row.node_id)
            address, device_path = _address(node), row.device_path
            repo.remove(s, row.id)
        self._release_quietly(address, device_path, drive_id)
        return generation

    def _release_quietly(self, address: str, device_path: str, drive_id: str) -> None:
        """Tells the driver the device is no longer osd's; a failure is only logged."""
        try:
            self._driver.release_drive(address, device_path, drive_id)
        except Exception:
            log.warning(
                "the driver could not release %s on %s (drive %s)",
                device_path,
                address,
                drive_id,
                exc_info=True,
            )

    # -- helpers ---------------------------------------------------------

    @staticmethod
    def _check_no_job(s: Session, row: DriveRow) -> None:
        job_id = node_repo.unfinished_job_id(s, row.id, row.active_job_id)
        if job_id:
            raise job_in_progress("drive", row.id, job_id)
        if row.state == DriveState.ADDING:
            raise FailedPrecondition(
                f"drive {row.id} is still being added",
                reason="JOB_IN_PROGRESS",
                metadata={"job_id": row.active_job_id or "", "state": "ADDING"},
            )

    @staticmethod
    def _stamp(s: Session, row: DriveRow, generation: int) -> Changed[Drive]:
        row.update_time = utcnow()
        row.generation = generation
        s.flush()
        return Changed(drives_from_rows(s, [row])[0], generation)


# What an operator may set (SetDriveState), and from which states.
OPERATOR_STATES = frozenset({DriveState.ONLINE, DriveState.OFFLINE, DriveState.FAILED})
STATES_FROM = {
    DriveState.OFFLINE: frozenset({DriveState.ONLINE}),
    DriveState.ONLINE: frozenset({DriveState.OFFLINE, DriveState.EJECTED, DriveState.FAILED}),
    DriveState.FAILED: frozenset({DriveState.ONLINE, DriveState.OFFLINE}),
}


@dataclass
class Readmitted:
    """The volumes and snapshots whose copies on a readmitted drive are live
    again, and the volumes whose copy there waits for a resync."""

    restored_volumes: set[str] = dataclasses.field(default_factory=set)
    resync_volumes: set[str] = dataclasses.field(default_factory=set)
    restored_snapshots: set[str] = dataclasses.field(default_factory=set)


def _require_online(node: NodeRow) -> None:
    if node.state != NodeState.ONLINE:
        state = NodeState(node.state).name
        raise FailedPrecondition(
            f"node {node.name} is {state}: drives are added only to ONLINE nodes",
            reason="NODE_NOT_ONLINE",
            metadata={"node_id": node.id, "state": state},
        )


def _unnamed(allocation: Allocation, seen: Visibility) -> Allocation:
    """The allocation, without the id of a volume or snapshot the caller may
    not read: the drive's space is shown, whose data it is is not."""
    hide_volume = not seen.volume(allocation.volume_id)
    hide_snapshot = not seen.snapshot(allocation.snapshot_id)
    if not (hide_volume or hide_snapshot):
        return allocation
    return dataclasses.replace(
        allocation,
        volume_id="" if hide_volume else allocation.volume_id,
        snapshot_id="" if hide_snapshot else allocation.snapshot_id,
    )
