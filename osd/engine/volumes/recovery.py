"""Recovery when a daemon starts: finish or undo what a crash left half done.

* a volume left CREATING (not by a copy job): its copies are created again
  (driver calls are idempotent) and it becomes UP; if the driver fails, the
  create is undone;
* a copy of another volume left CREATING without its job (the job ended
  without settling it): the create is undone, since its data was never
  copied whole (a copy whose job is unfinished is the job's to finish);
* a volume left DELETING: the delete finishes, or the freeze it was part of;
* a snapshot left CREATING: it is finished (or dropped when its volume is
  gone), unless a SNAPSHOT_COPY job takes it, whose runner resumes it;
* a snapshot left DELETING: the delete finishes;
* allocations left PENDING by a resize or revert (not by a job): the books and
  the copies go back to the volume's recorded size.

A step whose driver call fails is logged and left for the next start (or,
for deletes, for the client's retry); it does not stop the daemon.

Several daemons may share the store: a change records its owner
(``op_owner``), and recovery takes over only the changes whose owner is
gone (``alive`` says), claiming each with a compare-and-set on the owner so
that two daemons never both finish or undo the same change. At start it also
takes the changes that record no owner (made before owners were recorded);
afterwards (``starting`` false, as the periodic sweep runs it) only those of
daemons that died.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from sqlalchemy import update

from osd.engine.drivers import DriverError, StorageDriver
from osd.engine.volumes import phases as volume_phases
from osd.engine.volumes import specs
from osd.engine.volumes.guards import log
from osd.engine.volumes.views import durability_of
from osd.enums import JobKind, SnapshotState, SourceKind, VolumeState
from osd.errors import OsdError
from osd.store import jobs as job_repo
from osd.store import snapshots as snap_repo
from osd.store import volumes as repo
from osd.store.db import Store
from osd.store.models import SnapshotRow, VolumeRow

Alive = Callable[[str], bool]


def _claimable(alive: Alive | None, starting: bool) -> Callable[[str | None], bool]:
    """Which owners' changes this daemon may take over (each owner asked
    about once)."""
    if alive is None:
        return lambda owner: starting
    alive = functools.cache(alive)
    if starting:
        return lambda owner: owner is None or not alive(owner)
    return lambda owner: owner is not None and not alive(owner)


def _claim(
    store: Store, model: type[VolumeRow] | type[SnapshotRow], rows: Iterable[tuple[str, str | None]]
) -> set[str]:
    """Makes this daemon the owner of each (id, old owner) row whose owner is
    still the old one: the ids it won."""
    won = set()
    for row_id, old in rows:
        with store.write() as s:
            same = model.op_owner.is_(None) if old is None else model.op_owner == old
            done = s.execute(
                update(model)
                .where(model.id == row_id, same)
                .values(op_owner=store.owner or None)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                won.add(row_id)
    return won


def recover(
    store: Store, driver: StorageDriver, alive: Alive | None = None, *, starting: bool = True
) -> None:
    mine = _claimable(alive, starting)
    with store.read() as s:
        volumes = {
            r.id: r.op_owner
            for r in repo.by_states(s, [VolumeState.CREATING, VolumeState.DELETING])
            if mine(r.op_owner)
        }
        snapshots = {
            r.id: r.op_owner
            for r in snap_repo.by_states(s, [SnapshotState.CREATING, SnapshotState.DELETING])
            if mine(r.op_owner)
        }
        pending = repo.pending_allocations(s)
        for volume_id in {a.volume_id for a in pending if a.volume_id} - set(volumes):
            row = repo.get(s, volume_id)
            if row is not None and mine(row.op_owner):
                volumes[row.id] = row.op_owner
    if not volumes and not snapshots:
        return
    ours = _claim(store, VolumeRow, volumes.items()) | _claim(store, SnapshotRow, snapshots.items())
    with store.read() as s:
        orphans = [
            r
            for r in repo.by_states(s, [VolumeState.CREATING])
            if not r.active_job_id and r.id in ours
        ]
        creating = [r.id for r in orphans if r.source_kind != SourceKind.VOLUME]
        copies = {
            r.id: volume_phases.work_of(repo.allocations(s, r.id))
            for r in orphans
            if r.source_kind == SourceKind.VOLUME
        }
        deleting = {r.id for r in repo.by_states(s, [VolumeState.DELETING]) if r.id in ours}
        copied = {
            j.target_id
            for j in job_repo.in_state(s, list(job_repo.UNFINISHED_STATES))
            if j.kind == JobKind.SNAPSHOT_COPY
        }
        snaps_creating = [
            (r.id, r.volume_id)
            for r in snap_repo.by_states(s, [SnapshotState.CREATING])
            if r.id not in copied and r.id in ours
        ]
        snaps_deleting = [
            r.id for r in snap_repo.by_states(s, [SnapshotState.DELETING]) if r.id in ours
        ]
        pending = repo.pending_allocations(s)
        jobs = repo.job_ids(s, {a.job_id for a in pending if a.job_id})
        reshaping = sorted(
            (
                {a.volume_id for a in pending if a.volume_id and a.job_id and a.job_id not in jobs}
                - set(creating)
                - deleting
            )
            & ours
        )
    if creating or deleting or snaps_creating or snaps_deleting or reshaping:
        log.info(
            "recovering: %d creating, %d deleting volumes; %d creating, %d deleting "
            "snapshots; %d resizes",
            len(creating),
            len(deleting),
            len(snaps_creating),
            len(snaps_deleting),
            len(reshaping),
        )
    for volume_id, done in copies.items():
        volume_phases.undo_create(store, driver, volume_id, done)
        log.info("volume %s: copy left without its job undone", volume_id)
    for volume_id in creating:
        _guard(
            f"finishing the create of volume {volume_id}", _finish_create, store, driver, volume_id
        )
    for snapshot_id, volume_id in snaps_creating:
        if volume_id in deleting:
            deleting.discard(volume_id)
            _guard(
                f"finishing the freeze of volume {volume_id}",
                volume_phases.finish_freeze,
                store,
                driver,
                volume_id,
                snapshot_id,
            )
        else:
            _guard(
                f"finishing snapshot {snapshot_id}",
                volume_phases.finish_snapshot_create,
                store,
                driver,
                snapshot_id,
            )
    for volume_id in sorted(deleting):
        _guard(
            f"finishing the delete of volume {volume_id}",
            volume_phases.finish_delete,
            store,
            driver,
            volume_id,
        )
    for snapshot_id in snaps_deleting:
        _guard(
            f"finishing the delete of snapshot {snapshot_id}",
            volume_phases.finish_snapshot_delete,
            store,
            driver,
            snapshot_id,
        )
    for volume_id in reshaping:
        volume_phases.rollback_reshape(store, driver, volume_id)
        log.info("volume %s: interrupted resize rolled back", volume_id)


def _finish_create(store: Store, driver: StorageDriver, volume_id: str) -> None:
    with store.read() as s:
        row = repo.get(s, volume_id)
        if row is None or row.state != VolumeState.CREATING:
            return
        shares = specs.share_sizes(row.size_bytes, durability_of(row))
        work = [
            (a.drive_id, a.id, shares[min(a.index, len(shares) - 1)])
            for a in repo.allocations(s, volume_id)
        ]
        fill = volume_phases.fill_of(s, row)
    volume_phases.run_create(store, driver, volume_id, work, fill, lambda _s, row: row)
    log.info("volume %s: interrupted create finished", volume_id)


def _guard(what: str, step: Callable[..., object], *args: object) -> None:
    try:
        step(*args)
    except (DriverError, OsdError) as exc:
        log.warning("%s failed; left for later: %s", what, exc)
