"""The phases of volume and snapshot changes that more than one caller runs.

A change records its intent in one write transaction, does its driver work
with no transaction open, then commits its final state or rolls back. The
second and third phases live here because three callers run them: the RPC
that started the change, a retry of that RPC (deletes are idempotent), and
recovery when a daemon starts.

The books of a snapshot chain: while a volume exists its snapshots share its
allocations. When the volume goes (deleted or frozen) its allocations are
handed over to its newest remaining snapshot, which then holds them of its
own; deleting that snapshot hands them to the next newest, and the last
snapshot of the chain releases them.

Where a snapshot's data is: on the drive of each copy of its chain (in the
driver, a snapshot of that copy's replica). A job that moves or rebuilds a
copy (:mod:`osd.engine.jobs.moves`) takes the copy's snapshots with it and
moves the allocation in the books, whoever holds it, so the allocations
always say where the snapshots are: a revert reaches them on the volume's
copies, and a delete on :func:`snapshot_drives`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from osd.engine.drivers import CopyRef, StorageDriver
from osd.engine.shared import phased
from osd.engine.shared.phased import best_effort
from osd.engine.shared.rows import stamp
from osd.engine.volumes import specs
from osd.engine.volumes.guards import get_volume, log
from osd.engine.volumes.views import durability_of
from osd.enums import AllocationState, Provisioning, SnapshotState, SourceKind, VolumeState
from osd.errors import Unavailable
from osd.store import allocations
from osd.store import snapshots as snap_repo
from osd.store import volumes as repo
from osd.store.db import Store
from osd.store.models import AllocationRow, SnapshotRow, VolumeRow
from osd.store.state import bump_generation, current_generation

T = TypeVar("T")
Work = list[tuple[str, str]]  # (drive id, replica id = allocation id)


def work_of(allocs: Iterable[AllocationRow], *, active_only: bool = False) -> Work:
    return [
        (a.drive_id, a.id) for a in allocs if not active_only or a.state == AllocationState.ACTIVE
    ]


def serving_state(allocs: Iterable[AllocationRow]) -> VolumeState:
    """UP, or DEGRADED when a copy is unavailable."""
    if any(a.state == AllocationState.UNAVAILABLE for a in allocs):
        return VolumeState.DEGRADED
    return VolumeState.UP


# -- the snapshot chain's books -------------------------------------------------


def heir_of(session: Session, volume_id: str, exclude: str = "") -> SnapshotRow | None:
    """The newest READY snapshot taken from ``volume_id`` (other than ``exclude``)."""
    for snap in snap_repo.of_volume(session, volume_id):
        if snap.id != exclude and snap.state == SnapshotState.READY:
            return snap
    return None


def hand_over(session: Session, allocs: Iterable[AllocationRow], heir: SnapshotRow) -> None:
    """Makes ``heir`` hold the allocations of its own; their bytes stay where they are."""
    for a in allocs:
        a.volume_id = None
        a.snapshot_id = heir.id
        if a.state in (AllocationState.PENDING, AllocationState.RELEASING):
            a.state = AllocationState.ACTIVE
        a.job_id = None
    session.flush()


def release_all(session: Session, allocs: Iterable[AllocationRow]) -> None:
    for a in list(allocs):
        allocations.release(session, a)


def mark(allocs: Iterable[AllocationRow], state: AllocationState, job_id: str | None) -> None:
    for a in allocs:
        a.state = state
        a.job_id = job_id


def _snapshot_allocations(session: Session, snap: SnapshotRow) -> list[AllocationRow]:
    """The allocations a snapshot's data lives with: its own, else its
    volume's, else those of the chain's holder. Moves keep these right: a
    snapshot goes wherever the allocation it lives with goes."""
    allocs = snap_repo.allocations(session, snap.id)
    if not allocs:
        allocs = repo.allocations(session, snap.volume_id)
    if not allocs:
        for other in snap_repo.of_volume(session, snap.volume_id):
            allocs = snap_repo.allocations(session, other.id)
            if allocs:
                break
    return allocs


def snapshot_drives(session: Session, snap: SnapshotRow) -> list[str]:
    """The drives a snapshot's data is on."""
    return sorted({a.drive_id for a in _snapshot_allocations(session, snap)})


def snapshot_copies(session: Session, snap: SnapshotRow) -> list[CopyRef]:
    """The live copies ([drive id, replica id]) that hold a snapshot's data."""
    return [
        (a.drive_id, a.id)
        for a in _snapshot_allocations(session, snap)
        if a.state == AllocationState.ACTIVE
    ]


@dataclass(frozen=True)
class Fill:
    """How a create makes each copy: empty (its space taken at once when
    ``thick``), or a clone of ``snapshot_id`` read from one of ``sources``."""

    thick: bool = False
    snapshot_id: str = ""
    sources: tuple[CopyRef, ...] = ()


def fill_of(session: Session, row: VolumeRow) -> Fill:
    """The :class:`Fill` of a volume being created, read in the caller's
    transaction."""
    thick = row.provisioning == Provisioning.THICK
    if row.source_kind == SourceKind.SNAPSHOT and row.source_id:
        snap = session.get(SnapshotRow, row.source_id)
        if snap is not None:
            return Fill(thick, snap.id, tuple(snapshot_copies(session, snap)))
    return Fill(thick)


def _make(driver: StorageDriver, fill: Fill) -> Callable[[str, str, int], None]:
    """The driver call that makes one copy of ``fill``: for a clone, read
    from the copy on the same drive first."""
    if not fill.snapshot_id:
        return functools.partial(driver.create_replica, thick=fill.thick)

    def clone(drive_id: str, replica_id: str, nbytes: int) -> None:
        best = sorted(fill.sources, key=lambda c: c[0] != drive_id)
        driver.clone_snapshot(best, fill.snapshot_id, drive_id, replica_id, nbytes)

    return clone


# -- create ----------------------------------------------------------------------


def run_create(
    store: Store,
    driver: StorageDriver,
    volume_id: str,
    work: list[tuple[str, str, int]],
    fill: Fill,
    answer: Callable[[Session, VolumeRow], T],
) -> tuple[T, int]:
    """Phases 2 and 3 of a create: every copy on its drive and the volume UP,
    its allocations ACTIVE; or no copy and no volume. A volume cloned from a
    snapshot has each copy filled with the snapshot's data (see :class:`Fill`).

    Gives what ``answer`` makes of the volume's row in the finishing
    transaction, with the generation of the change."""
    make = _make(driver, fill)
    return phased.run(
        store,
        [
            phased.Step(
                f"creating replica {replica_id}",
                functools.partial(make, drive_id, replica_id, nbytes),
                functools.partial(driver.delete_replica, drive_id, replica_id),
            )
            for drive_id, replica_id, nbytes in work
        ],
        finish=lambda s, generation: _finish_create(s, generation, volume_id, answer),
        rollback=lambda: undo_create(store, driver, volume_id, []),
        failed=phased.failing("creating the volume failed and was rolled back"),
    )


def undo_create(store: Store, driver: StorageDriver, volume_id: str, done: Work) -> None:
    """Deletes the copies ``done`` and the volume still CREATING, releasing its
    allocations."""
    for drive_id, replica_id in done:
        best_effort(f"deleting replica {replica_id}", driver.delete_replica, drive_id, replica_id)
    with store.write() as s:
        bump_generation(s)
        row = repo.get(s, volume_id)
        if row is None or row.state != VolumeState.CREATING:
            return
        release_all(s, repo.allocations(s, volume_id))
        repo.remove(s, volume_id)
    log.info("volume %s: create rolled back", volume_id)


def _finish_create(
    s: Session,
    generation: int,
    volume_id: str,
    answer: Callable[[Session, VolumeRow], T],
) -> tuple[T, int]:
    row = repo.get(s, volume_id)
    if row is None:
        raise Unavailable(
            f"volume {volume_id} was rolled back while it was being created; retry",
            reason="VOLUME_ROLLED_BACK",
        )
    if row.state == VolumeState.CREATING:
        mark(repo.allocations(s, volume_id), AllocationState.ACTIVE, None)
        row.state = VolumeState.UP
        stamp(row, generation)
    s.flush()
    return answer(s, row), generation


# -- delete ----------------------------------------------------------------------


def finish_delete(store: Store, driver: StorageDriver, volume_id: str) -> int:
    """Phases 2 and 3 of a delete (the volume is DELETING).

    A driver failure leaves the volume DELETING; deleting it again, or
    recovery, finishes.
    """
    with store.read() as s:
        # A copy on a drive or node that is unavailable cannot be reached; its
        # bytes are released all the same (the drive's data goes when it is
        # replaced or forgotten).
        work = [
            (a.drive_id, a.id)
            for a in repo.allocations(s, volume_id)
            if a.state != AllocationState.UNAVAILABLE
        ]
    return phased.run(
        store,
        [
            phased.Step(
                f"deleting replica {replica_id}",
                functools.partial(driver.delete_replica, drive_id, replica_id),
            )
            for drive_id, replica_id in work
        ],
        finish=lambda s, generation: _finish_delete(s, generation, volume_id),
        failed=phased.failing(
            f"deleting volume {volume_id} is unfinished (delete it again to finish)"
        ),
    )


def _finish_delete(s: Session, generation: int, volume_id: str) -> int:
    if repo.get(s, volume_id) is None:
        return generation
    allocs = repo.allocations(s, volume_id)
    heir = heir_of(s, volume_id)
    if heir is not None:
        hand_over(s, allocs, heir)
        stamp(heir, generation)
    else:
        release_all(s, allocs)
    repo.remove(s, volume_id)
    log.info("volume %s deleted", volume_id)
    return generation


# -- snapshots and freeze --------------------------------------------------------


def _snapshot_steps(driver: StorageDriver, work: Work, snapshot_id: str) -> list[phased.Step]:
    return [
        phased.Step(
            f"snapshotting replica {replica_id}",
            functools.partial(driver.create_snapshot, drive_id, replica_id, snapshot_id),
            functools.partial(driver.delete_snapshot, drive_id, snapshot_id),
        )
        for drive_id, replica_id in work
    ]


def _drop_snapshot(s: Session, snapshot_id: str) -> None:
    snap = snap_repo.get(s, snapshot_id)
    if snap is not None and snap.state == SnapshotState.CREATING:
        snap_repo.remove(s, snapshot_id)


def finish_freeze(store: Store, driver: StorageDriver, volume_id: str, snapshot_id: str) -> int:
    """Phases 2 and 3 of a freeze: the volume's data becomes the snapshot's,
    its allocations the snapshot's own, and the volume is gone."""
    with store.read() as s:
        work = work_of(repo.allocations(s, volume_id), active_only=True)

    def rollback(s: Session, generation: int) -> None:
        _drop_snapshot(s, snapshot_id)
        row = repo.get(s, volume_id)
        if row is not None and row.state == VolumeState.DELETING:
            row.state = serving_state(repo.allocations(s, volume_id))
            stamp(row, generation)

    def finish(s: Session, generation: int) -> int:
        snap = snap_repo.get(s, snapshot_id)
        if snap is None or repo.get(s, volume_id) is None:
            return generation
        hand_over(s, repo.allocations(s, volume_id), snap)
        snap.state = SnapshotState.READY
        stamp(snap, generation)
        repo.remove(s, volume_id)
        return generation

    generation = phased.run(
        store,
        _snapshot_steps(driver, work, snapshot_id),
        finish=finish,
        rollback=lambda: phased.record(store, rollback),
        failed=phased.failing("freezing the volume failed and was rolled back"),
    )
    for drive_id, replica_id in work:
        best_effort(f"deleting replica {replica_id}", driver.delete_replica, drive_id, replica_id)
    return generation


def finish_snapshot_create(store: Store, driver: StorageDriver, snapshot_id: str) -> int:
    """Phases 2 and 3 of a snapshot: a snapshot of every available copy, then READY."""
    with store.read() as s:
        snap = snap_repo.get(s, snapshot_id)
        if snap is None:
            return current_generation(s)
        work = work_of(repo.allocations(s, snap.volume_id), active_only=True)

    def finish(s: Session, generation: int) -> int:
        row = snap_repo.get(s, snapshot_id)
        if row is not None and row.state == SnapshotState.CREATING:
            row.state = SnapshotState.READY
            stamp(row, generation)
        return generation

    return phased.run(
        store,
        _snapshot_steps(driver, work, snapshot_id),
        finish=finish,
        rollback=lambda: phased.record(store, lambda s, _: _drop_snapshot(s, snapshot_id)),
        failed=phased.failing("taking the snapshot failed and was rolled back"),
    )


def finish_snapshot_delete(store: Store, driver: StorageDriver, snapshot_id: str) -> int:
    """Phases 2 and 3 of a snapshot delete (the snapshot is DELETING)."""
    with store.read() as s:
        snap = snap_repo.get(s, snapshot_id)
        if snap is None:
            return current_generation(s)
        drives = snapshot_drives(s, snap)

    def finish(s: Session, generation: int) -> int:
        if snap_repo.get(s, snapshot_id) is not None:
            release_all(s, snap_repo.allocations(s, snapshot_id))
            snap_repo.remove(s, snapshot_id)
        return generation

    return phased.run(
        store,
        [
            phased.Step(
                f"deleting snapshot {snapshot_id}",
                functools.partial(driver.delete_snapshot, drive_id, snapshot_id),
            )
            for drive_id in drives
        ],
        finish=finish,
        failed=phased.failing(
            f"deleting snapshot {snapshot_id} is unfinished (delete it again to finish)"
        ),
    )


# -- resize and revert -----------------------------------------------------------


def targets(row: VolumeRow, size_bytes: int) -> list[int]:
    return specs.reserved_sizes(
        size_bytes, durability_of(row), row.snapshot_factor, row.provisioning
    )


def _at(sizes: list[int], index: int) -> int:
    return sizes[min(index, len(sizes) - 1)]


def begin_reshape(
    session: Session, row: VolumeRow, allocs: list[AllocationRow], size_bytes: int, op: str
) -> list[tuple[str, str, int]]:
    """Phase 1 of a size change: grown allocations reserved, all marked PENDING
    by ``op``. Returns the driver work: (drive, replica, new copy size)."""
    want = targets(row, size_bytes)
    shares = specs.share_sizes(size_bytes, durability_of(row))
    for a in allocs:
        if _at(want, a.index) > a.bytes:
            allocations.resize(session, a, _at(want, a.index))
    mark(allocs, AllocationState.PENDING, op)
    session.flush()
    return [(a.drive_id, a.id, _at(shares, a.index)) for a in allocs]


def end_reshape(session: Session, row: VolumeRow, size_bytes: int, generation: int) -> None:
    """Phase 3: the new size recorded, each allocation exactly its share, ACTIVE."""
    want = targets(row, size_bytes)
    for a in repo.allocations(session, row.id):
        if a.state == AllocationState.PENDING and a.job_id:
            allocations.resize(session, a, _at(want, a.index), check_room=False)
            mark([a], AllocationState.ACTIVE, None)
    row.size_bytes = size_bytes
    stamp(row, generation)
    session.flush()


def undo_reshape(session: Session, row: VolumeRow) -> list[tuple[str, str, int]]:
    """Rolls a size change back to the recorded size; returns the driver work
    that restores the copies' size."""
    want = targets(row, row.size_bytes)
    shares = specs.share_sizes(row.size_bytes, durability_of(row))
    work = []
    for a in repo.allocations(session, row.id):
        if a.state == AllocationState.PENDING and a.job_id:
            allocations.resize(session, a, _at(want, a.index), check_room=False)
            mark([a], AllocationState.ACTIVE, None)
            work.append((a.drive_id, a.id, _at(shares, a.index)))
    session.flush()
    return work


def rollback_reshape(
    store: Store,
    driver: StorageDriver,
    volume_id: str,
    restore: Callable[[VolumeRow], None] | None = None,
) -> None:
    """Phase 3 on failure (and recovery): the books and the copies back at the
    recorded size; ``restore`` puts back the other fields the change set."""
    with store.write() as s:
        generation = bump_generation(s)
        row = repo.get(s, volume_id)
        if row is None:
            return
        work = undo_reshape(s, row)
        if restore is not None:
            restore(row)
        stamp(row, generation)
    for drive_id, replica_id, nbytes in work:
        best_effort(
            f"restoring replica {replica_id}", driver.resize_replica, drive_id, replica_id, nbytes
        )


def run_reshape(
    store: Store,
    volume_id: str,
    steps: list[phased.Step],
    size_bytes: int,
    *,
    rollback: Callable[[], object],
    what: str,
) -> tuple[VolumeRow, int]:
    """Phases 2 and 3 of a size change (a resize or a revert) that
    :func:`begin_reshape` recorded: the driver ``steps``, then the new size;
    or ``rollback`` (see :func:`rollback_reshape`) and UNAVAILABLE."""

    def finish(s: Session, generation: int) -> tuple[VolumeRow, int]:
        row = get_volume(s, volume_id)
        end_reshape(s, row, size_bytes, generation)
        return row, generation

    return phased.run(
        store,
        steps,
        finish=finish,
        rollback=rollback,
        failed=phased.failing(f"{what} the volume failed and was rolled back"),
    )
