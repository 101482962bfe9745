"""Node drain (NODE_DRAIN): the node DRAINING while its drives' copies move to
other nodes; in MAINTENANCE when DONE, ONLINE again when cancelled or failed.

A cancel (or a failure) does not move back what already moved: those copies
stay on the drives they went to (a later rebalance may move them back), and
the job's result says so, counting ``moved_copies``, ``moved_bytes`` and the
``remaining_copies`` still on the node's drives. DONE also sets the result."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from osd.engine.jobs.kinds.evacuation import (
    Context,
    Evacuation,
    check_feasible,
    moved_result,
)
from osd.engine.jobs.records import Record
from osd.engine.shared import validation as v
from osd.engine.shared.refusals import check_no_job
from osd.engine.shared.rows import get_node, stamp
from osd.enums import JobKind, NodeState
from osd.enums import ObjectKind as OK
from osd.errors import FailedPrecondition
from osd.store import drives as drive_repo
from osd.store import jobs as repo
from osd.store.models import (
    JobRow,
    NodeRow,
)


@dataclass(frozen=True)
class NodeDrainSpec(Record):
    """The node to drain (both what a start takes and what the job keeps)."""

    node_id: str


class NodeDrain(Evacuation[NodeDrainSpec, NodeDrainSpec]):
    """Drain: the node DRAINING while its drives' copies move to other nodes; in
    MAINTENANCE when DONE, ONLINE again when cancelled or failed."""

    kind = JobKind.NODE_DRAIN
    target_kind = OK.NODE
    request_type = NodeDrainSpec
    spec_type = NodeDrainSpec

    def existing(self, s: Session, request: NodeDrainSpec) -> JobRow | None:
        node_id = request.node_id
        if not v.ID_RE.fullmatch(node_id):
            return None
        row = s.get(NodeRow, node_id)
        if row is None or row.state != NodeState.DRAINING:
            return None
        return repo.unfinished(s, self.kind, node_id)

    def begin(self, s: Session, job: JobRow, request: NodeDrainSpec) -> NodeDrainSpec:
        node = get_node(s, request.node_id)
        check_no_job(s, "node", node.id, node.active_job_id)
        drives = drive_repo.of_node(s, node.id)
        for d in drives:
            check_no_job(s, "drive", d.id, d.active_job_id)
        if node.state != NodeState.ONLINE:
            state = NodeState(node.state).name
            raise FailedPrecondition(
                f"node {node.name} is {state}: only an ONLINE node can be drained",
                reason="NODE_NOT_ONLINE",
                metadata={"node_id": node.id, "state": state},
            )
        check_feasible(s, node.cluster_id, [d.id for d in drives])
        node.state = NodeState.DRAINING
        node.active_job_id = job.id
        stamp(node, job.generation)
        job.cluster_id = node.cluster_id
        job.target_id = node.id
        job.progress_total_bytes = sum(d.used_bytes for d in drives)
        return NodeDrainSpec(node.id)

    def sources(self, s: Session, ctx: Context[NodeDrainSpec]) -> list[str]:
        return [d.id for d in drive_repo.of_node(s, ctx.target_id)]

    def finish(self, ctx: Context[NodeDrainSpec], s: Session, generation: int) -> None:
        ctx.result = moved_result(
            ctx, s, self.sources(s, ctx), f"the drives of node {ctx.target_id}", done=True
        )
        node = s.get(NodeRow, ctx.target_id)
        if node is not None and node.state == NodeState.DRAINING:
            node.state = NodeState.MAINTENANCE
            stamp(node, generation)

    def abort(self, ctx: Context[NodeDrainSpec], s: Session, generation: int) -> None:
        super().abort(ctx, s, generation)
        ctx.result = moved_result(
            ctx, s, self.sources(s, ctx), f"the drives of node {ctx.target_id}", done=False
        )
        node = s.get(NodeRow, ctx.target_id)
        if node is not None and node.state == NodeState.DRAINING:
            node.state = NodeState.ONLINE
            stamp(node, generation)
