"""Domain objects and inputs of the topology: nodes, drives, pools.

Also the rules every topology object shares: label changes with Heketi's
change types, the generation check of an update, and the job guard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from osd.engine import paging
from osd.engine import validation as v
from osd.engine.common import Allocation
from osd.engine.enums import (
    CoordinatorRole,
    DomainState,
    DriveState,
    LabelOperation,
    NodeState,
)
from osd.engine.models import Capacity
from osd.errors import FailedPrecondition, FieldViolation, InvalidArgument
from osd.store import drives as drive_repo
from osd.store import nodes as node_repo
from osd.store import pools as pool_repo
from osd.store.models import DriveRow, NodeRow

# -- objects -------------------------------------------------------------------


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
class Forgotten:
    """What ForgetDrive released: the volumes and snapshots that lost a copy."""

    volume_ids: list[str]
    snapshot_ids: list[str]
    generation: int


@dataclass(frozen=True)
class Availability:
    """Volumes and snapshots whose allocations changed between ACTIVE and UNAVAILABLE
    (or were released) in a transaction, for whoever keeps their state."""

    volume_ids: frozenset[str]
    snapshot_ids: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.volume_ids or self.snapshot_ids)


# Called inside the write transaction that changed the allocations.
AvailabilityListener = Callable[[Session, Availability], None]


# -- inputs --------------------------------------------------------------------


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


@dataclass(frozen=True)
class PoolMembers:
    pool_id: str
    drive_ids: list[str] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    expected_generation: int = 0


# -- shared rules --------------------------------------------------------------


def check_label_change(change: ChangeLabels) -> dict[str, str]:
    """The labels of a change, checked: values only matter for SET and UPDATE."""
    if change.operation is None:
        raise InvalidArgument.field("operation", "is required: SET, UPDATE or DELETE")
    if change.operation is LabelOperation.DELETE:
        keys_only = {k: "" for k in change.labels}
        v.check_labels(keys_only)
        return keys_only
    return v.check_labels(change.labels)


def apply_labels(
    current: Mapping[str, str], operation: LabelOperation, labels: Mapping[str, str]
) -> dict[str, str]:
    """``current`` after a Heketi-style change; refuses a result over the label limit."""
    if operation is LabelOperation.SET:
        out = dict(labels)
    elif operation is LabelOperation.UPDATE:
        out = {**current, **labels}
    else:
        out = {k: val for k, val in current.items() if k not in labels}
    if len(out) > v.LABELS_MAX:
        raise InvalidArgument.field(
            "labels", f"the change would leave {len(out)} labels; at most {v.LABELS_MAX}"
        )
    return out


def job_in_progress(kind: str, object_id: str, job_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{kind} {object_id} is the target of unfinished job {job_id}",
        reason="JOB_IN_PROGRESS",
        metadata={"job_id": job_id},
    )


def confirmation_required(what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{what}; set yes_i_really_mean_it to confirm",
        reason="CONFIRMATION_REQUIRED",
    )


E = TypeVar("E", NodeState, CoordinatorRole, DomainState, DriveState)


def enum_value(enum: type[E], value: int, field_name: str) -> E:
    """``value`` as a member of ``enum``; UNSPECIFIED (0) or unknown is refused."""
    try:
        return enum(value)
    except ValueError:
        names = ", ".join(m.name for m in enum)
        raise InvalidArgument.field(field_name, f"{value} is not one of {names}") from None


def id_violations(value: str, field_name: str) -> list[FieldViolation]:
    """What is wrong with an id field, as violations (empty when it is fine)."""
    try:
        v.check_id(value, field_name)
    except InvalidArgument as exc:
        return list(exc.violations)
    return []


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument.fields(violations)


def decode_pair(token: str, kind: str, first: str, second: str) -> tuple[str, str] | None:
    """The key of a page token made of two strings (e.g. cluster id and name)."""
    after = paging.decode_token(token, kind)
    if after is None:
        return None
    a, b = after.get(first), after.get(second)
    if not isinstance(a, str) or not isinstance(b, str):
        raise InvalidArgument.field("page_token", f"is not a page token of a {kind} list")
    return a, b


class Unchanged(Exception):
    """Leaves a write transaction without committing: the change was a no-op.

    ``generation`` is the store generation before the (rolled back) bump.
    """

    def __init__(self, value: Any, generation: int) -> None:
        super().__init__("unchanged")
        self.value = value
        self.generation = generation


# -- rows to objects -----------------------------------------------------------


def node_from_row(row: NodeRow, usage: node_repo.NodeUsage) -> Node:
    return Node(
        id=row.id,
        cluster_id=row.cluster_id,
        name=row.name,
        zone=row.zone,
        management_addresses=list(row.management_addresses),
        storage_addresses=list(row.storage_addresses),
        labels=dict(row.labels),
        state=NodeState(row.state),
        coordinator_role=CoordinatorRole(row.coordinator_role),
        domain_state=DomainState(row.domain_state),
        capacity=Capacity(usage.total_bytes, usage.used_bytes),
        drive_count=usage.drive_count,
        active_job_id=row.active_job_id or "",
        create_time=row.create_time,
        update_time=row.update_time,
        generation=row.generation,
    )


def nodes_from_rows(session: Session, rows: list[NodeRow]) -> list[Node]:
    usage = node_repo.usage(session, [r.id for r in rows])
    return [node_from_row(r, usage[r.id]) for r in rows]


def drives_from_rows(session: Session, rows: list[DriveRow]) -> list[Drive]:
    """Drive objects for rows, with their allocation counts and pools, in row order."""
    ids = [r.id for r in rows]
    counts = drive_repo.allocation_counts(session, ids)
    pools = pool_repo.pools_of_drives(session, ids)
    return [
        Drive(
            id=r.id,
            node_id=r.node_id,
            cluster_id=r.cluster_id,
            device_path=r.device_path,
            description=r.description,
            labels=dict(r.labels),
            journal=r.journal,
            state=DriveState(r.state),
            capacity=Capacity(r.total_bytes, r.used_bytes),
            allocation_count=counts.get(r.id, 0),
            pool_ids=pools.get(r.id, []),
            model=r.model,
            serial=r.serial,
            ssd=r.ssd,
            active_job_id=r.active_job_id or "",
            create_time=r.create_time,
            update_time=r.update_time,
            generation=r.generation,
        )
        for r in rows
    ]
