"""Domain objects and inputs. Protobuf types never reach this layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

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
class Cluster:
    id: str
    name: str
    labels: dict[str, str]
    block: bool
    file: bool
    create_time: datetime
    update_time: datetime
    generation: int


@dataclass(frozen=True)
class CreateCluster:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    block: bool = True
    file: bool = True


@dataclass(frozen=True)
class UpdateCluster:
    """Fields left as None are not changed."""

    cluster_id: str
    name: str | None = None
    labels: dict[str, str] | None = None
    block: bool | None = None
    file: bool | None = None
    expected_generation: int = 0


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
