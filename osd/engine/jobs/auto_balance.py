"""The auto-balancer: starts a pool's rebalance by itself (a pool whose
``auto_balance`` is on) once the spread between its fullest and emptiest
ONLINE drive reaches the pool's threshold.

It looks every INTERVAL_SECONDS and when told a pool's setting changed.
A pool is left alone while a job acts on it, and when no balance move would
lower its spread (its placement rules allow none): the rebalance would then
end at once, only to be started again at the next look. Every daemon sharing
the store may run it: starting a rebalance that is unfinished returns that
job, and a refusal (TOO_MANY_JOBS, JOB_IN_PROGRESS) waits for the next look.
"""

from __future__ import annotations

import logging

from osd.engine.jobs.jobs import JobEngine
from osd.engine.jobs.kinds.pool_rebalance import Balancer, PoolRebalanceSpec, spread_percent
from osd.engine.placement.cluster_view import ClusterView
from osd.enums import JobKind
from osd.errors import OsdError
from osd.store import jobs as job_repo
from osd.store import pools as pool_repo
from osd.store.db import Store

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 60.0


class AutoBalancer:
    """Run by a :class:`Periodic` every INTERVAL_SECONDS, and when woken."""

    def __init__(self, store: Store, jobs: JobEngine) -> None:
        self._store = store
        self._jobs = jobs

    def due(self) -> list[str]:
        """The pools whose rebalance is due now."""
        out: list[str] = []
        with self._store.read() as s:
            for pool in pool_repo.auto_balanced(s):
                if job_repo.unfinished(s, JobKind.POOL_REBALANCE, pool.id) is not None:
                    continue
                if spread_percent(s, pool.id) < pool.auto_balance_threshold_percent:
                    continue
                volumes = job_repo.volumes_of_pool(s, pool.id)
                allocs = job_repo.allocations_of_volumes(s, [v.id for v in volumes])
                view = ClusterView(s, pool.cluster_id)
                if Balancer(s, view, pool.id, volumes, allocs).best() is None:
                    continue
                out.append(pool.id)
        return out

    def scan(self) -> list[str]:
        """Starts the rebalances that are due; returns the pools started."""
        started: list[str] = []
        for pool_id in self.due():
            try:
                result = self._jobs.start(JobKind.POOL_REBALANCE, PoolRebalanceSpec(pool_id))
            except OsdError as exc:
                log.info("auto-balance of pool %s waits: %s", pool_id, exc)
                continue
            if result.started:
                log.info("auto-balance: pool %s rebalances (job %s)", pool_id, result.job.id)
                started.append(pool_id)
        return started
