"""The rules of a volume's shape, shared by volumes and templates.

Durability, placement, QoS, kind, provisioning and the snapshot reserve
factor: what is valid (each check returns the field violations, so a request
with several wrong fields hears about all of them), their defaults, and how
they are stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from osd.engine.shared import validation as v
from osd.engine.shared.allocation_math import allocation_sizes
from osd.engine.volumes.models import Durability, Placement, Qos
from osd.enums import DurabilityType, FailureDomain, Filesystem, Provisioning, VolumeKind
from osd.errors import FieldViolation

REPLICAS_MIN, REPLICAS_MAX, REPLICAS_DEFAULT = 2, 5, 3
DATA_MIN, DATA_MAX, DATA_DEFAULT = 2, 16, 4
REDUNDANCY_MIN, REDUNDANCY_MAX, REDUNDANCY_DEFAULT = 1, 4, 2
FACTOR_MAX = 100.0

NONE = Durability(type=int(DurabilityType.NONE))


def enum_violation(value: int, enum: type[Any], field: str) -> FieldViolation | None:
    """Why ``value`` is neither 0 (unset) nor a member of ``enum``."""
    if value == 0:
        return None
    try:
        enum(value)
    except ValueError:
        names = ", ".join(m.name for m in enum)
        return FieldViolation(field, f"{value} is not one of {names}")
    return None


# -- durability ----------------------------------------------------------------


def is_unset(d: Durability | None) -> bool:
    return d is None or d == Durability()


def durability_violations(d: Durability, prefix: str = "durability") -> list[FieldViolation]:
    out: list[FieldViolation] = []
    t = d.type
    if t == 0:
        if d != Durability():
            out.append(FieldViolation(f"{prefix}.type", "is required with replicas or fragments"))
        return out
    bad_type = enum_violation(t, DurabilityType, f"{prefix}.type")
    if bad_type:
        return [bad_type]
    if t != DurabilityType.REPLICATE and d.replicas:
        out.append(FieldViolation(f"{prefix}.replicas", "only REPLICATE volumes have replicas"))
    if t != DurabilityType.ERASURE:
        for name, value in (
            ("data_fragments", d.data_fragments),
            ("redundancy_fragments", d.redundancy_fragments),
        ):
            if value:
                out.append(
                    FieldViolation(f"{prefix}.{name}", "only ERASURE volumes have fragments")
                )
    if t == DurabilityType.REPLICATE:
        bad = replicas_violation(d.replicas, f"{prefix}.replicas")
        if bad:
            out.append(bad)
    if t == DurabilityType.ERASURE:
        data = d.data_fragments or DATA_DEFAULT
        redundancy = d.redundancy_fragments or REDUNDANCY_DEFAULT
        if not DATA_MIN <= data <= DATA_MAX:
            out.append(
                FieldViolation(
                    f"{prefix}.data_fragments", f"is {data}; from {DATA_MIN} to {DATA_MAX}"
                )
            )
        if not REDUNDANCY_MIN <= redundancy <= min(REDUNDANCY_MAX, max(data, REDUNDANCY_MIN)):
            out.append(
                FieldViolation(
                    f"{prefix}.redundancy_fragments",
                    f"is {redundancy}; from {REDUNDANCY_MIN} to {REDUNDANCY_MAX}, "
                    "and at most data_fragments",
                )
            )
    return out


def replicas_violation(replicas: int, field: str = "durability.replicas") -> FieldViolation | None:
    value = replicas or REPLICAS_DEFAULT
    if not REPLICAS_MIN <= value <= REPLICAS_MAX:
        return FieldViolation(field, f"is {replicas}; from {REPLICAS_MIN} to {REPLICAS_MAX}")
    return None


def normalize_durability(d: Durability) -> Durability:
    """``d`` (valid, type set) with its defaults filled in."""
    if d.type == DurabilityType.REPLICATE:
        return Durability(d.type, d.replicas or REPLICAS_DEFAULT, 0, 0)
    if d.type == DurabilityType.ERASURE:
        return Durability(
            d.type,
            0,
            d.data_fragments or DATA_DEFAULT,
            d.redundancy_fragments or REDUNDANCY_DEFAULT,
        )
    return NONE


def copies(d: Durability) -> int:
    """How many allocations a layout has (copies or fragments)."""
    if d.type == DurabilityType.REPLICATE:
        return d.replicas
    if d.type == DurabilityType.ERASURE:
        return d.data_fragments + d.redundancy_fragments
    return 1


def copies_field(d: Durability) -> str:
    """The request field that asks for the copies, for PLACEMENT_IMPOSSIBLE."""
    if d.type == DurabilityType.REPLICATE:
        return "durability.replicas"
    if d.type == DurabilityType.ERASURE:
        return "durability"
    return "placement"


def reserved_sizes(
    size_bytes: int, d: Durability, snapshot_factor: float, provisioning: int
) -> list[int]:
    """What each allocation reserves: nothing for THIN (nothing written yet)."""
    full = allocation_sizes(
        size_bytes, d.type, d.replicas, d.data_fragments, d.redundancy_fragments, snapshot_factor
    )
    if provisioning == Provisioning.THIN:
        return [0] * len(full)
    return full


def room_sizes(size_bytes: int, d: Durability, snapshot_factor: float) -> list[int]:
    """The room placement needs per allocation: the full share, THIN or THICK."""
    return allocation_sizes(
        size_bytes, d.type, d.replicas, d.data_fragments, d.redundancy_fragments, snapshot_factor
    )


def share_sizes(size_bytes: int, d: Durability) -> list[int]:
    """The size of each copy or fragment, as the driver creates it (no reserve)."""
    return allocation_sizes(
        size_bytes, d.type, d.replicas, d.data_fragments, d.redundancy_fragments, 0.0
    )


# -- placement -----------------------------------------------------------------


def placement_violations(p: Placement, prefix: str = "placement") -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for name, value in (("pool_id", p.pool_id), ("tail_pool_id", p.tail_pool_id)):
        if value and not v.ID_RE.fullmatch(value):
            out.append(
                FieldViolation(
                    f"{prefix}.{name}", f"{value[:80]!r} is not an id (32 hex characters)"
                )
            )
    bad = enum_violation(p.failure_domain, FailureDomain, f"{prefix}.failure_domain")
    if bad:
        out.append(bad)
    out += v.label_violations(p.node_selector, f"{prefix}.node_selector")
    out += v.label_violations(p.drive_selector, f"{prefix}.drive_selector")
    return out


def normalize_placement(p: Placement) -> Placement:
    return Placement(
        pool_id=p.pool_id,
        tail_pool_id=p.tail_pool_id if p.tail_pool_id != p.pool_id else "",
        failure_domain=p.failure_domain or int(FailureDomain.ZONE),
        node_selector=dict(p.node_selector),
        drive_selector=dict(p.drive_selector),
    )


def placement_to_json(p: Placement | None) -> dict[str, Any]:
    if p is None:
        return {}
    return {
        "pool_id": p.pool_id,
        "tail_pool_id": p.tail_pool_id,
        "failure_domain": int(p.failure_domain),
        "node_selector": dict(p.node_selector),
        "drive_selector": dict(p.drive_selector),
    }


def placement_from_json(data: Mapping[str, Any] | None) -> Placement | None:
    if not data:
        return None
    return Placement(
        pool_id=str(data.get("pool_id") or ""),
        tail_pool_id=str(data.get("tail_pool_id") or ""),
        failure_domain=int(data.get("failure_domain") or 0),
        node_selector=dict(data.get("node_selector") or {}),
        drive_selector=dict(data.get("drive_selector") or {}),
    )


# -- qos, factor, kind, provisioning -------------------------------------------


def qos_violations(q: Qos, prefix: str = "qos") -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for name, value in (
        ("iops_limit", q.iops_limit),
        ("bandwidth_limit_bytes", q.bandwidth_limit_bytes),
    ):
        if value < 0:
            out.append(FieldViolation(f"{prefix}.{name}", f"is {value}; 0 (unlimited) or more"))
    return out


def factor_violation(factor: float | None, field: str = "snapshot_factor") -> FieldViolation | None:
    if factor is None:
        return None
    if not math.isfinite(factor) or factor <= 1 or factor > FACTOR_MAX:
        return FieldViolation(
            field, f"is {factor}; greater than 1 and at most {FACTOR_MAX:g} when set"
        )
    return None


def kind_violation(kind: int, field: str = "kind") -> FieldViolation | None:
    return enum_violation(kind, VolumeKind, field)


def filesystem_violation(value: int, field: str = "filesystem") -> FieldViolation | None:
    return enum_violation(value, Filesystem, field)


def provisioning_violation(value: int, field: str = "provisioning") -> FieldViolation | None:
    return enum_violation(value, Provisioning, field)
