"""The repair controller: osd rebuilds lost copies by itself.

A volume is degraded when one of the copies its durability declares is not
live (see :mod:`osd.engine.volumes.health`): lost with a forgotten drive,
UNAVAILABLE on a hard-ejected drive, or on an OFFLINE or MAINTENANCE node.
The volume engine records since when (``degraded_time``). The controller, a
background thread of the daemon, looks at the degraded volumes of every
cluster whose repair is not paused, and starts a VOLUME_REPAIR job (see
:mod:`osd.engine.jobs.kinds.volume_repair`) for each volume whose lost
copies are due:

* a copy is due once the volume has been degraded for the cluster's repair
  delay, so that a node that reboots is not rebuilt around;
* a copy on a node in MAINTENANCE is due only once the volume has been
  degraded for the maintenance timeout;
* the most endangered volumes go first: the fewest live copies beyond what
  the data needs to be read, then the longest degraded, then the oldest;
* at most ``max_repairs`` repairs are unfinished in a cluster at once (the
  job's start refuses one more, under the store's writer lock, so daemons
  sharing a store keep the limit together), and a repair does not write to
  a drive that ``max_repairs_per_drive`` others write to.

It looks when an availability change commits (a node OFFLINE, a drive
ejected or forgotten), when the next volume becomes due, and at least every
``interval_seconds``. Starting a repair is idempotent (one unfinished
VOLUME_REPAIR per volume), so several daemons may run the controller on one
store. :meth:`RepairController.repair_now` is the operator's RepairVolume: it
starts at once, whatever the delay, the maintenance timeout or the pause.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from osd.engine.jobs.jobs import JobEngine
from osd.engine.jobs.kinds.volume_repair import VolumeRepairRequest
from osd.engine.jobs.models import JobResult
from osd.engine.shared import validation as v
from osd.engine.topology.availability import Availability
from osd.engine.topology.clusters import repair_policy
from osd.engine.topology.models import RepairPolicy
from osd.engine.volumes.guards import get_volume
from osd.engine.volumes.health import CopyHealth, health_of
from osd.engine.volumes.models import RepairStarted
from osd.engine.volumes.views import volume_from
from osd.enums import CopyLoss, DurabilityType, JobKind, VolumeState
from osd.errors import OsdError
from osd.store import jobs as job_repo
from osd.store import volumes as repo
from osd.store.db import Store
from osd.store.models import ClusterRow, DriveRow, NodeRow, VolumeRow, utcnow

log = logging.getLogger(__name__)

REPAIRABLE = (VolumeState.UP, VolumeState.DEGRADED)

# A volume whose last repair could not rebuild every copy is tried again only
# after this long (unless an operator asks), so that a copy with nowhere to go
# does not start one repair after another.
RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class Candidate:
    """A degraded volume whose lost copies (``indices``) are due for repair."""

    volume_id: str
    margin: int
    since: datetime
    create_time: datetime
    indices: tuple[int, ...]

    @property
    def order(self) -> tuple[int, datetime, datetime, str]:
        return (self.margin, self.since, self.create_time, self.volume_id)


def due_copies(
    row: VolumeRow, health: CopyHealth, policy: RepairPolicy, now: datetime
) -> tuple[tuple[int, ...], datetime | None]:
    """The indices of the volume's lost copies that are due for repair now, and
    when the next of the others will be (None when none will by time alone)."""
    since = row.degraded_time or row.update_time
    delay = _after(since, policy.delay_seconds)
    maintenance = _after(since, policy.maintenance_timeout_seconds)
    due: list[int] = []
    later: list[datetime] = []
    for m in health.missing:
        at = maintenance if m.loss == CopyLoss.NODE_MAINTENANCE else delay
        if at is None:
            continue  # a wait that outlasts the calendar: never by time alone
        if at <= now:
            due.append(m.index)
        else:
            later.append(at)
    return tuple(due), min(later, default=None)


def _after(since: datetime, seconds: int) -> datetime | None:
    """``seconds`` after ``since``; None past the last date a datetime holds (a
    policy may ask for any int64 of seconds)."""
    try:
        return since + timedelta(seconds=seconds)
    except OverflowError:
        return None


class RepairController:
    """Starts the repairs the clusters' policies call for (see the module doc)."""

    def __init__(
        self,
        store: Store,
        jobs: JobEngine,
        defaults: RepairPolicy,
        *,
        interval_seconds: float = 30.0,
        enabled: bool = True,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._defaults = defaults
        self._interval = interval_seconds
        self._enabled = enabled
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the daemon's hooks -----------------------------------------------------------

    def run(self) -> None:
        """Starts the controller's thread (a no-op when repair is disabled)."""
        if not self._enabled or self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="osd-repair", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def availability_changed(self, s: Session, change: Availability) -> None:
        """Wakes the controller once the topology change's transaction commits
        (one that touched no volume may still be room a repair lacked)."""
        if self._thread is not None:
            event.listen(s, "after_commit", lambda _s: self._wake.set(), once=True)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wait = self._interval
            try:
                next_due = self.scan()
                if next_due is not None:
                    wait = min(wait, max(0.05, next_due))
            except Exception:
                log.exception("repair: looking for volumes to repair failed")
            self._wake.wait(wait)
            self._wake.clear()

    # -- one look -----------------------------------------------------------------------

    def scan(self, now: datetime | None = None) -> float | None:
        """Starts the repairs that are due now; returns in how many seconds the next
        lost copy becomes due (None when none is waiting on time)."""
        now = now or utcnow()
        next_due: datetime | None = None
        with self._store.read() as s:
            clusters = list(s.query(ClusterRow).order_by(ClusterRow.name))
            plans: list[tuple[ClusterRow, RepairPolicy, list[Candidate]]] = []
            for cluster in clusters:
                policy = repair_policy(cluster, self._defaults)
                if policy.paused:
                    continue
                found, at = self._candidates(s, cluster.id, policy, now)
                if at is not None and (next_due is None or at < next_due):
                    next_due = at
                if found:
                    plans.append((cluster, policy, found))
        for cluster, policy, found in plans:
            self._start(cluster, policy, found)
        return None if next_due is None else (next_due - now).total_seconds()

    def _candidates(
        self, s: Session, cluster_id: str, policy: RepairPolicy, now: datetime
    ) -> tuple[list[Candidate], datetime | None]:
        rows = [r for r in repo.degraded_in_cluster(s, cluster_id) if r.state in REPAIRABLE]
        views = repo.copy_views(s, [r.id for r in rows])
        found: list[Candidate] = []
        next_due: datetime | None = None
        changed = _topology_changed(s, cluster_id) if rows else None
        for row in rows:
            health = health_of(row, views.get(row.id, []))
            if not health.missing or row.durability_type == DurabilityType.NONE:
                continue
            if health.live < health.needed:
                continue  # nothing to rebuild from
            due, later = due_copies(row, health, policy, now)
            if later is not None and (next_due is None or later < next_due):
                next_due = later
            if not due or row.active_job_id:
                continue
            retry = self._retry_time(s, row.id, changed)
            if retry is not None and retry > now:
                next_due = retry if next_due is None else min(next_due, retry)
                continue
            since = row.degraded_time or row.update_time
            found.append(Candidate(row.id, health.margin, since, row.create_time, due))
        found.sort(key=lambda c: c.order)
        return found, next_due

    @staticmethod
    def _retry_time(s: Session, volume_id: str, changed: datetime | None) -> datetime | None:
        """When a volume whose last repair fell short may be repaired again: at
        once if a node or drive of the cluster changed since (``changed``: a
        node back ONLINE, a drive added may be the room it lacked), else after
        RETRY_SECONDS."""
        last = job_repo.latest(s, JobKind.VOLUME_REPAIR, volume_id)
        if last is None or last.end_time is None or last.result is None:
            return None
        if JobResult.from_json(last.result).complete:
            return None
        if changed is not None and changed > last.end_time:
            return None
        return last.end_time + timedelta(seconds=RETRY_SECONDS)

    def _start(self, cluster: ClusterRow, policy: RepairPolicy, found: list[Candidate]) -> None:
        for candidate in found:
            request = VolumeRepairRequest(
                candidate.volume_id,
                candidate.indices,
                policy.max_repairs,
                policy.max_repairs_per_drive,
            )
            try:
                started = self._jobs.start(JobKind.VOLUME_REPAIR, request)
            except OsdError as exc:
                if exc.reason in ("REPAIR_LIMIT", "TOO_MANY_JOBS"):
                    log.debug("repair: cluster %s waits for room: %s", cluster.name, exc)
                    return
                log.info("repair: volume %s not repaired now: %s", candidate.volume_id, exc)
                continue
            if started.started:
                log.info(
                    "repair: volume %s, copies %s: job %s",
                    candidate.volume_id,
                    ",".join(map(str, candidate.indices)),
                    started.job.id,
                )

    # -- the operator's call --------------------------------------------------------------

    def repair_now(self, volume_id: str) -> RepairStarted:
        """Starts repairing every lost copy of a volume now (VolumeService.RepairVolume)."""
        v.check_id(volume_id, "volume_id")
        with self._store.read() as s:
            row = get_volume(s, volume_id)
            cluster = s.get_one(ClusterRow, row.cluster_id)
            policy = repair_policy(cluster, self._defaults)
        request = VolumeRepairRequest(
            volume_id, (), policy.max_repairs, policy.max_repairs_per_drive
        )
        started = self._jobs.start(JobKind.VOLUME_REPAIR, request)
        with self._store.read() as s:
            volume = volume_from(s, get_volume(s, volume_id))
        return RepairStarted(volume, started.job, started.started, started.generation)


def _topology_changed(s: Session, cluster_id: str) -> datetime | None:
    """The last time a node or drive of the cluster changed."""
    times = [
        s.scalar(select(func.max(table.update_time)).where(table.cluster_id == cluster_id))
        for table in (NodeRow, DriveRow)
    ]
    return max((t for t in times if t is not None), default=None)
