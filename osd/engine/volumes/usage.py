"""Used space as storage measures it.

A driver that can measure (the local driver) is asked now and then what each
volume's copies hold and what each snapshot holds that nothing else shares;
the answers become the volume's ``usage.stored_bytes`` and the snapshot's
``space_used_bytes``. Only values that changed are written, so a store that
stands still keeps its generation. A driver that cannot measure (the fake
one) leaves the figures the books give.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from sqlalchemy import select

from osd.engine.drivers import CopyRef, StorageDriver
from osd.engine.volumes.phases import snapshot_copies
from osd.enums import AllocationState, SnapshotState
from osd.store.db import Store
from osd.store.models import AllocationRow, SnapshotRow, VolumeRow

log = logging.getLogger(__name__)


class UsageMeter:
    def __init__(self, store: Store, driver: StorageDriver) -> None:
        self._store = store
        self._driver = driver

    @property
    def measures(self) -> bool:
        return callable(getattr(type(self._driver), "measure", None))

    def measure(self) -> int:
        """One round; answers how many objects' figures changed."""
        if not self.measures:
            return 0
        copies: dict[str, list[CopyRef]] = defaultdict(list)
        snapshots: list[tuple[CopyRef, str]] = []
        with self._store.read() as s:
            for a in s.scalars(
                select(AllocationRow).where(
                    AllocationRow.volume_id.is_not(None),
                    AllocationRow.state == AllocationState.ACTIVE,
                )
            ):
                assert a.volume_id is not None
                copies[a.volume_id].append((a.drive_id, a.id))
            was_stored = {
                volume_id: nbytes
                for volume_id, nbytes in s.execute(
                    select(VolumeRow.id, VolumeRow.stored_bytes).where(VolumeRow.id.in_(copies))
                )
            }
            was_measured: dict[str, int | None] = {}
            for snap in s.scalars(
                select(SnapshotRow).where(SnapshotRow.state == SnapshotState.READY)
            ):
                holders = snapshot_copies(s, snap)
                if holders:
                    snapshots.append((holders[0], snap.id))
                    was_measured[snap.id] = snap.measured_bytes
        held, unique = self._driver.measure(  # type: ignore[attr-defined]
            [c for refs in copies.values() for c in refs], snapshots
        )
        stored = {
            volume_id: max(held[c] for c in refs if c in held)
            for volume_id, refs in copies.items()
            if any(c in held for c in refs) and was_stored.get(volume_id) is not None
        }
        stored = {k: v for k, v in stored.items() if was_stored[k] != v}
        unique = {k: v for k, v in unique.items() if was_measured.get(k) != v}
        if not stored and not unique:
            return 0
        with self._store.write() as s:
            for volume_id, nbytes in stored.items():
                row = s.get(VolumeRow, volume_id)
                if row is not None:
                    row.stored_bytes = nbytes
            for snapshot_id, nbytes in unique.items():
                measured = s.get(SnapshotRow, snapshot_id)
                if measured is not None:
                    measured.measured_bytes = nbytes
        log.debug("used space: %d figures changed", len(stored) + len(unique))
        return len(stored) + len(unique)
