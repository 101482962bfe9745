"""Shapes every context shares: pages, list queries, capacity, the results of
creates and changes, and an allocation as the domain sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from osd.enums import AllocationState
from osd.store.models import AllocationRow

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and the token of the next (empty on the last page)."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class ListQuery:
    """Paging and the filters every list shares."""

    page_size: int = 0
    page_token: str = ""
    name_regex: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Capacity:
    total_bytes: int = 0
    used_bytes: int = 0

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes


@dataclass(frozen=True)
class Created(Generic[T]):
    """The result of an idempotent create."""

    value: T
    created: bool
    generation: int


@dataclass(frozen=True)
class Changed(Generic[T]):
    value: T
    generation: int


@dataclass(frozen=True)
class Allocation:
    """One copy or fragment of a volume's or snapshot's data on a drive."""

    id: str
    volume_id: str
    snapshot_id: str
    drive_id: str
    node_id: str
    zone: str
    index: int
    bytes: int
    state: AllocationState


def allocation_of(row: AllocationRow, zone: str) -> Allocation:
    """The allocation a row records; ``zone`` is its node's."""
    return Allocation(
        id=row.id,
        volume_id=row.volume_id or "",
        snapshot_id=row.snapshot_id or "",
        drive_id=row.drive_id,
        node_id=row.node_id,
        zone=zone,
        index=row.index,
        bytes=row.bytes,
        state=AllocationState(row.state),
    )
