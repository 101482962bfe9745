"""CreateVolume's rules: checking the request, resolving it against the
template, the source and the cluster into one spec, and placing it.

Durability and placement, each on its own: the request's when it gives
one, else the source's, else the template's, else the defaults (NONE; any
drive of the cluster, copies in distinct zones). A clone keeps the safety
of the data it is made from, and a template, which is written for volumes
in general, never lowers it; what the request asks for explicitly wins.
The source's durability is the volume's (source.volume_id) or the
snapshot's (source.snapshot_id, and the image of source.datastore_version_id);
its placement is the volume's, or for a snapshot that of the volume it was
taken of while that volume exists (none otherwise). An inherited placement
drops its tail pool when the durability is not REPLICATE. Every other
field is the request's, else the template's, else its default."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session

from osd.engine.datastores import registry as datastores
from osd.engine.placement import place as placement
from osd.engine.shared import validation as v
from osd.engine.shared.sizes import human, spec_violation
from osd.engine.volumes import access, specs
from osd.engine.volumes.models import CreateVolume, Durability, Placement, Qos, Source
from osd.enums import (
    Access,
    DurabilityType,
    FailureDomain,
    Filesystem,
    Provisioning,
    SnapshotState,
    SourceKind,
    VolumeKind,
    VolumeState,
)
from osd.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from osd.store import clusters as cluster_repo
from osd.store import grants as grant_repo
from osd.store import templates as template_repo
from osd.store import volumes as repo
from osd.store.models import ClusterRow, PoolRow, SnapshotRow, TemplateRow, VolumeRow, utcnow


@dataclass(frozen=True)
class Checked:
    """A create request whose every field is well formed."""

    spec: CreateVolume
    size_bytes: int | None


@dataclass(frozen=True)
class Origin:
    """What the source gives the volume: the snapshot to clone, its size, labels
    the volume must carry, the datastore version, and the durability and
    placement a clone keeps unless asked otherwise (None: the source gives
    none)."""

    snapshot: SnapshotRow | None = None
    size_bytes: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    datastore_version_id: str | None = None
    durability: Durability | None = None
    placement: Placement | None = None
    # A clone's ownership: its source's owner, public flag and access list.
    ownership: Ownership | None = None


@dataclass(frozen=True)
class Ownership:
    """Who owns a new volume, whether it is public, and its access list of
    (kind, name, access)."""

    owner: str
    public: bool = False
    grants: tuple[tuple[str, str, int], ...] = ()


def ownership_of(session: Session, owner: str, volume: VolumeRow | None) -> Ownership:
    """A clone's ownership: ``owner``, and ``volume``'s public flag and access list."""
    if volume is None:
        return Ownership(owner)
    listed = grant_repo.of_volumes(session, [volume.id]).get(volume.id, [])
    return Ownership(
        owner, volume.public, tuple((g.grantee_kind, g.grantee, g.access) for g in listed)
    )


@dataclass
class Plan:
    """A create request resolved against its template, source and cluster."""

    cluster: ClusterRow
    name: str
    kind: VolumeKind
    size_bytes: int
    size_field: str
    durability: Durability
    placement: Placement
    provisioning: Provisioning
    snapshot_factor: float
    qos: Qos
    labels: dict[str, str]
    template_id: str
    source: Source
    multi_attach: bool
    filesystem: int = 0
    parent_snapshot_id: str | None = None
    datastore_version_id: str | None = None
    pools: dict[str, PoolRow] = field(default_factory=dict)
    ownership: Ownership = field(default_factory=lambda: Ownership(""))


def check(spec: CreateVolume) -> Checked:
    """Every syntax rule of the request; all violations at once."""
    out: list[FieldViolation] = []
    bad_name = v.name_violation(spec.name)
    if bad_name:
        out.append(bad_name)
    for name, value in (("cluster_id", spec.cluster_id), ("template_id", spec.template_id)):
        if value and not v.ID_RE.fullmatch(value):
            out.append(FieldViolation(name, f"{value[:80]!r} is not an id (32 hex characters)"))
    size_bytes, bad_size = spec_violation(spec.size)
    if bad_size:
        out.append(bad_size)
    if spec.durability is not None:
        out += specs.durability_violations(spec.durability)
    if spec.placement is not None:
        out += specs.placement_violations(spec.placement)
    if spec.qos is not None:
        out += specs.qos_violations(spec.qos)
    out += v.label_violations(spec.labels)
    for violation in (
        specs.factor_violation(spec.snapshot_factor),
        specs.kind_violation(spec.kind),
        specs.provisioning_violation(spec.provisioning),
        specs.filesystem_violation(spec.filesystem),
    ):
        if violation:
            out.append(violation)
    if spec.source.kind != SourceKind.NONE:
        source_field = f"source.{spec.source.kind.name.lower()}_id"
        if not v.ID_RE.fullmatch(spec.source.id):
            out.append(
                FieldViolation(
                    source_field, f"{spec.source.id[:80]!r} is not an id (32 hex characters)"
                )
            )
    if out:
        raise InvalidArgument.fields(out)
    return Checked(spec, size_bytes)


def resolve(session: Session, checked: Checked) -> Plan:
    """The spec the volume would have; NOT_FOUND, INVALID_ARGUMENT or
    FAILED_PRECONDITION when the request cannot be met as asked."""
    spec = checked.spec
    # The fields that name an object, with its cluster, to infer or check the cluster by.
    named: list[tuple[str, str]] = []
    template = _template(session, spec, named)
    origin = _source(session, spec.source, named)
    durability = _durability(spec, template, origin)
    place, pools = _placement(session, spec, template, origin, durability, named)
    cluster = _cluster(session, spec.cluster_id, named)
    if place.tail_pool_id and durability.type != DurabilityType.REPLICATE:
        raise InvalidArgument.field(
            "placement.tail_pool_id", "only REPLICATE volumes have a tail copy"
        )
    size_field = spec.size.field if spec.size is not None else "size_bytes"
    kind = _kind(spec, template, cluster)
    if spec.filesystem and kind != VolumeKind.FILE:
        raise InvalidArgument.field("filesystem", f"a {kind.name} volume has no filesystem")
    filesystem = (spec.filesystem or Filesystem.EXT4) if kind == VolumeKind.FILE else 0
    size = _size(checked, size_field, template, origin.size_bytes)
    labels = {**spec.labels, **origin.labels}
    if len(labels) > v.LABELS_MAX:
        raise InvalidArgument.field("labels", f"has {len(labels)} labels; at most {v.LABELS_MAX}")
    return Plan(
        cluster=cluster,
        name=spec.name,
        kind=kind,
        size_bytes=size,
        size_field=size_field,
        durability=durability,
        placement=place,
        provisioning=Provisioning(
            spec.provisioning or (template.provisioning if template else 0) or Provisioning.THICK
        ),
        snapshot_factor=_snapshot_factor(spec, template),
        qos=_qos(spec, template),
        labels=labels,
        template_id=spec.template_id,
        source=spec.source,
        multi_attach=spec.multi_attach,
        filesystem=int(filesystem),
        parent_snapshot_id=origin.snapshot.id if origin.snapshot is not None else None,
        datastore_version_id=origin.datastore_version_id,
        pools=pools,
        ownership=origin.ownership or Ownership(access.caller().subject),
    )


def _template(
    session: Session, spec: CreateVolume, named: list[tuple[str, str]]
) -> TemplateRow | None:
    if not spec.template_id:
        return None
    template = template_repo.get(session, spec.template_id)
    if template is None:
        raise NotFound.object("template", "template_id", spec.template_id)
    named.append(("template_id", template.cluster_id))
    return template


def _placement(
    session: Session,
    spec: CreateVolume,
    template: TemplateRow | None,
    origin: Origin,
    durability: Durability,
    named: list[tuple[str, str]],
) -> tuple[Placement, dict[str, PoolRow]]:
    """The placement asked, else the source's (without its tail pool when
    ``durability`` has no tail copy), else the template's; and the pools it
    names."""
    wanted = spec.placement
    if wanted is None and origin.placement is not None:
        wanted = origin.placement
        if durability.type != DurabilityType.REPLICATE:
            wanted = replace(wanted, tail_pool_id="")
    if wanted is None and template is not None:
        wanted = specs.placement_from_json(template.placement)
    place = specs.normalize_placement(wanted or Placement())
    pools: dict[str, PoolRow] = {}
    for name, pool_id in (("pool_id", place.pool_id), ("tail_pool_id", place.tail_pool_id)):
        if pool_id:
            pool = repo.get_pool(session, pool_id)
            if pool is None:
                raise NotFound.object("pool", f"placement.{name}", pool_id)
            pools[pool_id] = pool
            named.append((f"placement.{name}", pool.cluster_id))
    return place, pools


def _durability(spec: CreateVolume, template: TemplateRow | None, origin: Origin) -> Durability:
    """The durability asked, else the source's, else the template's, else NONE."""
    if not specs.is_unset(spec.durability):
        assert spec.durability is not None
        return specs.normalize_durability(spec.durability)
    if origin.durability is not None:
        return specs.normalize_durability(origin.durability)
    if template is not None and template.durability_type:
        return specs.normalize_durability(
            Durability(
                template.durability_type,
                template.replicas,
                template.data_fragments,
                template.redundancy_fragments,
            )
        )
    return specs.NONE


def _kind(spec: CreateVolume, template: TemplateRow | None, cluster: ClusterRow) -> VolumeKind:
    """The kind asked, else FILE for a filesystem asked, else the template's,
    else BLOCK; the cluster must allow it."""
    implied = VolumeKind.FILE if spec.filesystem else 0
    kind = VolumeKind(
        spec.kind or implied or (template.kind if template else 0) or VolumeKind.BLOCK
    )
    allowed = cluster.block if kind == VolumeKind.BLOCK else cluster.file
    if not allowed:
        raise FailedPrecondition(
            f"cluster {cluster.name} does not allow {kind.name} volumes",
            reason="VOLUME_KIND_DISABLED",
            metadata={"cluster_id": cluster.id, "kind": kind.name},
        )
    return kind


def _size(checked: Checked, size_field: str, template: TemplateRow | None, source_size: int) -> int:
    """The size asked, else the template's, else the source's; never below the source's."""
    size = checked.size_bytes or (template.size_bytes if template else 0) or source_size
    if not size:
        raise InvalidArgument.field(
            "size_bytes", "is required: neither the template nor a source gives a size"
        )
    if source_size and size < source_size:
        raise InvalidArgument.field(
            size_field, f"is {human(size)}, smaller than the source's {human(source_size)}"
        )
    return size


def _snapshot_factor(spec: CreateVolume, template: TemplateRow | None) -> float:
    if spec.snapshot_factor is not None:
        return spec.snapshot_factor
    return template.snapshot_factor if template and template.snapshot_factor > 1 else 0.0


def _qos(spec: CreateVolume, template: TemplateRow | None) -> Qos:
    if spec.qos is not None:
        return spec.qos
    if template is not None:
        return Qos(template.qos_iops_limit, template.qos_bandwidth_limit_bytes)
    return Qos()


def _source(session: Session, source: Source, named: list[tuple[str, str]]) -> Origin:
    """What the source gives the volume (see :class:`Origin`); a volume to copy
    gives its size, durability and placement, and no snapshot."""
    if source.kind == SourceKind.NONE:
        return Origin()
    if source.kind == SourceKind.VOLUME:
        row = repo.get(session, source.id)
        if row is None:
            raise NotFound.object("volume", "source.volume_id", source.id)
        access.require_volume(session, row, Access.WRITE, "source.volume_id")
        if row.state not in (VolumeState.UP, VolumeState.DEGRADED):
            state = VolumeState(row.state).name
            raise FailedPrecondition(
                f"volume {row.name} ({row.id}) is {state}, not UP or DEGRADED",
                reason="SOURCE_NOT_AVAILABLE",
                metadata={"volume_id": row.id, "state": state},
            )
        named.append(("source.volume_id", row.cluster_id))
        return Origin(
            size_bytes=row.size_bytes,
            durability=_durability_of(row),
            placement=specs.placement_from_json(row.placement),
            ownership=ownership_of(session, row.owner, row),
        )
    if source.kind == SourceKind.DATASTORE_VERSION:
        provision = datastores.provisioning_source(session, source.id)
        snap = session.get(SnapshotRow, provision.image_snapshot_id)
        if snap is None:
            raise NotFound.object(
                "snapshot", "source.datastore_version_id", provision.image_snapshot_id
            )
        field_name, labels, version = (
            "source.datastore_version_id",
            provision.labels,
            provision.datastore_version_id,
        )
    else:
        snap = session.get(SnapshotRow, source.id)
        if snap is None:
            raise NotFound.object("snapshot", "source.snapshot_id", source.id)
        access.require_snapshot(session, snap, Access.WRITE, "source.snapshot_id")
        field_name, labels, version = "source.snapshot_id", {}, None
    if snap.state != SnapshotState.READY:
        raise FailedPrecondition(
            f"snapshot {snap.name} ({snap.id}) is {SnapshotState(snap.state).name}, not READY",
            reason="SOURCE_NOT_AVAILABLE",
            metadata={"snapshot_id": snap.id, "state": SnapshotState(snap.state).name},
        )
    named.append((field_name, snap.cluster_id))
    taken_of = repo.get(session, snap.volume_id)
    return Origin(
        ownership=(None if version is not None else ownership_of(session, snap.owner, taken_of)),
        snapshot=snap,
        size_bytes=snap.size_bytes,
        labels=dict(labels),
        datastore_version_id=version,
        durability=_durability_of(snap),
        placement=(
            specs.placement_from_json(taken_of.placement)
            if taken_of is not None and taken_of.cluster_id == snap.cluster_id
            else None
        ),
    )


def _durability_of(row: VolumeRow | SnapshotRow) -> Durability | None:
    """The durability ``row`` records; None when it records none."""
    if not row.durability_type:
        return None
    return Durability(
        row.durability_type, row.replicas, row.data_fragments, row.redundancy_fragments
    )


def _cluster(session: Session, cluster_id: str, named: list[tuple[str, str]]) -> ClusterRow:
    if cluster_id:
        cluster = cluster_repo.get(session, cluster_id)
        if cluster is None:
            raise NotFound.object("cluster", "cluster_id", cluster_id)
        for what, other in named:
            if other != cluster_id:
                raise InvalidArgument.field(
                    "cluster_id", f"names cluster {cluster_id}, but {what} is in cluster {other}"
                )
        return cluster
    found = {other for _, other in named}
    if len(found) > 1:
        whats = ", ".join(what for what, _ in named)
        raise InvalidArgument.field(
            "cluster_id", f"cannot be inferred: {whats} are in different clusters"
        )
    inferred = found.pop() if found else repo.only_cluster_id(session)
    if inferred is None:
        raise InvalidArgument.field(
            "cluster_id", "is required: there is more than one cluster (or none)"
        )
    cluster = cluster_repo.get(session, inferred)
    if cluster is None:
        raise NotFound.object("cluster", "cluster_id", inferred)
    return cluster


def check_raw_capacity(session: Session, plan: Plan) -> None:
    """INVALID_ARGUMENT when the volume could not fit even in an empty cluster."""
    total, _ = cluster_repo.capacity(session, plan.cluster.id)
    needed = sum(specs.room_sizes(plan.size_bytes, plan.durability, plan.snapshot_factor))
    if needed > total:
        raise InvalidArgument.field(
            plan.size_field,
            f"{human(plan.size_bytes)} needs {human(needed)} with its copies, beyond the "
            f"cluster's raw capacity of {human(total)}",
        )


def place(session: Session, plan: Plan) -> list[placement.Candidate]:
    """One drive per copy, in copy order (see osd.engine.placement)."""
    p = plan.placement
    members = repo.pool_members(session, p.pool_id) if p.pool_id else None
    tail = repo.pool_members(session, p.tail_pool_id) if p.tail_pool_id else None
    within = None if members is None else members | (tail or set())
    views = repo.candidates(session, plan.cluster.id, within)
    candidates = [
        placement.Candidate(d.drive_id, d.node_id, d.zone, d.free_bytes, d.labels, d.node_labels)
        for d in views
    ]
    request = placement.Request(
        sizes=specs.room_sizes(plan.size_bytes, plan.durability, plan.snapshot_factor),
        failure_domain=FailureDomain(p.failure_domain),
        pool=members,
        tail_pool=tail,
        node_selector=p.node_selector,
        drive_selector=p.drive_selector,
        copies_field=specs.copies_field(plan.durability),
    )
    return placement.place(candidates, request)


def same_spec(row: VolumeRow, plan: Plan) -> bool:
    return _spec_of_row(row) == _spec_of_plan(plan)


def _spec_of_row(row: VolumeRow) -> tuple[object, ...]:
    return (
        row.kind,
        row.size_bytes,
        (row.durability_type, row.replicas, row.data_fragments, row.redundancy_fragments),
        specs.placement_to_json(specs.placement_from_json(row.placement) or Placement()),
        row.provisioning,
        float(row.snapshot_factor),
        (row.qos_iops_limit, row.qos_bandwidth_limit_bytes),
        dict(row.labels),
        row.template_id or "",
        (row.source_kind, row.source_id or ""),
        row.multi_attach,
        row.filesystem,
    )


def _spec_of_plan(plan: Plan) -> tuple[object, ...]:
    d = plan.durability
    return (
        int(plan.kind),
        plan.size_bytes,
        (int(d.type), d.replicas, d.data_fragments, d.redundancy_fragments),
        specs.placement_to_json(plan.placement),
        int(plan.provisioning),
        float(plan.snapshot_factor),
        (plan.qos.iops_limit, plan.qos.bandwidth_limit_bytes),
        dict(plan.labels),
        plan.template_id,
        (int(plan.source.kind), plan.source.id),
        plan.multi_attach,
        plan.filesystem,
    )


def new_row(plan: Plan, volume_id: str, generation: int) -> VolumeRow:
    now = utcnow()
    d = plan.durability
    return VolumeRow(
        id=volume_id,
        cluster_id=plan.cluster.id,
        name=plan.name,
        kind=int(plan.kind),
        size_bytes=plan.size_bytes,
        durability_type=int(d.type),
        replicas=d.replicas,
        data_fragments=d.data_fragments,
        redundancy_fragments=d.redundancy_fragments,
        placement=specs.placement_to_json(plan.placement),
        pool_id=plan.placement.pool_id or None,
        tail_pool_id=plan.placement.tail_pool_id or None,
        provisioning=int(plan.provisioning),
        snapshot_factor=float(plan.snapshot_factor),
        qos_iops_limit=plan.qos.iops_limit,
        qos_bandwidth_limit_bytes=plan.qos.bandwidth_limit_bytes,
        labels=dict(plan.labels),
        template_id=plan.template_id or None,
        source_kind=int(plan.source.kind),
        source_id=plan.source.id or None,
        parent_snapshot_id=plan.parent_snapshot_id,
        datastore_version_id=plan.datastore_version_id,
        multi_attach=plan.multi_attach,
        filesystem=plan.filesystem,
        state=VolumeState.CREATING,
        stored_bytes=0,
        active_job_id=None,
        create_time=now,
        update_time=now,
        generation=generation,
        owner=plan.ownership.owner,
        public=plan.ownership.public,
    )
