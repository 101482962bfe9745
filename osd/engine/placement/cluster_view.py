"""The drives of one cluster as a job's placement decisions see them, read
once per decision, with the usage of the plan so far."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from osd.engine.placement.rules import Rules
from osd.enums import DriveState, FailureDomain, NodeState
from osd.errors import FailedPrecondition
from osd.store import jobs as repo
from osd.store import nodes as node_repo
from osd.store import pools as pool_repo
from osd.store.models import NodeRow


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


class ClusterView:
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
                node_repo.placement_labels(node.labels, node.zone, node.name),
            )
        self._members: dict[str, set[str]] = {}

    def clone(self) -> ClusterView:
        """A copy whose drive usage can change without touching this one."""
        other = ClusterView.__new__(ClusterView)
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
