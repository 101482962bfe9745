"""A volume's copies as repair sees them: how many its durability declares,
how many are live, and which are missing and why.

A declared copy ``i`` (0 .. declared-1) is live when an allocation of index
``i`` is ACTIVE, or RELEASING (the source of a move still serves its data).
Otherwise it is missing: UNAVAILABLE on a drive or node that does not serve
(the loss says which), UNAVAILABLE and stale on one that serves again (it
waits for a resync), or lost outright when no allocation of that index is
left (its drive was forgotten). A PENDING allocation (a reservation of a job
in progress) is neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from osd.engine.placement.rules import (
    DEAD_DRIVE_STATES,
    SERVING_DRIVE_STATES,
    SERVING_NODE_STATES,
)
from osd.engine.volumes import specs
from osd.engine.volumes.models import Durability
from osd.enums import AllocationState, CopyLoss, DurabilityType, NodeState, VolumeState
from osd.store.models import VolumeRow
from osd.store.volumes import CopyView

LIVE = (AllocationState.ACTIVE, AllocationState.RELEASING)

# Volumes whose copies are settled enough to count (not being made or deleted).
SETTLED = (VolumeState.UP, VolumeState.DEGRADED, VolumeState.DOWN, VolumeState.DATA_LOST)


@dataclass(frozen=True)
class MissingCopy:
    """A declared copy that is not live. ``allocation_id``, ``drive_id`` and
    ``node_id`` are empty when its allocation is gone."""

    index: int
    loss: CopyLoss
    allocation_id: str = ""
    drive_id: str = ""
    node_id: str = ""
    nbytes: int = 0


@dataclass(frozen=True)
class CopyHealth:
    declared: int
    live: int
    missing: tuple[MissingCopy, ...] = ()
    # How many live copies the data needs to be read (and a copy rebuilt).
    needed: int = 1

    @property
    def degraded(self) -> bool:
        return bool(self.missing)

    @property
    def margin(self) -> int:
        """Live copies beyond what the data needs: the lower, the more endangered."""
        return self.live - self.needed


def loss_of(copy: CopyView) -> CopyLoss:
    """Why a copy that is not live is unavailable."""
    if copy.drive_state in DEAD_DRIVE_STATES:
        return CopyLoss.DRIVE_EJECTED
    if copy.node_state == NodeState.MAINTENANCE:
        return CopyLoss.NODE_MAINTENANCE
    if copy.node_state not in SERVING_NODE_STATES:
        return CopyLoss.NODE_OFFLINE
    if copy.drive_state in SERVING_DRIVE_STATES:
        # Back on a node and a drive that serve, and still UNAVAILABLE: it
        # missed writes while away, and waits for a resync.
        return CopyLoss.STALE
    return CopyLoss.DRIVE_UNAVAILABLE


def health_of(row: VolumeRow, copies: Sequence[CopyView]) -> CopyHealth:
    """The copies of ``row`` (its allocations ``copies``)."""
    durability = Durability(
        row.durability_type, row.replicas, row.data_fragments, row.redundancy_fragments
    )
    declared = specs.copies(durability)
    needed = durability.data_fragments if durability.type == DurabilityType.ERASURE else 1
    by_index: dict[int, list[CopyView]] = {}
    for c in copies:
        by_index.setdefault(c.index, []).append(c)
    live = sum(1 for i in range(declared) if any(c.state in LIVE for c in by_index.get(i, [])))
    if row.state not in SETTLED:
        return CopyHealth(declared, live, (), needed)
    share = max((c.nbytes for c in copies), default=0)
    missing: list[MissingCopy] = []
    for index in range(declared):
        mine = [c for c in by_index.get(index, []) if c.state != AllocationState.PENDING]
        if any(c.state in LIVE for c in mine):
            continue
        away = [c for c in mine if c.state == AllocationState.UNAVAILABLE]
        if away:
            c = away[0]
            missing.append(
                MissingCopy(index, loss_of(c), c.allocation_id, c.drive_id, c.node_id, c.nbytes)
            )
        else:
            missing.append(MissingCopy(index, CopyLoss.DRIVE_FORGOTTEN, nbytes=share))
    return CopyHealth(declared, live, tuple(missing), needed)
