"""How topology changes reach whoever keeps volume state: the volumes and
snapshots whose copies turned UNAVAILABLE, ACTIVE or were released."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Availability:
    """Volumes and snapshots whose allocations changed between ACTIVE and UNAVAILABLE
    (or were released) in a transaction, for whoever keeps their state."""

    volume_ids: frozenset[str]
    snapshot_ids: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.volume_ids or self.snapshot_ids)


# Called inside the write transaction that changed the allocations.
AvailabilityListener = Callable[[Session, Availability], None]
