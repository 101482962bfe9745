"""API key records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from osd.store.models import ApiKeyRow


def get(session: Session, key_id: str) -> ApiKeyRow | None:
    return session.get(ApiKeyRow, key_id)


def add(session: Session, row: ApiKeyRow) -> None:
    session.add(row)
    session.flush()


def all_keys(session: Session, *, include_revoked: bool) -> Sequence[ApiKeyRow]:
    stmt = select(ApiKeyRow).order_by(ApiKeyRow.create_time, ApiKeyRow.id)
    if not include_revoked:
        stmt = stmt.where(ApiKeyRow.revoke_time.is_(None))
    return session.scalars(stmt).all()


def revoke(session: Session, key_id: str, when: datetime) -> bool:
    """Marks the key revoked; False when there is no such key or it was revoked already."""
    result = session.execute(
        update(ApiKeyRow)
        .where(ApiKeyRow.id == key_id, ApiKeyRow.revoke_time.is_(None))
        .values(revoke_time=when)
    )
    return bool(getattr(result, "rowcount", 0))
