"""The engine: the one object servicers call."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from osd.engine.access.audit import PRUNE_INTERVAL_SECONDS, AuditLog
from osd.engine.datastores.registry import DatastoreEngine
from osd.engine.drivers import StorageDriver
from osd.engine.drivers.routed import NodeAgent, RoutedDriver
from osd.engine.jobs import kinds as job_kinds
from osd.engine.jobs.auto_balance import INTERVAL_SECONDS as AUTO_BALANCE_SECONDS
from osd.engine.jobs.auto_balance import AutoBalancer
from osd.engine.jobs.jobs import JobEngine
from osd.engine.jobs.service_api import ServiceEngine
from osd.engine.shared.members import Members, new_name
from osd.engine.shared.names import Names
from osd.engine.shared.periodic import Periodic
from osd.engine.topology.availability import Availability, AvailabilityListener
from osd.engine.topology.clusters import ClusterEngine
from osd.engine.topology.drives import DriveEngine
from osd.engine.topology.maintenance import MaintenanceEngine
from osd.engine.topology.models import RepairPolicy
from osd.engine.topology.nodes import NodeEngine
from osd.engine.topology.pools import PoolEngine
from osd.engine.volumes.attachments import AttachmentEngine
from osd.engine.volumes.flush import FlushEngine
from osd.engine.volumes.repair import RepairController
from osd.engine.volumes.snapshots import SnapshotEngine
from osd.engine.volumes.templates import TemplateEngine
from osd.engine.volumes.usage import UsageMeter
from osd.engine.volumes.volumes import VolumeEngine
from osd.store import daemons as daemon_repo
from osd.store import events, node_work
from osd.store.db import Store
from osd.store.models import utcnow

# How often recorded changes and answered node work are pruned.
RECORD_PRUNE_SECONDS = 60.0

log = logging.getLogger(__name__)


# How long a stopping daemon waits for the store to take its last heartbeat
# and its stop record: a local store answers in milliseconds.
STOP_RECORD_SECONDS = 0.25


class Engine:
    """Domain operations over one store and one storage driver.

    Each capability is a sub-engine attribute (``clusters``, ...). A
    sub-engine whose changes run in phases registers a recovery step with
    :meth:`on_start`; :meth:`start` runs them all before the daemon serves, so
    work a crash left pending is finished or undone first.
    """

    def __init__(
        self,
        store: Store,
        driver: StorageDriver,
        *,
        max_jobs: int = 4,
        repair: RepairPolicy | None = None,
        repair_interval_seconds: float = 30.0,
        repair_enabled: bool = True,
        audit_retention_days: float = 90.0,
        job_retention_days: float = 30.0,
        usage_interval_seconds: float = 60.0,
        heartbeat_seconds: float = 2.0,
        gone_seconds: float = 10.0,
        node_id: str = "",
        node_name: str = "",
        watch_retention_seconds: float = 3600.0,
    ) -> None:
        self.store = store
        self._watch_retention = timedelta(seconds=watch_retention_seconds)
        # This daemon among those sharing the store: the owner its jobs and
        # its changes in phases carry, and the node it is the agent of.
        self.members = Members(
            store,
            new_name(),
            heartbeat_seconds=heartbeat_seconds,
            gone_seconds=gone_seconds,
            node_id=node_id,
            node_name=node_name,
        )
        store.owner = self.members.name
        # Driver work for a node whose agent is another daemon runs there.
        self._agent = NodeAgent(store, driver, self.members) if self.members.agent else None
        own_driver = driver
        driver = RoutedDriver(driver, store, self.members)
        self.driver = driver
        self._on_start: list[tuple[str, Callable[[], None], bool]] = []
        self._on_close: list[tuple[str, Callable[[float], None]]] = []
        repair = repair or RepairPolicy()
        self.clusters = ClusterEngine(store, repair)
        self.datastores = DatastoreEngine(store)
        self.audit = AuditLog(store, retention_days=audit_retention_days)
        self._availability: list[AvailabilityListener] = []
        self.pools = PoolEngine(store)
        self.jobs = JobEngine(
            store,
            driver,
            max_jobs=max_jobs,
            availability=self._availability_changed,
            retention_days=job_retention_days,
            owner=self.members.name,
        )
        for handler in job_kinds.handlers():
            self.jobs.register(handler)
        self.nodes = NodeEngine(store, self._availability_changed, drain=self.jobs.drain_node)
        self.drives = DriveEngine(
            store, driver, self._availability_changed, evacuate=self.jobs.evacuate_drive
        )
        self.maintenance = MaintenanceEngine(store, self._availability_changed)
        self.service = ServiceEngine(store, driver, self.jobs)
        self.on_start("registering this daemon", self.members.register)
        self.on_start("drives left ADDING", self.drives.recover)
        self.volumes = VolumeEngine(store, driver, self.jobs)
        self.snapshots = SnapshotEngine(store, driver, self.jobs)
        self.attachments = AttachmentEngine(store, driver)
        self.flush = FlushEngine(store, driver)
        self.templates = TemplateEngine(store, self.volumes)
        self.names = Names(store)
        self.on_start(
            "volume and snapshot changes left unfinished",
            lambda: self.volumes.recover(self.members.alive_at_start),
        )
        self.on_start("attachments the storage driver holds", self.attachments.restore)
        self.on_availability_change(self.volumes.availability_changed)
        # Rebuilds lost copies: woken (after the volume engine has recorded the
        # change) by availability changes, and by its own timer.
        self.repair = RepairController(
            store,
            self.jobs,
            repair,
            interval_seconds=repair_interval_seconds,
            enabled=repair_enabled,
        )
        self.on_availability_change(self.repair.availability_changed)
        self.clusters.repair_changed = self.repair.wake
        # Last, so every other recovery has run before jobs resume.
        self.on_start("job runner (resumes the jobs a gone daemon left)", self.jobs.run)
        self.on_start("repair controller", self.repair.run)
        self.on_close("job runner", self.jobs.stop)
        self.on_close("repair controller", self.repair.stop)
        # Rebalances the pools whose auto_balance is on, once they drift apart.
        self.balancer = AutoBalancer(store, self.jobs)
        self._balancing = Periodic("osd-auto-balance", AUTO_BALANCE_SECONDS, self.balancer.scan)
        self.pools.balance_changed = self._balancing.wake
        self.on_start("auto-balancer", self._balancing.start)
        self.on_close("auto-balancer", self._balancing.close)
        self.on_start("audit folding", self.audit.start_folding, everywhere=True)
        self.on_start("audit pruning", self.audit.start_pruning)
        self.on_close("audit", self.audit.close)
        # The heartbeat; after each, the changes of daemons gone since are
        # taken over.
        self.members.after_beat(lambda: self.volumes.take_over(self.members.alive))
        self.members.after_beat(self._follow_agents)
        if self._agent is not None:
            self.on_start("node agent", self._agent.start)
            self.on_close("node agent", self._agent.close)
        self._heartbeat = Periodic("osd-heartbeat", heartbeat_seconds, self.members.beat)
        self.on_start("heartbeat", self._heartbeat.start)
        self.on_close("heartbeat", self._close_heartbeat)
        # The recorded changes and the answered node work, once a minute (each
        # prune is a write, which a heartbeat's pace would make needlessly often).
        self._record_pruning = Periodic("osd-record-prune", RECORD_PRUNE_SECONDS, self._prune)
        self.on_start("pruning of recorded changes", self._record_pruning.start)
        self.on_close("pruning of recorded changes", self._record_pruning.close)
        self._job_pruning = Periodic("osd-job-prune", PRUNE_INTERVAL_SECONDS, self.jobs.prune)
        self.on_start("pruning of finished jobs", self._job_pruning.start)
        self.on_close("pruning of finished jobs", self._job_pruning.close)
        # Measures the drives this daemon drives itself.
        self.usage = UsageMeter(store, own_driver)
        if self.usage.measures:
            self._usage = Periodic("osd-usage", usage_interval_seconds, self.usage.measure)
            self.on_start("measuring used space", self._usage.start)
            self.on_close("measuring used space", self._usage.close)

    def _follow_agents(self) -> None:
        """Nodes whose agents are all gone go OFFLINE; back ONLINE when one
        returns."""
        with self.store.read() as s:
            agents = {n: daemon_repo.agents_of(s, n) for n in daemon_repo.agent_nodes(s)}
        for node_id, rows in agents.items():
            present = any(self.members.alive(d.id) for d in rows)
            self.nodes.follow_agent(node_id, present)

    def _prune(self) -> None:
        """Forgets the recorded changes older than watch_retention_seconds, and
        the node work answered more than an hour ago."""
        now = utcnow()
        with self.store.write() as s:
            events.prune(s, now - self._watch_retention)
            node_work.prune(s, now - timedelta(hours=1))

    def _close_heartbeat(self, timeout: float) -> None:
        """Stops the heartbeat and records the stop, waiting for the store at
        most STOP_RECORD_SECONDS each (a store that does not answer, or one
        another writer holds, must not hold the exit: the daemon then looks
        gone once its heartbeat is old)."""
        self._heartbeat.close(min(timeout, STOP_RECORD_SECONDS))

        def record() -> None:
            try:
                self.members.stop()
            except Exception as exc:  # the store may be gone already
                log.warning("could not record this daemon's stop: %s", exc)

        done = threading.Thread(target=record, name="osd-stop-record", daemon=True)
        done.start()
        done.join(min(timeout, STOP_RECORD_SECONDS))

    def on_start(self, name: str, step: Callable[[], None], *, everywhere: bool = False) -> None:
        """Runs ``step`` (recovery, starting workers) when the engine starts, in
        order: in the primary process alone, unless ``everywhere``."""
        self._on_start.append((name, step, everywhere))

    def on_availability_change(self, listener: AvailabilityListener) -> None:
        """Calls ``listener`` inside every transaction in which a topology change
        (node OFFLINE or ONLINE, drive hard eject or forget) turned allocations
        UNAVAILABLE or ACTIVE or released them, with the volumes and snapshots
        concerned, so whoever keeps their state can update it. A node's state
        change is told even when it moved no allocation (an empty change)."""
        self._availability.append(listener)

    def _availability_changed(self, session: Session, change: Availability) -> None:
        for listener in self._availability:
            listener(session, change)

    def on_close(self, name: str, step: Callable[[float], None]) -> None:
        """Runs ``step(timeout)`` (stopping workers, waiting at most ``timeout``
        seconds) when the engine closes, in reverse order."""
        self._on_close.append((name, step))

    def start(self, *, primary: bool = True) -> None:
        """Recovers what a crash left and starts the workers. A process that
        only serves reads beside the primary (``primary`` false) starts
        neither recovery nor jobs nor repair: only what each process keeps for
        itself."""
        for name, step, everywhere in self._on_start:
            if primary or everywhere:
                log.info("starting: %s", name)
                step()

    def close(self, timeout: float = 30.0) -> None:
        """Stops the workers, waiting at most ``timeout`` seconds for them all,
        and closes the store: a change still in flight then rolls back (work
        recorded in phases, and jobs, resume or roll back on the next start)."""
        deadline = time.monotonic() + timeout
        for name, step in reversed(self._on_close):
            try:
                step(max(0.0, deadline - time.monotonic()))
            except Exception:
                log.exception("closing %s failed", name)
        self.store.close()
