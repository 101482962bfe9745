"""Volume operations: create, read, update, delete, and the capacity summary.

Creates, size changes and deletes run in phases (see osd.engine.volume_phases);
recovery on start finishes or undoes what a crash left half done
(osd.engine.volume_recovery). A copy of another volume, a replica count
change and a placement change that moves copies are jobs (the VOLUME_COPY,
VOLUME_REPLICA_CHANGE and VOLUME_MOVE kinds of osd.engine.jobs.kinds),
recorded in the transaction of the call that asks for them.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Callable, ItemsView, Iterable, Iterator
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osd.engine.drivers import StorageDriver
from osd.engine.jobs.kinds.volume_copy import VolumeCopyRequest
from osd.engine.jobs.kinds.volume_move import VolumeMoveRequest
from osd.engine.jobs.kinds.volume_replica_change import VolumeReplicaChangeRequest
from osd.engine.jobs.records import Record
from osd.engine.shared import paging, pending, phased
from osd.engine.shared import validation as v
from osd.engine.shared.models import Page, allocation_of
from osd.engine.shared.refusals import confirmation_required
from osd.engine.shared.rows import check_generation, require, stamp
from osd.engine.shared.sizes import bytes_violation, spec_violation, text_violation
from osd.engine.topology.availability import Availability
from osd.engine.volumes import access, capacity, specs
from osd.engine.volumes import create_plan as volume_create
from osd.engine.volumes import phases as volume_phases
from osd.engine.volumes.guards import (
    get_volume,
    not_available,
    require_all_available,
    require_detached,
    require_no_job,
    require_serving,
    require_settled,
)
from osd.engine.volumes.health import health_of
from osd.engine.volumes.models import (
    CapacitySummary,
    ChangedVolume,
    CreatedVolume,
    CreateVolume,
    Deleted,
    Placement,
    UpdateVolume,
    Volume,
    VolumeDetail,
    VolumeQuery,
)
from osd.engine.volumes.recovery import recover
from osd.engine.volumes.views import (
    attachment_of,
    durability_of,
    placement_of,
    volume_from,
    volumes_of,
)
from osd.enums import (
    Access,
    AllocationState,
    AttachMode,
    DurabilityType,
    FailureDomain,
    JobKind,
    SnapshotState,
    SourceKind,
    VolumeState,
)
from osd.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from osd.store import allocations
from osd.store import attachments as attach_repo
from osd.store import grants as grant_repo
from osd.store import jobs as job_repo
from osd.store import snapshots as snap_repo
from osd.store import volumes as repo
from osd.store.db import Store
from osd.store.models import AllocationRow, TemplateRow, VolumeRow, utcnow
from osd.store.state import bump_generation, current_generation

if TYPE_CHECKING:
    from osd.engine.jobs.jobs import JobEngine
    from osd.engine.jobs.models import Job


class VolumeEngine:
    def __init__(self, store: Store, driver: StorageDriver, jobs: JobEngine | None = None) -> None:
        self._store = store
        self._driver = driver
        self._job_engine = jobs

    @property
    def _jobs(self) -> JobEngine:
        if self._job_engine is None:
            raise RuntimeError("this volume engine was made without a job engine")
        return self._job_engine

    def _record(self, s: Session, kind: JobKind, request: Record, generation: int) -> Job:
        """Records a job in the caller's transaction (see JobEngine.record)."""
        return self._jobs.record(s, kind, request, generation)

    def recover(self, alive: Callable[[str], bool] | None = None) -> None:
        """Finishes or undoes the volume and snapshot changes a crash interrupted
        (those whose daemon is gone, when ``alive`` tells)."""
        recover(self._store, self._driver, alive)

    def take_over(self, alive: Callable[[str], bool]) -> None:
        """Finishes or undoes the changes of daemons that died since this one
        started (run after each heartbeat)."""
        recover(self._store, self._driver, alive, starting=False)

    def availability_changed(self, s: Session, change: Availability) -> None:
        """Keeps volume states in step with their copies, inside the topology
        change's transaction: UP with every copy available, DEGRADED while
        readable, DOWN while no complete copy is available, DATA_LOST (for
        good) when too many copies were released."""
        if not change.volume_ids:
            return
        generation = current_generation(s)
        ids = sorted(change.volume_ids)
        views = repo.copy_views(s, ids)
        for volume_id in ids:
            row = repo.get(s, volume_id)
            if row is None or row.state in (VolumeState.CREATING, VolumeState.DELETING):
                continue
            if row.state != VolumeState.DATA_LOST:
                state = availability_state(row, repo.allocations(s, volume_id))
                if state != row.state:
                    row.state = state
                    stamp(row, generation)
            # Since when it lacks a live copy (repair waits its delay from then);
            # forgotten once every copy is live again.
            degraded = health_of(row, views.get(volume_id, [])).degraded
            if degraded and row.degraded_time is None:
                row.degraded_time = utcnow()
                stamp(row, generation)
            elif not degraded and row.degraded_time is not None:
                row.degraded_time = None
                stamp(row, generation)
        s.flush()

    # -- create ----------------------------------------------------------------

    def create(self, spec: CreateVolume) -> CreatedVolume:
        """Creates the volume, or answers the one with the same name and spec.

        A volume found still CREATING by another call is waited for (not for a
        copy, whose job the answer carries): its outcome is the answer, or
        ABORTED (OPERATION_PENDING) when this call's deadline comes first."""
        return pending.create_settled(
            lambda: self._create(spec),
            lambda r: r.created or r.job is not None or r.value.state != VolumeState.CREATING,
            "volume",
            lambda r: r.value.id,
        )

    def _create(self, spec: CreateVolume) -> CreatedVolume:
        checked = volume_create.check(spec)
        if checked.spec.source.kind == SourceKind.VOLUME:
            return self._create_copy(checked)
        with self._store.read() as s:
            plan = volume_create.resolve(s, checked)
            existing = repo.get_by_name(s, plan.cluster.id, plan.name)
            if existing is not None:
                return self._existing(s, existing, plan)
        volume_id, op = uuid.uuid4().hex, uuid.uuid4().hex
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                plan = volume_create.resolve(s, checked)
                existing = repo.get_by_name(s, plan.cluster.id, plan.name)
                if existing is not None:
                    return self._existing(s, existing, plan)
                volume_create.check_raw_capacity(s, plan)
                picks = volume_create.place(s, plan)
                row = volume_create.new_row(plan, volume_id, generation)
                row.op_owner = self._store.owner
                repo.add(s, row)
                fill = volume_phases.fill_of(s, row)
                grant_repo.add(s, volume_id, plan.ownership.grants)
                reserve = specs.reserved_sizes(
                    plan.size_bytes, plan.durability, plan.snapshot_factor, plan.provisioning
                )
                shares = specs.share_sizes(plan.size_bytes, plan.durability)
                work = []
                for index, (drive, nbytes) in enumerate(zip(picks, reserve, strict=True)):
                    a = allocations.reserve(
                        s,
                        drive_id=drive.drive_id,
                        node_id=drive.node_id,
                        nbytes=nbytes,
                        index=index,
                        state=AllocationState.PENDING,
                        volume_id=volume_id,
                        job_id=op,
                    )
                    work.append((a.drive_id, a.id, shares[index]))
        except IntegrityError:
            # Another daemon sharing the store took the name between our look-up
            # and our insert; answer as if we had seen it.
            with self._store.read() as s:
                existing = repo.get_by_name(s, plan.cluster.id, plan.name)
                if existing is None:
                    raise
                return self._existing(s, existing, plan)
        # The answer is read in the transaction that finishes the create.
        volume, generation = volume_phases.run_create(
            self._store, self._driver, volume_id, work, fill, volume_from
        )
        return CreatedVolume(volume, True, generation)

    def _create_copy(self, checked: volume_create.Checked) -> CreatedVolume:
        """A copy of another volume: the new volume CREATING and its VOLUME_COPY job,
        recorded together (see osd.engine.jobs.kinds.volume_copy)."""
        with self._store.read() as s:
            plan = volume_create.resolve(s, checked)
            existing = repo.get_by_name(s, plan.cluster.id, plan.name)
            if existing is not None:
                return self._existing(s, existing, plan)
        volume_id = uuid.uuid4().hex
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                plan = volume_create.resolve(s, checked)
                existing = repo.get_by_name(s, plan.cluster.id, plan.name)
                if existing is not None:
                    return self._existing(s, existing, plan)
                volume_create.check_raw_capacity(s, plan)
                request = VolumeCopyRequest.of(plan, volume_id)
                job = self._record(s, JobKind.VOLUME_COPY, request, generation)
                result = CreatedVolume(
                    volume_from(s, get_volume(s, volume_id)), True, generation, job
                )
        except IntegrityError:
            with self._store.read() as s:
                existing = repo.get_by_name(s, plan.cluster.id, plan.name)
                if existing is None:
                    raise
                return self._existing(s, existing, plan)
        self._jobs.wake()
        return result

    def _existing(self, s: Session, row: VolumeRow, plan: volume_create.Plan) -> CreatedVolume:
        if not access.may_read_volume(s, row):
            # Another owner's volume: say the name is taken, and nothing more.
            raise AlreadyExists(
                f"volume {plan.name!r} already exists in cluster {plan.cluster.name}",
                reason="VOLUME_EXISTS",
                metadata={"name": plan.name},
            )
        if not volume_create.same_spec(row, plan):
            raise AlreadyExists(
                f"volume {plan.name!r} already exists in cluster {plan.cluster.name} "
                "with another spec",
                reason="VOLUME_EXISTS",
                metadata={"name": plan.name, "volume_id": row.id},
            )
        job = None
        if row.source_kind == SourceKind.VOLUME:
            found = job_repo.latest(s, JobKind.VOLUME_COPY, row.id)
            job = self._jobs.to_domain(found) if found is not None else None
        return CreatedVolume(volume_from(s, row), False, current_generation(s), job)

    # -- read ------------------------------------------------------------------

    def inspect(self, volume_id: str) -> VolumeDetail:
        v.check_id(volume_id, "volume_id")
        detail = self._store.kept(("volume", volume_id), lambda s, _: _detail(s, volume_id))
        access.require_read(detail.volume, Access.READ)
        return detail

    def list(self, query: VolumeQuery) -> Page[Volume]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "volume", query)
        after = pages.after_pair(query.page_token, "c", "n")
        for name in (
            "cluster_id",
            "pool_id",
            "node_id",
            "template_id",
            "datastore_version_id",
            "parent_snapshot_id",
        ):
            value = getattr(query, name)
            if value:
                v.check_id(value, name)
        for state in query.states:
            if state not in VolumeState._value2member_map_:
                raise InvalidArgument.field("states", f"{state} is not a volume state")
        pattern = v.compile_regex(query.name_regex, "name_regex")
        wanted = v.check_labels(query.labels).items()
        where = repo.VolumeFilter(
            cluster_id=query.cluster_id,
            pool_id=query.pool_id,
            node_id=query.node_id,
            states=tuple(query.states),
            template_id=query.template_id,
            datastore_version_id=query.datastore_version_id,
            parent_snapshot_id=query.parent_snapshot_id,
            maybe_degraded=query.degraded,
            readable_by=access.list_filter(),
            labels=tuple(sorted(wanted)),
            repairing=query.repairing,
        )
        key = (
            "volumes",
            where,
            size,
            query.page_token,
            query.name_regex,
            tuple(sorted(wanted)),
            query.repairing,
        )
        return self._store.kept(
            key,
            lambda s, _: _page(s, query, where, pages, after, size, pattern, wanted),
            page=True,
        )

    def capacity(self, cluster_id: str) -> CapacitySummary:
        if cluster_id:
            v.check_id(cluster_id, "cluster_id")
        return self._store.kept(
            ("capacity", cluster_id),
            lambda s, generation: capacity.summary(s, cluster_id, generation),
        )

    # -- update ----------------------------------------------------------------

    def update(self, change: UpdateVolume) -> ChangedVolume:
        size = _check_update(change)
        op = uuid.uuid4().hex
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = get_volume(s, change.volume_id)
                self._check_update_access(s, row, change)
                check_generation("volume", row.id, row.generation, change.expected_generation)
                if row.state in (VolumeState.CREATING, VolumeState.DELETING):
                    raise not_available(row)
                if change.size_add is not None:
                    size = _grown(row, change.size_add)
                restore = _restorer(row)
                job = self._apply(s, row, change, size, generation)
                done: ChangedVolume | None = None
                work: list[tuple[str, str, int]] = []
                if size is None or size == row.size_bytes:
                    s.flush()
                    done = ChangedVolume(volume_from(s, row), generation, job)
                else:
                    if size < row.size_bytes:
                        _check_shrink(s, row, size, change.shrink_ok)
                    require_serving(row)
                    require_no_job(row)
                    allocs = require_settled(s, row)
                    require_all_available(row, allocs)
                    work = volume_phases.begin_reshape(s, row, allocs, size, op)
                    row.op_owner = self._store.owner
        except IntegrityError:
            raise AlreadyExists(
                f"volume {change.name!r} already exists", reason="VOLUME_EXISTS"
            ) from None
        if done is not None:
            if done.job is not None:
                self._jobs.wake()
            return done
        assert size is not None
        row, generation = volume_phases.run_reshape(
            self._store,
            change.volume_id,
            [
                phased.Step(
                    f"resizing replica {replica_id}",
                    functools.partial(self._driver.resize_replica, drive_id, replica_id, nbytes),
                )
                for drive_id, replica_id, nbytes in work
            ],
            size,
            rollback=lambda: volume_phases.rollback_reshape(
                self._store, self._driver, change.volume_id, restore
            ),
            what="resizing",
        )
        with self._store.read() as s:
            return ChangedVolume(volume_from(s, row), generation)

    def update_in(
        self, s: Session, row: VolumeRow, change: UpdateVolume, generation: int
    ) -> Job | None:
        """Applies ``change`` (no size change) to ``row`` inside the caller's write
        transaction (a template's propagated change), with update's checks and
        effects; returns the job it recorded, if any (wake_jobs starts it once
        the transaction commits). Raises as update would."""
        if change.size is not None or change.size_add is not None:
            raise ValueError("update_in changes no size")
        _check_update(change)
        self._check_update_access(s, row, change)
        if row.state in (VolumeState.CREATING, VolumeState.DELETING):
            raise not_available(row)
        return self._apply(s, row, change, None, generation)

    def wake_jobs(self) -> None:
        self._jobs.wake()

    def _apply(
        self, s: Session, row: VolumeRow, change: UpdateVolume, size: int | None, generation: int
    ) -> Job | None:
        """Every change but the size's, and the job the update starts, if any."""
        self._rename(s, row, change.name)
        if change.multi_attach is False and row.multi_attach:
            _refuse_several_writers(s, row)
        if change.template_id is not None:
            _check_template(s, row, change.template_id)
        job = self._start_job(s, row, change, size, generation)
        if change.iops_limit is not None:
            row.qos_iops_limit = change.iops_limit
        if change.bandwidth_limit_bytes is not None:
            row.qos_bandwidth_limit_bytes = change.bandwidth_limit_bytes
        if change.labels is not None:
            row.labels = dict(change.labels)
        if change.multi_attach is not None:
            row.multi_attach = change.multi_attach
        if change.template_id is not None:
            row.template_id = change.template_id or None
        if change.owner is not None and change.owner != row.owner:
            # A snapshot belongs to its volume's owner: the old owner
            # keeps no admin access to them.
            for snap in snap_repo.of_volume(s, row.id):
                snap.owner = change.owner
                stamp(snap, generation)
            row.owner = change.owner
        if change.public is not None:
            row.public = change.public
        if change.acl is not None:
            grant_repo.replace(s, row.id, [(g.kind, g.name, int(g.access)) for g in change.acl])
        stamp(row, generation)
        return job

    @staticmethod
    def _check_update_access(s: Session, row: VolumeRow, change: UpdateVolume) -> None:
        """Write access for any change; admin access for the acl and the public
        flag; role admin for the owner."""
        access.require_volume(s, row, Access.WRITE)
        if change.acl is not None or change.public is not None:
            access.require_volume(s, row, Access.ADMIN)
        if change.owner is not None and not access.caller().is_admin:
            raise PermissionDenied(
                "only a caller with role admin may change a volume's owner",
                reason="ROLE_NOT_ALLOWED",
                metadata={"field": "owner"},
            )

    def _start_job(
        self, s: Session, row: VolumeRow, change: UpdateVolume, size: int | None, generation: int
    ) -> Job | None:
        """Records the VOLUME_REPLICA_CHANGE or VOLUME_MOVE job the update asks for, if any
        (in the update's transaction); records at once a placement the copies obey."""
        kind: JobKind | None = None
        request: Record | None = None
        path = ""
        if change.replicas is not None:
            replicas = _replica_change(row, change.replicas, change.confirmed)
            if replicas is not None:
                kind, path = JobKind.VOLUME_REPLICA_CHANGE, "durability.replicas"
                request = VolumeReplicaChangeRequest(row.id, replicas)
        if change.placement is not None:
            moving = _placement_change(s, row, change.placement)
            if moving is not None:
                kind, path = JobKind.VOLUME_MOVE, "placement"
                request = VolumeMoveRequest(row.id, moving)
        if kind is None or request is None:
            return None
        if size is not None and size != row.size_bytes:
            raise InvalidArgument.field(
                "update_mask", f"changing {path} starts a job; change the size in a call of its own"
            )
        return self._record(s, kind, request, generation)

    @staticmethod
    def _rename(s: Session, row: VolumeRow, name: str | None) -> None:
        if name is None or name == row.name:
            return
        other = repo.get_by_name(s, row.cluster_id, name)
        if other is not None:
            # Another owner's volume: say the name is taken, and not its id.
            seen = access.may_read_volume(s, other)
            raise AlreadyExists(
                f"volume {name!r} already exists",
                reason="VOLUME_EXISTS",
                metadata={"name": name, **({"volume_id": other.id} if seen else {})},
            )
        row.name = name

    # -- delete ----------------------------------------------------------------

    def delete(self, volume_id: str, allow_missing: bool = False) -> Deleted:
        v.check_id(volume_id, "volume_id")
        with self._store.read() as s:
            found = repo.get(s, volume_id)
            if found is None or not access.may_read_volume(s, found):
                if allow_missing:
                    return Deleted(False, current_generation(s))
                raise NotFound.object("volume", "volume_id", volume_id)
            access.require_volume(s, found, Access.ADMIN)
        freezing = ""
        with self._store.write() as s:
            generation = bump_generation(s)
            row = repo.get(s, volume_id)
            if row is None:
                if allow_missing:
                    return Deleted(False, generation)
                raise NotFound.object("volume", "volume_id", volume_id)
            access.require_volume(s, row, Access.ADMIN)
            in_flight = [
                snap.id
                for snap in snap_repo.of_volume(s, volume_id)
                if snap.state == SnapshotState.CREATING
            ]
            if row.state == VolumeState.DELETING:
                freezing = in_flight[0] if in_flight else ""
            else:
                require_detached(s, row)
                require_no_job(row)
                if row.state == VolumeState.CREATING:
                    raise not_available(row, "; delete it once it is created")
                if in_flight:
                    raise not_available(row, " with a snapshot being taken; retry")
                allocs = require_settled(s, row)
                row.state = VolumeState.DELETING
                row.op_owner = self._store.owner
                stamp(row, generation)
                if volume_phases.heir_of(s, volume_id) is None:
                    volume_phases.mark(allocs, AllocationState.RELEASING, None)
        if freezing:
            generation = volume_phases.finish_freeze(self._store, self._driver, volume_id, freezing)
        else:
            generation = volume_phases.finish_delete(self._store, self._driver, volume_id)
        return Deleted(True, generation)


# -- helpers -------------------------------------------------------------------


# Rows of a scan whose copies are read together (ListVolumes' ``degraded``).
DEGRADED_BATCH = 64


def _noting_degraded(
    s: Session, rows: Iterable[VolumeRow], degraded: set[str]
) -> Iterator[VolumeRow]:
    """``rows`` as they come, having put in ``degraded`` the ids of those
    that lack a live copy: the copies of each batch of rows read in one
    query, not one per row."""
    it = iter(rows)
    while batch := list(itertools.islice(it, DEGRADED_BATCH)):
        views = repo.copy_views(s, [r.id for r in batch])
        degraded.update(r.id for r in batch if health_of(r, views.get(r.id, [])).degraded)
        yield from batch


def availability_state(row: VolumeRow, allocs: list[AllocationRow]) -> VolumeState:
    """A settled volume's state from its allocations' states."""
    d = durability_of(row)
    copies = specs.copies(d)
    # The source of a move (RELEASING) still serves its data.
    live = sum(a.state in (AllocationState.ACTIVE, AllocationState.RELEASING) for a in allocs)
    away = sum(a.state == AllocationState.UNAVAILABLE for a in allocs)
    needed = d.data_fragments if d.type == DurabilityType.ERASURE else 1
    if live >= copies:
        return VolumeState.UP
    if live >= needed:
        return VolumeState.DEGRADED
    if live + away >= needed:
        return VolumeState.DOWN
    return VolumeState.DATA_LOST


def _check_update(change: UpdateVolume) -> int | None:
    """The update's syntax; returns the new size, if any."""
    v.check_id(change.volume_id, "volume_id")
    out: list[FieldViolation] = []
    if change.name is not None:
        bad = v.name_violation(change.name)
        if bad:
            out.append(bad)
    size, bad_size = spec_violation(change.size)
    if bad_size:
        out.append(bad_size)
    if change.size_add is not None:
        if change.size is not None:
            out.append(FieldViolation("update_mask", "name one of size_bytes, size and size_add"))
        _, bad_add = text_violation(change.size_add, "size_add")
        if bad_add:
            out.append(bad_add)
    for field, value in (
        ("qos.iops_limit", change.iops_limit),
        ("qos.bandwidth_limit_bytes", change.bandwidth_limit_bytes),
    ):
        if value is not None and value < 0:
            out.append(FieldViolation(field, f"is {value}; 0 (unlimited) or more"))
    if change.labels is not None:
        out += v.label_violations(change.labels)
    if change.replicas is not None and change.placement is not None:
        out.append(
            FieldViolation("update_mask", "change durability.replicas or placement, not both")
        )
    if change.replicas is not None and change.replicas != 1:
        bad = specs.replicas_violation(change.replicas)
        if bad:
            out.append(bad)
    if change.placement is not None:
        out += specs.placement_violations(change.placement)
    if change.owner is not None:
        bad = access.subject_violation("owner", change.owner)
        if bad:
            out.append(bad)
    if change.acl is not None:
        out += access.acl_violations(change.acl)
    if change.template_id and not v.ID_RE.fullmatch(change.template_id):
        out.append(FieldViolation("template_id", f"{change.template_id[:80]!r} is not an id"))
    if out:
        raise InvalidArgument.fields(out)
    return size


def _check_template(s: Session, row: VolumeRow, template_id: str) -> None:
    """A template a volume may be recorded as made from: one of its cluster ("": none)."""
    if not template_id:
        return
    template = require(s, TemplateRow, template_id)
    if template.cluster_id != row.cluster_id:
        raise InvalidArgument.field(
            "template_id", f"template {template_id} is in another cluster than the volume"
        )


def _grown(row: VolumeRow, size_add: str) -> int:
    """The size ``size_add`` (checked already) grows the volume to."""
    delta, _ = text_violation(size_add, "size_add")
    size = row.size_bytes + delta
    bad = bytes_violation(size, "size_add")
    if bad is not None:
        raise InvalidArgument.fields([bad])
    return size


def _restorer(row: VolumeRow) -> Callable[[VolumeRow], None]:
    """Puts back the fields an update may change along with the size."""
    before = {f: getattr(row, f) for f in _RESTORED}

    def restore(target: VolumeRow) -> None:
        for f, value in before.items():
            setattr(target, f, value)

    return restore


_RESTORED = (
    "name",
    "qos_iops_limit",
    "qos_bandwidth_limit_bytes",
    "labels",
    "multi_attach",
    "placement",
    "pool_id",
    "tail_pool_id",
    "template_id",
)


def _refuse_several_writers(s: Session, row: VolumeRow) -> None:
    writers = [
        a.node_id for a in attach_repo.of_volume(s, row.id) if a.mode == AttachMode.READ_WRITE
    ]
    if len(writers) > 1:
        raise FailedPrecondition(
            f"volume {row.name} is held READ_WRITE by {len(writers)} nodes; detach all but one "
            "before turning multi_attach off",
            reason="ATTACH_CONFLICT",
            metadata={"node_id": writers[0], "node_ids": ",".join(writers)},
        )


def _replica_change(row: VolumeRow, replicas: int, confirmed: bool) -> int | None:
    """The new copy count when it differs (a VOLUME_REPLICA_CHANGE job makes
    it): 2 to 5 for a REPLICATE volume or a single-copy one (which becomes
    REPLICATE), or 1 for a REPLICATE volume when the caller confirmed the
    loss of redundancy (it becomes a single copy)."""
    if row.durability_type not in (DurabilityType.REPLICATE, DurabilityType.NONE):
        raise InvalidArgument.field(
            "durability.replicas",
            "an ERASURE volume's layout cannot change; only a REPLICATE or single-copy "
            "volume's copy count can",
        )
    wanted = replicas or specs.REPLICAS_DEFAULT
    current = row.replicas if row.durability_type == DurabilityType.REPLICATE else 1
    if wanted == current:
        return None
    if wanted == 1:
        if row.tail_pool_id:
            raise FailedPrecondition(
                f"volume {row.name} keeps its last copy in tail pool {row.tail_pool_id}; "
                "change its placement to one without a tail pool first",
                reason="TAIL_POOL",
                metadata={"pool_id": row.tail_pool_id},
            )
        if not confirmed:
            raise confirmation_required(
                f"durability.replicas 1 leaves volume {row.name} a single copy: "
                f"{current - 1} of its {current} copies are released"
            )
    require_no_job(row)
    return wanted


def _placement_change(s: Session, row: VolumeRow, wanted: Placement) -> Placement | None:
    """Records a new placement that the current allocations already obey; returns
    one they do not obey (a VOLUME_MOVE job moves the copies, then records it)."""
    new = specs.normalize_placement(wanted)
    for name, pool_id in (("pool_id", new.pool_id), ("tail_pool_id", new.tail_pool_id)):
        if pool_id:
            pool = repo.get_pool(s, pool_id)
            if pool is None:
                raise NotFound.object("pool", f"placement.{name}", pool_id)
            if pool.cluster_id != row.cluster_id:
                raise InvalidArgument.field(
                    f"placement.{name}", f"pool {pool_id} is in another cluster than the volume"
                )
    if new.tail_pool_id and row.durability_type != DurabilityType.REPLICATE:
        raise InvalidArgument.field(
            "placement.tail_pool_id", "only REPLICATE volumes have a tail copy"
        )
    if new == placement_of(row):
        return None
    if not _obeys(s, row, new):
        require_no_job(row)
        return new
    row.placement = specs.placement_to_json(new)
    row.pool_id = new.pool_id or None
    row.tail_pool_id = new.tail_pool_id or None
    return None


def _obeys(s: Session, row: VolumeRow, p: Placement) -> bool:
    """Whether every allocation of the volume is where ``p`` allows."""
    allocs = repo.allocations(s, row.id)
    drives = repo.drive_views(s, {a.drive_id for a in allocs})
    members = repo.pool_members(s, p.pool_id) if p.pool_id else None
    tail = repo.pool_members(s, p.tail_pool_id) if p.tail_pool_id else None
    last = max((a.index for a in allocs), default=0)
    groups = set()
    node_sel, drive_sel = p.node_selector.items(), p.drive_selector.items()
    for a in allocs:
        d = drives.get(a.drive_id)
        if d is None:
            return False
        pool = tail if tail is not None and a.index == last else members
        if pool is not None and a.drive_id not in pool:
            return False
        if not (node_sel <= d.node_labels.items() and drive_sel <= d.labels.items()):
            return False
        domain = FailureDomain(p.failure_domain)
        groups.add(
            d.zone
            if domain == FailureDomain.ZONE
            else d.node_id
            if domain == FailureDomain.NODE
            else d.drive_id
        )
    return len(groups) == len(allocs)


def _detail(s: Session, volume_id: str) -> VolumeDetail:
    """The volume as stored, for any caller (its access is checked on it)."""
    return VolumeDetail(
        volume=volume_from(s, get_volume(s, volume_id)),
        allocations=[
            allocation_of(a, zone) for a, zone in repo.allocations_with_zone(s, volume_id=volume_id)
        ],
        attachments=[attachment_of(a) for a in attach_repo.of_volume(s, volume_id)],
    )


def _page(
    s: Session,
    query: VolumeQuery,
    where: repo.VolumeFilter,
    pages: paging.Pager,
    after: tuple[str, str] | None,
    size: int,
    pattern: v.Pattern | None,
    wanted: ItemsView[str, str],
) -> Page[Volume]:
    """One page of volumes as stored, for every caller the filter ``where``
    (with its visibility) stands for."""
    degraded: set[str] = set()

    def keep(row: VolumeRow) -> bool:
        if pattern is not None and not pattern.search(row.name):
            return False
        if query.degraded and row.id not in degraded:
            return False
        if query.cluster_id and row.cluster_id != query.cluster_id:
            return False  # asked of the repairs alone when repairing (see repo.scan)
        return wanted <= row.labels.items()

    if pattern is not None and not query.degraded:
        # Names alone decide: the scan reads keys, and only the rows kept
        # are loaded (the database has matched labels and the rest).
        match = pattern

        def named(key: repo.VolumeKey) -> bool:
            if query.cluster_id and key.cluster_id != query.cluster_id:
                return False  # as keep() says
            return bool(match.search(key.name))

        keys, token = pages.take(
            repo.scan_keys(s, where, after, size + 1),
            size,
            named,
            lambda key: {"c": key.cluster_id, "n": key.name},
        )
        return Page(volumes_of(s, repo.rows_of(s, keys)), token)
    scanned: Iterable[VolumeRow] = repo.scan(s, where, after, size + 1)
    if query.degraded:
        scanned = _noting_degraded(s, scanned, degraded)
    rows, token = pages.take(
        scanned,
        size,
        keep,
        lambda row: {"c": row.cluster_id, "n": row.name},
    )
    return Page(volumes_of(s, rows), token)


def _check_shrink(s: Session, row: VolumeRow, size: int, confirmed: bool) -> None:
    """A smaller size is confirmed (shrink_ok), and the volume's filesystem
    is mounted nowhere: a mounted filesystem grows online, never shrinks."""
    if not confirmed:
        raise FailedPrecondition(
            f"volume {row.name} is {row.size_bytes} bytes; shrinking it to "
            f"{size} loses data past the new end: set shrink_ok to allow it",
            reason="SHRINK_NOT_ALLOWED",
            metadata={"size_bytes": str(row.size_bytes)},
        )
    mounted = [a for a in attach_repo.of_volume(s, row.id) if a.mount_path]
    if mounted:
        raise FailedPrecondition(
            f"volume {row.name}'s filesystem is mounted at {mounted[0].mount_path} on "
            f"node {mounted[0].node_id}, and a mounted filesystem cannot shrink: detach it first",
            reason="VOLUME_MOUNTED",
            metadata={"node_id": mounted[0].node_id},
        )
