"""Driver calls queued for nodes' agents (NodeWorkRow)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from osd.store.models import NodeWorkRow, utcnow

PENDING, CLAIMED, DONE, FAILED, CANCELLED = 1, 2, 3, 4, 5
FINAL = (DONE, FAILED, CANCELLED)


def add(session: Session, node_id: str, method: str, args: dict[str, Any]) -> str:
    now = utcnow()
    row = NodeWorkRow(
        id=uuid.uuid4().hex,
        seq=time.time_ns(),
        node_id=node_id,
        method=method,
        args=args,
        state=PENDING,
        claimed_by=None,
        result=None,
        error=None,
        create_time=now,
        update_time=now,
    )
    session.add(row)
    return row.id


def get(session: Session, work_id: str) -> NodeWorkRow | None:
    return session.get(NodeWorkRow, work_id)


def next_for(session: Session, node_id: str, postgres: bool) -> NodeWorkRow | None:
    """The oldest PENDING work of a node, locked (skipping what another
    transaction holds, on PostgreSQL)."""
    stmt = (
        select(NodeWorkRow)
        .where(NodeWorkRow.node_id == node_id, NodeWorkRow.state == PENDING)
        .order_by(NodeWorkRow.seq)
        .limit(1)
    )
    if postgres:
        stmt = stmt.with_for_update(skip_locked=True)
    return session.scalars(stmt).first()


def claimed_of(session: Session, node_id: str) -> list[NodeWorkRow]:
    return list(
        session.scalars(
            select(NodeWorkRow)
            .where(NodeWorkRow.node_id == node_id, NodeWorkRow.state == CLAIMED)
            .order_by(NodeWorkRow.seq)
        )
    )


def cancel(session: Session, work_id: str) -> bool:
    """Cancels work still PENDING; False when an agent has it already."""
    done = session.execute(
        update(NodeWorkRow)
        .where(NodeWorkRow.id == work_id, NodeWorkRow.state == PENDING)
        .values(state=CANCELLED, update_time=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def prune(session: Session, before: datetime) -> int:
    """Forgets answered work older than ``before``."""
    done = session.execute(
        delete(NodeWorkRow)
        .where(NodeWorkRow.state.in_(FINAL), NodeWorkRow.update_time < before)
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]
