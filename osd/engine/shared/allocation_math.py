"""How a volume's size becomes allocations: one size per copy or fragment."""

from __future__ import annotations

import math
from collections.abc import Iterable

from osd.enums import DurabilityType

SECTOR = 512


def round_up(value: int, unit: int = SECTOR) -> int:
    """``value`` rounded up to a multiple of ``unit``."""
    return -(-value // unit) * unit


def _scaled(nbytes: int, factor: float) -> int:
    return round_up(math.ceil(nbytes * factor)) if factor > 1 else round_up(nbytes)


def allocation_sizes(
    size_bytes: int,
    durability_type: int,
    replicas: int,
    data_fragments: int,
    redundancy_fragments: int,
    snapshot_factor: float,
) -> list[int]:
    """The bytes each copy (REPLICATE, NONE) or fragment (ERASURE) reserves.

    A snapshot factor above 1 (Heketi's) multiplies each share to leave room
    for snapshots. Each share is rounded up to whole sectors.
    """
    if durability_type == DurabilityType.ERASURE:
        share = -(-size_bytes // data_fragments)
        return [_scaled(share, snapshot_factor)] * (data_fragments + redundancy_fragments)
    copies = replicas if durability_type == DurabilityType.REPLICATE else 1
    return [_scaled(size_bytes, snapshot_factor)] * copies


def provisioned_bytes(layouts: Iterable[tuple[tuple[int, int, int, int, int, float], int]]) -> int:
    """The bytes the volumes of each distinct layout (:func:`allocation_sizes`'s
    arguments) reserve in all, given how many volumes have each."""
    return sum(sum(allocation_sizes(*layout)) * n for layout, n in layouts)
