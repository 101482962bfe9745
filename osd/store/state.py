"""The store-wide singletons: the generation counter and the page-token key."""

from __future__ import annotations

import secrets
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from osd.store.models import StateRow

# Built once: every write transaction runs it (on the table, not the mapped
# class, so the session has no objects to synchronise).
_STATE = cast(Table, StateRow.__table__)
_BUMP = (
    update(_STATE)
    .where(_STATE.c.id == 1)
    .values(generation=_STATE.c.generation + 1)
    .returning(_STATE.c.generation)
)


def bump_generation(session: Session) -> int:
    """Increments the generation and returns the new value.

    Call it first in every write transaction: the row lock it takes
    serialises writers, and the value it returns stamps the change.
    """
    generation: int | None = session.execute(_BUMP).scalar()
    if generation is None:
        raise RuntimeError("osd_state is empty: the store was not migrated")
    # The events the transaction records carry it (osd.store.events).
    session.info["generation"] = generation
    return generation


def current_generation(session: Session) -> int:
    value = session.scalar(select(StateRow.generation).where(StateRow.id == 1))
    if value is None:
        raise RuntimeError("osd_state is empty: the store was not migrated")
    return value


def stored_page_key(session: Session) -> bytes | None:
    """The key that signs this store's page tokens, if it has one."""
    value = session.scalar(select(StateRow.page_key).where(StateRow.id == 1))
    return None if value is None else bytes.fromhex(value)


def page_key(session: Session) -> bytes:
    """The key that signs this store's page tokens; made on first use if the
    store has none (a migration makes it)."""
    value = session.scalar(select(StateRow.page_key).where(StateRow.id == 1))
    if value is None:
        fresh = secrets.token_hex(32)
        session.execute(
            update(StateRow)
            .where(StateRow.id == 1, StateRow.page_key.is_(None))
            .values(page_key=fresh)
        )
        value = session.scalar(select(StateRow.page_key).where(StateRow.id == 1))
        if value is None:
            raise RuntimeError("osd_state is empty: the store was not migrated")
    return bytes.fromhex(value)
