"""The daemons that share the store (DaemonRow)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from osd.store.models import DaemonRow


def get(session: Session, daemon_id: str) -> DaemonRow | None:
    return session.get(DaemonRow, daemon_id)


def add(session: Session, row: DaemonRow) -> None:
    session.add(row)


def beat(session: Session, daemon_id: str, now: datetime) -> bool:
    """Renews a daemon's heartbeat; False when its row is gone (pruned)."""
    done = session.execute(
        update(DaemonRow)
        .where(DaemonRow.id == daemon_id)
        .values(heartbeat_time=now)
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def all_of(session: Session) -> list[DaemonRow]:
    return list(session.scalars(select(DaemonRow).order_by(DaemonRow.start_time, DaemonRow.id)))


def prune(session: Session, before: datetime) -> int:
    """Forgets the daemons last heard of before ``before``."""
    done = session.execute(
        delete(DaemonRow)
        .where(DaemonRow.heartbeat_time < before)
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def any_agent(session: Session) -> bool:
    """Whether a daemon that has not stopped is some node's agent."""
    found = session.scalars(
        select(DaemonRow.id)
        .where(DaemonRow.node_id.is_not(None), DaemonRow.stop_time.is_(None))
        .limit(1)
    ).first()
    return found is not None


def agents_of(session: Session, node_id: str) -> list[DaemonRow]:
    """The daemons that have been the agents of a node, freshest first."""
    return list(
        session.scalars(
            select(DaemonRow)
            .where(DaemonRow.node_id == node_id)
            .order_by(DaemonRow.heartbeat_time.desc())
        )
    )


def agent_nodes(session: Session) -> set[str]:
    """The nodes that have (had) an agent."""
    return {n for n in session.scalars(select(DaemonRow.node_id).distinct()) if n}
