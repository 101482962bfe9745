"""Cluster operations."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osd.engine.shared import paging
from osd.engine.shared import validation as v
from osd.engine.shared.allocation_math import provisioned_bytes
from osd.engine.shared.members import Member
from osd.engine.shared.models import Capacity, Changed, Created, ListQuery, Page
from osd.engine.shared.rows import check_generation, require
from osd.engine.topology.models import (
    Cluster,
    ClusterStatus,
    CreateCluster,
    Drive,
    RepairPolicy,
    RepairPolicyChange,
    ServiceHealth,
    Topology,
    UpdateCluster,
)
from osd.engine.topology.pools import pools_from_rows
from osd.engine.topology.views import drives_from_rows, nodes_from_rows
from osd.enums import DaemonState, DriveState, ServiceKind
from osd.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument
from osd.store import clusters as repo
from osd.store import drives as drive_repo
from osd.store import nodes as node_repo
from osd.store import pools as pool_repo
from osd.store.db import Store
from osd.store.models import ClusterRow, utcnow
from osd.store.state import bump_generation, current_generation


def repair_policy(row: ClusterRow, defaults: RepairPolicy) -> RepairPolicy:
    """The repair policy in force in a cluster: its own values, else ``defaults``
    (the daemon's settings)."""

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return RepairPolicy(
        paused=row.repair_paused,
        delay_seconds=pick(row.repair_delay_seconds, defaults.delay_seconds),
        maintenance_timeout_seconds=pick(
            row.repair_maintenance_timeout_seconds, defaults.maintenance_timeout_seconds
        ),
        max_repairs=pick(row.repair_max, defaults.max_repairs),
        max_repairs_per_drive=pick(row.repair_max_per_drive, defaults.max_repairs_per_drive),
    )


def _to_domain(row: ClusterRow, defaults: RepairPolicy | None = None) -> Cluster:
    return Cluster(
        id=row.id,
        name=row.name,
        labels=dict(row.labels),
        block=row.block,
        file=row.file,
        create_time=row.create_time,
        update_time=row.update_time,
        generation=row.generation,
        repair=repair_policy(row, defaults or RepairPolicy()),
    )


def _check_repair(change: RepairPolicyChange) -> None:
    violations = []
    for name in ("delay_seconds", "maintenance_timeout_seconds"):
        value = getattr(change, name)
        if value is not None and value < 0:
            violations.append(FieldViolation(f"repair.{name}", f"is {value}; 0 or more"))
    for name in ("max_repairs", "max_repairs_per_drive"):
        value = getattr(change, name)
        if value is not None and value < 1:
            violations.append(FieldViolation(f"repair.{name}", f"is {value}; at least 1"))
    if violations:
        raise InvalidArgument.fields(violations)


def _apply_repair(row: ClusterRow, change: RepairPolicyChange) -> None:
    if change.paused is not None:
        row.repair_paused = change.paused
    if change.delay_seconds is not None:
        row.repair_delay_seconds = change.delay_seconds
    if change.maintenance_timeout_seconds is not None:
        row.repair_maintenance_timeout_seconds = change.maintenance_timeout_seconds
    if change.max_repairs is not None:
        row.repair_max = change.max_repairs
    if change.max_repairs_per_drive is not None:
        row.repair_max_per_drive = change.max_repairs_per_drive


def _same_spec(row: ClusterRow, spec: CreateCluster) -> bool:
    return row.labels == spec.labels and row.block == spec.block and row.file == spec.file


class ClusterEngine:
    """Clusters. ``repair_defaults`` is the daemon's repair policy, which a
    cluster's own policy values override."""

    def __init__(self, store: Store, repair_defaults: RepairPolicy | None = None) -> None:
        self._store = store
        self.repair_defaults = repair_defaults or RepairPolicy()
        # Told (after the commit) when a cluster's repair policy changed.
        self.repair_changed: Callable[[], None] = lambda: None

    def _domain(self, row: ClusterRow) -> Cluster:
        return _to_domain(row, self.repair_defaults)

    def create(self, spec: CreateCluster) -> Created[Cluster]:
        v.check_name(spec.name)
        labels = v.check_labels(spec.labels)
        spec = CreateCluster(
            name=spec.name,
            labels=labels,
            block=True if spec.block is None else spec.block,
            file=True if spec.file is None else spec.file,
        )
        try:
            with self._store.write() as s:
                existing = repo.get_by_name(s, spec.name)
                if existing is not None:
                    return self._existing(existing, spec, current_generation(s))
                generation = bump_generation(s)
                now = utcnow()
                row = ClusterRow(
                    id=uuid.uuid4().hex,
                    name=spec.name,
                    labels=labels,
                    block=bool(spec.block),
                    file=bool(spec.file),
                    repair_paused=False,
                    create_time=now,
                    update_time=now,
                    generation=generation,
                )
                repo.add(s, row)
                return Created(self._domain(row), True, generation)
        except IntegrityError:
            # Another daemon sharing the store created the same name between our
            # look-up and our insert; answer as if we had seen it.
            with self._store.read() as s:
                existing = repo.get_by_name(s, spec.name)
                if existing is None:
                    raise
                return self._existing(existing, spec, current_generation(s))

    def _existing(self, row: ClusterRow, spec: CreateCluster, generation: int) -> Created[Cluster]:
        if not _same_spec(row, spec):
            raise AlreadyExists(
                f"cluster {spec.name!r} already exists with another spec",
                reason="CLUSTER_EXISTS",
                metadata={"name": spec.name, "cluster_id": row.id},
            )
        return Created(self._domain(row), False, generation)

    def inspect(self, cluster_id: str) -> Cluster:
        v.check_id(cluster_id, "cluster_id")
        return self._store.kept(
            ("cluster", cluster_id), lambda s, _: self._domain(require(s, ClusterRow, cluster_id))
        )

    def list(self, query: ListQuery) -> Page[Cluster]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "cluster", query)
        after = pages.after_str(query.page_token, "name")
        pattern = v.compile_regex(query.name_regex, "name_regex")
        wanted = v.check_labels(query.labels)

        def keep(row: ClusterRow) -> bool:
            if pattern is not None and not pattern.search(row.name):
                return False
            return all(row.labels.get(k) == val for k, val in wanted.items())

        with self._store.read() as s:
            rows, token = pages.take(
                repo.scan_by_name(s, after, size + 1),
                size,
                keep,
                lambda r: {"name": r.name},
            )
            return Page([self._domain(r) for r in rows], token)

    def update(self, change: UpdateCluster) -> Changed[Cluster]:
        v.check_id(change.cluster_id, "cluster_id")
        if change.name is not None:
            v.check_name(change.name)
        labels = v.check_labels(change.labels) if change.labels is not None else None
        if change.repair is not None:
            _check_repair(change.repair)
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = require(s, ClusterRow, change.cluster_id)
                check_generation("cluster", row.id, row.generation, change.expected_generation)
                if change.name is not None and change.name != row.name:
                    other = repo.get_by_name(s, change.name)
                    if other is not None:
                        raise AlreadyExists(
                            f"cluster {change.name!r} already exists",
                            reason="CLUSTER_EXISTS",
                            metadata={"name": change.name, "cluster_id": other.id},
                        )
                    row.name = change.name
                if labels is not None:
                    row.labels = labels
                if change.block is not None:
                    row.block = change.block
                if change.file is not None:
                    row.file = change.file
                if change.repair is not None:
                    _apply_repair(row, change.repair)
                row.update_time = utcnow()
                row.generation = generation
                s.flush()
                changed = Changed(self._domain(row), generation)
        except IntegrityError:
            raise AlreadyExists(
                f"cluster {change.name!r} already exists", reason="CLUSTER_EXISTS"
            ) from None
        if change.repair is not None:
            self.repair_changed()
        return changed

    def delete(self, cluster_id: str) -> int:
        v.check_id(cluster_id, "cluster_id")
        with self._store.write() as s:
            generation = bump_generation(s)
            require(s, ClusterRow, cluster_id)
            remaining = {k: n for k, n in repo.belongings(s, cluster_id).items() if n}
            if remaining:
                what = ", ".join(f"{n} {k}" for k, n in remaining.items())
                raise FailedPrecondition(
                    f"cluster {cluster_id} is not empty: it still has {what}",
                    reason="CLUSTER_NOT_EMPTY",
                    metadata={k: str(n) for k, n in remaining.items()},
                )
            repo.remove(s, cluster_id)
            return generation

    def status(self, cluster_id: str) -> ClusterStatus:
        v.check_id(cluster_id, "cluster_id")
        return self._store.kept(
            ("cluster-status", cluster_id), lambda s, g: self._status(s, cluster_id, g)
        )

    def services(self, cluster_id: str, daemons: Sequence[Member]) -> tuple[ServiceHealth, ...]:
        """The health of each service of the cluster: ``daemons`` (every daemon
        sharing the store, as :meth:`Members.list` gives them), less those that
        stopped cleanly and the agents of other clusters' nodes, then the
        cluster's drives."""
        v.check_id(cluster_id, "cluster_id")
        nodes, drives = self._store.kept(
            ("cluster-services", cluster_id), lambda s, _: self._service_rows(s, cluster_id)
        )
        out: tuple[ServiceHealth, ...] = tuple(
            ServiceHealth(
                kind=ServiceKind.NODE_AGENT if d.node_id else ServiceKind.DAEMON,
                name=d.id,
                node_id=d.node_id,
                up=d.state == DaemonState.SERVING,
                state=f"DAEMON_STATE_{d.state.name}",
                address=d.address,
            )
            for d in daemons
            if d.state != DaemonState.STOPPED and (not d.node_id or d.node_id in nodes)
        )
        return out + drives

    def _service_rows(
        self, s: Session, cluster_id: str
    ) -> tuple[frozenset[str], tuple[ServiceHealth, ...]]:
        """The cluster's node ids and the health of its drives, as stored."""
        require(s, ClusterRow, cluster_id)
        nodes = frozenset(node_repo.ids_of_cluster(s, cluster_id))
        drives = tuple(
            ServiceHealth(
                kind=ServiceKind.DRIVE,
                name=drive_id,
                node_id=node_id,
                up=state == DriveState.ONLINE,
                state=f"DRIVE_STATE_{DriveState(state).name}",
                address=device_path,
            )
            for drive_id, node_id, state, device_path in drive_repo.states_of_cluster(s, cluster_id)
        )
        return nodes, drives

    def topology(self, cluster_id: str) -> Topology:
        v.check_id(cluster_id, "cluster_id")
        return self._store.kept(
            ("cluster-topology", cluster_id), lambda s, g: self._topology(s, cluster_id, g)
        )

    def _topology(self, s: Session, cluster_id: str, generation: int) -> Topology:
        status = self._status(s, cluster_id, generation)
        node_rows = sorted(node_repo.of_cluster(s, cluster_id), key=lambda n: (n.zone, n.name))
        drives: dict[str, list[Drive]] = {}
        for drive in drives_from_rows(s, drive_repo.of_cluster(s, cluster_id)):
            drives.setdefault(drive.node_id, []).append(drive)
        return Topology(
            status=status,
            nodes=[(n, drives.get(n.id, [])) for n in nodes_from_rows(s, node_rows)],
            pools=pools_from_rows(s, pool_repo.of_cluster(s, cluster_id)),
        )

    def _status(self, s: Session, cluster_id: str, generation: int) -> ClusterStatus:
        cluster = self._domain(require(s, ClusterRow, cluster_id))
        counts = repo.status_counts(s, cluster_id)
        total, used = repo.capacity(s, cluster_id)
        layouts = repo.volume_layout_counts(s, cluster_id).get(cluster_id, [])
        return ClusterStatus(
            cluster=cluster,
            node_count=counts.get("nodes", 0),
            drive_count=counts.get("drives", 0),
            pool_count=counts.get("pools", 0),
            volume_count=counts.get("volumes", 0),
            snapshot_count=counts.get("snapshots", 0),
            capacity=Capacity(total_bytes=total, used_bytes=used),
            # Per distinct layout, not per volume: the same whatever their number.
            provisioned_bytes=provisioned_bytes(layouts),
            generation=generation,
        )
