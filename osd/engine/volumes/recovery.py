"""Recovery when a daemon starts: finish or undo what a crash left half done.

* a volume left CREATING (not by a copy job): its copies are created again
  (driver calls are idempotent) and it becomes UP; if the driver fails, the
  create is undone;
* a copy of another volume left CREATING without its job (the job ended
  without settling it): the create is undone, since its data was never
  copied whole (a copy whose job is unfinished is the job's to finish);
* a volume left DELETING: the delete finishes, or the freeze it was part of;
* a snapshot left CREATING: it is finished (or dropped when its volume is gone);
* a snapshot left DELETING: the delete finishes;
* allocations left PENDING by a resize or revert (not by a job): the books and
  the copies go back to the volume's recorded size.

A step whose driver call fails is logged and left for the next start (or,
for deletes, for the client's retry); it does not stop the daemon.
"""

from __future__ import annotations

from collections.abc import Callable

from osd.engine.drivers import DriverError, StorageDriver
from osd.engine.volumes import phases as volume_phases
from osd.engine.volumes import specs
from osd.engine.volumes.guards import log
from osd.engine.volumes.views import durability_of
from osd.enums import SnapshotState, SourceKind, VolumeState
from osd.errors import OsdError
from osd.store import snapshots as snap_repo
from osd.store import volumes as repo
from osd.store.db import Store


def recover(store: Store, driver: StorageDriver) -> None:
    with store.read() as s:
        orphans = [r for r in repo.by_states(s, [VolumeState.CREATING]) if not r.active_job_id]
        creating = [r.id for r in orphans if r.source_kind != SourceKind.VOLUME]
        copies = {
            r.id: volume_phases.work_of(repo.allocations(s, r.id))
            for r in orphans
            if r.source_kind == SourceKind.VOLUME
        }
        deleting = {r.id for r in repo.by_states(s, [VolumeState.DELETING])}
        snaps_creating = [
            (r.id, r.volume_id) for r in snap_repo.by_states(s, [SnapshotState.CREATING])
        ]
        snaps_deleting = [r.id for r in snap_repo.by_states(s, [SnapshotState.DELETING])]
        pending = repo.pending_allocations(s)
        jobs = repo.job_ids(s, {a.job_id for a in pending if a.job_id})
        reshaping = sorted(
            {a.volume_id for a in pending if a.volume_id and a.job_id and a.job_id not in jobs}
            - set(creating)
            - deleting
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
    volume_phases.run_create(store, driver, volume_id, work, fill)
    log.info("volume %s: interrupted create finished", volume_id)


def _guard(what: str, step: Callable[..., object], *args: object) -> None:
    try:
        step(*args)
    except (DriverError, OsdError) as exc:
        log.warning("%s failed; left for later: %s", what, exc)
