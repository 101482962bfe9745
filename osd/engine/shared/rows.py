"""Helpers over stored rows that every context shares: fetch a row or raise
NotFound, the generation check of an update, stamping a change, and the
exception that leaves a write transaction when nothing changed."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.orm import Session

from osd.engine.shared import validation as v
from osd.errors import Aborted, NotFound
from osd.store.models import (
    Base,
    ClusterRow,
    DatastoreRow,
    DatastoreVersionRow,
    DriveRow,
    JobRow,
    NodeRow,
    PoolRow,
    SnapshotRow,
    TemplateRow,
    VolumeRow,
    utcnow,
)

Row = TypeVar("Row", bound=Base)

# The name NOT_FOUND gives each kind of row.
KIND_OF: dict[type[Base], str] = {
    ClusterRow: "cluster",
    DatastoreRow: "datastore",
    DatastoreVersionRow: "datastore version",
    DriveRow: "drive",
    JobRow: "job",
    NodeRow: "node",
    PoolRow: "pool",
    SnapshotRow: "snapshot",
    TemplateRow: "template",
    VolumeRow: "volume",
}


def require(s: Session, model: type[Row], object_id: str, field: str = "") -> Row:
    """The row of ``model`` whose id is ``object_id``, or NOT_FOUND naming
    ``field`` (by default the kind's id field, e.g. ``volume_id``)."""
    row = s.get(model, object_id) if object_id else None
    if row is None:
        kind = KIND_OF[model]
        raise NotFound.object(kind, field or f"{kind.replace(' ', '_')}_id", object_id)
    return row


class Unchanged(Exception):
    """Leaves a write transaction without committing: the change was a no-op.

    ``generation`` is the store generation before the (rolled back) bump.
    """

    def __init__(self, value: Any, generation: int) -> None:
        super().__init__("unchanged")
        self.value = value
        self.generation = generation


def check_generation(kind: str, object_id: str, generation: int, expected: int) -> None:
    """ABORTED (GENERATION_MISMATCH) when ``expected`` is set and differs."""
    if expected and expected != generation:
        raise Aborted(
            f"{kind} {object_id} is at generation {generation}, not {expected}",
            reason="GENERATION_MISMATCH",
            metadata={"generation": str(generation)},
        )


# The rows that carry a generation and an update time of their own.
Stamped = (
    ClusterRow
    | NodeRow
    | DriveRow
    | PoolRow
    | TemplateRow
    | VolumeRow
    | SnapshotRow
    | JobRow
    | DatastoreRow
    | DatastoreVersionRow
)


def stamp(row: Stamped, generation: int) -> None:
    """Marks the row changed at ``generation``, now."""
    row.update_time = utcnow()
    row.generation = generation


def get_drive(s: Session, drive_id: str, field: str = "drive_id") -> DriveRow:
    v.check_id(drive_id, field)
    return require(s, DriveRow, drive_id, field)


def get_node(s: Session, node_id: str, field: str = "node_id") -> NodeRow:
    v.check_id(node_id, field)
    return require(s, NodeRow, node_id, field)
