"""Volume templates (StorPool's): named defaults for new volumes.

A template's unset fields (no durability, placement or QoS; size, factor,
provisioning or kind 0) are not defaults: a volume created with it falls back
to the built-in defaults for them. Changing a template affects volumes
created afterwards, and, when the change is propagated, the QoS, durability
and placement of the volumes whose template it is, each through the volume
engine's own update (see TemplateEngine.update). The template status counts
what was made from a template and the room its placement leaves.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osd.engine.shared import paging
from osd.engine.shared import validation as v
from osd.engine.shared.models import Capacity, Created, Page
from osd.engine.shared.rows import check_generation, require
from osd.engine.shared.sizes import spec_violation
from osd.engine.volumes import access, specs
from osd.engine.volumes.models import (
    ChangedTemplate,
    CreateTemplate,
    Durability,
    Placement,
    Propagation,
    Qos,
    Refusal,
    Template,
    TemplateQuery,
    TemplateStatus,
    UpdateTemplate,
    UpdateVolume,
)
from osd.engine.volumes.views import placement_of
from osd.enums import DurabilityType
from osd.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OsdError,
    PermissionDenied,
)
from osd.store import clusters as cluster_repo
from osd.store import templates as repo
from osd.store import volumes as volume_repo
from osd.store.db import Store
from osd.store.models import ClusterRow, TemplateRow, VolumeRow, utcnow
from osd.store.state import bump_generation, current_generation

if TYPE_CHECKING:
    from osd.engine.volumes.volumes import VolumeEngine

UPDATABLE = frozenset(
    {
        "name",
        "labels",
        "durability",
        "placement",
        "qos",
        "size_bytes",
        "size",
        "provisioning",
        "snapshot_factor",
        "kind",
    }
)
# The paths a propagated change applies to the template's volumes.
PROPAGATED = ("qos", "durability", "placement")


@dataclass(frozen=True)
class _Defaults:
    """A template's defaults, checked and normalized."""

    durability: Durability | None
    placement: Placement | None
    qos: Qos | None
    size_bytes: int
    provisioning: int
    snapshot_factor: float
    kind: int


def _to_domain(row: TemplateRow, volumes: int) -> Template:
    d = _defaults_of(row)
    return Template(
        id=row.id,
        cluster_id=row.cluster_id,
        name=row.name,
        labels=dict(row.labels),
        durability=d.durability,
        placement=d.placement,
        qos=d.qos,
        size_bytes=d.size_bytes,
        provisioning=d.provisioning,
        snapshot_factor=d.snapshot_factor,
        kind=d.kind,
        volume_count=volumes,
        create_time=row.create_time,
        update_time=row.update_time,
        generation=row.generation,
        owner=row.owner,
    )


def _require_owner(row: TemplateRow) -> None:
    """Its owner and admins may change a template; every caller may read it."""
    who = access.caller()
    if who.is_admin or (who.subject and row.owner == who.subject):
        return
    who_may = f"its owner {row.owner!r} or a caller with role admin" if row.owner else "an admin"
    raise PermissionDenied(
        f"you may not change template {row.name} ({row.id}): only {who_may} may",
        reason="ACCESS_DENIED",
        metadata={"template_id": row.id},
    )


def _defaults_of(row: TemplateRow) -> _Defaults:
    durability = None
    if row.durability_type:
        durability = Durability(
            row.durability_type, row.replicas, row.data_fragments, row.redundancy_fragments
        )
    qos = Qos(row.qos_iops_limit, row.qos_bandwidth_limit_bytes)
    return _Defaults(
        durability=durability,
        placement=specs.placement_from_json(row.placement),
        qos=qos if qos != Qos() else None,
        size_bytes=row.size_bytes,
        provisioning=row.provisioning,
        snapshot_factor=row.snapshot_factor,
        kind=row.kind,
    )


def _write_defaults(row: TemplateRow, d: _Defaults) -> None:
    dur = d.durability or Durability()
    row.durability_type = dur.type
    row.replicas = dur.replicas
    row.data_fragments = dur.data_fragments
    row.redundancy_fragments = dur.redundancy_fragments
    row.placement = specs.placement_to_json(d.placement)
    qos = d.qos or Qos()
    row.qos_iops_limit = qos.iops_limit
    row.qos_bandwidth_limit_bytes = qos.bandwidth_limit_bytes
    row.size_bytes = d.size_bytes
    row.provisioning = d.provisioning
    row.snapshot_factor = d.snapshot_factor
    row.kind = d.kind


def _check_defaults(
    durability: Durability | None,
    placement: Placement | None,
    qos: Qos | None,
    size_violation: tuple[int | None, FieldViolation | None],
    provisioning: int,
    snapshot_factor: float | None,
    kind: int,
) -> tuple[list[FieldViolation], _Defaults]:
    out: list[FieldViolation] = []
    if durability is not None:
        out += specs.durability_violations(durability)
    if placement is not None:
        out += specs.placement_violations(placement)
    if qos is not None:
        out += specs.qos_violations(qos)
    size, bad_size = size_violation
    if bad_size and size != 0:
        out.append(bad_size)
    for bad in (
        specs.factor_violation(snapshot_factor or None),
        specs.provisioning_violation(provisioning),
        specs.kind_violation(kind),
    ):
        if bad:
            out.append(bad)
    if out:
        return out, _Defaults(None, None, None, 0, 0, 0.0, 0)
    dur = None
    if durability is not None and not specs.is_unset(durability):
        dur = specs.normalize_durability(durability)
    place = None
    if placement is not None and placement != Placement():
        place = specs.normalize_placement(placement)
    if place is not None and place.tail_pool_id and dur and dur.type != DurabilityType.REPLICATE:
        out.append(
            FieldViolation("placement.tail_pool_id", "only REPLICATE volumes have a tail copy")
        )
    return out, _Defaults(
        durability=dur,
        placement=place,
        qos=qos if qos is not None and qos != Qos() else None,
        size_bytes=size or 0,
        provisioning=provisioning,
        snapshot_factor=snapshot_factor or 0.0,
        kind=kind,
    )


class TemplateEngine:
    def __init__(self, store: Store, volumes: VolumeEngine | None = None) -> None:
        self._store = store
        self._volumes = volumes

    def create(self, spec: CreateTemplate) -> Created[Template]:
        out: list[FieldViolation] = []
        if not spec.cluster_id:
            out.append(FieldViolation("cluster_id", "is required"))
        elif not v.ID_RE.fullmatch(spec.cluster_id):
            out.append(FieldViolation("cluster_id", f"{spec.cluster_id[:80]!r} is not an id"))
        bad_name = v.name_violation(spec.name)
        if bad_name:
            out.append(bad_name)
        out += v.label_violations(spec.labels)
        bad, defaults = _check_defaults(
            spec.durability,
            spec.placement,
            spec.qos,
            spec_violation(spec.size),
            spec.provisioning,
            spec.snapshot_factor,
            spec.kind,
        )
        out += bad
        if out:
            raise InvalidArgument.fields(out)
        labels = dict(spec.labels)
        try:
            with self._store.write() as s:
                existing = repo.get_by_name(s, spec.cluster_id, spec.name)
                if existing is not None:
                    return self._existing(s, existing, labels, defaults)
                generation = bump_generation(s)
                self._check_refs(s, spec.cluster_id, defaults.placement)
                now = utcnow()
                row = TemplateRow(
                    id=uuid.uuid4().hex,
                    cluster_id=spec.cluster_id,
                    name=spec.name,
                    labels=labels,
                    create_time=now,
                    update_time=now,
                    generation=generation,
                    owner=access.caller().subject,
                )
                _write_defaults(row, defaults)
                repo.add(s, row)
                return Created(_to_domain(row, 0), True, generation)
        except IntegrityError:
            with self._store.read() as s:
                existing = repo.get_by_name(s, spec.cluster_id, spec.name)
                if existing is None:
                    raise
                return self._existing(s, existing, labels, defaults)

    @staticmethod
    def _existing(
        s: Session, row: TemplateRow, labels: dict[str, str], defaults: _Defaults
    ) -> Created[Template]:
        if row.labels != labels or _defaults_of(row) != defaults:
            raise AlreadyExists(
                f"template {row.name!r} already exists with another spec",
                reason="TEMPLATE_EXISTS",
                metadata={"name": row.name, "template_id": row.id},
            )
        count = repo.volume_counts(s, [row.id]).get(row.id, 0)
        return Created(_to_domain(row, count), False, current_generation(s))

    @staticmethod
    def _check_refs(s: Session, cluster_id: str, placement: Placement | None) -> None:
        if cluster_repo.get(s, cluster_id) is None:
            raise NotFound.object("cluster", "cluster_id", cluster_id)
        if placement is None:
            return
        for name, pool_id in (
            ("pool_id", placement.pool_id),
            ("tail_pool_id", placement.tail_pool_id),
        ):
            if not pool_id:
                continue
            pool = volume_repo.get_pool(s, pool_id)
            if pool is None:
                raise NotFound.object("pool", f"placement.{name}", pool_id)
            if pool.cluster_id != cluster_id:
                raise InvalidArgument.field(
                    f"placement.{name}", f"pool {pool_id} is in another cluster"
                )

    def inspect(self, template_id: str) -> Template:
        v.check_id(template_id, "template_id")
        with self._store.read() as s:
            row = require(s, TemplateRow, template_id)
            return _to_domain(row, repo.volume_counts(s, [row.id]).get(row.id, 0))

    def list(self, query: TemplateQuery) -> Page[Template]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "template", query)
        key = pages.after_pair(query.page_token, "c", "n")
        if query.cluster_id:
            v.check_id(query.cluster_id, "cluster_id")
        pattern = v.compile_regex(query.name_regex, "name_regex")
        wanted = v.check_labels(query.labels).items()

        def keep(row: TemplateRow) -> bool:
            if pattern is not None and not pattern.search(row.name):
                return False
            return wanted <= row.labels.items()

        with self._store.read() as s:
            rows, token = pages.take(
                repo.scan(s, query.cluster_id, key, size + 1),
                size,
                keep,
                lambda r: {"c": r.cluster_id, "n": r.name},
            )
            counts = repo.volume_counts(s, [r.id for r in rows])
            return Page([_to_domain(r, counts.get(r.id, 0)) for r in rows], token)

    def update(self, change: UpdateTemplate) -> ChangedTemplate:
        v.check_id(change.template_id, "template_id")
        paths = change.paths
        if {"size", "size_bytes"} <= paths:
            raise InvalidArgument.field("update_mask", "name either size_bytes or size, not both")
        out: list[FieldViolation] = []
        if "name" in paths:
            bad = v.name_violation(change.name)
            if bad:
                out.append(bad)
        if "labels" in paths:
            out += v.label_violations(change.labels)
        bad_defaults, new = _check_defaults(
            change.durability if "durability" in paths else None,
            change.placement if "placement" in paths else None,
            change.qos if "qos" in paths else None,
            spec_violation(change.size) if paths & {"size", "size_bytes"} else (None, None),
            change.provisioning if "provisioning" in paths else 0,
            change.snapshot_factor if "snapshot_factor" in paths else None,
            change.kind if "kind" in paths else 0,
        )
        out += bad_defaults
        if out:
            raise InvalidArgument.fields(out)
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = require(s, TemplateRow, change.template_id)
                _require_owner(row)
                check_generation("template", row.id, row.generation, change.expected_generation)
                if "name" in paths and change.name != row.name:
                    other = repo.get_by_name(s, row.cluster_id, change.name)
                    if other is not None:
                        raise AlreadyExists(
                            f"template {change.name!r} already exists",
                            reason="TEMPLATE_EXISTS",
                            metadata={"name": change.name, "template_id": other.id},
                        )
                    row.name = change.name
                if "labels" in paths:
                    row.labels = dict(change.labels)
                old = _defaults_of(row)
                merged = _Defaults(
                    durability=new.durability if "durability" in paths else old.durability,
                    placement=new.placement if "placement" in paths else old.placement,
                    qos=new.qos if "qos" in paths else old.qos,
                    size_bytes=new.size_bytes if paths & {"size", "size_bytes"} else old.size_bytes,
                    provisioning=new.provisioning if "provisioning" in paths else old.provisioning,
                    snapshot_factor=(
                        new.snapshot_factor if "snapshot_factor" in paths else old.snapshot_factor
                    ),
                    kind=new.kind if "kind" in paths else old.kind,
                )
                if "placement" in paths:
                    self._check_refs(s, row.cluster_id, merged.placement)
                _write_defaults(row, merged)
                row.update_time = utcnow()
                row.generation = generation
                s.flush()
                propagation = None
                if change.propagate:
                    propagation = self._propagate(
                        s, row, merged, paths, change.confirmed, generation
                    )
                done = ChangedTemplate(
                    _to_domain(row, repo.volume_counts(s, [row.id]).get(row.id, 0)),
                    generation,
                    propagation,
                )
        except IntegrityError:
            raise AlreadyExists(
                f"template {change.name!r} already exists", reason="TEMPLATE_EXISTS"
            ) from None
        propagation = done.propagation
        if propagation is not None and propagation.jobs and self._volumes is not None:
            self._volumes.wake_jobs()
        return done

    def _propagate(
        self,
        s: Session,
        row: TemplateRow,
        d: _Defaults,
        paths: frozenset[str],
        confirmed: bool,
        generation: int,
    ) -> Propagation:
        """Applies the changed QoS, durability and placement the template sets to
        its volumes, each through the volume engine's update in a savepoint of
        this transaction: a volume it refuses is left whole and reported."""
        if self._volumes is None:
            raise RuntimeError("this template engine was made without a volume engine")
        wanted = {p for p in PROPAGATED if p in paths and getattr(d, p) is not None}
        out = Propagation()
        if not wanted:
            return out
        unchanged = hidden = 0
        for vol in repo.volumes_of(s, row.id):
            if not access.may_read_volume(s, vol):
                hidden += 1
                continue
            change = _volume_change(vol, d, wanted, confirmed)
            if change is None:
                unchanged += 1
                continue
            if isinstance(change, Refusal):
                out.refused.append(change)
                continue
            try:
                with s.begin_nested():
                    job = self._volumes.update_in(s, vol, change, generation)
            except OsdError as refused:
                out.refused.append(Refusal(vol.id, refused.reason, refused.message))
                continue
            out.updated_volume_ids.append(vol.id)
            if job is not None:
                out.jobs.append(job)
        return Propagation(
            out.updated_volume_ids,
            out.jobs,
            out.refused,
            unchanged_count=unchanged,
            hidden_count=hidden,
        )

    # -- status ----------------------------------------------------------------

    def status(self, template_id: str) -> TemplateStatus:
        v.check_id(template_id, "template_id")
        with self._store.read() as s:
            row = require(s, TemplateRow, template_id)
            return _statuses(s, row.cluster_id, [row])[0]

    def cluster_status(self, cluster_id: str) -> Sequence[TemplateStatus]:
        v.check_id(cluster_id, "cluster_id")
        with self._store.read() as s:
            require(s, ClusterRow, cluster_id)
            return _statuses(s, cluster_id, repo.of_cluster(s, cluster_id))

    def delete(self, template_id: str) -> int:
        v.check_id(template_id, "template_id")
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(s, TemplateRow, template_id)
            _require_owner(row)
            count = repo.volume_counts(s, [row.id]).get(row.id, 0)
            if count:
                raise FailedPrecondition(
                    f"template {row.name} ({row.id}) is the template of {count} volume(s)",
                    reason="TEMPLATE_IN_USE",
                    metadata={"count": str(count), "template_id": row.id},
                )
            repo.remove(s, template_id)
            return generation


def _volume_change(
    vol: VolumeRow, d: _Defaults, wanted: set[str], confirmed: bool
) -> UpdateVolume | Refusal | None:
    """The UpdateVolume that gives ``vol`` the template's ``wanted`` values, with
    only the fields that differ; None when none does; a Refusal for an ERASURE
    layout, which no volume update can give."""
    iops = bandwidth = replicas = None
    placement = None
    qos = d.qos if "qos" in wanted else None
    if qos is not None and (vol.qos_iops_limit, vol.qos_bandwidth_limit_bytes) != (
        qos.iops_limit,
        qos.bandwidth_limit_bytes,
    ):
        iops, bandwidth = qos.iops_limit, qos.bandwidth_limit_bytes
    if "durability" in wanted and d.durability is not None:
        dur = d.durability
        if dur.type == DurabilityType.ERASURE:
            same = (vol.durability_type, vol.data_fragments, vol.redundancy_fragments) == (
                dur.type,
                dur.data_fragments,
                dur.redundancy_fragments,
            )
            if not same:
                return Refusal(
                    vol.id,
                    "INVALID_ARGUMENT",
                    "durability: an existing volume's layout cannot become ERASURE or "
                    "change its fragments; only a REPLICATE or single-copy volume's copy "
                    "count can change",
                )
        else:
            count = dur.replicas if dur.type == DurabilityType.REPLICATE else 1
            current = vol.replicas if vol.durability_type == DurabilityType.REPLICATE else 1
            if vol.durability_type == DurabilityType.ERASURE or count != current:
                replicas = count
    wanted_place = d.placement if "placement" in wanted else None
    if wanted_place is not None and specs.normalize_placement(wanted_place) != placement_of(vol):
        placement = wanted_place
    if iops is None and replicas is None and placement is None:
        return None
    return UpdateVolume(
        volume_id=vol.id,
        iops_limit=iops,
        bandwidth_limit_bytes=bandwidth,
        replicas=replicas,
        placement=placement,
        confirmed=confirmed,
    )


def _statuses(s: Session, cluster_id: str, rows: list[TemplateRow]) -> list[TemplateStatus]:
    """The status of each of ``rows`` (templates of ``cluster_id``), in order."""
    usage = repo.usage(s, [r.id for r in rows])
    cluster = volume_repo.cluster_space(s, cluster_id).get(cluster_id, (0, 0, 0))
    pools = volume_repo.pool_space(s, cluster_id)
    out = []
    for row in rows:
        d = _defaults_of(row)
        p = d.placement or Placement()
        total, used, available = pools.get(p.pool_id, (0, 0, 0)) if p.pool_id else cluster
        tail = pools.get(p.tail_pool_id, (0, 0, 0)) if p.tail_pool_id else None
        u = usage[row.id]
        out.append(
            TemplateStatus(
                template_id=row.id,
                name=row.name,
                volume_count=u.volumes,
                snapshot_count=u.snapshots,
                logical_bytes=u.logical_bytes,
                allocated_bytes=u.allocated_bytes,
                capacity=Capacity(total, used),
                available_bytes=available,
                tail_capacity=Capacity(tail[0], tail[1]) if tail is not None else None,
                tail_available_bytes=tail[2] if tail is not None else 0,
                volume_available_bytes=_room(
                    d.durability, d.snapshot_factor, available, tail[2] if tail else None
                ),
            )
        )
    return out


def _room(
    durability: Durability | None, factor: float, available: int, tail_available: int | None
) -> int:
    """The most data new volumes of a layout fit in ``available`` free bytes (and
    ``tail_available`` on a tail pool, for the last copy), whole sectors."""
    d = durability or specs.NONE
    if d.type == DurabilityType.ERASURE:
        raw = available * d.data_fragments // (d.data_fragments + d.redundancy_fragments)
    elif d.type == DurabilityType.REPLICATE and tail_available is not None:
        raw = min(available // max(d.replicas - 1, 1), tail_available)
    else:
        raw = available // specs.copies(d)
    if factor > 1:
        raw = int(raw / factor)
    return max(raw - raw % 512, 0)
