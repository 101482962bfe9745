"""The placement rules a job keeps when it moves or rebuilds a copy, and how
a copy's state follows the state of its drive and node.

A copy may go to an ONLINE data drive of an ONLINE node, in the pool its
volume's placement names for that copy (the tail pool for the last copy of a
REPLICATE volume that has one; any drive of the cluster when none is named),
whose node and drive carry the placement's selector labels, with room for
it, and never in the same failure domain (drive, node or zone) as another
copy of the same volume or snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from osd.engine.shared.allocation_math import allocation_sizes
from osd.enums import AllocationState, DriveState, DurabilityType, FailureDomain, NodeState
from osd.store.models import AllocationRow, DriveRow, NodeRow, SnapshotRow, VolumeRow
from osd.store.models import copies_to_read as copies_to_read  # the rules' too

# Drives whose allocations serve data, and nodes that serve their drives.
SERVING_DRIVE_STATES = frozenset(
    {DriveState.ONLINE, DriveState.SOFT_EJECTING, DriveState.REPLACING, DriveState.OFFLINE}
)


SERVING_NODE_STATES = frozenset({NodeState.ONLINE, NodeState.DRAINING})


# Drives whose data is gone for good unless rebuilt.
DEAD_DRIVE_STATES = frozenset({DriveState.EJECTED, DriveState.FAILED})


def replica_id(alloc: AllocationRow) -> str:
    """The name of an allocation's copy in the storage driver: the allocation id
    (as the volume engine names them). A move keeps the allocation, and so the
    name; a rebuilt copy is created under its allocation's id."""
    return alloc.id


def available_state(node_state: int, drive_state: int) -> AllocationState:
    """The state of a settled allocation on a drive in ``drive_state`` of a node in
    ``node_state``."""
    if node_state in SERVING_NODE_STATES and drive_state in SERVING_DRIVE_STATES:
        return AllocationState.ACTIVE
    return AllocationState.UNAVAILABLE


def failure_domain(placement: Mapping[str, Any]) -> FailureDomain:
    """The placement's failure domain; unset (or unknown) means ZONE."""
    raw = placement.get("failure_domain")
    if isinstance(raw, str):
        name = raw.upper().removeprefix("FAILURE_DOMAIN_")
        return FailureDomain[name] if name in FailureDomain.__members__ else FailureDomain.ZONE
    if isinstance(raw, int) and raw in {int(m) for m in FailureDomain}:
        return FailureDomain(raw)
    return FailureDomain.ZONE


def expected_copies(v: VolumeRow | SnapshotRow) -> int:
    return len(
        allocation_sizes(
            v.size_bytes,
            v.durability_type,
            v.replicas or 3,
            v.data_fragments or 4,
            v.redundancy_fragments or 2,
            1.0,
        )
    )


@dataclass(frozen=True)
class Rules:
    """Where one copy may go."""

    domain: FailureDomain
    pool_id: str | None
    node_selector: dict[str, str] = field(default_factory=dict)
    drive_selector: dict[str, str] = field(default_factory=dict)
    owner_kind: str = "volume"
    owner_id: str = ""


def rules_for(s: Session, alloc: AllocationRow) -> Rules:
    """The placement rules of an allocation's copy."""
    return rules_of(s, alloc.volume_id, alloc.snapshot_id, alloc.index)


def rules_of(s: Session, volume_id: str | None, snapshot_id: str | None, index: int) -> Rules:
    """The placement rules of copy ``index`` of a volume, or of a snapshot (which
    follows its volume's placement while that volume exists)."""
    volume: VolumeRow | None
    if volume_id is not None:
        volume = s.get(VolumeRow, volume_id)
        owner_kind, owner_id = "volume", volume_id
    else:
        snap = s.get(SnapshotRow, snapshot_id)
        volume = s.get(VolumeRow, snap.volume_id) if snap is not None else None
        owner_kind, owner_id = "snapshot", snapshot_id or ""
    if volume is None:
        return Rules(FailureDomain.ZONE, None, owner_kind=owner_kind, owner_id=owner_id)
    placement = dict(volume.placement or {})
    pool = volume.pool_id
    if (
        volume_id is not None
        and volume.tail_pool_id
        and volume.durability_type == DurabilityType.REPLICATE
        and index == (volume.replicas or 3) - 1
    ):
        pool = volume.tail_pool_id
    return Rules(
        failure_domain(placement),
        pool,
        dict(placement.get("node_selector") or {}),
        dict(placement.get("drive_selector") or {}),
        owner_kind,
        owner_id,
    )


def drive_and_node(s: Session, drive_id: str) -> tuple[DriveRow, NodeRow]:
    drive = s.get_one(DriveRow, drive_id)
    return drive, s.get_one(NodeRow, drive.node_id)
