"""Driver work for a node runs on that node's agent.

A daemon may be the agent of one node (settings ``node_id`` or
``node_name``): it registers so (DaemonRow.node_id), and the storage of that
node is driven there alone. :class:`RoutedDriver` wraps each daemon's driver:
a call for a drive or a node whose live agent is another daemon is queued
for that agent in the store (NodeWorkRow) and waited for, within the
deadline of the call being served (or ``wait_seconds`` for a job's step);
any other call (a node with no agent, or this daemon's own node) runs here,
as in a single daemon. :class:`NodeAgent` is the agent's side: it claims
its node's work in order (SKIP LOCKED on PostgreSQL), runs it on its own
driver and writes the answer back; work an agent claimed and died with is
run again by the next (driver calls are idempotent). Out of time, the
waiting daemon cancels work still PENDING, and answers UNAVAILABLE.

What crosses the store: the call's arguments (strings, numbers, copy
references, a FILE volume's mount) and its answer (a device path, a drive's
size, a DriveInfo), as JSON; a failure as its class (DriveFull, Refused and
its reason, NoAgent, DriverError and whether it is retryable). A snapshot's
progress is not reported from another node.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from osd import deadline
from osd.engine.drivers.base import DriveFull, DriveInfo, DriverError, Mount, NoAgent, Refused
from osd.engine.shared.members import Members
from osd.store import daemons as daemon_repo
from osd.store import node_work as repo
from osd.store.db import Store
from osd.store.models import DriveRow, NodeRow, NodeWorkRow, utcnow

log = logging.getLogger("osd.engine")

# Each routed method: what names the node ("drive" or "address") and the
# parameter that holds it. Work whose data lands on a drive runs where it lands.
ROUTES: dict[str, tuple[str, str]] = {
    "probe_drive": ("address", "node_address"),
    "format_drive": ("address", "node_address"),
    "release_drive": ("address", "node_address"),
    "create_replica": ("drive", "drive_id"),
    "delete_replica": ("drive", "drive_id"),
    "purge_replica": ("drive", "drive_id"),
    "resize_replica": ("drive", "drive_id"),
    "copy_replica": ("drive", "target_drive_id"),
    "clone_replica": ("drive", "target_drive_id"),
    "shares_blocks": ("drive", "drive_id"),
    "create_snapshot": ("drive", "drive_id"),
    "delete_snapshot": ("drive", "drive_id"),
    "revert_replica": ("drive", "drive_id"),
    "clone_snapshot": ("drive", "target_drive_id"),
    "copy_snapshots": ("drive", "target_drive_id"),
    "attach": ("address", "node_address"),
    "detach": ("address", "node_address"),
    "attach_snapshot": ("address", "node_address"),
    "detach_snapshot": ("address", "node_address"),
}
# Whether any daemon is an agent is asked at most this often.
AGENTS_CHECK_SECONDS = 1.0


def encode(value: Any) -> Any:
    if isinstance(value, Mount):
        return {"__mount__": dataclasses.asdict(value)}
    if isinstance(value, DriveInfo):
        return {"__drive_info__": dataclasses.asdict(value)}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__mount__" in value:
            fields = dict(value["__mount__"])
            fields["options"] = tuple(fields.get("options") or ())
            return Mount(**fields)
        if "__drive_info__" in value:
            return DriveInfo(**value["__drive_info__"])
        return value
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def encode_error(exc: BaseException) -> dict[str, Any]:
    kind = "error"
    for cls in (DriveFull, Refused, NoAgent, DriverError):
        if isinstance(exc, cls):
            kind = cls.__name__
            break
    return {
        "kind": kind,
        "message": str(exc),
        "retryable": bool(getattr(exc, "retryable", kind == "error")),
        "reason": getattr(exc, "reason", ""),
    }


def decode_error(error: dict[str, Any], node_id: str) -> DriverError:
    message = str(error.get("message", ""))
    kind = error.get("kind")
    if kind == "DriveFull":
        return DriveFull(message)
    if kind == "Refused":
        return Refused(message, reason=str(error.get("reason") or "REFUSED"))
    if kind == "NoAgent":
        return NoAgent(message)
    if kind == "DriverError":
        return DriverError(message, retryable=bool(error.get("retryable")))
    return DriverError(f"the agent of node {node_id} failed: {message}", retryable=True)


def _arguments(
    method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    bound = inspect.signature(method).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _tuples(name: str, value: Any) -> Any:
    """Copy references as the driver takes them: (drive id, replica id) pairs."""
    if name in ("copies", "sources") and isinstance(value, list):
        return [tuple(v) for v in value]
    return value


class RoutedDriver:
    """A driver whose calls for another agent's node run on that agent."""

    def __init__(
        self,
        inner: Any,
        store: Store,
        members: Members,
        *,
        wait_seconds: float = 3600.0,
    ) -> None:
        self.inner = inner
        self._store = store
        self._members = members
        self._wait_seconds = wait_seconds
        self._agents_seen = 0.0
        self._agents = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in ROUTES or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            arguments = _arguments(attr, args, kwargs)
            node_id = self._remote_node(name, arguments)
            if node_id is None:
                return attr(*args, **kwargs)
            return self._remote(node_id, name, arguments)

        return call

    def _any_agent(self) -> bool:
        now = time.monotonic()
        if now - self._agents_seen >= AGENTS_CHECK_SECONDS:
            with self._store.read() as s:
                self._agents = daemon_repo.any_agent(s)
            self._agents_seen = now
        return self._agents

    def _remote_node(self, name: str, arguments: dict[str, Any]) -> str | None:
        """The node whose agent, another daemon, runs this call; None: here."""
        if not self._any_agent():
            return None
        kind, param = ROUTES[name]
        value = arguments.get(param)
        with self._store.read() as s:
            if kind == "drive":
                drive = s.get(DriveRow, value)
                nodes = [drive.node_id] if drive is not None else []
            else:
                nodes = [
                    n.id for n in s.query(NodeRow).all() if value in (n.management_addresses or [])
                ]
            for node_id in nodes:
                agents = [d for d in daemon_repo.agents_of(s, node_id) if self._members.alive(d.id)]
                if agents and all(d.id != self._members.name for d in agents):
                    return node_id
        return None

    def _remote(self, node_id: str, name: str, arguments: dict[str, Any]) -> Any:
        arguments.pop("progress", None)  # not reported across nodes
        with self._store.write() as s:
            work_id = repo.add(s, node_id, name, {k: encode(v) for k, v in arguments.items()})
        stop = time.monotonic() + min(self._wait_seconds, deadline.remaining(self._wait_seconds))
        pause = 0.01
        while True:
            with self._store.read() as s:
                row = repo.get(s, work_id)
                state = row.state if row is not None else repo.CANCELLED
                result = row.result if row is not None else None
                error = row.error if row is not None else None
            if state == repo.DONE:
                return decode(result)
            if state == repo.FAILED:
                raise decode_error(error or {}, node_id)
            if time.monotonic() >= stop:
                with self._store.write() as s:
                    cancelled = repo.cancel(s, work_id)
                raise DriverError(
                    f"the agent of node {node_id} did not "
                    + ("take up" if cancelled else "finish")
                    + f" {name} in time",
                    retryable=True,
                )
            time.sleep(pause)
            pause = min(0.1, pause * 1.5)


class NodeAgent:
    """Runs the work queued for this daemon's node, in order, on its driver."""

    def __init__(self, store: Store, driver: Any, members: Members) -> None:
        self._store = store
        self._driver = driver
        self._members = members
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="osd-node-agent", daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        pause = 0.01
        while not self._stop.is_set():
            try:
                worked = self.work_once()
            except Exception:
                log.exception("node agent: taking up work failed; retrying")
                worked = False
            if worked:
                pause = 0.01
                continue
            self._stop.wait(pause)
            pause = min(0.2, pause * 1.5)

    def work_once(self) -> bool:
        """Takes up and runs one piece of this node's work; False when none waits."""
        node_id = self._members.node_id
        if not node_id:
            return False
        taken = self._claim(node_id)
        if taken is None:
            return False
        work_id, method, args = taken
        try:
            call = getattr(self._driver, method)
            result = call(**{k: _tuples(k, decode(v)) for k, v in args.items()})
        except Exception as exc:
            if not isinstance(exc, DriverError):
                log.exception("node agent: %s failed", method)
            self._answer(work_id, repo.FAILED, None, encode_error(exc))
            return True
        self._answer(work_id, repo.DONE, encode(result), None)
        return True

    def _claim(self, node_id: str) -> tuple[str, str, dict[str, Any]] | None:
        postgres = self._store.dialect == "postgresql"
        with self._store.write() as s:
            row: NodeWorkRow | None = None
            for held in repo.claimed_of(s, node_id):
                # Work an agent took and died with is run again.
                if held.claimed_by and not self._members.alive(held.claimed_by):
                    row = held
                    break
            if row is None:
                row = repo.next_for(s, node_id, postgres)
            if row is None:
                return None
            row.state = repo.CLAIMED
            row.claimed_by = self._members.name
            row.update_time = utcnow()
            return row.id, row.method, dict(row.args)

    def _answer(self, work_id: str, state: int, result: Any, error: dict[str, Any] | None) -> None:
        with self._store.write() as s:
            row = repo.get(s, work_id)
            if row is None or row.claimed_by != self._members.name or row.state != repo.CLAIMED:
                return
            row.state = state
            row.result = result
            row.error = error
            row.update_time = utcnow()
