"""Rules and shapes every capability shares: the generation check and allocations."""

from __future__ import annotations

from dataclasses import dataclass

from osd.engine.enums import AllocationState
from osd.errors import Aborted
from osd.store.models import AllocationRow


def check_generation(kind: str, object_id: str, generation: int, expected: int) -> None:
    """ABORTED (GENERATION_MISMATCH) when ``expected`` is set and differs."""
    if expected and expected != generation:
        raise Aborted(
            f"{kind} {object_id} is at generation {generation}, not {expected}",
            reason="GENERATION_MISMATCH",
            metadata={"generation": str(generation)},
        )


@dataclass(frozen=True)
class Allocation:
    """One copy or fragment of a volume's or snapshot's data on a drive."""

    id: str
    volume_id: str
    snapshot_id: str
    drive_id: str
    node_id: str
    zone: str
    index: int
    bytes: int
    state: AllocationState


def allocation_of(row: AllocationRow, zone: str) -> Allocation:
    """The allocation a row records; ``zone`` is its node's."""
    return Allocation(
        id=row.id,
        volume_id=row.volume_id or "",
        snapshot_id=row.snapshot_id or "",
        drive_id=row.drive_id,
        node_id=row.node_id,
        zone=zone,
        index=row.index,
        bytes=row.bytes,
        state=AllocationState(row.state),
    )
