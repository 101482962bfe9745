"""Helpers over stored rows that every context shares: fetch a row or raise
NotFound, the generation check of an update, stamping a change, and the
exception that leaves a write transaction when nothing changed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from osd.engine.shared import validation as v
from osd.errors import Aborted, NotFound
from osd.store.models import (
    DriveRow,
    NodeRow,
    utcnow,
)


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


def stamp(row: DriveRow | NodeRow, generation: int) -> None:
    row.update_time = utcnow()
    row.generation = generation


def get_drive(s: Session, drive_id: str, field: str = "drive_id") -> DriveRow:
    v.check_id(drive_id, field)
    row = s.get(DriveRow, drive_id)
    if row is None:
        raise NotFound.object("drive", field, drive_id)
    return row


def get_node(s: Session, node_id: str, field: str = "node_id") -> NodeRow:
    v.check_id(node_id, field)
    row = s.get(NodeRow, node_id)
    if row is None:
        raise NotFound.object("node", field, node_id)
    return row
