"""Data safety of the jobs that move data, through the wire on both stores.

A pool rebalance that cannot restore every copy says so (FAILED, with a
result that counts what is missing) and never shows more done than total;
its status agrees with that result. A pool of whole nodes takes no data on,
and counts no capacity of, a member drive that cannot take data. A cancelled
soft eject or drain returns its source to service and says in the job's
result what moved (those copies stay where they went).
"""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from osd.enums import DriveState
from osd.store.models import AllocationRow, NodeRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as npb
from osd.v1 import pool_pb2 as ppb
from osd.v1 import pool_pb2_grpc, volume_pb2_grpc
from osd.v1 import service_pb2 as spb
from osd.v1 import volume_pb2 as vpb
from tests.conftest import RunningDaemon
from tests.factories import GIB, make_drive, make_pool, make_topology, make_volume
from tests.test_jobs import (
    allocs_on,
    assert_books,
    jobs_stub,
    replace_setup,
    service_stub,
    start_replace,
    wait_job,
)
from tests.volume_helpers import create, hard_eject, node_stub


def _status(d: RunningDaemon, pool_id: str) -> spb.GetPoolRebalanceStatusResponse:
    return service_stub(d).GetPoolRebalanceStatus(
        spb.GetPoolRebalanceStatusRequest(pool_id=pool_id), timeout=10
    )


def _rebalance(d: RunningDaemon, pool_id: str) -> jpb.Job:
    started = service_stub(d).StartPoolRebalance(
        spb.StartPoolRebalanceRequest(pool_id=pool_id), timeout=10
    )
    return wait_job(d, started.job.id)


def _assert_progress_within_totals(job: jpb.Job) -> None:
    p = job.progress
    assert p.done_bytes <= p.total_bytes, p
    assert p.done_steps <= p.total_steps, p
    assert 0 <= p.percent <= 100


def _assert_status_agrees(status: spb.GetPoolRebalanceStatusResponse, job: jpb.Job) -> None:
    assert status.job.id == job.id and status.job.result == job.result
    assert status.progress == job.progress
    assert status.missing_copies == job.result.counts["missing_copies"]
    if job.result.complete:
        assert status.status == spb.REBALANCE_STATUS_DONE
    else:
        assert status.status != spb.REBALANCE_STATUS_DONE


def _used(d: RunningDaemon, drive_id: str) -> int:
    return sum(a.bytes for a in allocs_on(d.store, drive_id))


# -- bug: a rebalance with no valid target ended DONE at 100% ------------------------


def test_a_rebalance_with_no_valid_target_fails_saying_what_is_missing(
    daemon: RunningDaemon,
) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    lost = make_volume(
        daemon.store,
        cluster_id,
        [drives[0], drives[2], drives[4]],
        GIB,
        pool_id=pool,
        driver=daemon.driver,
    )
    # Zones 1 and 2 are uneven (drives 3 and 5 empty): the balance has work to do.
    for _ in range(4):
        make_volume(
            daemon.store,
            cluster_id,
            [drives[2], drives[4]],
            5 * GIB,
            pool_id=pool,
            driver=daemon.driver,
        )
    # Both drives of zone 0 are ejected: the copy of `lost` there has nowhere
    # to go (zones 1 and 2 hold its other copies).
    hard_eject(daemon, drives[0])
    hard_eject(daemon, drives[1])
    assert _status(daemon, pool).missing_copies == 1

    job = _rebalance(daemon, pool)

    assert job.state == jpb.JOB_STATE_FAILED
    assert job.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    [info] = [d for d in job.error.details if d.type_url.endswith("google.rpc.ErrorInfo")]
    assert b"NO_VALID_TARGET" in info.value
    result = job.result
    assert not result.complete and result.reason == "NO_VALID_TARGET"
    assert result.counts["missing_copies"] == 1
    assert result.counts["rebuilt_copies"] == 0
    assert result.counts["moved_copies"] == job.progress.done_steps > 0
    assert result.counts["moved_bytes"] == job.progress.done_bytes > 0
    assert "missing" in result.summary
    _assert_progress_within_totals(job)
    assert job.progress.percent < 100
    assert job.progress.message != "done"
    # The balance moves were made and stay; the missing copy is still missing.
    assert _used(daemon, drives[3]) > 0 and _used(daemon, drives[5]) > 0
    # The lost copy stays recorded where it was, not deleted nor moved.
    assert [a.volume_id for a in allocs_on(daemon.store, drives[0])] == [lost]
    assert len(allocs_on(daemon.store, drives[1])) == 0
    with daemon.store.read() as s:
        copies = s.scalars(select(AllocationRow).where(AllocationRow.volume_id == lost)).all()
    assert len(copies) == 3
    status = _status(daemon, pool)
    assert status.status == spb.REBALANCE_STATUS_FAILED
    _assert_status_agrees(status, job)
    assert_books(daemon.store)


def test_a_rebalance_with_nothing_to_rebuild_from_fails_with_data_unavailable(
    daemon: RunningDaemon,
) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    make_volume(daemon.store, cluster_id, [drives[0]], GIB, pool_id=pool, driver=daemon.driver)
    hard_eject(daemon, drives[0])

    job = _rebalance(daemon, pool)

    assert job.state == jpb.JOB_STATE_FAILED
    assert not job.result.complete and job.result.reason == "DATA_UNAVAILABLE"
    assert dict(job.result.counts) == {
        "moved_copies": 0,
        "rebuilt_copies": 0,
        "moved_bytes": 0,
        "missing_copies": 1,
    }
    _assert_progress_within_totals(job)
    _assert_status_agrees(_status(daemon, pool), job)
    assert_books(daemon.store)


def test_a_rebalance_that_restores_every_copy_says_it_is_complete(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    make_volume(
        daemon.store,
        cluster_id,
        [drives[0], drives[2], drives[4]],
        GIB,
        pool_id=pool,
        driver=daemon.driver,
    )
    hard_eject(daemon, drives[0])  # drive 1, in the same zone, can take the copy

    job = _rebalance(daemon, pool)

    assert job.state == jpb.JOB_STATE_DONE
    assert job.result.complete and job.result.reason == ""
    assert job.result.counts["missing_copies"] == 0
    assert job.result.counts["rebuilt_copies"] == 1
    assert job.result.counts["moved_copies"] == job.progress.done_steps >= 1
    assert job.result.counts["moved_bytes"] == job.progress.done_bytes
    assert job.progress.done_bytes == job.progress.total_bytes
    _assert_progress_within_totals(job)
    status = _status(daemon, pool)
    assert status.status == spb.REBALANCE_STATUS_DONE and status.missing_copies == 0
    _assert_status_agrees(status, job)
    assert_books(daemon.store)


def test_a_cancelled_rebalance_says_what_it_moved(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    for _ in range(3):
        make_volume(
            daemon.store,
            cluster_id,
            [drives[0], drives[2], drives[4]],
            GIB,
            pool_id=pool,
            driver=daemon.driver,
        )
    daemon.driver.block("copy_replica")
    started = service_stub(daemon).StartPoolRebalance(
        spb.StartPoolRebalanceRequest(pool_id=pool), timeout=10
    )
    assert daemon.driver.wait_blocked("copy_replica")
    jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=started.job.id), timeout=10)
    daemon.driver.unblock("copy_replica")

    job = wait_job(daemon, started.job.id)

    assert job.state == jpb.JOB_STATE_CANCELLED
    assert not job.result.complete and job.result.reason == "CANCELLED"
    assert job.result.counts["moved_copies"] == job.progress.done_steps == 1
    assert job.result.counts["moved_bytes"] == job.progress.done_bytes == GIB
    assert job.result.counts["missing_copies"] == 0
    _assert_progress_within_totals(job)
    _assert_status_agrees(_status(daemon, pool), job)
    assert_books(daemon.store)


# -- bug: a pool of whole nodes took in drives that cannot take data ------------------


@pytest.mark.parametrize("state", [DriveState.EJECTED, DriveState.FAILED], ids=lambda s: s.name)
def test_a_pool_of_whole_nodes_counts_and_places_only_on_drives_that_take_data(
    daemon: RunningDaemon, state: DriveState
) -> None:
    cluster_id, nodes, _drives = make_topology(daemon.store)
    # An empty drive of node 0 that cannot take data, ten times the size of the
    # others: placement (emptiest after the copy first) would pick it for every
    # copy in zone 0 were it a target.
    dead = make_drive(daemon.store, nodes[0], "/dev/sdz", 1000 * GIB, state=state)
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    pool = pools.CreatePool(
        ppb.CreatePoolRequest(cluster_id=cluster_id, name="whole", node_ids=nodes), timeout=10
    ).pool
    # A whole node's membership takes in its drives, but not one EJECTED.
    assert (dead in pool.drive_ids) is (state != DriveState.EJECTED)
    assert pool.capacity.total_bytes == 6 * 100 * GIB
    inspected = pools.InspectPool(ppb.InspectPoolRequest(pool_id=pool.id)).pool
    assert inspected.capacity == pool.capacity

    volumes = volume_pb2_grpc.VolumeServiceStub(daemon.channel)
    for i in range(3):
        create(volumes, cluster_id, f"v{i}", placement=vpb.Placement(pool_id=pool.id))
    assert allocs_on(daemon.store, dead) == []
    summary = volumes.GetCapacitySummary(vpb.GetCapacitySummaryRequest(cluster_id=cluster_id))
    [p] = summary.clusters[0].pools
    assert p.pool_id == pool.id
    assert p.capacity.total_bytes == 6 * 100 * GIB
    assert p.capacity.used_bytes == 9 * GIB
    assert p.available_bytes == p.capacity.free_bytes
    inspected = pools.InspectPool(ppb.InspectPoolRequest(pool_id=pool.id)).pool
    assert inspected.capacity == p.capacity
    # Neither does a rebalance of the pool put anything on it.
    assert _rebalance(daemon, pool.id).state == jpb.JOB_STATE_DONE
    assert allocs_on(daemon.store, dead) == []
    assert_books(daemon.store)


def test_a_node_that_is_not_online_adds_no_pool_capacity(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _drives = make_topology(daemon.store)
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    pool = pools.CreatePool(
        ppb.CreatePoolRequest(cluster_id=cluster_id, name="whole", node_ids=nodes), timeout=10
    ).pool
    assert pool.capacity.total_bytes == 6 * 100 * GIB
    node_stub(daemon).SetNodeState(
        npb.SetNodeStateRequest(node_id=nodes[0], state=npb.NODE_STATE_OFFLINE), timeout=10
    )
    after = pools.InspectPool(ppb.InspectPoolRequest(pool_id=pool.id)).pool
    assert after.capacity.total_bytes == 4 * 100 * GIB
    volumes = volume_pb2_grpc.VolumeServiceStub(daemon.channel)
    summary = volumes.GetCapacitySummary(vpb.GetCapacitySummaryRequest(cluster_id=cluster_id))
    [p] = summary.clusters[0].pools
    assert p.capacity == after.capacity and p.available_bytes == 4 * 100 * GIB


def test_a_replaced_drive_leaves_a_pool_of_whole_nodes(daemon: RunningDaemon) -> None:
    cluster_id, source, target, _vols = replace_setup(daemon)
    with daemon.store.read() as s:
        node_ids = sorted({n for (n,) in s.execute(select(NodeRow.id))})
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    pool = pools.CreatePool(
        ppb.CreatePoolRequest(cluster_id=cluster_id, name="whole", node_ids=node_ids), timeout=10
    ).pool
    assert source in pool.drive_ids and target in pool.drive_ids
    assert wait_job(daemon, start_replace(daemon, source, target).job.id).state == (
        jpb.JOB_STATE_DONE
    )
    # The contract: DONE leaves the source empty, EJECTED and out of its pools.
    drive = node_stub(daemon).InspectDrive(npb.InspectDriveRequest(drive_id=source)).drive
    assert drive.state == npb.DRIVE_STATE_EJECTED and list(drive.pool_ids) == []
    after = pools.InspectPool(ppb.InspectPoolRequest(pool_id=pool.id)).pool
    assert source not in after.drive_ids and target in after.drive_ids
    assert_books(daemon.store)


@pytest.mark.parametrize("joined", ["alone", "with_its_node"])
def test_a_hard_ejected_drive_leaves_its_pools(daemon: RunningDaemon, joined: str) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    members = {"drive_ids": drives} if joined == "alone" else {"node_ids": nodes}
    pool = pools.CreatePool(
        ppb.CreatePoolRequest(cluster_id=cluster_id, name="p", **members), timeout=10
    ).pool
    assert drives[0] in pool.drive_ids
    hard_eject(daemon, drives[0])
    after = pools.InspectPool(ppb.InspectPoolRequest(pool_id=pool.id)).pool
    assert drives[0] not in after.drive_ids and set(after.drive_ids) == set(drives[1:])
    drive = node_stub(daemon).InspectDrive(npb.InspectDriveRequest(drive_id=drives[0])).drive
    assert list(drive.pool_ids) == []


def test_a_cluster_counts_only_drives_that_take_data(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    volumes = volume_pb2_grpc.VolumeServiceStub(daemon.channel)

    def total() -> int:
        summary = volumes.GetCapacitySummary(vpb.GetCapacitySummaryRequest(cluster_id=cluster_id))
        return summary.clusters[0].capacity.total_bytes

    assert total() == 6 * 100 * GIB
    hard_eject(daemon, drives[0])
    assert total() == 5 * 100 * GIB
    node_stub(daemon).SetNodeState(
        npb.SetNodeStateRequest(node_id=nodes[2], state=npb.NODE_STATE_OFFLINE), timeout=10
    )
    assert total() == 3 * 100 * GIB


# -- bug: a cancelled soft eject or drain did not say what it had moved ---------------


def test_cancelling_a_soft_eject_returns_the_drive_online_and_says_what_moved(
    daemon: RunningDaemon,
) -> None:
    cluster_id, _nodes, drives = make_topology(daemon.store)
    for _ in range(3):
        make_volume(
            daemon.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=daemon.driver
        )
    daemon.driver.block("copy_replica")
    resp = node_stub(daemon).EjectDrive(npb.EjectDriveRequest(drive_id=drives[0], soft=True))
    assert resp.job.kind == jpb.JOB_KIND_DRIVE_EVACUATE
    assert daemon.driver.wait_blocked("copy_replica")
    jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=resp.job.id), timeout=10)
    daemon.driver.unblock("copy_replica")

    job = wait_job(daemon, resp.job.id)

    assert job.state == jpb.JOB_STATE_CANCELLED
    drive = node_stub(daemon).InspectDrive(npb.InspectDriveRequest(drive_id=drives[0])).drive
    assert drive.state == npb.DRIVE_STATE_ONLINE
    # The copy moved before the cancel stays where it went.
    assert len(allocs_on(daemon.store, drives[0])) == 2
    assert len(allocs_on(daemon.store, drives[1])) == 1
    assert not job.result.complete and job.result.reason == "CANCELLED"
    assert dict(job.result.counts) == {
        "moved_copies": 1,
        "moved_bytes": GIB,
        "remaining_copies": 2,
    }
    assert job.result.counts["moved_copies"] == job.progress.done_steps
    assert "stay where they went" in job.result.summary
    assert_books(daemon.store)


def test_a_soft_eject_that_is_done_says_what_moved(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, drives = make_topology(daemon.store)
    for _ in range(2):
        make_volume(
            daemon.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=daemon.driver
        )
    resp = node_stub(daemon).EjectDrive(npb.EjectDriveRequest(drive_id=drives[0], soft=True))
    job = wait_job(daemon, resp.job.id)
    assert job.state == jpb.JOB_STATE_DONE
    assert job.result.complete and job.result.reason == ""
    assert dict(job.result.counts) == {
        "moved_copies": 2,
        "moved_bytes": 2 * GIB,
        "remaining_copies": 0,
    }
    assert_books(daemon.store)


def test_cancelling_a_drain_returns_the_node_online_and_says_what_moved(
    daemon: RunningDaemon,
) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store, zones=4)
    for _ in range(2):
        make_volume(
            daemon.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=daemon.driver
        )
    make_volume(
        daemon.store, cluster_id, [drives[1], drives[3], drives[5]], GIB, driver=daemon.driver
    )
    daemon.driver.block("copy_replica")
    resp = node_stub(daemon).DrainNode(npb.DrainNodeRequest(node_id=nodes[0]))
    assert daemon.driver.wait_blocked("copy_replica")
    jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=resp.job.id), timeout=10)
    daemon.driver.unblock("copy_replica")

    job = wait_job(daemon, resp.job.id)

    assert job.state == jpb.JOB_STATE_CANCELLED
    node = node_stub(daemon).InspectNode(npb.InspectNodeRequest(node_id=nodes[0])).node
    assert node.state == npb.NODE_STATE_ONLINE
    on_node = len(allocs_on(daemon.store, drives[0])) + len(allocs_on(daemon.store, drives[1]))
    assert on_node == 2
    assert not job.result.complete and job.result.reason == "CANCELLED"
    assert dict(job.result.counts) == {
        "moved_copies": 1,
        "moved_bytes": GIB,
        "remaining_copies": 2,
    }
    assert "stay where they went" in job.result.summary
    assert_books(daemon.store)
