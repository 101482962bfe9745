"""Domain objects and inputs of the topology: clusters, nodes, drives, pools."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from osd.engine.jobs.models import Job
from osd.engine.shared.models import Allocation, Capacity
from osd.enums import (
    CoordinatorRole,
    DomainState,
    DriveState,
    LabelOperation,
    NodeState,
    ServiceKind,
)


@dataclass(frozen=True)
class Node:
    id: str
    cluster_id: str
    name: str
    zone: str
    management_addresses: list[str]
    storage_addresses: list[str]
    labels: dict[str, str]
    state: NodeState
    coordinator_role: CoordinatorRole
    domain_state: DomainState
    capacity: Capacity
    drive_count: int
    active_job_id: str
    create_time: datetime
    update_time: datetime
    generation: int


@dataclass(frozen=True)
class Drive:
    id: str
    node_id: str
    cluster_id: str
    device_path: str
    description: str
    labels: dict[str, str]
    journal: bool
    state: DriveState
    capacity: Capacity
    allocation_count: int
    pool_ids: list[str]
    model: str
    serial: str
    ssd: bool
    active_job_id: str
    create_time: datetime
    update_time: datetime
    generation: int


@dataclass(frozen=True)
class Pool:
    id: str
    cluster_id: str
    name: str
    labels: dict[str, str]
    drive_ids: list[str]
    node_ids: list[str]
    capacity: Capacity
    volume_count: int
    active_job_id: str
    create_time: datetime
    update_time: datetime
    generation: int
    auto_balance: bool = False
    auto_balance_threshold_percent: float = 10.0


@dataclass(frozen=True)
class NodeDetail:
    node: Node
    drives: list[Drive]


@dataclass(frozen=True)
class DriveDetail:
    drive: Drive
    allocations: list[Allocation]


@dataclass(frozen=True)
class PoolDetail:
    pool: Pool
    drives: list[Drive]


@dataclass(frozen=True)
class Draining:
    """What DrainNode did: the node DRAINING and the NODE_DRAIN job."""

    node: Node
    job: Job
    generation: int


@dataclass(frozen=True)
class Ejected:
    """What EjectDrive did: a hard eject (no job) or a soft one (its job)."""

    drive: Drive
    job: Job | None
    generation: int


@dataclass(frozen=True)
class SetDriveState:
    """The raw enum number as given; the engine checks it."""

    drive_id: str
    state: int
    confirmed: bool = False
    expected_generation: int = 0


@dataclass(frozen=True)
class DriveStateSet:
    """What SetDriveState did; a readmit names the volumes and snapshots
    whose copy on the drive is live again, and those whose copy waits for a
    resync (a repair)."""

    drive: Drive
    generation: int
    restored_volume_ids: list[str] = field(default_factory=list)
    resync_volume_ids: list[str] = field(default_factory=list)
    restored_snapshot_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Forgotten:
    """What ForgetDrive released: the volumes and snapshots that lost a copy."""

    volume_ids: list[str]
    snapshot_ids: list[str]
    generation: int


@dataclass(frozen=True)
class CreateNode:
    cluster_id: str
    name: str
    zone: str
    management_addresses: list[str]
    storage_addresses: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateNode:
    """Fields left as None are not changed."""

    node_id: str
    name: str | None = None
    zone: str | None = None
    management_addresses: list[str] | None = None
    storage_addresses: list[str] | None = None
    labels: dict[str, str] | None = None
    expected_generation: int = 0


@dataclass(frozen=True)
class ChangeLabels:
    """A label change with Heketi's change types; ``operation`` None is unset."""

    object_id: str
    operation: LabelOperation | None
    labels: dict[str, str]
    expected_generation: int = 0


@dataclass(frozen=True)
class SetNodeState:
    """Raw enum numbers as given; None is unset. The engine checks the values."""

    node_id: str
    state: int | None = None
    coordinator_role: int | None = None
    domain_state: int | None = None
    expected_generation: int = 0


@dataclass(frozen=True)
class ListNodes:
    page_size: int = 0
    page_token: str = ""
    cluster_id: str = ""
    states: tuple[int, ...] = ()
    zone: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name_regex: str = ""


@dataclass(frozen=True)
class CreateDrive:
    node_id: str
    device_path: str
    journal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    yes_i_really_mean_it: bool = False


@dataclass(frozen=True)
class ListDrives:
    page_size: int = 0
    page_token: str = ""
    node_id: str = ""
    cluster_id: str = ""
    states: tuple[int, ...] = ()
    pool_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name_regex: str = ""


@dataclass(frozen=True)
class UpdateDrive:
    """Fields left as None are not changed."""

    drive_id: str
    description: str | None = None
    labels: dict[str, str] | None = None
    expected_generation: int = 0


@dataclass(frozen=True)
class CreatePool:
    cluster_id: str
    name: str
    drive_ids: list[str] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListPools:
    page_size: int = 0
    page_token: str = ""
    cluster_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name_regex: str = ""


@dataclass(frozen=True)
class UpdatePool:
    """Fields left as None are not changed."""

    pool_id: str
    name: str | None = None
    labels: dict[str, str] | None = None
    expected_generation: int = 0
    auto_balance: bool | None = None
    auto_balance_threshold_percent: float | None = None


@dataclass(frozen=True)
class PoolMembers:
    pool_id: str
    drive_ids: list[str] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    expected_generation: int = 0


@dataclass(frozen=True)
class Cluster:
    id: str
    name: str
    labels: dict[str, str]
    block: bool
    file: bool
    create_time: datetime
    update_time: datetime
    generation: int
    repair: RepairPolicy = field(default_factory=lambda: RepairPolicy())


@dataclass(frozen=True)
class RepairPolicy:
    """How the repair controller treats a cluster (see osd.engine.volumes.repair):
    whether it is paused, how long a volume stays degraded before its repair
    starts (longer for copies on a node in MAINTENANCE), and how many repairs
    may be unfinished at once in the cluster and write to one drive."""

    paused: bool = False
    delay_seconds: int = 300
    maintenance_timeout_seconds: int = 3600
    max_repairs: int = 2
    max_repairs_per_drive: int = 1


@dataclass(frozen=True)
class RepairPolicyChange:
    """Fields left as None are not changed."""

    paused: bool | None = None
    delay_seconds: int | None = None
    maintenance_timeout_seconds: int | None = None
    max_repairs: int | None = None
    max_repairs_per_drive: int | None = None


@dataclass(frozen=True)
class CreateCluster:
    """``block`` and ``file`` left as None allow that kind of volume."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    block: bool | None = None
    file: bool | None = None


@dataclass(frozen=True)
class UpdateCluster:
    """Fields left as None are not changed."""

    cluster_id: str
    name: str | None = None
    labels: dict[str, str] | None = None
    block: bool | None = None
    file: bool | None = None
    expected_generation: int = 0
    repair: RepairPolicyChange | None = None


@dataclass(frozen=True)
class ClusterStatus:
    cluster: Cluster
    node_count: int
    drive_count: int
    pool_count: int
    volume_count: int
    snapshot_count: int
    capacity: Capacity
    provisioned_bytes: int
    generation: int


@dataclass(frozen=True)
class Topology:
    """A cluster's whole tree: its status, each node with its drives, and its
    pools."""

    status: ClusterStatus
    nodes: list[tuple[Node, list[Drive]]]
    pools: list[Pool]


@dataclass(frozen=True)
class ServiceHealth:
    """A service of a cluster (a daemon, a node's agent, a drive) and whether
    it serves; ``state`` is the name of its DaemonState or DriveState."""

    kind: ServiceKind
    name: str
    node_id: str
    up: bool
    state: str
    address: str
