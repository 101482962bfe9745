"""GetCapacitySummary: capacity, use and counts per cluster and pool.

A constant number of statements whatever the size of the store: each figure
comes from one grouped query over every cluster (or pool) asked about.
Provisioned bytes come from the distinct volume layouts with their counts,
multiplied here (:func:`allocation_sizes` rounds in Python, so SQL could not
be exact).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from osd.engine.shared.allocation_math import provisioned_bytes
from osd.engine.shared.models import Capacity
from osd.engine.volumes.models import CapacitySummary, ClusterCapacity, PoolCapacity
from osd.errors import NotFound
from osd.store import clusters as cluster_repo
from osd.store import volumes as repo


def summary(s: Session, cluster_id: str, generation: int) -> CapacitySummary:
    """Every cluster's figures (only ``cluster_id``'s when given, checked by
    the caller), as of ``generation``."""
    clusters = repo.cluster_rows(s, cluster_id)
    if cluster_id and not clusters:
        raise NotFound.object("cluster", "cluster_id", cluster_id)
    if not clusters:
        return CapacitySummary([], generation)
    space = repo.cluster_space(s, cluster_id)
    layouts = cluster_repo.volume_layout_counts(s, cluster_id)
    snapshots = repo.snapshot_totals(s, cluster_id)
    reserved = repo.repair_reserved_by_cluster(s, cluster_id)
    pool_rows = repo.pool_rows_by_cluster(s, cluster_id)
    pool_space = repo.pool_space(s, cluster_id)
    out = []
    for c in clusters:
        total, used, available = space.get(c.id, (0, 0, 0))
        mine = layouts.get(c.id, [])
        count = sum(n for _layout, n in mine)
        logical = sum(layout[0] * n for layout, n in mine)
        provisioned = provisioned_bytes(mine)
        pools = []
        for p in pool_rows.get(c.id, ()):
            p_total, p_used, p_available = pool_space.get(p.id, (0, 0, 0))
            pools.append(
                PoolCapacity(
                    pool_id=p.id,
                    pool_name=p.name,
                    capacity=Capacity(p_total, p_used),
                    available_bytes=p_available,
                )
            )
        out.append(
            ClusterCapacity(
                cluster_id=c.id,
                cluster_name=c.name,
                capacity=Capacity(total, used),
                available_bytes=available,
                logical_bytes=logical,
                provisioned_bytes=provisioned,
                volume_count=count,
                snapshot_count=snapshots.get(c.id, 0),
                pools=pools,
                repair_reserved_bytes=reserved.get(c.id, 0),
            )
        )
    return CapacitySummary(out, generation)
