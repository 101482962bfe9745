"""The engine: the one object servicers call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from osd.engine.access.audit import PRUNE_INTERVAL_SECONDS, AuditLog
from osd.engine.datastores.registry import DatastoreEngine
from osd.engine.drivers import StorageDriver
from osd.engine.jobs import kinds as job_kinds
from osd.engine.jobs.jobs import JobEngine
from osd.engine.jobs.service_api import ServiceEngine
from osd.engine.shared.periodic import Periodic
from osd.engine.topology.availability import Availability, AvailabilityListener
from osd.engine.topology.clusters import ClusterEngine
from osd.engine.topology.drives import DriveEngine
from osd.engine.topology.maintenance import MaintenanceEngine
from osd.engine.topology.models import RepairPolicy
from osd.engine.topology.nodes import NodeEngine
from osd.engine.topology.pools import PoolEngine
from osd.engine.volumes.attachments import AttachmentEngine
from osd.engine.volumes.repair import RepairController
from osd.engine.volumes.snapshots import SnapshotEngine
from osd.engine.volumes.templates import TemplateEngine
from osd.engine.volumes.usage import UsageMeter
from osd.engine.volumes.volumes import VolumeEngine
from osd.store.db import Store

log = logging.getLogger(__name__)


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
    ) -> None:
        self.store = store
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
        )
        for handler in job_kinds.handlers():
            self.jobs.register(handler)
        self.nodes = NodeEngine(store, self._availability_changed, drain=self.jobs.drain_node)
        self.drives = DriveEngine(
            store, driver, self._availability_changed, evacuate=self.jobs.evacuate_drive
        )
        self.maintenance = MaintenanceEngine(store, self._availability_changed)
        self.service = ServiceEngine(store, driver, self.jobs)
        self.on_start("drives left ADDING", self.drives.recover)
        self.volumes = VolumeEngine(store, driver, self.jobs)
        self.snapshots = SnapshotEngine(store, driver)
        self.attachments = AttachmentEngine(store, driver)
        self.templates = TemplateEngine(store)
        self.on_start("volume and snapshot changes left unfinished", self.volumes.recover)
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
        self.on_start("audit folding", self.audit.start_folding, everywhere=True)
        self.on_start("audit pruning", self.audit.start_pruning)
        self.on_close("audit", self.audit.close)
        self._job_pruning = Periodic("osd-job-prune", PRUNE_INTERVAL_SECONDS, self.jobs.prune)
        self.on_start("pruning of finished jobs", self._job_pruning.start)
        self.on_close("pruning of finished jobs", self._job_pruning.close)
        self.usage = UsageMeter(store, driver)
        if self.usage.measures:
            self._usage = Periodic("osd-usage", usage_interval_seconds, self.usage.measure)
            self.on_start("measuring used space", self._usage.start)
            self.on_close("measuring used space", self._usage.close)

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
