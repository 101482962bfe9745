"""The daemons that share a store: this one's registration and heartbeat,
and whether another is alive.

A daemon is named ``host:pid:run`` (its jobs and its changes in phases
carry that name as their owner). It registers when it starts and renews its
heartbeat every ``heartbeat_seconds``; one whose heartbeat is older than
``gone_seconds`` is gone, and so, at once, is one of this host whose
process no longer exists, or, to a daemon starting, an earlier engine of
this very process (afterwards, a peer sharing the process is alive while its
heartbeat is). Another
daemon then takes over what it left: its jobs (the job runner) and its
changes in phases (volume recovery, run by :meth:`Members.beat` after each
heartbeat).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from osd import __version__
from osd.enums import DaemonState
from osd.store import daemons as repo
from osd.store.db import Store
from osd.store.models import DaemonRow, NodeRow, utcnow

log = logging.getLogger("osd.engine")

# Daemons not heard of for this long are forgotten.
FORGET_AFTER = timedelta(days=1)


def new_name() -> str:
    """A name for this process's daemon: host, pid and a run id."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Member:
    id: str
    host: str
    pid: int
    address: str
    version: str
    state: DaemonState
    start_time: datetime
    heartbeat_time: datetime
    stop_time: datetime | None
    this_daemon: bool
    node_id: str


class Members:
    def __init__(
        self,
        store: Store,
        name: str,
        *,
        heartbeat_seconds: float = 2.0,
        gone_seconds: float = 10.0,
        node_id: str = "",
        node_name: str = "",
    ) -> None:
        """``node_id`` or ``node_name``: the node this daemon is the agent of
        (found once the node exists)."""
        self._store = store
        self.name = name
        self._node_ref = (node_id, node_name)
        self.node_id = ""
        self.address = ""
        self.heartbeat_seconds = heartbeat_seconds
        self._gone = timedelta(seconds=gone_seconds)
        self._host = socket.gethostname()
        self._after_beat: list[Callable[[], None]] = []

    def after_beat(self, work: Callable[[], None]) -> None:
        """Runs ``work`` after each heartbeat (taking over what gone daemons left)."""
        self._after_beat.append(work)

    @property
    def agent(self) -> bool:
        """Whether this daemon is configured as a node's agent."""
        return any(self._node_ref)

    def _resolve(self, s: Session) -> None:
        if self.node_id or not self.agent:
            return
        node_id, node_name = self._node_ref
        if node_id:
            if s.get(NodeRow, node_id) is not None:
                self.node_id = node_id
        else:
            found = list(s.scalars(select(NodeRow.id).where(NodeRow.name == node_name).limit(2)))
            if len(found) == 1:
                self.node_id = found[0]
            elif found:
                log.warning("several clusters have a node %r: give node_id", node_name)
        if self.node_id:
            log.info("daemon %s is the agent of node %s", self.name, self.node_id)

    def register(self) -> None:
        now = utcnow()
        host, pid = self._host, os.getpid()
        with self._store.write() as s:
            self._resolve(s)
            row = repo.get(s, self.name)
            if row is None:
                repo.add(
                    s,
                    DaemonRow(
                        id=self.name,
                        host=host,
                        pid=pid,
                        address=self.address,
                        version=__version__,
                        start_time=now,
                        heartbeat_time=now,
                        stop_time=None,
                        node_id=self.node_id or None,
                    ),
                )
            else:
                row.address, row.heartbeat_time, row.stop_time = self.address, now, None
                row.node_id = self.node_id or None
        log.info("daemon %s registered (%s)", self.name, self.address or "no address")

    def beat(self) -> None:
        """Renews the heartbeat (registering again if a peer forgot this
        daemon), forgets daemons long gone, then runs the after-beat work."""
        now = utcnow()
        unresolved = self.agent and not self.node_id
        with self._store.write() as s:
            found = repo.beat(s, self.name, now)
            repo.prune(s, now - FORGET_AFTER)
        if not found or unresolved:
            self.register()
        for work in self._after_beat:
            try:
                work()
            except Exception:
                log.exception("taking over what gone daemons left failed; retried next beat")

    def stop(self) -> None:
        with self._store.write() as s:
            row = repo.get(s, self.name)
            if row is not None:
                row.stop_time = utcnow()

    def alive(self, owner: str) -> bool:
        """Whether the daemon named ``owner`` runs now: its process exists
        (when it ran on this host), it did not stop, and its heartbeat is
        recent."""
        if owner == self.name:
            return True
        host, _, rest = owner.partition(":")
        pid, _, _run = rest.partition(":")
        here = host == self._host and pid.isdigit()
        if here and int(pid) != os.getpid() and not _process_exists(int(pid)):
            return False
        with self._store.read() as s:
            row = repo.get(s, owner)
            if row is None or row.stop_time is not None:
                return False
            return utcnow() - row.heartbeat_time <= self._gone

    def alive_at_start(self, owner: str) -> bool:
        """``alive``, as a daemon starting sees it: another daemon of this very
        process is an earlier run of it (an engine started again in place), and
        gone. Only start-up recovery may think so; the periodic sweep asks
        ``alive``, so that it never takes over from a peer that shares the
        process."""
        host, _, rest = owner.partition(":")
        pid, _, _run = rest.partition(":")
        if owner != self.name and host == self._host and pid == str(os.getpid()):
            return False
        return self.alive(owner)

    def list(self) -> list[Member]:
        now = utcnow()
        with self._store.read() as s:
            rows = repo.all_of(s)
        return [self._member(r, now) for r in rows]

    def _member(self, row: DaemonRow, now: datetime) -> Member:
        if row.stop_time is not None:
            state = DaemonState.STOPPED
        elif row.id == self.name or now - row.heartbeat_time <= self._gone:
            state = DaemonState.SERVING
        else:
            state = DaemonState.GONE
        return Member(
            id=row.id,
            host=row.host,
            pid=row.pid,
            address=row.address,
            version=row.version,
            state=state,
            start_time=row.start_time,
            heartbeat_time=row.heartbeat_time,
            stop_time=row.stop_time,
            this_daemon=row.id == self.name,
            node_id=row.node_id or "",
        )
