"""Domain objects and inputs of volumes, snapshots, attachments and templates.

Inputs carry raw numbers as the request gave them (enums as ints, so that an
unknown value can be refused naming its field); outputs carry IntEnums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from osd.engine.shared.models import Allocation, Capacity, Changed, Created
from osd.engine.shared.sizes import SizeSpec
from osd.enums import (
    AttachMode,
    CopyLoss,
    Provisioning,
    SnapshotState,
    SourceKind,
    VolumeKind,
    VolumeState,
)

if TYPE_CHECKING:
    from osd.engine.jobs.models import Job


@dataclass(frozen=True)
class Durability:
    """``type`` is a DurabilityType value; counts of 0 take their defaults."""

    type: int = 0
    replicas: int = 0
    data_fragments: int = 0
    redundancy_fragments: int = 0


@dataclass(frozen=True)
class Placement:
    """``failure_domain`` is a FailureDomain value; empty pools mean any drive."""

    pool_id: str = ""
    tail_pool_id: str = ""
    failure_domain: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    drive_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Qos:
    """0 means unlimited."""

    iops_limit: int = 0
    bandwidth_limit_bytes: int = 0


@dataclass(frozen=True)
class Source:
    """Where a volume's initial data comes from; NONE with an empty id for none."""

    kind: SourceKind = SourceKind.NONE
    id: str = ""


@dataclass(frozen=True)
class Usage:
    provisioned_bytes: int
    allocated_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class Volume:
    id: str
    cluster_id: str
    name: str
    kind: VolumeKind
    size_bytes: int
    durability: Durability
    placement: Placement
    provisioning: Provisioning
    snapshot_factor: float
    qos: Qos
    labels: dict[str, str]
    template_id: str
    source: Source
    parent_snapshot_id: str
    multi_attach: bool
    state: VolumeState
    usage: Usage
    attachment_count: int
    snapshot_count: int
    active_job_id: str
    create_time: datetime
    update_time: datetime
    generation: int
    copies: Copies = field(default_factory=lambda: Copies(0, 0))
    owner: str = ""
    public: bool = False
    filesystem: int = 0  # a Filesystem value for a FILE volume
    acl: tuple[Grant, ...] = ()


@dataclass(frozen=True)
class Grant:
    """One entry of a volume's access list: a user or a group, and its access."""

    kind: str  # "user" or "group"
    name: str
    access: int  # an Access value (checked on the way in)


@dataclass(frozen=True)
class MissingCopy:
    """A declared copy that is not live, and why; the allocation fields are empty
    when its allocation is gone."""

    index: int
    loss: CopyLoss
    allocation_id: str = ""
    drive_id: str = ""
    node_id: str = ""


@dataclass(frozen=True)
class Copies:
    """A volume's copies as repair sees them (see osd.engine.volumes.health)."""

    declared: int
    live: int
    missing: tuple[MissingCopy, ...] = ()
    repair_job_id: str = ""
    degraded_time: datetime | None = None


@dataclass(frozen=True)
class RepairStarted:
    """RepairVolume's answer: the volume, its repair job, whether it is new."""

    volume: Volume
    job: Job
    started: bool
    generation: int


@dataclass(frozen=True)
class CreatedVolume(Created[Volume]):
    """A create's result, with the VOLUME_COPY job when the source is a volume."""

    job: Job | None = None


@dataclass(frozen=True)
class CreatedSnapshot(Created["Snapshot"]):
    """A snapshot create's result, with the SNAPSHOT_COPY job when the snapshot
    is a full copy."""

    job: Job | None = None


@dataclass(frozen=True)
class ChangedVolume(Changed[Volume]):
    """An update's result, with the VOLUME_REPLICA_CHANGE or VOLUME_MOVE job it started."""

    job: Job | None = None


@dataclass(frozen=True)
class Attachment:
    volume_id: str
    node_id: str
    mode: AttachMode
    device_path: str
    attach_time: datetime
    generation: int
    mount_path: str = ""
    mount_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class SnapshotAttachment:
    """A snapshot attached to a node, read-only."""

    snapshot_id: str
    node_id: str
    device_path: str
    attach_time: datetime
    generation: int


@dataclass(frozen=True)
class VolumeDetail:
    """A volume with its allocations (by index) and its attachments."""

    volume: Volume
    allocations: list[Allocation]
    attachments: list[Attachment]


@dataclass(frozen=True)
class Snapshot:
    id: str
    cluster_id: str
    name: str
    auto_named: bool
    volume_id: str
    size_bytes: int
    durability: Durability
    labels: dict[str, str]
    image: bool
    state: SnapshotState
    space_used_bytes: int
    clone_count: int
    datastore_version_count: int
    create_time: datetime
    update_time: datetime
    generation: int
    owner: str = ""
    parent_snapshot_id: str = ""


@dataclass(frozen=True)
class SnapshotDetail:
    snapshot: Snapshot
    allocations: list[Allocation]
    attachments: list[SnapshotAttachment] = field(default_factory=list)


@dataclass(frozen=True)
class Template:
    """Unset defaults are None (durability, placement, qos) or 0."""

    id: str
    cluster_id: str
    name: str
    labels: dict[str, str]
    durability: Durability | None
    placement: Placement | None
    qos: Qos | None
    size_bytes: int
    provisioning: int
    snapshot_factor: float
    kind: int
    volume_count: int
    create_time: datetime
    update_time: datetime
    generation: int
    owner: str = ""


# -- inputs --------------------------------------------------------------------


@dataclass(frozen=True)
class CreateVolume:
    """CreateVolume's request. None (or 0) fields take the template's, then the defaults."""

    name: str
    cluster_id: str = ""
    size: SizeSpec | None = None
    durability: Durability | None = None
    placement: Placement | None = None
    provisioning: int = 0
    snapshot_factor: float | None = None
    qos: Qos | None = None
    labels: dict[str, str] = field(default_factory=dict)
    template_id: str = ""
    source: Source = field(default_factory=Source)
    kind: int = 0
    multi_attach: bool = False
    filesystem: int = 0


@dataclass(frozen=True)
class VolumeQuery:
    page_size: int = 0
    page_token: str = ""
    cluster_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name_regex: str = ""
    pool_id: str = ""
    node_id: str = ""
    states: tuple[int, ...] = ()
    template_id: str = ""
    datastore_version_id: str = ""
    degraded: bool = False
    repairing: bool = False
    parent_snapshot_id: str = ""


@dataclass(frozen=True)
class UpdateVolume:
    """Fields left as None are not changed."""

    volume_id: str
    name: str | None = None
    size: SizeSpec | None = None
    # Grow by this much (text with a unit), from the size at the update.
    size_add: str | None = None
    iops_limit: int | None = None
    bandwidth_limit_bytes: int | None = None
    labels: dict[str, str] | None = None
    multi_attach: bool | None = None
    replicas: int | None = None
    placement: Placement | None = None
    owner: str | None = None
    public: bool | None = None
    acl: tuple[Grant, ...] | None = None
    shrink_ok: bool = False
    expected_generation: int = 0
    # yes_i_really_mean_it: a replica count of 1 loses redundancy on purpose.
    confirmed: bool = False
    # The template the volume is recorded as made from ("": none).
    template_id: str | None = None


@dataclass(frozen=True)
class Deleted:
    deleted: bool
    generation: int


@dataclass(frozen=True)
class CreateSnapshot:
    volume_id: str
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotQuery:
    page_size: int = 0
    page_token: str = ""
    volume_id: str = ""
    cluster_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name_regex: str = ""
    images_only: bool = False
    parent_snapshot_id: str = ""


@dataclass(frozen=True)
class Rebase:
    """A new parent for a volume or a snapshot (``object_id``); empty for none."""

    object_id: str
    parent_snapshot_id: str = ""
    expected_generation: int = 0


@dataclass(frozen=True)
class UpdateSnapshot:
    snapshot_id: str
    name: str | None = None
    labels: dict[str, str] | None = None
    image: bool | None = None
    expected_generation: int = 0


@dataclass(frozen=True)
class FreezeVolume:
    volume_id: str
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Attached:
    attachment: Attachment
    attached: bool
    generation: int


@dataclass(frozen=True)
class Detached:
    node_ids: list[str]
    generation: int


@dataclass(frozen=True)
class SnapshotAttached:
    attachment: SnapshotAttachment
    attached: bool
    generation: int


@dataclass(frozen=True)
class AttachmentMove:
    """An attachment a flush or a ready moved between nodes."""

    volume_id: str
    from_node_id: str
    to_node_id: str
    mode: AttachMode


@dataclass(frozen=True)
class AttachmentNotMoved:
    """An attachment a flush or a ready left where it is, and why."""

    volume_id: str
    node_id: str
    reason: str
    message: str


@dataclass(frozen=True)
class AttachmentsMoved:
    """What a flush or a ready did: the node after it, what moved, what did not."""

    node_id: str
    moved: list[AttachmentMove]
    not_moved: list[AttachmentNotMoved]
    generation: int


@dataclass(frozen=True)
class AttachmentQuery:
    page_size: int = 0
    page_token: str = ""
    volume_id: str = ""
    node_id: str = ""
    cluster_id: str = ""


@dataclass(frozen=True)
class AttachmentChange:
    volume_id: str
    detach_node_ids: tuple[str, ...] = ()
    detach_all: bool = False
    read_only_node_ids: tuple[str, ...] = ()
    read_write_node_ids: tuple[str, ...] = ()
    force: bool = False


@dataclass(frozen=True)
class Reassigned:
    attachments: list[Attachment]
    generation: int


@dataclass(frozen=True)
class CreateTemplate:
    cluster_id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    durability: Durability | None = None
    placement: Placement | None = None
    qos: Qos | None = None
    size: SizeSpec | None = None
    provisioning: int = 0
    snapshot_factor: float | None = None
    kind: int = 0


@dataclass(frozen=True)
class TemplateQuery:
    page_size: int = 0
    page_token: str = ""
    cluster_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    name_regex: str = ""


@dataclass(frozen=True)
class UpdateTemplate:
    """Fields named in ``paths`` change; an unset (None or 0) value removes the default."""

    template_id: str
    paths: frozenset[str]
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    durability: Durability | None = None
    placement: Placement | None = None
    qos: Qos | None = None
    size: SizeSpec | None = None
    provisioning: int = 0
    snapshot_factor: float = 0.0
    kind: int = 0
    expected_generation: int = 0
    # Apply the changed qos, durability and placement to the template's volumes.
    propagate: bool = False
    # yes_i_really_mean_it: a propagated single copy may drop redundancy.
    confirmed: bool = False


@dataclass(frozen=True)
class Refusal:
    """A volume a propagated template change left alone: UpdateVolume's refusal."""

    volume_id: str
    reason: str
    message: str


@dataclass(frozen=True)
class Propagation:
    """What a propagated template change did to the template's volumes."""

    updated_volume_ids: list[str] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    unchanged_count: int = 0
    hidden_count: int = 0


@dataclass(frozen=True)
class ChangedTemplate(Changed[Template]):
    """An update's result, with what its propagation did (None without it)."""

    propagation: Propagation | None = None


@dataclass(frozen=True)
class TemplateStatus:
    """What was made from a template, and the room its placement leaves."""

    template_id: str
    name: str
    volume_count: int
    snapshot_count: int
    logical_bytes: int
    allocated_bytes: int
    capacity: Capacity
    available_bytes: int
    tail_capacity: Capacity | None
    tail_available_bytes: int
    volume_available_bytes: int


@dataclass(frozen=True)
class PoolCapacity:
    pool_id: str
    pool_name: str
    capacity: Capacity
    available_bytes: int


@dataclass(frozen=True)
class ClusterCapacity:
    cluster_id: str
    cluster_name: str
    capacity: Capacity
    available_bytes: int
    logical_bytes: int
    provisioned_bytes: int
    volume_count: int
    snapshot_count: int
    pools: list[PoolCapacity]
    repair_reserved_bytes: int = 0


@dataclass(frozen=True)
class CapacitySummary:
    clusters: list[ClusterCapacity]
    generation: int
