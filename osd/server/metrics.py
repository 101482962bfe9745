"""Prometheus metrics: what the calls did, and what the store holds.

Per RPC, counted by the interceptor as each call ends: requests by method
and code (``osd_rpc_requests_total``) and latency (``osd_rpc_duration_seconds``).
At each scrape, from the store, in a handful of grouped queries whatever its
size: capacity, used and provisioned bytes per cluster, pool, node and drive;
objects by state; jobs by kind and state; the repair backlog; and the store
itself (its connection pool, and how long a trivial query takes).

Served at ``/metrics`` on the REST port (credentials of any role needed when
authentication is on, as for every call) and, with ``metrics_listen``, on a
port of its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from osd.engine.engine import Engine
from osd.enums import DriveState, JobKind, JobState, NodeState, VolumeState
from osd.store.models import DriveRow, JobRow, NodeRow, VolumeRow

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Where the processes of one daemon count their calls (prometheus-client's name).
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _state(
    enum: type[VolumeState | DriveState | NodeState | JobState | JobKind], value: int
) -> str:
    try:
        return enum(value).name.lower()
    except ValueError:
        return str(value)


class _StoreCollector(Collector):
    """The store's figures, read at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception as exc:  # a scrape never fails the daemon
            log.warning("metrics: the store could not be read: %s", exc)
            up = GaugeMetricFamily("osd_store_up", "Whether the store answered the last scrape")
            up.add_metric([], 0)
            yield up

    def _collect(self) -> Iterator[Metric]:
        store = self.engine.store
        start = time.perf_counter()
        with store.read() as s:
            s.execute(text("SELECT 1"))
        probe = time.perf_counter() - start
        up = GaugeMetricFamily("osd_store_up", "Whether the store answered the last scrape")
        up.add_metric([], 1)
        yield up
        latency = GaugeMetricFamily(
            "osd_store_query_seconds", "How long a trivial query took at the last scrape"
        )
        latency.add_metric([], probe)
        yield latency
        pool = store.engine.pool
        for metric, what, attribute in (
            ("osd_store_pool_connections", "Connections the store's pool holds", "size"),
            ("osd_store_pool_checked_out", "Connections in use", "checkedout"),
        ):
            read = getattr(pool, attribute, None)
            if callable(read):
                gauge = GaugeMetricFamily(metric, what)
                gauge.add_metric([], float(read()))
                yield gauge

        summary = self.engine.volumes.capacity("")
        names = (
            ("osd_cluster_capacity_bytes", "Bytes on the cluster's drives"),
            ("osd_cluster_used_bytes", "Bytes allocated on the cluster's drives"),
            ("osd_cluster_available_bytes", "Bytes still free for new allocations"),
            ("osd_cluster_provisioned_bytes", "Bytes the cluster's volumes take, all copies"),
            ("osd_cluster_logical_bytes", "The sum of the cluster's volume sizes"),
            ("osd_cluster_repair_reserved_bytes", "Bytes repairs hold reserved"),
        )
        cluster = {n: GaugeMetricFamily(n, h, labels=["cluster_id"]) for n, h in names}
        pool_names = (
            ("osd_pool_capacity_bytes", "Bytes on the pool's drives"),
            ("osd_pool_used_bytes", "Bytes allocated on the pool's drives"),
            ("osd_pool_available_bytes", "Bytes still free in the pool"),
        )
        pools = {
            n: GaugeMetricFamily(n, h, labels=["cluster_id", "pool_id"]) for n, h in pool_names
        }
        for c in summary.clusters:
            for name, value in zip(
                (n for n, _ in names),
                (
                    c.capacity.total_bytes,
                    c.capacity.used_bytes,
                    c.available_bytes,
                    c.provisioned_bytes,
                    c.logical_bytes,
                    c.repair_reserved_bytes,
                ),
                strict=True,
            ):
                cluster[name].add_metric([c.cluster_id], value)
            for p in c.pools:
                for name, value in zip(
                    (n for n, _ in pool_names),
                    (p.capacity.total_bytes, p.capacity.used_bytes, p.available_bytes),
                    strict=True,
                ):
                    pools[name].add_metric([c.cluster_id, p.pool_id], value)
        yield from cluster.values()
        yield from pools.values()

        with store.read() as s:
            drive_cap = GaugeMetricFamily(
                "osd_drive_capacity_bytes", "Bytes on the drive", labels=["node_id", "drive_id"]
            )
            drive_used = GaugeMetricFamily(
                "osd_drive_used_bytes",
                "Bytes allocated on the drive",
                labels=["node_id", "drive_id"],
            )
            node_cap = GaugeMetricFamily(
                "osd_node_capacity_bytes", "Bytes on the node's drives", labels=["node_id"]
            )
            node_used = GaugeMetricFamily(
                "osd_node_used_bytes", "Bytes allocated on the node's drives", labels=["node_id"]
            )
            by_node: dict[str, list[int]] = {}
            for drive_id, node_id, total, used in s.execute(
                select(DriveRow.id, DriveRow.node_id, DriveRow.total_bytes, DriveRow.used_bytes)
            ):
                drive_cap.add_metric([node_id, drive_id], total)
                drive_used.add_metric([node_id, drive_id], used)
                sums = by_node.setdefault(node_id, [0, 0])
                sums[0] += total
                sums[1] += used
            for node_id, (total, used) in by_node.items():
                node_cap.add_metric([node_id], total)
                node_used.add_metric([node_id], used)
            yield from (drive_cap, drive_used, node_cap, node_used)

            for name, what, row, enum in (
                ("osd_volumes", "Volumes by cluster and state", VolumeRow, VolumeState),
                ("osd_drives", "Drives by cluster and state", DriveRow, DriveState),
                ("osd_nodes", "Nodes by cluster and state", NodeRow, NodeState),
            ):
                gauge = GaugeMetricFamily(name, what, labels=["cluster_id", "state"])
                for cluster_id, state, count in s.execute(
                    select(row.cluster_id, row.state, func.count()).group_by(
                        row.cluster_id, row.state
                    )
                ):
                    gauge.add_metric([cluster_id, _state(enum, state)], count)
                yield gauge

            jobs = GaugeMetricFamily("osd_jobs", "Jobs by kind and state", labels=["kind", "state"])
            for kind, state, count in s.execute(
                select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)
            ):
                jobs.add_metric([_state(JobKind, kind), _state(JobState, state)], count)
            yield jobs

            backlog = GaugeMetricFamily(
                "osd_repair_backlog_volumes",
                "Volumes below their durability, waiting for or under repair",
                labels=["cluster_id"],
            )
            for cluster_id, count in s.execute(
                select(VolumeRow.cluster_id, func.count())
                .where(VolumeRow.degraded_time.is_not(None))
                .group_by(VolumeRow.cluster_id)
            ):
                backlog.add_metric([cluster_id], count)
            yield backlog


class Metrics:
    """The daemon's metrics, in a registry of its own.

    When the daemon serves from several processes, the environment names a
    directory shared by them all (``PROMETHEUS_MULTIPROC_DIR``, set before
    prometheus-client is first imported): each process counts its calls in
    files there, and a scrape sums every process's, the ones that have
    exited included, so that the counters never go back.
    """

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        shared = os.environ.get(MULTIPROCESS_ENV)
        # Shared: counted into the files, and read back from them at a scrape.
        own = None if shared else self.registry
        self.requests = Counter(
            "osd_rpc_requests",
            "Calls by method and outcome",
            ["method", "code"],
            registry=own,
        )
        self.latency = Histogram(
            "osd_rpc_duration_seconds",
            "How long calls took, by method",
            ["method"],
            buckets=_BUCKETS,
            registry=own,
        )
        if shared:
            multiprocess.MultiProcessCollector(self.registry, path=shared)  # type: ignore[no-untyped-call]
        self.registry.register(_StoreCollector(engine))

    def observe(self, method: str, code: str, seconds: float) -> None:
        """Counts one call of ``method`` ("osd.v1.VolumeService/CreateVolume")."""
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
