"""The store-wide generation counter."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from osd.store.models import StateRow


def bump_generation(session: Session) -> int:
    """Increments the generation and returns the new value.

    Call it first in every write transaction: the row lock it takes
    serialises writers, and the value it returns stamps the change.
    """
    session.execute(
        update(StateRow).where(StateRow.id == 1).values(generation=StateRow.generation + 1)
    )
    return current_generation(session)


def current_generation(session: Session) -> int:
    value = session.scalar(select(StateRow.generation).where(StateRow.id == 1))
    if value is None:
        raise RuntimeError("osd_state is empty: the store was not migrated")
    return value
