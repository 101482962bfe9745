"""The Service API's long operations: drive add, drive replace and pool
rebalance (OpenStorage's Service), each started as a job, and their status.

The starts validate the request, ask the driver about a new device (with
no transaction open), and record the job through the job engine, whose
kinds (osd.engine.jobs.kinds) do the rest.

A pool's rebalance status agrees with its latest job's result: DONE only for a
job that reached its goal (a DONE job whose result says it fell short reports
FAILED), and a job that fell short says in its result what is missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from sqlalchemy.orm import Session

from osd.engine.drivers import StorageDriver
from osd.engine.jobs.jobs import JobEngine
from osd.engine.jobs.kinds.drive_add import DriveAddRequest, DriveAddSpec
from osd.engine.jobs.kinds.drive_replace import DriveReplaceRequest, Probe, address_of
from osd.engine.jobs.kinds.pool_rebalance import (
    Balancer,
    PoolRebalanceSpec,
    missing_copies,
    rebuild_needs,
    spread,
    spread_percent,
)
from osd.engine.jobs.models import Job, JobProgress, Started
from osd.engine.jobs.records import RecordError
from osd.engine.placement.cluster_view import ClusterView
from osd.engine.shared import validation as v
from osd.engine.shared.rows import get_drive, get_node
from osd.engine.shared.validation import id_violations, raise_if
from osd.engine.topology.drives import (
    device_path_violation,
    new_drive_violations,
    probe_device,
    takes_files,
)
from osd.engine.topology.models import Drive, Node
from osd.engine.topology.views import drives_from_rows, nodes_from_rows
from osd.enums import JobKind, JobState, NodeState
from osd.errors import FieldViolation, NotFound
from osd.store import drives as drive_repo
from osd.store import jobs as repo
from osd.store import pools as pool_repo
from osd.store.db import Store
from osd.store.models import ClusterRow, DriveRow, NodeRow, PoolRow


class RebalanceStatus(IntEnum):
    """The proto's RebalanceStatus (numbers are the proto's)."""

    NONE = 1
    PENDING = 2
    RUNNING = 3
    PAUSED = 4
    DONE = 5
    FAILED = 6
    CANCELLED = 7


_REBALANCE_OF_JOB = {
    JobState.PENDING: RebalanceStatus.PENDING,
    JobState.RUNNING: RebalanceStatus.RUNNING,
    JobState.PAUSED: RebalanceStatus.PAUSED,
    JobState.DONE: RebalanceStatus.DONE,
    JobState.FAILED: RebalanceStatus.FAILED,
    JobState.CANCELLED: RebalanceStatus.CANCELLED,
}


@dataclass(frozen=True)
class StartDriveAdd:
    node_id: str
    device_path: str
    journal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    pool_ids: list[str] = field(default_factory=list)
    yes_i_really_mean_it: bool = False


@dataclass(frozen=True)
class StartDriveReplace:
    """Exactly one of ``target_device_path`` and ``target_drive_id`` is set."""

    source_drive_id: str
    target_device_path: str = ""
    target_drive_id: str = ""
    yes_i_really_mean_it: bool = False


@dataclass(frozen=True)
class DriveAddStarted:
    drive: Drive | None
    job: Job
    started: bool
    generation: int


@dataclass(frozen=True)
class DriveAddStatus:
    job: Job
    drive: Drive | None


@dataclass(frozen=True)
class DriveReplaceStarted:
    source: Drive
    target: Drive | None
    job: Job
    started: bool
    generation: int


@dataclass(frozen=True)
class DriveReplaceStatus:
    job: Job
    source: Drive
    target: Drive | None


@dataclass(frozen=True)
class PlannedMove:
    volume_id: str
    index: int
    allocation_id: str
    source_drive_id: str
    target_drive_id: str
    bytes: int


@dataclass(frozen=True)
class PlannedDrive:
    drive_id: str
    node_id: str
    total_bytes: int
    used_bytes_before: int
    used_bytes_after: int


@dataclass(frozen=True)
class PoolRebalancePlan:
    """What a rebalance started now would move; nothing is changed."""

    moves: list[PlannedMove]
    complete: bool
    drives: list[PlannedDrive]
    spread_percent_before: float
    spread_percent_after: float
    missing_copies: int

    @property
    def moved_bytes(self) -> int:
        """The bytes the listed moves copy."""
        return sum(m.bytes for m in self.moves)


# The most moves a preview lists.
PLAN_PREVIEW_MOVES = 1000


@dataclass(frozen=True)
class PoolRebalanceStatus:
    status: RebalanceStatus
    progress: JobProgress
    job: Job | None
    spread_percent: float
    missing_copies: int

    @property
    def unfinished(self) -> bool:
        """Whether the latest rebalance is still to end."""
        return self.status in (
            RebalanceStatus.PENDING,
            RebalanceStatus.RUNNING,
            RebalanceStatus.PAUSED,
        )


@dataclass(frozen=True)
class PoolBalance:
    """A pool's balance in a cluster's report."""

    pool_id: str
    pool_name: str
    auto_balance: bool
    auto_balance_threshold_percent: float
    status: PoolRebalanceStatus


class ServiceEngine:
    def __init__(self, store: Store, driver: StorageDriver, jobs: JobEngine) -> None:
        self._store = store
        self._driver = driver
        self._jobs = jobs

    # -- drive add ------------------------------------------------------------------

    def start_drive_add(self, spec: StartDriveAdd) -> DriveAddStarted:
        violations = new_drive_violations(
            spec.node_id,
            spec.device_path,
            spec.description,
            spec.labels,
            files=takes_files(self._driver),
        )
        for i, pool_id in enumerate(spec.pool_ids):
            violations += id_violations(pool_id, f"pool_ids[{i}]")
        raise_if(violations)
        with self._store.read() as s:
            node = get_node(s, spec.node_id)
            taken = drive_repo.get_by_device(s, node.id, spec.device_path) is not None
            online = node.state == NodeState.ONLINE
            name, address = node.name, address_of(node)
        probe = None
        if not taken and online:
            probe = self._probe(name, address, spec.device_path, "device_path")
        request = DriveAddRequest(
            node_id=spec.node_id,
            device_path=spec.device_path,
            journal=spec.journal,
            labels=dict(spec.labels),
            description=spec.description,
            pool_ids=tuple(spec.pool_ids),
            yes_i_really_mean_it=spec.yes_i_really_mean_it,
            probe=probe,
        )
        started = self._jobs.start(JobKind.DRIVE_ADD, request)
        with self._store.read() as s:
            return DriveAddStarted(
                self._drive(s, started.job.target.id),
                started.job,
                started.started,
                started.generation,
            )

    def drive_add_status(self, node_id: str, device_path: str) -> DriveAddStatus:
        violations = id_violations(node_id, "node_id")
        problem = device_path_violation(device_path, files=takes_files(self._driver))
        if problem:
            violations.append(problem)
        raise_if(violations)
        with self._store.read() as s:
            node = get_node(s, node_id)
            for row in repo.newest_of_kind(s, JobKind.DRIVE_ADD, node.cluster_id):
                if _adds(row.spec, node.id, device_path):
                    return DriveAddStatus(self._jobs.to_domain(row), self._drive(s, row.target_id))
        raise NotFound(
            f"no drive add was started for {device_path} on node {node.name}",
            metadata={"kind": "drive add", "field": "device_path", "id": device_path},
            violations=(FieldViolation("device_path", "no drive add was started for it"),),
        )

    # -- drive replace --------------------------------------------------------------

    def start_drive_replace(self, spec: StartDriveReplace) -> DriveReplaceStarted:
        violations = id_violations(spec.source_drive_id, "source_drive_id")
        if spec.target_drive_id:
            violations += id_violations(spec.target_drive_id, "target_drive_id")
        elif spec.target_device_path:
            problem = device_path_violation(
                spec.target_device_path, files=takes_files(self._driver)
            )
            if problem:
                violations.append(FieldViolation("target_device_path", problem.description))
        else:
            violations += [
                FieldViolation(f, "a target is required: target_device_path or target_drive_id")
                for f in ("target_device_path", "target_drive_id")
            ]
        raise_if(violations)
        with self._store.read() as s:
            source = get_drive(s, spec.source_drive_id, "source_drive_id")
            node = s.get_one(NodeRow, source.node_id)
            unfinished = repo.unfinished(s, JobKind.DRIVE_REPLACE, source.id) is not None
            probe = (
                not unfinished
                and not spec.target_drive_id
                and drive_repo.get_by_device(s, node.id, spec.target_device_path) is None
            )
            name, address = node.name, address_of(node)
        request = DriveReplaceRequest(
            source_drive_id=spec.source_drive_id,
            target_drive_id=spec.target_drive_id,
            target_device_path=spec.target_device_path,
            yes_i_really_mean_it=spec.yes_i_really_mean_it,
            probe=(
                self._probe(name, address, spec.target_device_path, "target_device_path")
                if probe
                else None
            ),
        )
        started = self._jobs.start(JobKind.DRIVE_REPLACE, request)
        with self._store.read() as s:
            source_view, target_view = self._replace_drives(s, started.job)
            return DriveReplaceStarted(
                source_view, target_view, started.job, started.started, started.generation
            )

    def drive_replace_status(self, source_drive_id: str) -> DriveReplaceStatus:
        v.check_id(source_drive_id, "source_drive_id")
        with self._store.read() as s:
            get_drive(s, source_drive_id, "source_drive_id")
            row = repo.latest(s, JobKind.DRIVE_REPLACE, source_drive_id)
            if row is None:
                raise NotFound(
                    f"no replace was started for drive {source_drive_id}",
                    metadata={"kind": "drive replace", "field": "source_drive_id"},
                    violations=(
                        FieldViolation("source_drive_id", "no replace was started for it"),
                    ),
                )
            job = self._jobs.to_domain(row)
            source, target = self._replace_drives(s, job)
            return DriveReplaceStatus(job, source, target)

    def _replace_drives(self, s: Session, job: Job) -> tuple[Drive, Drive | None]:
        source = self._drive(s, job.target.id)
        assert source is not None
        target_id = job.related[0].id if job.related else ""
        return source, self._drive(s, target_id) if target_id else None

    # -- pool rebalance -------------------------------------------------------------

    def start_pool_rebalance(self, pool_id: str) -> Started:
        v.check_id(pool_id, "pool_id")
        return self._jobs.start(JobKind.POOL_REBALANCE, PoolRebalanceSpec(pool_id))

    def pool_rebalance_status(self, pool_id: str) -> PoolRebalanceStatus:
        v.check_id(pool_id, "pool_id")
        with self._store.read() as s:
            pool = s.get(PoolRow, pool_id)
            if pool is None:
                raise NotFound.object("pool", "pool_id", pool_id)
            return self._pool_status(s, pool)

    def cluster_rebalance_status(self, cluster_id: str) -> list[PoolBalance]:
        """Every pool of a cluster with its rebalance status, by name."""
        v.check_id(cluster_id, "cluster_id")
        with self._store.read() as s:
            if s.get(ClusterRow, cluster_id) is None:
                raise NotFound.object("cluster", "cluster_id", cluster_id)
            return [
                PoolBalance(
                    pool.id,
                    pool.name,
                    pool.auto_balance,
                    pool.auto_balance_threshold_percent,
                    self._pool_status(s, pool),
                )
                for pool in pool_repo.of_cluster(s, cluster_id)
            ]

    def _pool_status(self, s: Session, pool: PoolRow) -> PoolRebalanceStatus:
        row = repo.latest(s, JobKind.POOL_REBALANCE, pool.id)
        job = self._jobs.to_domain(row) if row is not None else None
        return PoolRebalanceStatus(
            status=_rebalance_status(job),
            progress=job.progress if job else JobProgress(),
            job=job,
            spread_percent=spread_percent(s, pool.id),
            missing_copies=missing_copies(s, pool),
        )

    def pool_rebalance_plan(self, pool_id: str) -> PoolRebalancePlan:
        """The balance moves a rebalance of the pool would make now, planned
        on a copy of the topology as the job plans them."""
        v.check_id(pool_id, "pool_id")
        with self._store.read() as s:
            pool = s.get(PoolRow, pool_id)
            if pool is None:
                raise NotFound.object("pool", "pool_id", pool_id)
            view = ClusterView(s, pool.cluster_id)
            volumes = repo.volumes_of_pool(s, pool.id)
            allocs = repo.allocations_of_volumes(s, [vol.id for vol in volumes])
            balancer = Balancer(s, view, pool.id, volumes, allocs)
            before = {d.id: d.used for d in balancer.disks}
            planned = balancer.plan(PLAN_PREVIEW_MOVES + 1)
            complete = len(planned) <= PLAN_PREVIEW_MOVES
            planned = planned[:PLAN_PREVIEW_MOVES]
            # The drives as the listed moves leave them (the plan may go one further).
            after = dict(before)
            where = {a.id: a.drive_id for a in allocs}
            listed: list[PlannedMove] = []
            for alloc, target in planned:
                source = where[alloc.id]
                listed.append(
                    PlannedMove(
                        alloc.volume_id or "", alloc.index, alloc.id, source, target.id, alloc.bytes
                    )
                )
                after[source] -= alloc.bytes
                after[target.id] += alloc.bytes
                where[alloc.id] = target.id
            totals = {d.id: (d.node_id, d.total) for d in balancer.disks}
            return PoolRebalancePlan(
                moves=listed,
                complete=complete,
                drives=[
                    PlannedDrive(d, totals[d][0], totals[d][1], before[d], after[d])
                    for d in sorted(before)
                ],
                spread_percent_before=spread((before[d], totals[d][1]) for d in before),
                spread_percent_after=spread((after[d], totals[d][1]) for d in after),
                missing_copies=len(rebuild_needs(view, volumes, allocs)),
            )

    # -- helpers --------------------------------------------------------------------

    def _probe(self, node_name: str, address: str, device_path: str, field: str) -> Probe:
        """What the driver finds at ``device_path`` (no transaction open)."""
        info = probe_device(self._driver, node_name, address, device_path, field)
        return Probe(info.size_bytes, info.has_data, info.rotational)

    @staticmethod
    def _node(s: Session, row: NodeRow) -> Node:
        s.flush()
        return nodes_from_rows(s, [row])[0]

    @staticmethod
    def _drive(s: Session, drive_id: str) -> Drive | None:
        row = s.get(DriveRow, drive_id) if drive_id else None
        return drives_from_rows(s, [row])[0] if row is not None else None


def _rebalance_status(job: Job | None) -> RebalanceStatus:
    """The rebalance status of a pool whose latest rebalance is ``job``: the job's
    state, except that a DONE job whose result is not complete (it did not
    restore every copy) is FAILED."""
    if job is None:
        return RebalanceStatus.NONE
    if job.state == JobState.DONE and job.result is not None and not job.result.complete:
        return RebalanceStatus.FAILED
    return _REBALANCE_OF_JOB[job.state]


def _adds(spec: object, node_id: str, device_path: str) -> bool:
    """Whether the DRIVE_ADD job of ``spec`` (as stored) adds ``device_path`` of the
    node ``node_id`` (False when the spec cannot be read)."""
    try:
        add = DriveAddSpec.from_json(spec)
    except RecordError:
        return False
    return add.node_id == node_id and add.device_path == device_path
