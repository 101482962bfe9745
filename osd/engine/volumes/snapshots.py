"""Snapshot operations: create, read, update, delete, revert a volume to one,
and freeze a volume into one.

The books (see osd.engine.volume_phases): while its volume exists a snapshot
shares the volume's allocations and holds none of its own; when the volume
is deleted or frozen, its newest remaining snapshot takes the allocations
over; deleting a snapshot that holds allocations hands them to the next
newest snapshot of the same volume, or releases them when it was the last.
"""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osd.engine.drivers import StorageDriver
from osd.engine.jobs.kinds.snapshot_copy import SnapshotCopyRequest, copy_job_of
from osd.engine.shared import paging, pending, phased
from osd.engine.shared import validation as v
from osd.engine.shared.models import Changed, Page, allocation_of
from osd.engine.shared.rows import Unchanged, check_generation, stamp
from osd.engine.volumes import access
from osd.engine.volumes import phases as volume_phases
from osd.engine.volumes.guards import (
    get_snapshot,
    get_volume,
    not_available,
    require_all_available,
    require_detached,
    require_no_job,
    require_serving,
    require_settled,
)
from osd.engine.volumes.models import (
    CreatedSnapshot,
    CreateSnapshot,
    FreezeVolume,
    Rebase,
    Snapshot,
    SnapshotDetail,
    SnapshotQuery,
    UpdateSnapshot,
    Volume,
)
from osd.engine.volumes.views import (
    snapshot_attachment_of,
    snapshot_from,
    snapshots_of,
    volume_from,
)
from osd.enums import Access, AllocationState, JobKind, SnapshotState, VolumeState
from osd.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from osd.store import attachments as attach_repo
from osd.store import snapshots as repo
from osd.store import volumes as volume_repo
from osd.store.datastores import version_ids_using_snapshot
from osd.store.db import Store
from osd.store.models import SnapshotRow, VolumeRow, utcnow
from osd.store.state import bump_generation, current_generation

if TYPE_CHECKING:
    from osd.engine.jobs.jobs import JobEngine


class SnapshotEngine:
    def __init__(self, store: Store, driver: StorageDriver, jobs: JobEngine | None = None) -> None:
        self._store = store
        self._driver = driver
        self._jobs = jobs

    # -- create ----------------------------------------------------------------

    def create(self, spec: CreateSnapshot) -> CreatedSnapshot:
        """Takes the snapshot, or answers the one with the same name; one still
        being taken by another call is waited for, up to this call's deadline
        (then ABORTED, OPERATION_PENDING), unless a SNAPSHOT_COPY job takes it,
        which is answered with the snapshot CREATING."""
        return pending.create_settled(
            lambda: self._create(spec),
            lambda r: r.created or r.value.state != SnapshotState.CREATING or r.job is not None,
            "snapshot",
            lambda r: r.value.id,
        )

    def _full_copy(self, volume_id: str) -> bool:
        """Whether a snapshot of the volume is a full copy: some drive of its
        copies shares no blocks (asked of the driver, no transaction open)."""
        with self._store.read() as s:
            drives = {
                a.drive_id
                for a in volume_repo.allocations(s, volume_id)
                if a.state == AllocationState.ACTIVE
            }
        return self._jobs is not None and not all(
            self._driver.shares_blocks(d) for d in sorted(drives)
        )

    def _create(self, spec: CreateSnapshot) -> CreatedSnapshot:
        v.check_id(spec.volume_id, "volume_id")
        if spec.name:
            v.check_name(spec.name)
        labels = v.check_labels(spec.labels)
        if spec.name:
            with self._store.read() as s:
                volume = get_volume(s, spec.volume_id)
                access.require_volume(s, volume, Access.WRITE)
                existing = repo.get_by_name(s, volume.cluster_id, spec.name)
                if existing is not None:
                    return self._existing(s, existing, volume)
        snapshot_id = uuid.uuid4().hex
        full_copy = self._full_copy(spec.volume_id)
        job = None
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                volume = get_volume(s, spec.volume_id)
                access.require_volume(s, volume, Access.WRITE)
                name = spec.name
                if name:
                    existing = repo.get_by_name(s, volume.cluster_id, name)
                    if existing is not None:
                        return self._existing(s, existing, volume)
                require_serving(volume)
                require_settled(s, volume)
                if not name:
                    name = _auto_name(s, volume, generation)
                row = _new_row(volume, snapshot_id, name, labels, generation, not spec.name)
                row.parent_snapshot_id = _chain_top(s, volume)
                row.op_owner = self._store.owner
                repo.add(s, row)
                if full_copy:
                    assert self._jobs is not None
                    s.flush()
                    request = SnapshotCopyRequest(snapshot_id=snapshot_id)
                    job = self._jobs.record(s, JobKind.SNAPSHOT_COPY, request, generation)
                    result = CreatedSnapshot(snapshot_from(s, row), True, generation, job)
        except IntegrityError:
            with self._store.read() as s:
                volume = get_volume(s, spec.volume_id)
                existing = repo.get_by_name(s, volume.cluster_id, spec.name)
                if existing is None:
                    raise
                return self._existing(s, existing, volume)
        if job is not None:
            assert self._jobs is not None
            self._jobs.wake()
            return result
        generation = volume_phases.finish_snapshot_create(self._store, self._driver, snapshot_id)
        with self._store.read() as s:
            return CreatedSnapshot(snapshot_from(s, get_snapshot(s, snapshot_id)), True, generation)

    def _existing(self, s: Session, row: SnapshotRow, volume: VolumeRow) -> CreatedSnapshot:
        if row.volume_id != volume.id:
            raise _name_taken(row.name, row, s)
        found = copy_job_of(s, row.id) if row.state == SnapshotState.CREATING else None
        job = self._jobs.to_domain(found) if found is not None and self._jobs else None
        return CreatedSnapshot(snapshot_from(s, row), False, current_generation(s), job)

    # -- read ------------------------------------------------------------------

    def inspect(self, snapshot_id: str) -> SnapshotDetail:
        v.check_id(snapshot_id, "snapshot_id")
        with self._store.read() as s:
            row = get_snapshot(s, snapshot_id)
            access.require_snapshot(s, row, Access.READ)
            return SnapshotDetail(
                snapshot=snapshot_from(s, row),
                allocations=[
                    allocation_of(a, zone)
                    for a, zone in volume_repo.allocations_with_zone(s, snapshot_id=snapshot_id)
                ],
                attachments=[
                    snapshot_attachment_of(a) for a in attach_repo.of_snapshot(s, snapshot_id)
                ],
            )

    def list(self, query: SnapshotQuery) -> Page[Snapshot]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "snapshot", query)
        key = pages.after_pair(query.page_token, "c", "n")
        if query.volume_id:
            v.check_id(query.volume_id, "volume_id")
        if query.cluster_id:
            v.check_id(query.cluster_id, "cluster_id")
        if query.parent_snapshot_id:
            v.check_id(query.parent_snapshot_id, "parent_snapshot_id")
        pattern = v.compile_regex(query.name_regex, "name_regex")
        wanted = v.check_labels(query.labels).items()
        where = repo.SnapshotFilter(
            query.volume_id,
            query.cluster_id,
            query.images_only,
            query.parent_snapshot_id,
            access.list_filter(),
        )

        def keep(row: SnapshotRow) -> bool:
            if pattern is not None and not pattern.search(row.name):
                return False
            return wanted <= row.labels.items()

        with self._store.read() as s:
            rows, token = pages.take(
                repo.scan(s, where, key, size + 1),
                size,
                keep,
                lambda r: {"c": r.cluster_id, "n": r.name},
            )
            return Page(snapshots_of(s, rows), token)

    # -- update ----------------------------------------------------------------

    def update(self, change: UpdateSnapshot) -> Changed[Snapshot]:
        v.check_id(change.snapshot_id, "snapshot_id")
        if change.name is not None:
            v.check_name(change.name)
        labels = v.check_labels(change.labels) if change.labels is not None else None
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = get_snapshot(s, change.snapshot_id)
                access.require_snapshot(s, row, Access.WRITE)
                check_generation("snapshot", row.id, row.generation, change.expected_generation)
                if change.name is not None and change.name != row.name:
                    other = repo.get_by_name(s, row.cluster_id, change.name)
                    if other is not None:
                        raise _name_taken(change.name, other, s)
                    row.name = change.name
                    row.auto_named = False
                if labels is not None:
                    row.labels = labels
                if change.image is False and row.image:
                    _refuse_image_use(s, row)
                if change.image is not None:
                    row.image = change.image
                stamp(row, generation)
                s.flush()
                return Changed(snapshot_from(s, row), generation)
        except IntegrityError:
            raise AlreadyExists(
                f"snapshot {change.name!r} already exists", reason="SNAPSHOT_EXISTS"
            ) from None

    # -- delete ----------------------------------------------------------------

    def delete(self, snapshot_id: str) -> int:
        v.check_id(snapshot_id, "snapshot_id")
        with self._store.write() as s:
            bump_generation(s)
            row = get_snapshot(s, snapshot_id)
            access.require_snapshot(s, row, Access.ADMIN)
            if row.state == SnapshotState.CREATING:
                job = copy_job_of(s, row.id)
                raise FailedPrecondition(
                    f"snapshot {row.name} ({row.id}) is still being taken; "
                    + (f"cancel job {job.id} to drop it" if job is not None else "retry"),
                    reason="SNAPSHOT_NOT_READY",
                    metadata={"snapshot_id": row.id, **({"job_id": job.id} if job else {})},
                )
            if row.state != SnapshotState.DELETING:
                held = attach_repo.of_snapshot(s, row.id)
                if held:
                    nodes = [a.node_id for a in held]
                    raise FailedPrecondition(
                        f"snapshot {row.name} ({row.id}) is attached to {len(nodes)} node(s); "
                        "detach it first",
                        reason="SNAPSHOT_ATTACHED",
                        metadata={"node_ids": ",".join(nodes), "snapshot_id": row.id},
                    )
                clones = repo.clone_counts(s, [row.id]).get(row.id, 0)
                seen = access.Visibility(s)
                if clones:
                    raise FailedPrecondition(
                        f"snapshot {row.name} ({row.id}) has {clones} dependent volume(s); "
                        "delete them first",
                        reason="SNAPSHOT_HAS_CLONES",
                        metadata={
                            "count": str(clones),
                            "volume_ids": ",".join(
                                c for c in repo.clone_ids(s, row.id) if seen.volume(c)
                            ),
                        },
                    )
                _refuse_image_use(s, row, deleting=True)
                own = repo.allocations(s, row.id)
                heir = volume_phases.heir_of(s, row.volume_id, exclude=row.id)
                if own and heir is not None:
                    volume_phases.hand_over(s, own, heir)
                elif own:
                    volume_phases.mark(own, AllocationState.RELEASING, None)
                row.state = SnapshotState.DELETING
                row.op_owner = self._store.owner
                repo.relink_children(s, row.id, row.parent_snapshot_id)
        return volume_phases.finish_snapshot_delete(self._store, self._driver, snapshot_id)

    # -- rebase ----------------------------------------------------------------

    def rebase_volume(self, change: Rebase) -> Changed[Volume]:
        """Makes the volume depend on an ancestor of its parent snapshot, or on
        none. Its data does not change: a clone holds its own copy."""
        v.check_id(change.object_id, "volume_id")
        if change.parent_snapshot_id:
            v.check_id(change.parent_snapshot_id, "parent_snapshot_id")
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                volume = get_volume(s, change.object_id)
                access.require_volume(s, volume, Access.WRITE)
                check_generation("volume", volume.id, volume.generation, change.expected_generation)
                current = volume.parent_snapshot_id
                new = _rebased(s, current, change.parent_snapshot_id, volume.name)
                if new == current:
                    raise Unchanged(volume_from(s, volume), generation - 1)
                # A clone still being filled reads its parent: not while it is.
                require_serving(volume)
                require_no_job(volume)
                volume.parent_snapshot_id = new
                stamp(volume, generation)
                s.flush()
                return Changed(volume_from(s, volume), generation)
        except Unchanged as same:
            return Changed(same.value, same.generation)

    def rebase_snapshot(self, change: Rebase) -> Changed[Snapshot]:
        """Makes the snapshot's parent an ancestor of its parent, or none."""
        v.check_id(change.object_id, "snapshot_id")
        if change.parent_snapshot_id:
            v.check_id(change.parent_snapshot_id, "parent_snapshot_id")
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = get_snapshot(s, change.object_id)
                access.require_snapshot(s, row, Access.WRITE)
                check_generation("snapshot", row.id, row.generation, change.expected_generation)
                new = _rebased(s, row.parent_snapshot_id, change.parent_snapshot_id, row.name)
                if new == row.parent_snapshot_id:
                    raise Unchanged(snapshot_from(s, row), generation - 1)
                if row.state != SnapshotState.READY:
                    raise FailedPrecondition(
                        f"snapshot {row.name} ({row.id}) is {SnapshotState(row.state).name}",
                        reason="SNAPSHOT_NOT_READY",
                        metadata={"snapshot_id": row.id},
                    )
                row.parent_snapshot_id = new
                stamp(row, generation)
                s.flush()
                return Changed(snapshot_from(s, row), generation)
        except Unchanged as same:
            return Changed(same.value, same.generation)

    # -- revert and freeze -----------------------------------------------------

    def revert(self, volume_id: str, snapshot_id: str, confirmed: bool) -> Changed[Volume]:
        v.check_id(volume_id, "volume_id")
        v.check_id(snapshot_id, "snapshot_id")
        op = uuid.uuid4().hex
        with self._store.write() as s:
            bump_generation(s)
            volume = get_volume(s, volume_id)
            access.require_volume(s, volume, Access.WRITE)
            snap = get_snapshot(s, snapshot_id)
            access.require_snapshot(s, snap, Access.READ)
            if snap.volume_id != volume.id:
                raise InvalidArgument.field(
                    "snapshot_id", f"snapshot {snap.name} was not taken from volume {volume.name}"
                )
            if not confirmed:
                raise FailedPrecondition(
                    f"reverting volume {volume.name} to {snap.name} loses every write made "
                    "since; set yes_i_really_mean_it to confirm",
                    reason="CONFIRMATION_REQUIRED",
                )
            if snap.state != SnapshotState.READY:
                raise FailedPrecondition(
                    f"snapshot {snap.name} is {SnapshotState(snap.state).name}, not READY",
                    reason="SNAPSHOT_NOT_READY",
                    metadata={"snapshot_id": snap.id},
                )
            require_detached(s, volume)
            require_serving(volume)
            require_no_job(volume)
            allocs = require_settled(s, volume)
            require_all_available(volume, allocs)
            resized = volume_phases.begin_reshape(s, volume, allocs, snap.size_bytes, op)
            volume.op_owner = self._store.owner
            size = snap.size_bytes
        # Each copy goes back to the snapshot, then to the snapshot's size: the
        # books say that size whatever a driver's revert leaves.
        steps: list[phased.Step] = []
        for drive_id, replica_id, nbytes in resized:
            steps.append(
                phased.Step(
                    f"reverting replica {replica_id}",
                    functools.partial(
                        self._driver.revert_replica, drive_id, replica_id, snapshot_id
                    ),
                )
            )
            steps.append(
                phased.Step(
                    f"sizing replica {replica_id}",
                    functools.partial(self._driver.resize_replica, drive_id, replica_id, nbytes),
                )
            )
        volume_row, generation = volume_phases.run_reshape(
            self._store,
            volume_id,
            steps,
            size,
            rollback=lambda: volume_phases.rollback_reshape(self._store, self._driver, volume_id),
            what="reverting",
        )
        with self._store.read() as s:
            return Changed(volume_from(s, volume_row), generation)

    def freeze(self, spec: FreezeVolume) -> Changed[Snapshot]:
        v.check_id(spec.volume_id, "volume_id")
        if spec.name:
            v.check_name(spec.name)
        labels = v.check_labels(spec.labels)
        snapshot_id = uuid.uuid4().hex
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                volume = get_volume(s, spec.volume_id)
                access.require_volume(s, volume, Access.WRITE)
                name = spec.name or volume.name
                other = repo.get_by_name(s, volume.cluster_id, name)
                if other is not None:
                    raise _name_taken(name, other, s)
                require_detached(s, volume)
                require_serving(volume)
                require_no_job(volume)
                if any(
                    snap.state == SnapshotState.CREATING for snap in repo.of_volume(s, volume.id)
                ):
                    raise not_available(volume, " with a snapshot being taken; retry")
                require_settled(s, volume)
                row = _new_row(
                    volume, snapshot_id, name, labels or dict(volume.labels), generation, False
                )
                row.parent_snapshot_id = _chain_top(s, volume)
                row.op_owner = self._store.owner
                repo.add(s, row)
                volume.state = VolumeState.DELETING
                volume.op_owner = self._store.owner
                stamp(volume, generation)
        except IntegrityError:
            raise AlreadyExists(
                f"snapshot {spec.name!r} already exists", reason="SNAPSHOT_EXISTS"
            ) from None
        generation = volume_phases.finish_freeze(
            self._store, self._driver, spec.volume_id, snapshot_id
        )
        with self._store.read() as s:
            return Changed(snapshot_from(s, get_snapshot(s, snapshot_id)), generation)


# -- helpers -------------------------------------------------------------------


def _new_row(
    volume: VolumeRow,
    snapshot_id: str,
    name: str,
    labels: dict[str, str],
    generation: int,
    auto_named: bool,
) -> SnapshotRow:
    now = utcnow()
    return SnapshotRow(
        id=snapshot_id,
        cluster_id=volume.cluster_id,
        name=name,
        auto_named=auto_named,
        volume_id=volume.id,
        size_bytes=volume.size_bytes,
        durability_type=volume.durability_type,
        replicas=volume.replicas,
        data_fragments=volume.data_fragments,
        redundancy_fragments=volume.redundancy_fragments,
        labels=labels,
        image=False,
        state=SnapshotState.CREATING,
        space_used_bytes=0,
        create_time=now,
        update_time=now,
        generation=generation,
        owner=volume.owner,
    )


def _chain_top(s: Session, volume: VolumeRow) -> str | None:
    """The parent of a snapshot taken of ``volume`` now: its newest READY
    snapshot, else the snapshot it was cloned from (None at a chain's root)."""
    newest = volume_phases.heir_of(s, volume.id)
    return newest.id if newest is not None else volume.parent_snapshot_id


def _rebased(s: Session, current: str | None, wanted: str, name: str) -> str | None:
    """The new parent of ``name`` (whose parent is ``current``) when it asks
    for ``wanted``: one of its parent's ancestors (the parent included), or
    None for no parent."""
    if not wanted:
        return None
    chain = ancestors(s, current)
    if wanted in chain:
        return wanted
    target = get_snapshot(s, wanted, "parent_snapshot_id")
    raise FailedPrecondition(
        f"snapshot {target.name} ({target.id}) is not higher in the chain of {name}: "
        + (
            f"its ancestors are {', '.join(chain)}"
            if chain
            else "it has no parent; it can only stay independent"
        ),
        reason="NOT_AN_ANCESTOR",
        metadata={"parent_snapshot_id": wanted},
    )


def ancestors(s: Session, snapshot_id: str | None) -> list[str]:
    """``snapshot_id`` and the snapshots above it in its chain, nearest first."""
    out: list[str] = []
    while snapshot_id and snapshot_id not in out:
        out.append(snapshot_id)
        row = s.get(SnapshotRow, snapshot_id)
        snapshot_id = row.parent_snapshot_id if row is not None else None
    return out


def _auto_name(s: Session, volume: VolumeRow, generation: int) -> str:
    """``<volume>.snap-<generation>``: unique, since every write bumps the generation."""
    stem = f"{volume.name[: v.NAME_MAX - 30]}.snap-{generation}"
    name, n = stem, 1
    while repo.get_by_name(s, volume.cluster_id, name) is not None:
        n += 1
        name = f"{stem}-{n}"
    return name


def _name_taken(name: str, other: SnapshotRow, s: Session) -> AlreadyExists:
    if access.snapshot_access(s, other, access.caller()) is None:
        # Another owner's snapshot: say the name is taken, and nothing more.
        return AlreadyExists(
            f"snapshot {name!r} already exists", reason="SNAPSHOT_EXISTS", metadata={"name": name}
        )
    return AlreadyExists(
        f"snapshot {name!r} already exists (of volume {other.volume_id})",
        reason="SNAPSHOT_EXISTS",
        metadata={"name": name, "snapshot_id": other.id},
    )


def _refuse_image_use(s: Session, row: SnapshotRow, *, deleting: bool = False) -> None:
    uses = repo.image_use_counts(s, [row.id]).get(row.id, 0)
    if not uses:
        return
    what = "deleted" if deleting else "unmarked as an image"
    raise FailedPrecondition(
        f"snapshot {row.name} ({row.id}) is the image of {uses} datastore version(s); "
        f"it cannot be {what}",
        reason="SNAPSHOT_IN_USE_AS_IMAGE",
        metadata={
            "count": str(uses),
            "datastore_version_ids": ",".join(version_ids_using_snapshot(s, row.id)),
        },
    )
