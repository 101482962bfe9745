"""Pools that rebalance by themselves (Pool.auto_balance), over the wire on
SQLite and PostgreSQL: turned on with UpdatePool, a pool whose spread reaches
its threshold gets a rebalance, and one that is even, or that no move would
even out, gets none. Which pools are due is asked of the daemon's
auto-balancer itself, so that "none" does not depend on its timer."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import field_mask_pb2

from osd.store.models import PoolRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import pool_pb2 as ppb
from osd.v1 import pool_pb2_grpc
from osd.v1 import service_pb2 as spb
from tests.conftest import RunningDaemon
from tests.factories import GIB, make_pool, make_topology, make_volume
from tests.test_jobs import assert_books, jobs_stub, service_stub, wait_job
from tests.test_repair import until
from tests.volume_helpers import fails, generation


def pools(d: RunningDaemon) -> pool_pb2_grpc.PoolServiceStub:
    return pool_pb2_grpc.PoolServiceStub(d.channel)


def set_auto(d: RunningDaemon, pool_id: str, **fields: object) -> ppb.Pool:
    return (
        pools(d)
        .UpdatePool(
            ppb.UpdatePoolRequest(
                pool_id=pool_id,
                update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
                **fields,  # type: ignore[arg-type]
            ),
            timeout=10,
        )
        .pool
    )


def rebalances(d: RunningDaemon, pool_id: str) -> list[jpb.Job]:
    return list(
        jobs_stub(d)
        .ListJobs(jpb.ListJobsRequest(kinds=[jpb.JOB_KIND_POOL_REBALANCE], target_id=pool_id))
        .jobs
    )


def uneven_pool(d: RunningDaemon, volumes: int) -> tuple[str, list[str]]:
    """A pool of six drives in three zones, with ``volumes`` volumes of 5G
    all on the first drive of each zone."""
    cluster_id, nodes, drives = make_topology(d.store)
    pool = make_pool(d.store, cluster_id, "p", node_ids=nodes)
    for _ in range(volumes):
        make_volume(
            d.store,
            cluster_id,
            [drives[0], drives[2], drives[4]],
            5 * GIB,
            pool_id=pool,
            driver=d.driver,
        )
    return pool, drives


def spread(d: RunningDaemon, pool_id: str) -> float:
    return (
        service_stub(d)
        .GetPoolRebalanceStatus(spb.GetPoolRebalanceStatusRequest(pool_id=pool_id))
        .spread_percent
    )


def test_a_pool_past_its_threshold_rebalances_by_itself(daemon: RunningDaemon) -> None:
    pool, _drives = uneven_pool(daemon, 6)
    shown = pools(daemon).InspectPool(ppb.InspectPoolRequest(pool_id=pool)).pool
    assert (shown.auto_balance, shown.auto_balance_threshold_percent) == (False, 10.0)
    assert spread(daemon, pool) == pytest.approx(30.0)
    assert daemon.daemon.engine.balancer.due() == []  # off: never due

    # On, with a threshold above the spread: nothing starts.
    on = set_auto(daemon, pool, auto_balance=True, auto_balance_threshold_percent=50.0)
    assert (on.auto_balance, on.auto_balance_threshold_percent) == (True, 50.0)
    assert daemon.daemon.engine.balancer.due() == []
    assert rebalances(daemon, pool) == []

    # The threshold lowered below the spread: the auto-balancer, told, starts one.
    set_auto(daemon, pool, auto_balance_threshold_percent=20.0)
    [job] = until(lambda: rebalances(daemon, pool))
    assert wait_job(daemon, job.id).state == jpb.JOB_STATE_DONE
    assert spread(daemon, pool) == 0.0
    assert_books(daemon.store)
    # Even now: none is due, and none more starts.
    assert daemon.daemon.engine.balancer.scan() == []
    assert [j.id for j in rebalances(daemon, pool)] == [job.id]


def test_a_pool_no_move_would_even_out_is_left_alone(daemon: RunningDaemon) -> None:
    # One volume: moving any copy to its zone's other drive only swaps them.
    pool, _drives = uneven_pool(daemon, 1)
    assert spread(daemon, pool) == pytest.approx(5.0)
    set_auto(daemon, pool, auto_balance=True, auto_balance_threshold_percent=1.0)
    assert daemon.daemon.engine.balancer.scan() == []
    assert rebalances(daemon, pool) == []


@pytest.mark.parametrize("threshold", [0.0, -5.0, 100.5, math.nan])
def test_a_wrong_threshold_is_refused_and_changes_nothing(
    daemon: RunningDaemon, threshold: float
) -> None:
    pool, _drives = uneven_pool(daemon, 0)
    before = generation(daemon)
    err = fails(
        pools(daemon).UpdatePool,
        ppb.UpdatePoolRequest(
            pool_id=pool,
            auto_balance=True,
            auto_balance_threshold_percent=threshold,
            update_mask=field_mask_pb2.FieldMask(
                paths=["auto_balance", "auto_balance_threshold_percent"]
            ),
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == ["auto_balance_threshold_percent"]
    assert generation(daemon) == before
    shown = pools(daemon).InspectPool(ppb.InspectPoolRequest(pool_id=pool)).pool
    assert (shown.auto_balance, shown.auto_balance_threshold_percent) == (False, 10.0)


def test_the_cluster_report_shows_every_pool_and_its_balance(daemon: RunningDaemon) -> None:
    pool, _drives = uneven_pool(daemon, 6)
    with daemon.store.read() as s:
        cluster_id = s.get_one(PoolRow, pool).cluster_id
    empty = make_pool(daemon.store, cluster_id, "a-empty")
    stub = service_stub(daemon)
    report = stub.GetClusterRebalanceStatus(
        spb.GetClusterRebalanceStatusRequest(cluster_id=cluster_id)
    )
    assert [p.pool_name for p in report.pools] == ["a-empty", "p"]
    assert [p.pool_id for p in report.pools] == [empty, pool]
    first, second = report.pools
    assert (first.status, first.spread_percent) == (spb.REBALANCE_STATUS_NONE, 0.0)
    assert second.spread_percent == pytest.approx(30.0)
    assert (second.auto_balance, second.auto_balance_threshold_percent) == (False, 10.0)
    assert report.unfinished == 0 and report.generation > 0

    started = stub.StartPoolRebalance(spb.StartPoolRebalanceRequest(pool_id=pool))
    assert wait_job(daemon, started.job.id).state == jpb.JOB_STATE_DONE
    after = stub.GetClusterRebalanceStatus(
        spb.GetClusterRebalanceStatusRequest(cluster_id=cluster_id)
    ).pools[1]
    assert (after.status, after.job.id, after.spread_percent) == (
        spb.REBALANCE_STATUS_DONE,
        started.job.id,
        0.0,
    )
    for cluster, code in (
        ("x", grpc.StatusCode.INVALID_ARGUMENT),
        ("a" * 32, grpc.StatusCode.NOT_FOUND),
    ):
        err = fails(
            stub.GetClusterRebalanceStatus,
            spb.GetClusterRebalanceStatusRequest(cluster_id=cluster),
        )
        assert err.code == code
