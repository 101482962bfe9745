"""A node's flush and ready (PVC's domain flush and ready).

Flush sets the node's domain state FLUSH, so it takes no new attachments,
and moves each volume attachment it holds to another node of the cluster
that serves (ONLINE) and is READY, preferring the node's own zone. Ready
sets it READY and takes back what the flush moved off, where it still is.

Each move is one attachment at a time, the way a detach and an attach are:
the records change in one transaction, which also writes (or, for ready,
drops) the :class:`~osd.store.models.FlushMoveRow` that says where the
attachment came from, so a daemon that stops mid-way loses no move; the
devices follow, detach on the old node first and attach on the new one
after, so a read-write attachment is never on two nodes at once. A driver
failure puts back the records and, as far as it can, the device. The
attachments that move are few and each move is short, so no job runs it:
the call answers with what moved and what did not, and flushing (or
readying) again tries again what did not.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from osd.engine.drivers import DriverError, Mount, StorageDriver
from osd.engine.jobs.kinds.snapshot_copy import copying
from osd.engine.shared import validation as v
from osd.engine.shared.phased import best_effort
from osd.engine.shared.rows import Unchanged, require
from osd.engine.volumes.attachments import (
    MAX_ATTACHMENTS_PER_NODE,
    check_node,
    copies_for,
    mount_of,
    node_address,
)
from osd.engine.volumes.guards import require_serving
from osd.engine.volumes.models import AttachmentMove, AttachmentNotMoved, AttachmentsMoved
from osd.enums import AttachMode, DomainState, NodeState
from osd.errors import FailedPrecondition
from osd.store import attachments as repo
from osd.store import nodes as node_repo
from osd.store.db import Store
from osd.store.models import AttachmentRow, FlushMoveRow, NodeRow, VolumeRow, utcnow
from osd.store.state import bump_generation, current_generation

log = logging.getLogger(__name__)


class _Skip(Exception):
    """Leaves a move's transaction without committing: the attachment stays."""

    def __init__(self, why: AttachmentNotMoved) -> None:
        super().__init__(why.message)
        self.why = why


@dataclasses.dataclass(frozen=True)
class _Held:
    """An attachment's record as it was, to put back."""

    node_id: str
    mode: AttachMode
    device_path: str
    attach_time: datetime
    mount_path: str
    mount_options: list[str]

    @classmethod
    def of(cls, row: AttachmentRow) -> _Held:
        return cls(
            row.node_id,
            AttachMode(row.mode),
            row.device_path,
            row.attach_time,
            row.mount_path,
            list(row.mount_options),
        )


@dataclasses.dataclass(frozen=True)
class _Step:
    """One attachment moving from ``source`` to ``target``: what the driver
    needs, and what to put back if it fails."""

    volume_id: str
    source: _Held
    target_node_id: str
    source_address: str
    target_address: str
    read_only: bool
    source_copies: list[tuple[str, str]]
    target_copies: list[tuple[str, str]]
    mount: Mount | None
    # The flush record the move wrote (flush) or dropped (ready).
    record: FlushMoveRow | None
    flushing: bool


class FlushEngine:
    def __init__(self, store: Store, driver: StorageDriver) -> None:
        self._store = store
        self._driver = driver

    def _set_domain(self, node_id: str, domain: DomainState) -> None:
        """Sets the node's domain state, when it has another (NOT_FOUND when
        there is no such node)."""
        with self._store.read() as s:
            if require(s, NodeRow, node_id).domain_state == domain:
                return
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                node = require(s, NodeRow, node_id)
                if node.domain_state == domain:
                    raise Unchanged(None, generation - 1)
                node.domain_state = domain
                node.generation = generation
                node.update_time = utcnow()
        except Unchanged:
            pass

    # -- flush -----------------------------------------------------------------

    def flush(self, node_id: str) -> AttachmentsMoved:
        v.check_id(node_id, "node_id")
        self._set_domain(node_id, DomainState.FLUSH)
        with self._store.read() as s:
            held = [r.volume_id for r in repo.on_node(s, node_id)]
        moved: list[AttachmentMove] = []
        not_moved: list[AttachmentNotMoved] = []
        for volume_id in held:
            self._one(self._plan_off, node_id, volume_id, moved, not_moved)
        return self._answer(node_id, moved, not_moved)

    def _plan_off(
        self, s: Session, node_id: str, volume_id: str, generation: int
    ) -> _Step | AttachmentNotMoved | None:
        row = repo.get(s, volume_id, node_id)
        if row is None:
            return None  # detached meanwhile
        node = s.get_one(NodeRow, node_id)
        volume = s.get_one(VolumeRow, volume_id)
        try:
            require_serving(volume)
            if row.mode == AttachMode.READ_WRITE and (job := copying(s, volume)) is not None:
                raise FailedPrecondition(
                    f"volume {volume.name} ({volume_id}) is being snapshotted as a full copy "
                    f"by job {job.id}; it moves once the job is done",
                    reason="JOB_IN_PROGRESS",
                )
        except FailedPrecondition as exc:
            raise _Skip(_not_moved(volume_id, node_id, exc)) from exc
        target = _pick_target(s, node, volume_id)
        if target is None:
            raise _Skip(
                AttachmentNotMoved(
                    volume_id,
                    node_id,
                    "NO_TARGET_NODE",
                    f"no other node of the cluster is ONLINE and READY and free to take "
                    f"volume {volume.name} ({volume_id})",
                )
            )
        held = _Held.of(row)
        record = FlushMoveRow(
            volume_id=volume_id,
            node_id=node_id,
            target_node_id=target.id,
            mode=held.mode,
            move_time=utcnow(),
            generation=generation,
        )
        _move_record(s, row, target.id, generation)
        repo.record_flush_move(s, record)
        return _Step(
            volume_id=volume_id,
            source=held,
            target_node_id=target.id,
            source_address=node_address(node),
            target_address=node_address(target),
            read_only=held.mode == AttachMode.READ_ONLY,
            source_copies=copies_for(s, volume_id, node_id),
            target_copies=copies_for(s, volume_id, target.id),
            mount=mount_of(volume, held.mount_path, held.mount_options),
            record=record,
            flushing=True,
        )

    # -- ready -----------------------------------------------------------------

    def ready(self, node_id: str) -> AttachmentsMoved:
        v.check_id(node_id, "node_id")
        self._set_domain(node_id, DomainState.READY)
        with self._store.read() as s:
            records = [r.volume_id for r in repo.flush_moves_of(s, node_id)]
        moved: list[AttachmentMove] = []
        not_moved: list[AttachmentNotMoved] = []
        for volume_id in records:
            self._one(self._plan_back, node_id, volume_id, moved, not_moved)
        return self._answer(node_id, moved, not_moved)

    def _plan_back(
        self, s: Session, node_id: str, volume_id: str, generation: int
    ) -> _Step | AttachmentNotMoved | None:
        record = repo.flush_move(s, volume_id, node_id)
        if record is None:
            return None
        where = record.target_node_id
        row = repo.get(s, volume_id, where)
        volume = s.get(VolumeRow, volume_id)
        gone = ""
        if volume is None:
            gone = "the volume is deleted"
        elif row is None:
            gone = f"it is no longer attached to node {where}, where the flush moved it"
        elif repo.get(s, volume_id, node_id) is not None:
            gone = "it is attached to this node again"
        if gone:
            # Nothing to take back: the record has served.
            repo.forget_flush_move(s, volume_id, node_id)
            return AttachmentNotMoved(
                volume_id, "" if row is None else where, "ATTACHMENT_GONE", gone
            )
        assert row is not None and volume is not None
        node = s.get_one(NodeRow, node_id)
        try:
            check_node(s, node, new=True, count=False)
            require_serving(volume)
        except FailedPrecondition as exc:
            raise _Skip(_not_moved(volume_id, where, exc)) from exc
        if repo.count_on_node(s, node_id) >= MAX_ATTACHMENTS_PER_NODE:
            raise _Skip(
                AttachmentNotMoved(
                    volume_id,
                    where,
                    "TOO_MANY_ATTACHMENTS",
                    f"node {node_id} holds the most attachments it may",
                )
            )
        held = _Held.of(row)
        source = s.get_one(NodeRow, where)
        _move_record(s, row, node_id, generation)
        repo.forget_flush_move(s, volume_id, node_id)
        return _Step(
            volume_id=volume_id,
            source=held,
            target_node_id=node_id,
            source_address=node_address(source),
            target_address=node_address(node),
            read_only=held.mode == AttachMode.READ_ONLY,
            source_copies=copies_for(s, volume_id, where),
            target_copies=copies_for(s, volume_id, node_id),
            mount=mount_of(volume, held.mount_path, held.mount_options),
            record=FlushMoveRow(
                volume_id=record.volume_id,
                node_id=record.node_id,
                target_node_id=record.target_node_id,
                mode=record.mode,
                move_time=record.move_time,
                generation=record.generation,
            ),
            flushing=False,
        )

    # -- one move --------------------------------------------------------------

    def _one(
        self,
        plan: Callable[[Session, str, str, int], _Step | AttachmentNotMoved | None],
        node_id: str,
        volume_id: str,
        moved: list[AttachmentMove],
        not_moved: list[AttachmentNotMoved],
    ) -> None:
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                step = plan(s, node_id, volume_id, generation)
        except _Skip as skip:
            not_moved.append(skip.why)
            return
        if step is None:
            return
        if isinstance(step, AttachmentNotMoved):
            not_moved.append(step)
            return
        failed = self._drive(step)
        if failed is not None:
            not_moved.append(failed)
            return
        moved.append(
            AttachmentMove(volume_id, step.source.node_id, step.target_node_id, step.source.mode)
        )

    def _drive(self, step: _Step) -> AttachmentNotMoved | None:
        """Detaches on the old node, then attaches on the new one; on a
        failure puts everything back and says why."""
        try:
            self._driver.detach(step.source_address, step.volume_id)
        except DriverError as exc:
            self._undo(step)
            return AttachmentNotMoved(
                step.volume_id,
                step.source.node_id,
                "DEVICE_BUSY",
                f"detaching from node {step.source.node_id} failed: {exc}",
            )
        try:
            device = self._driver.attach(
                step.target_address, step.volume_id, step.read_only, step.target_copies, step.mount
            )
        except DriverError as exc:
            best_effort(
                "re-attaching",
                self._driver.attach,
                step.source_address,
                step.volume_id,
                step.read_only,
                step.source_copies,
                step.mount,
            )
            self._undo(step)
            return AttachmentNotMoved(
                step.volume_id,
                step.source.node_id,
                "DRIVER_FAILED",
                f"attaching on node {step.target_node_id} failed and was rolled back: {exc}",
            )
        if device:
            with self._store.write() as s:
                row = repo.get(s, step.volume_id, step.target_node_id)
                if row is not None and row.device_path != device:
                    row.device_path = device
                    row.generation = bump_generation(s)
        return None

    def _undo(self, step: _Step) -> None:
        with self._store.write() as s:
            generation = bump_generation(s)
            repo.remove(s, step.volume_id, step.target_node_id)
            held = step.source
            repo.add(
                s,
                AttachmentRow(
                    volume_id=step.volume_id,
                    node_id=held.node_id,
                    mode=held.mode,
                    device_path=held.device_path,
                    attach_time=held.attach_time,
                    generation=generation,
                    mount_path=held.mount_path,
                    mount_options=held.mount_options,
                ),
            )
            assert step.record is not None
            if step.flushing:
                repo.forget_flush_move(s, step.record.volume_id, step.record.node_id)
            else:
                repo.record_flush_move(s, step.record)

    def _answer(
        self, node_id: str, moved: list[AttachmentMove], not_moved: list[AttachmentNotMoved]
    ) -> AttachmentsMoved:
        with self._store.read() as s:
            return AttachmentsMoved(node_id, moved, not_moved, current_generation(s))


def _not_moved(volume_id: str, node_id: str, exc: FailedPrecondition) -> AttachmentNotMoved:
    return AttachmentNotMoved(volume_id, node_id, exc.reason or "FAILED_PRECONDITION", str(exc))


def _pick_target(s: Session, node: NodeRow, volume_id: str) -> NodeRow | None:
    """The node to take a volume's attachment off ``node``: ONLINE, READY, not
    holding the volume already and below the attachment limit; the same
    zone first, then the fewest attachments, then by name."""
    holding = {r.node_id for r in repo.of_volume(s, volume_id)}
    nodes = node_repo.of_cluster(s, node.cluster_id)
    counts = repo.counts_on_nodes(s, [n.id for n in nodes])
    best: tuple[tuple[bool, int, str], NodeRow] | None = None
    for other in nodes:
        if other.id == node.id or other.id in holding:
            continue
        if other.state != NodeState.ONLINE or other.domain_state != DomainState.READY:
            continue
        count = counts.get(other.id, 0)
        if count >= MAX_ATTACHMENTS_PER_NODE:
            continue
        key = (other.zone != node.zone, count, other.name)
        if best is None or key < best[0]:
            best = (key, other)
    return best[1] if best is not None else None


def _move_record(s: Session, row: AttachmentRow, target_node_id: str, generation: int) -> None:
    """Moves an attachment's record to another node, with its mode and mount."""
    moved = AttachmentRow(
        volume_id=row.volume_id,
        node_id=target_node_id,
        mode=row.mode,
        device_path=row.device_path,
        attach_time=utcnow(),
        generation=generation,
        mount_path=row.mount_path,
        mount_options=list(row.mount_options),
    )
    repo.remove(s, row.volume_id, row.node_id)
    repo.add(s, moved)
    # Its copies that are away from now on miss what is written.
    node_repo.mark_stale(s, [row.volume_id])
