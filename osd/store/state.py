"""The store-wide singletons: the generation counter and the page-token key."""

from __future__ import annotations

import secrets

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
