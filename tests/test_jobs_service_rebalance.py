"""Pool rebalance through the wire on both stores: usage evens out within each
volume's failure domain, lost copies are rebuilt, a driver failure midway
rolls back the move in flight."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from sqlalchemy import select

from osd.enums import DriveState, FailureDomain
from osd.store import allocations
from osd.store.models import AllocationRow, DriveRow, NodeRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import service_pb2 as spb
from tests.conftest import RunningDaemon
from tests.factories import (
    GIB,
    make_cluster,
    make_drive,
    make_node,
    make_pool,
    make_topology,
    make_volume,
)
from tests.helpers import error_of
from tests.test_jobs import assert_books, service_stub, wait_job


def _status(d: RunningDaemon, pool_id: str) -> spb.GetPoolRebalanceStatusResponse:
    return service_stub(d).GetPoolRebalanceStatus(
        spb.GetPoolRebalanceStatusRequest(pool_id=pool_id), timeout=10
    )


def _rebalance(d: RunningDaemon, pool_id: str) -> jpb.Job:
    started = service_stub(d).StartPoolRebalance(
        spb.StartPoolRebalanceRequest(pool_id=pool_id), timeout=10
    )
    assert started.started and started.job.kind == jpb.JOB_KIND_POOL_REBALANCE
    return wait_job(d, started.job.id)


def _placement(d: RunningDaemon, volume_id: str) -> list[tuple[str, str, str]]:
    """(drive, node, zone) of each copy of a volume."""
    with d.store.read() as s:
        rows = s.execute(
            select(AllocationRow.drive_id, AllocationRow.node_id, NodeRow.zone)
            .join(NodeRow, NodeRow.id == AllocationRow.node_id)
            .where(AllocationRow.volume_id == volume_id)
        ).all()
    return [(a, b, c) for a, b, c in rows]


def _used(d: RunningDaemon, drive_ids: list[str]) -> list[int]:
    with d.store.read() as s:
        return [s.get_one(DriveRow, i).used_bytes for i in drive_ids]


def test_rebalance_evens_out_usage_keeping_zones_apart(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    vols = [
        make_volume(
            daemon.store,
            cluster_id,
            [drives[0], drives[2], drives[4]],
            5 * GIB,
            pool_id=pool,
            driver=daemon.driver,
        )
        for _ in range(6)
    ]
    before = _status(daemon, pool)
    assert before.status == spb.REBALANCE_STATUS_NONE and not before.HasField("job")
    assert before.spread_percent == pytest.approx(30.0)
    assert before.missing_copies == 0
    job = _rebalance(daemon, pool)
    assert job.state == jpb.JOB_STATE_DONE
    assert job.progress.done_steps == job.progress.total_steps == 9
    assert _used(daemon, drives) == [15 * GIB] * 6
    after = _status(daemon, pool)
    assert after.status == spb.REBALANCE_STATUS_DONE and after.job.id == job.id
    assert after.progress.percent == 100
    assert after.spread_percent == 0.0
    for vol in vols:
        assert len({zone for _, _, zone in _placement(daemon, vol)}) == 3
    # Each moved copy is in the driver on its new drive, and gone from the old one.
    with daemon.store.read() as s:
        where = {(a.drive_id, a.id) for a in s.scalars(select(AllocationRow))}
    assert set(daemon.driver.state.replicas) == where
    assert_books(daemon.store)


@pytest.mark.parametrize("domain", [FailureDomain.NODE, FailureDomain.DRIVE], ids=["node", "drive"])
def test_rebalance_keeps_each_volume_failure_domain(
    daemon: RunningDaemon, domain: FailureDomain
) -> None:
    cluster_id = make_cluster(daemon.store)
    if domain == FailureDomain.NODE:
        # Three nodes in one zone, two drives each: copies may share a zone, not a node.
        nodes = [make_node(daemon.store, cluster_id, f"n{i}", "z") for i in range(3)]
        drives = [make_drive(daemon.store, n, p) for n in nodes for p in ("/dev/sdb", "/dev/sdc")]
        first = [drives[0], drives[2]]
    else:
        # One node, four drives: copies may share the node, not a drive.
        node = make_node(daemon.store, cluster_id, "n0", "z")
        drives = [make_drive(daemon.store, node, f"/dev/sd{c}") for c in "bcde"]
        first = [drives[0], drives[1]]
    pool = make_pool(daemon.store, cluster_id, "p", drives)
    vols = [
        make_volume(
            daemon.store,
            cluster_id,
            first,
            4 * GIB,
            pool_id=pool,
            failure_domain=int(domain),
            driver=daemon.driver,
        )
        for _ in range(6)
    ]
    assert _rebalance(daemon, pool).state == jpb.JOB_STATE_DONE
    used = _used(daemon, drives)
    assert max(used) - min(used) <= 4 * GIB
    assert _status(daemon, pool).spread_percent < 5
    for vol in vols:
        placed = _placement(daemon, vol)
        key = 1 if domain == FailureDomain.NODE else 0
        assert len({p[key] for p in placed}) == 2, placed
    assert_books(daemon.store)


def test_rebalance_rebuilds_lost_and_unavailable_copies(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    ejected_vol = make_volume(
        daemon.store,
        cluster_id,
        [drives[0], drives[2], drives[4]],
        GIB,
        pool_id=pool,
        driver=daemon.driver,
    )
    lost_vol = make_volume(
        daemon.store,
        cluster_id,
        [drives[1], drives[3], drives[5]],
        GIB,
        pool_id=pool,
        driver=daemon.driver,
    )
    with daemon.store.write() as s:
        # A hard eject of drive 0: its copy is UNAVAILABLE on an EJECTED drive.
        s.get_one(DriveRow, drives[0]).state = int(DriveState.EJECTED)
        for a in s.scalars(select(AllocationRow).where(AllocationRow.drive_id == drives[0])):
            a.state = 3
        # A forget of drive 3's copy: the allocation is gone.
        lost = s.scalars(select(AllocationRow).where(AllocationRow.drive_id == drives[3])).one()
        allocations.release(s, lost)
    assert _status(daemon, pool).missing_copies == 2
    job = _rebalance(daemon, pool)
    assert job.state == jpb.JOB_STATE_DONE
    assert _status(daemon, pool).missing_copies == 0
    # Zones 1 and 2 hold the other copies, so both rebuilt copies stay in their zone.
    ejected_now = _placement(daemon, ejected_vol)
    assert (drives[1], nodes[0], "zone0") in ejected_now
    assert len({z for _, _, z in ejected_now}) == 3
    lost_now = _placement(daemon, lost_vol)
    assert len(lost_now) == 3 and len({z for _, _, z in lost_now}) == 3
    assert [n for _, n, _ in lost_now].count(nodes[1]) == 1
    with daemon.store.read() as s:
        states = Counter(a.state for a in s.scalars(select(AllocationRow)))
        assert s.get_one(DriveRow, drives[0]).used_bytes == 0
    assert states == Counter({2: 6})
    assert_books(daemon.store)


def test_a_driver_failure_midway_rolls_back_the_move_in_flight(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    for _ in range(4):
        make_volume(
            daemon.store,
            cluster_id,
            [drives[0], drives[2], drives[4]],
            GIB,
            pool_id=pool,
            driver=daemon.driver,
        )
    calls: list[str] = []

    def second_copy(args: dict[str, object]) -> bool:
        calls.append(str(args["replica_id"]))
        return len(calls) == 2

    daemon.driver.fail("copy_replica", when=second_copy)
    job = _rebalance(daemon, pool)
    assert job.state == jpb.JOB_STATE_FAILED
    assert job.progress.done_steps == 1
    status = _status(daemon, pool)
    assert status.status == spb.REBALANCE_STATUS_FAILED
    # One move happened; the failed one left nothing behind.
    assert sorted(_used(daemon, drives)) == sorted([3 * GIB, GIB, 4 * GIB, 0, 4 * GIB, 0])
    with daemon.store.read() as s:
        where = {(a.drive_id, a.id) for a in s.scalars(select(AllocationRow))}
    assert set(daemon.driver.state.replicas) == where
    assert_books(daemon.store)


def test_rebalance_refusals(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _drives = make_topology(daemon.store)
    empty = make_pool(daemon.store, cluster_id, "empty")
    dead = make_drive(daemon.store, nodes[0], "/dev/dead", state=DriveState.EJECTED)
    only_dead = make_pool(daemon.store, cluster_id, "dead", [dead])
    svc = service_stub(daemon)
    for pool_id, code, reason in (
        ("nope", grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("0" * 32, grpc.StatusCode.NOT_FOUND, ""),
        (empty, grpc.StatusCode.FAILED_PRECONDITION, "POOL_EMPTY"),
        (only_dead, grpc.StatusCode.FAILED_PRECONDITION, "POOL_EMPTY"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            svc.StartPoolRebalance(spb.StartPoolRebalanceRequest(pool_id=pool_id), timeout=10)
        err = error_of(info.value)
        assert err.code == code
        if reason:
            assert err.reason == reason
        else:
            assert "pool_id" in err.fields
    for pool_id, code in (("x", "INVALID_ARGUMENT"), ("0" * 32, "NOT_FOUND")):
        with pytest.raises(grpc.RpcError) as info:
            _status(daemon, pool_id)
        assert error_of(info.value).code.name == code


def test_starting_again_returns_the_unfinished_rebalance(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    for _ in range(2):
        make_volume(
            daemon.store,
            cluster_id,
            [drives[0], drives[2], drives[4]],
            GIB,
            pool_id=pool,
            driver=daemon.driver,
        )
    daemon.driver.block("copy_replica")
    svc = service_stub(daemon)
    first = svc.StartPoolRebalance(spb.StartPoolRebalanceRequest(pool_id=pool), timeout=10)
    again = svc.StartPoolRebalance(spb.StartPoolRebalanceRequest(pool_id=pool), timeout=10)
    assert not again.started and again.job.id == first.job.id
    assert daemon.driver.wait_blocked("copy_replica")
    status = _status(daemon, pool)
    assert status.status == spb.REBALANCE_STATUS_RUNNING
    assert status.job.id == first.job.id
    daemon.driver.unblock("copy_replica")
    assert wait_job(daemon, first.job.id).state == jpb.JOB_STATE_DONE
