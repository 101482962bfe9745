"""Node maintenance (the Service API's EnterMaintenance and ExitMaintenance).

Maintenance is one write: the node's state and its allocations' states
change together, and the volume engine hears of it in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from osd.engine.placement.rules import copies_to_read
from osd.engine.shared import validation as v
from osd.engine.shared.models import Changed
from osd.engine.shared.refusals import job_in_progress
from osd.engine.shared.rows import Unchanged, get_node
from osd.engine.topology.availability import Availability, AvailabilityListener
from osd.engine.topology.models import Node
from osd.engine.topology.views import nodes_from_rows
from osd.enums import AllocationState, DurabilityType, JobKind, NodeState, VolumeState
from osd.errors import FailedPrecondition
from osd.store import drives as drive_repo
from osd.store import jobs as repo
from osd.store import nodes as node_repo
from osd.store.db import Store
from osd.store.models import NodeRow, utcnow
from osd.store.state import bump_generation

MAX_NAMED_VOLUMES = 10


@dataclass(frozen=True)
class Maintenance:
    node: Node
    affected_volume_ids: list[str]
    generation: int


def _state_conflict(node: NodeRow, what: str) -> FailedPrecondition:
    state = NodeState(node.state).name
    return FailedPrecondition(
        f"node {node.name} is {state}: it cannot {what}",
        reason="NODE_STATE_CONFLICT",
        metadata={"node_id": node.id, "state": state},
    )


class MaintenanceEngine:
    def __init__(self, store: Store, availability: AvailabilityListener) -> None:
        self._store = store
        self._availability = availability

    def enter_maintenance(self, node_id: str, force: bool) -> Maintenance:
        v.check_id(node_id, "node_id")
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                node = get_node(s, node_id)
                affected = [vol.id for vol in repo.volumes_on_node(s, node.id)]
                if node.state == NodeState.MAINTENANCE:
                    raise Unchanged(
                        Maintenance(self._node(s, node), affected, generation - 1), generation - 1
                    )
                if node.state == NodeState.DRAINING:
                    raise _state_conflict(node, "enter maintenance")
                self._check_no_filling_job(s, node)
                if not force:
                    self._check_durability(s, node)
                node.state = NodeState.MAINTENANCE
                node.update_time = utcnow()
                node.generation = generation
                volumes, snapshots = node_repo.set_availability(s, node.id, False)
                self._notify(s, volumes, snapshots)
                return Maintenance(self._node(s, node), affected, generation)
        except Unchanged as same:
            result: Maintenance = same.value
            return result

    def exit_maintenance(self, node_id: str) -> Changed[Node]:
        v.check_id(node_id, "node_id")
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                node = get_node(s, node_id)
                if node.state == NodeState.ONLINE:
                    raise Unchanged(self._node(s, node), generation - 1)
                if node.state != NodeState.MAINTENANCE:
                    raise _state_conflict(node, "exit maintenance")
                node.state = NodeState.ONLINE
                node.update_time = utcnow()
                node.generation = generation
                volumes, snapshots = node_repo.set_availability(s, node.id, True)
                self._notify(s, volumes, snapshots)
                return Changed(self._node(s, node), generation)
        except Unchanged as same:
            return Changed(same.value, same.generation)

    @staticmethod
    def _check_no_filling_job(s: Session, node: NodeRow) -> None:
        """Refuses while a job adds data to the node's drives: a drive add or a
        replace onto one of them, or a move whose reservation is on the node."""
        for drive in drive_repo.of_node(s, node.id):
            job_id = node_repo.unfinished_job_id(s, drive.id, drive.active_job_id)
            if job_id is None:
                continue
            job = repo.get(s, job_id)
            if job is not None and job.kind in (JobKind.DRIVE_ADD, JobKind.DRIVE_REPLACE):
                raise job_in_progress("drive", drive.id, job_id)
        for alloc in repo.pending_on_node(s, node.id):
            job = repo.get(s, alloc.job_id or "")
            if job is not None and job.state in repo.UNFINISHED_STATES:
                raise job_in_progress("node", node.id, job.id)

    @staticmethod
    def _check_durability(s: Session, node: NodeRow) -> None:
        """DURABILITY_AT_RISK when taking the node's copies away leaves a volume with
        durability NONE on the node, a replicated volume with no other available
        copy, or an erasure-coded one with fewer available fragments than data
        fragments."""
        at_risk: list[str] = []
        for vol in repo.volumes_on_node(s, node.id):
            if vol.state == VolumeState.DELETING:
                continue
            elsewhere = {
                a.index
                for a in repo.allocations_of_owner(s, volume_id=vol.id, snapshot_id=None)
                if a.node_id != node.id and a.state == AllocationState.ACTIVE
            }
            if vol.durability_type == DurabilityType.NONE or len(elsewhere) < copies_to_read(vol):
                at_risk.append(vol.id)
        if at_risk:
            named = at_risk[:MAX_NAMED_VOLUMES]
            more = f" and {len(at_risk) - len(named)} more" if len(at_risk) > len(named) else ""
            raise FailedPrecondition(
                f"maintenance of node {node.name} would leave {len(at_risk)} volumes below "
                f"their durability: {', '.join(named)}{more}; use force to accept it",
                reason="DURABILITY_AT_RISK",
                metadata={"volume_ids": ",".join(named), "count": str(len(at_risk))},
            )

    def _notify(self, s: Session, volumes: set[str], snapshots: set[str]) -> None:
        change = Availability(frozenset(volumes), frozenset(snapshots))
        if change:
            self._availability(s, change)

    @staticmethod
    def _node(s: Session, row: NodeRow) -> Node:
        s.flush()
        return nodes_from_rows(s, [row])[0]
