"""Conversions between protobuf messages and engine types shared by servicers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Hashable
from datetime import datetime
from typing import Any, Generic, TypeVar

from google.protobuf import field_mask_pb2, timestamp_pb2

from osd.engine.shared import models
from osd.engine.shared.models import Allocation
from osd.enums import LabelOperation
from osd.errors import InvalidArgument
from osd.v1 import common_pb2

M = TypeVar("M")

MEMO_ENTRIES = 2048


class ResponseMemo(Generic[M]):
    """The response last built from each object the engine handed back.

    The engine's read cache hands back the very object it kept while the store
    has not changed; then the response built from it last time is the answer
    again, and is not built anew. Responses are only read once built, so
    threads may share them.
    """

    def __init__(self, max_entries: int = MEMO_ENTRIES) -> None:
        self._max = max_entries
        self._entries: dict[Hashable, tuple[Any, M]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, source: object, build: Callable[[], M]) -> M:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is source:
            return entry[1]
        response = build()
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (source, response)
            while len(self._entries) > self._max:
                del self._entries[next(iter(self._entries))]
        return response


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def capacity(value: models.Capacity) -> common_pb2.Capacity:
    return common_pb2.Capacity(
        total_bytes=value.total_bytes, used_bytes=value.used_bytes, free_bytes=value.free_bytes
    )


def update_paths(
    mask: field_mask_pb2.FieldMask, allowed: Collection[str], field: str = "update_mask"
) -> set[str]:
    """The paths of an update mask, each one of ``allowed``; at least one.

    A path inside a field that is updated whole (``placement.pool_id`` when
    ``placement`` is allowed and the path itself is not) names that field: the
    field takes the value the request gives, as the REST gateway's derived
    masks (the body's leaf paths) expect.
    """
    given = set(mask.paths)
    if not given:
        raise InvalidArgument.field(
            field, f"is required: name the fields to change, among {', '.join(sorted(allowed))}"
        )
    paths = {_updatable(p, allowed) or p for p in given}
    unknown = sorted(p for p in given if _updatable(p, allowed) is None)
    if unknown:
        raise InvalidArgument.field(
            field,
            f"cannot update {', '.join(unknown)}; updatable: {', '.join(sorted(allowed))}",
        )
    return paths


def _updatable(path: str, allowed: Collection[str]) -> str | None:
    """``path`` when allowed, else the allowed field updated whole that holds it
    (one with no allowed sub-path: ``qos.x`` is refused where ``qos.iops_limit``
    is allowed), else None."""
    if path in allowed:
        return path
    parts = path.split(".")
    if "" in parts:
        return None
    for end in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:end])
        if head in allowed:
            whole = not any(a.startswith(head + ".") for a in allowed)
            return head if whole else None
    return None


def label_operation(value: int) -> LabelOperation | None:
    """A LabelOperation of the proto, or None when unset or unknown (the engine
    refuses it, naming ``operation``)."""
    try:
        return LabelOperation(value)
    except ValueError:
        return None


def allocation(a: Allocation) -> common_pb2.Allocation:
    return common_pb2.Allocation(
        id=a.id,
        volume_id=a.volume_id,
        snapshot_id=a.snapshot_id,
        drive_id=a.drive_id,
        node_id=a.node_id,
        zone=a.zone,
        index=a.index,
        bytes=a.bytes,
        state=common_pb2.AllocationState.ValueType(a.state),
    )
