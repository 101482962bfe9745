"""The placement rules a job keeps when it moves or rebuilds a copy, and how
a volume's health follows the state of its allocations.

A copy may go to an ONLINE data drive of an ONLINE node, in the pool its
volume's placement names for that copy (the tail pool for the last copy of a
REPLICATE volume that has one; any drive of the cluster when none is named),
whose node and drive carry the placement's selector labels, with room for
it, and never in the same failure domain (drive, node or zone) as another
copy of the same volume or snapshot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from osd.engine.enums import (
    AllocationState,
    DriveState,
    DurabilityType,
    FailureDomain,
    NodeState,
)
from osd.engine.layout import allocation_sizes
from osd.errors import FailedPrecondition
from osd.store import jobs as repo
from osd.store import nodes as node_repo
from osd.store import pools as pool_repo
from osd.store.models import AllocationRow, DriveRow, NodeRow, SnapshotRow, VolumeRow

# Drives whose allocations serve data, and nodes that serve their drives.
SERVING_DRIVE_STATES = frozenset(
    {DriveState.ONLINE, DriveState.SOFT_EJECTING, DriveState.REPLACING}
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


def copies_to_read(v: VolumeRow | SnapshotRow) -> int:
    """How many available copies (fragments) the data needs to be readable."""
    return (v.data_fragments or 4) if v.durability_type == DurabilityType.ERASURE else 1


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


@dataclass
class Disk:
    """A drive as placement sees it, with the usage of the plan so far."""

    id: str
    node_id: str
    zone: str
    state: int
    node_state: int
    journal: bool
    total: int
    used: int
    labels: dict[str, str]
    node_labels: dict[str, str]

    @property
    def free(self) -> int:
        return self.total - self.used

    def fraction(self, extra: int = 0) -> float:
        return (self.used + extra) / self.total if self.total else 1.0

    @property
    def takes_new(self) -> bool:
        return (
            self.state == DriveState.ONLINE
            and self.node_state == NodeState.ONLINE
            and not self.journal
        )

    def key(self, domain: FailureDomain) -> str:
        if domain == FailureDomain.DRIVE:
            return self.id
        return self.node_id if domain == FailureDomain.NODE else self.zone


class Topology:
    """The drives and nodes of one cluster, read once for a decision."""

    def __init__(self, s: Session, cluster_id: str) -> None:
        self._s = s
        nodes: dict[str, NodeRow] = {n.id: n for n in node_repo.of_cluster(s, cluster_id)}
        self.disks: dict[str, Disk] = {}
        for d in repo.cluster_drives(s, cluster_id):
            node = nodes[d.node_id]
            self.disks[d.id] = Disk(
                d.id,
                d.node_id,
                node.zone,
                d.state,
                node.state,
                d.journal,
                d.total_bytes,
                d.used_bytes,
                dict(d.labels),
                dict(node.labels),
            )
        self._members: dict[str, set[str]] = {}

    def clone(self) -> Topology:
        """A copy whose drive usage can change without touching this one."""
        other = Topology.__new__(Topology)
        other._s = self._s
        other.disks = {k: dataclasses.replace(d) for k, d in self.disks.items()}
        other._members = self._members
        return other

    def members(self, pool_id: str) -> set[str]:
        if pool_id not in self._members:
            self._members[pool_id] = pool_repo.effective_drive_ids(self._s, pool_id)
        return self._members[pool_id]

    def eligible(
        self, rules: Rules, sibling_drives: Iterable[str], exclude: Iterable[str] = ()
    ) -> list[Disk]:
        """Drives that may take the copy under ``rules`` (room not considered), given
        the drives the owner's other copies are on."""
        taken = {self.disks[d].key(rules.domain) for d in sibling_drives if d in self.disks}
        skip = set(exclude)
        members = self.members(rules.pool_id) if rules.pool_id else None
        out = []
        for disk in self.disks.values():
            if not disk.takes_new or disk.id in skip:
                continue
            if members is not None and disk.id not in members:
                continue
            if any(disk.node_labels.get(k) != v for k, v in rules.node_selector.items()):
                continue
            if any(disk.labels.get(k) != v for k, v in rules.drive_selector.items()):
                continue
            if disk.key(rules.domain) in taken:
                continue
            out.append(disk)
        return out

    def choose(
        self,
        rules: Rules,
        nbytes: int,
        sibling_drives: Iterable[str],
        exclude: Iterable[str] = (),
    ) -> Disk:
        """The emptiest drive (by used fraction after the copy) that may take it.

        Raises FailedPrecondition: PLACEMENT_IMPOSSIBLE when no drive keeps the
        rules, INSUFFICIENT_CAPACITY when none of those has room.
        """
        eligible = self.eligible(rules, sibling_drives, exclude)
        meta = {f"{rules.owner_kind}_id": rules.owner_id}
        if not eligible:
            raise FailedPrecondition(
                f"no drive can take a copy of {rules.owner_kind} {rules.owner_id} "
                f"within its placement rules ({rules.domain.name} spread)",
                reason="PLACEMENT_IMPOSSIBLE",
                metadata=meta,
            )
        roomy = [d for d in eligible if d.free >= nbytes]
        if not roomy:
            raise FailedPrecondition(
                f"no drive that may take a copy of {rules.owner_kind} {rules.owner_id} "
                f"has {nbytes} free bytes",
                reason="INSUFFICIENT_CAPACITY",
                metadata={**meta, "needed": str(nbytes)},
            )
        return min(roomy, key=lambda d: (d.fraction(nbytes), d.id))


def drive_and_node(s: Session, drive_id: str) -> tuple[DriveRow, NodeRow]:
    drive = s.get_one(DriveRow, drive_id)
    return drive, s.get_one(NodeRow, drive.node_id)
