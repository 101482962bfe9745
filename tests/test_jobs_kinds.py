"""The soft eject (DRIVE_EVACUATE) and drain (NODE_DRAIN) jobs, started through
the engine functions NodeService.EjectDrive(soft) and DrainNode call, and
followed through JobService on both stores."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from osd.enums import DriveState, NodeState
from osd.errors import FailedPrecondition
from osd.store.models import AllocationRow, DriveRow, NodeRow
from osd.v1 import job_pb2 as jpb
from tests.conftest import RunningDaemon
from tests.factories import GIB, make_drive, make_node, make_topology, make_volume
from tests.test_jobs import allocs_on, assert_books, drive_row, job_count, jobs_stub, wait_job


def _node(d: RunningDaemon, node_id: str) -> NodeRow:
    with d.store.read() as s:
        return s.get_one(NodeRow, node_id)


def _zones_of(d: RunningDaemon, volume_id: str) -> list[str]:
    with d.store.read() as s:
        return [
            z
            for (z,) in s.execute(
                select(NodeRow.zone)
                .join(AllocationRow, AllocationRow.node_id == NodeRow.id)
                .where(AllocationRow.volume_id == volume_id)
            )
        ]


def test_soft_eject_moves_the_copies_within_their_zone(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, drives = make_topology(daemon.store)
    vols = [
        make_volume(
            daemon.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=daemon.driver
        )
        for _ in range(2)
    ]
    started = daemon.daemon.engine.jobs.evacuate_drive(drives[0])
    assert started.started
    assert drive_row(daemon.store, drives[0]).state == DriveState.SOFT_EJECTING
    assert drive_row(daemon.store, drives[0]).active_job_id == started.job.id
    # Soft-ejecting a drive that is SOFT_EJECTING returns its job.
    again = daemon.daemon.engine.jobs.evacuate_drive(drives[0])
    assert again.job.id == started.job.id and not again.started
    job = wait_job(daemon, started.job.id)
    assert job.state == jpb.JOB_STATE_DONE and job.kind == jpb.JOB_KIND_DRIVE_EVACUATE
    assert drive_row(daemon.store, drives[0]).state == DriveState.EJECTED
    assert allocs_on(daemon.store, drives[0]) == []
    # Zone 0 has one other drive: the copies went there.
    assert len(allocs_on(daemon.store, drives[1])) == 2
    for vol in vols:
        assert sorted(_zones_of(daemon, vol)) == ["zone0", "zone1", "zone2"]
    assert_books(daemon.store)


@pytest.mark.parametrize(
    ("room", "reason"), [(False, "PLACEMENT_IMPOSSIBLE"), (True, "INSUFFICIENT_CAPACITY")]
)
def test_soft_eject_with_nowhere_to_go_is_refused(
    daemon: RunningDaemon, room: bool, reason: str
) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store, drives_per_node=1)
    vol = make_volume(daemon.store, cluster_id, [drives[0], drives[1], drives[2]], 10 * GIB)
    if room:
        make_drive(daemon.store, nodes[0], "/dev/small", 5 * GIB)
    with pytest.raises(FailedPrecondition) as info:
        daemon.daemon.engine.jobs.evacuate_drive(drives[0])
    assert info.value.reason == reason
    assert info.value.metadata["volume_id"] == vol
    assert drive_row(daemon.store, drives[0]).state == DriveState.ONLINE
    assert job_count(daemon.store) == 0


def test_cancelling_a_soft_eject_returns_the_drive_online(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, drives = make_topology(daemon.store)
    for _ in range(2):
        make_volume(daemon.store, cluster_id, [drives[0], drives[2]], GIB, driver=daemon.driver)
    daemon.driver.block("copy_replica")
    job_id = daemon.daemon.engine.jobs.evacuate_drive(drives[0]).job.id
    assert daemon.driver.wait_blocked("copy_replica")
    jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=10)
    daemon.driver.unblock("copy_replica")
    assert wait_job(daemon, job_id).state == jpb.JOB_STATE_CANCELLED
    assert drive_row(daemon.store, drives[0]).state == DriveState.ONLINE
    # Data already moved stays where it went.
    assert len(allocs_on(daemon.store, drives[0])) == 1
    assert sum(len(allocs_on(daemon.store, d)) for d in drives[1:]) == 3
    assert_books(daemon.store)


def test_soft_eject_of_a_drive_that_is_not_online_is_refused(daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(daemon.store)
    gone = make_drive(daemon.store, nodes[0], "/dev/gone", state=DriveState.EJECTED)
    with pytest.raises(FailedPrecondition) as info:
        daemon.daemon.engine.jobs.evacuate_drive(gone)
    assert info.value.reason == "DRIVE_NOT_ONLINE"


def test_drain_empties_the_node_into_maintenance(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store, zones=4)
    vols = [
        make_volume(
            daemon.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=daemon.driver
        ),
        make_volume(
            daemon.store, cluster_id, [drives[1], drives[3], drives[5]], GIB, driver=daemon.driver
        ),
    ]
    started = daemon.daemon.engine.jobs.drain_node(nodes[0])
    assert _node(daemon, nodes[0]).state == NodeState.DRAINING
    job = wait_job(daemon, started.job.id)
    assert job.state == jpb.JOB_STATE_DONE and job.kind == jpb.JOB_KIND_NODE_DRAIN
    assert _node(daemon, nodes[0]).state == NodeState.MAINTENANCE
    assert _node(daemon, nodes[0]).active_job_id is None
    assert allocs_on(daemon.store, drives[0]) == allocs_on(daemon.store, drives[1]) == []
    for vol in vols:
        assert sorted(_zones_of(daemon, vol)) == ["zone1", "zone2", "zone3"]
    assert_books(daemon.store)


def test_a_drain_that_fails_returns_the_node_online(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store, zones=4)
    make_volume(daemon.store, cluster_id, [drives[0], drives[2]], GIB, driver=daemon.driver)
    daemon.driver.fail("copy_replica")
    job = wait_job(daemon, daemon.daemon.engine.jobs.drain_node(nodes[0]).job.id)
    assert job.state == jpb.JOB_STATE_FAILED
    assert _node(daemon, nodes[0]).state == NodeState.ONLINE
    assert len(allocs_on(daemon.store, drives[0])) == 1
    assert_books(daemon.store)


def test_drain_of_a_node_in_maintenance_is_refused(daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(daemon.store)
    cluster_id = _node(daemon, nodes[0]).cluster_id
    out = make_node(daemon.store, cluster_id, "out", "zone9", state=NodeState.MAINTENANCE)
    with pytest.raises(FailedPrecondition) as info:
        daemon.daemon.engine.jobs.drain_node(out)
    assert info.value.reason == "NODE_NOT_ONLINE"
    with daemon.store.read() as s:
        assert s.get_one(NodeRow, out).state == NodeState.MAINTENANCE
        assert list(s.scalars(select(DriveRow).where(DriveRow.node_id == out))) == []
