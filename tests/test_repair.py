"""Self-healing through the wire: a volume that loses a copy (a drive
hard-ejected or forgotten, a node OFFLINE) gets it rebuilt by a VOLUME_REPAIR
job that the repair controller starts by itself, and shows what it lacks
meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from sqlalchemy import select

from osd import enums
from osd.store import allocations
from osd.store.models import AllocationRow, DriveRow
from osd.v1 import cluster_pb2 as cpb
from osd.v1 import cluster_pb2_grpc, common_pb2
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as npb
from osd.v1 import service_pb2 as spb
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_drive, make_pool, make_topology
from tests.test_jobs import jobs_stub, service_stub, wait_job
from tests.volume_helpers import create, fails, hard_eject, mask, node_stub, volumes

REPAIR = jpb.JOB_KIND_VOLUME_REPAIR


# -- helpers -------------------------------------------------------------------------


def clusters(d: RunningDaemon) -> cluster_pb2_grpc.ClusterServiceStub:
    return cluster_pb2_grpc.ClusterServiceStub(d.channel)


def set_policy(d: RunningDaemon, cluster_id: str, **fields: Any) -> cpb.Cluster:
    """Changes the named fields of the cluster's repair policy (UpdateCluster)."""
    return (
        clusters(d)
        .UpdateCluster(
            cpb.UpdateClusterRequest(
                cluster_id=cluster_id,
                repair=cpb.RepairPolicy(**fields),
                update_mask=mask(*(f"repair.{f}" for f in fields)),
            )
        )
        .cluster
    )


def world(
    d: RunningDaemon, zones: int = 4, *, paused: bool = False, **policy: Any
) -> tuple[str, list[str], list[str]]:
    """A cluster of ``zones`` zones with one node of one small drive each, whose
    repair starts at once (unless ``policy`` says otherwise)."""
    topo = make_topology(d.store, zones=zones, drives_per_node=1, drive_bytes=8 << 30)
    set_policy(d, topo[0], **{"delay_seconds": 0, "paused": paused, **policy})
    return topo


def inspect(d: RunningDaemon, volume_id: str) -> pb.InspectVolumeResponse:
    return volumes(d).InspectVolume(pb.InspectVolumeRequest(volume_id=volume_id))


def repairs(d: RunningDaemon, volume_id: str = "") -> list[jpb.Job]:
    """The VOLUME_REPAIR jobs (of one volume), oldest first."""
    listed = (
        jobs_stub(d)
        .ListJobs(jpb.ListJobsRequest(kinds=[REPAIR], target_id=volume_id, page_size=100))
        .jobs
    )
    return sorted(listed, key=lambda j: (j.create_time.ToDatetime(), j.id))


def until(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Polls ``what`` until it answers something true; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def repaired(d: RunningDaemon, volume_id: str) -> jpb.Job:
    """Waits for the volume's repair to start and end; returns the job."""
    [job] = until(lambda: repairs(d, volume_id))
    return wait_job(d, job.id)


def drive_of(d: RunningDaemon, volume_id: str, index: int = 0) -> tuple[str, str]:
    """(drive id, node id) of a volume's copy ``index``."""
    a = next(a for a in inspect(d, volume_id).allocations if a.index == index)
    return a.drive_id, a.node_id


def assert_healed(d: RunningDaemon, volume_id: str, copies: int = 3) -> pb.InspectVolumeResponse:
    """The volume is UP with every declared copy live, the books balance, and the
    driver holds exactly the copies the allocations name."""
    got = inspect(d, volume_id)
    v = got.volume
    assert v.state == pb.VOLUME_STATE_UP
    assert (v.declared_copies, v.live_copies) == (copies, copies)
    assert list(v.missing_copies) == []
    assert v.repair_job_id == "" and v.active_job_id == ""
    assert not v.HasField("degraded_time")
    assert sorted(a.index for a in got.allocations) == list(range(copies))
    assert all(a.state == common_pb2.ALLOCATION_STATE_ACTIVE for a in got.allocations)
    with d.store.read() as s:
        assert allocations.check(s) == []
    held = {
        (drive, rid)
        for (drive, rid) in d.driver.state.replicas
        if rid in {a.id for a in got.allocations}
    }
    assert held == {(a.drive_id, a.id) for a in got.allocations}
    return got


# -- the repairs ---------------------------------------------------------------------


def test_a_hard_ejected_copy_is_rebuilt_elsewhere(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, drives = world(daemon)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    before = {a.id: a.drive_id for a in inspect(daemon, vol.id).allocations}
    ejected, _node = drive_of(daemon, vol.id, 1)
    hard_eject(daemon, ejected)

    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert job.target.id == vol.id and job.cluster_id == cluster_id
    assert job.result.complete
    assert dict(job.result.counts)["rebuilt"] == 1
    got = assert_healed(daemon, vol.id)
    # The copy kept its allocation (its name in the driver) and moved off the
    # ejected drive to the one drive no copy was on; the others stayed.
    after = {a.id: a.drive_id for a in got.allocations}
    assert after.keys() == before.keys()
    moved = {a for a in after if after[a] != before[a]}
    assert len(moved) == 1 and before[moved.pop()] == ejected
    assert ejected not in after.values()
    assert set(after.values()) == set(drives) - {ejected}


def test_a_forgotten_copy_shows_as_lost_then_is_rebuilt(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon, paused=True)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    ejected, node = drive_of(daemon, vol.id, 0)
    hard_eject(daemon, ejected)

    v = inspect(daemon, vol.id).volume
    assert v.state == pb.VOLUME_STATE_DEGRADED
    assert (v.declared_copies, v.live_copies) == (3, 2)
    [miss] = v.missing_copies
    assert miss.loss == pb.COPY_LOSS_DRIVE_EJECTED
    assert (miss.index, miss.drive_id, miss.node_id) == (0, ejected, node)
    assert v.HasField("degraded_time")

    node_stub(daemon).ForgetDrive(
        npb.ForgetDriveRequest(drive_id=ejected, yes_i_really_mean_it=True)
    )
    v = inspect(daemon, vol.id).volume
    [miss] = v.missing_copies
    assert miss.loss == pb.COPY_LOSS_DRIVE_FORGOTTEN
    assert (miss.index, miss.allocation_id, miss.drive_id) == (0, "", "")
    listed = volumes(daemon).ListVolumes(pb.ListVolumesRequest(degraded=True)).volumes
    assert [x.id for x in listed] == [vol.id]
    time.sleep(0.3)
    assert repairs(daemon) == []  # paused

    cluster = set_policy(daemon, cluster_id, paused=False).repair
    assert not cluster.paused
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert_healed(daemon, vol.id)
    assert volumes(daemon).ListVolumes(pb.ListVolumesRequest(degraded=True)).volumes == []


def test_a_volume_of_a_pool_is_rebuilt_in_its_pool_when_a_node_goes_offline(
    daemon: RunningDaemon,
) -> None:
    cluster_id, node_ids, drives = world(daemon, zones=5)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=node_ids[:4])
    vol = create(
        volumes(daemon),
        cluster_id,
        "v1",
        size="64M",
        placement=pb.Placement(pool_id=pool),
    )
    _drive, node = drive_of(daemon, vol.id, 2)
    node_stub(daemon).SetNodeState(
        npb.SetNodeStateRequest(node_id=node, state=npb.NODE_STATE_OFFLINE)
    )

    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    got = assert_healed(daemon, vol.id)
    on = {a.drive_id for a in got.allocations}
    assert on <= set(drives[:4]) and node not in {a.node_id for a in got.allocations}


def test_an_erasure_coded_volume_is_rebuilt(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon, zones=5)
    durability = pb.Durability(
        type=pb.DURABILITY_TYPE_ERASURE, data_fragments=2, redundancy_fragments=2
    )
    vol = create(volumes(daemon), cluster_id, "ec", size="64M", durability=durability)
    hard_eject(daemon, drive_of(daemon, vol.id, 3)[0])
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert_healed(daemon, vol.id, copies=4)


def test_a_copy_with_nowhere_to_go_is_reported(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon, zones=3)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    hard_eject(daemon, drive_of(daemon, vol.id, 0)[0])
    job = repaired(daemon, vol.id)
    # No fourth zone: the job ends, saying what it could not do.
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert not job.result.complete
    assert job.result.reason == "COPIES_NOT_REBUILT"
    assert dict(job.result.counts)["skipped"] == 1
    # Its message is what it could not do, not "done".
    assert job.progress.message == job.result.summary != "done"
    v = inspect(daemon, vol.id).volume
    assert v.state == pb.VOLUME_STATE_DEGRADED and v.active_job_id == ""
    with daemon.store.read() as s:
        assert allocations.check(s) == []


def test_a_repair_that_fell_short_runs_again_once_room_appears(daemon: RunningDaemon) -> None:
    cluster_id, node_ids, _drives = world(daemon, zones=4)
    spare = node_ids[3]
    node_stub(daemon).SetNodeState(
        npb.SetNodeStateRequest(node_id=spare, state=npb.NODE_STATE_OFFLINE)
    )
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    hard_eject(daemon, drive_of(daemon, vol.id, 0)[0])
    first = repaired(daemon, vol.id)
    assert first.state == jpb.JOB_STATE_DONE and not first.result.complete
    # The fourth zone comes back: the repair runs again at once, not after the
    # retry interval (minutes).
    node_stub(daemon).SetNodeState(
        npb.SetNodeStateRequest(node_id=spare, state=npb.NODE_STATE_ONLINE)
    )
    [again] = until(lambda: [j for j in repairs(daemon, vol.id) if j.id != first.id])
    assert wait_job(daemon, again.id).state == jpb.JOB_STATE_DONE
    assert_healed(daemon, vol.id)


def test_a_copy_both_a_repair_and_a_replace_rebuild_ends_up_once(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon, zones=4)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    lost, node = drive_of(daemon, vol.id, 0)
    # The drive fails: its copy cannot be read, and both the repair and a
    # replace of the drive rebuild it, at the same time.
    with daemon.store.write() as s:
        s.get_one(DriveRow, lost).state = enums.DriveState.FAILED
        for a in s.scalars(select(AllocationRow).where(AllocationRow.drive_id == lost)):
            a.state = enums.AllocationState.UNAVAILABLE
    daemon.driver.block("create_replica")
    try:
        repair = volumes(daemon).RepairVolume(pb.RepairVolumeRequest(volume_id=vol.id)).job
        assert daemon.driver.wait_blocked("create_replica")
        # Only then a drive to replace it with: the repair took the spare zone.
        target = make_drive(daemon.store, node, "/dev/sdz", 8 << 30)
        replace = (
            service_stub(daemon)
            .StartDriveReplace(
                spb.StartDriveReplaceRequest(source_drive_id=lost, target_drive_id=target)
            )
            .job
        )
        # Both hold a copy of it in the making.
        assert daemon.driver.wait_blocked("create_replica", count=2)
    finally:
        daemon.driver.unblock("create_replica")
    for job in (repair, replace):
        assert wait_job(daemon, job.id).state in (jpb.JOB_STATE_DONE, jpb.JOB_STATE_FAILED)
    # One copy per allocation in the driver, none left over by the job that lost.
    with daemon.store.read() as s:
        booked = {(a.drive_id, a.id) for a in s.scalars(select(AllocationRow))}
        assert allocations.check(s) == []
    assert set(daemon.driver.state.replicas) == booked
    assert_healed(daemon, vol.id)


# -- visible state -------------------------------------------------------------------


def test_a_running_repair_is_visible_and_reserves_its_bytes(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    daemon.driver.block("create_replica")
    try:
        hard_eject(daemon, drive_of(daemon, vol.id, 0)[0])
        assert daemon.driver.wait_blocked("create_replica")
        [job] = repairs(daemon, vol.id)
        v = inspect(daemon, vol.id).volume
        assert v.repair_job_id == job.id == v.active_job_id
        listed = volumes(daemon).ListVolumes(pb.ListVolumesRequest(repairing=True)).volumes
        assert [x.id for x in listed] == [vol.id]
        summary = volumes(daemon).GetCapacitySummary(
            pb.GetCapacitySummaryRequest(cluster_id=cluster_id)
        )
        [cap] = summary.clusters
        pending = [
            a.bytes
            for a in inspect(daemon, vol.id).allocations
            if a.state == common_pb2.ALLOCATION_STATE_PENDING
        ]
        assert cap.repair_reserved_bytes == sum(pending) > 0
        # Asking again answers the repair in progress.
        again = volumes(daemon).RepairVolume(pb.RepairVolumeRequest(volume_id=vol.id))
        assert (again.job.id, again.started) == (job.id, False)
    finally:
        daemon.driver.unblock("create_replica")
    assert wait_job(daemon, job.id).state == jpb.JOB_STATE_DONE
    assert_healed(daemon, vol.id)
    [cap] = (
        volumes(daemon)
        .GetCapacitySummary(pb.GetCapacitySummaryRequest(cluster_id=cluster_id))
        .clusters
    )
    assert cap.repair_reserved_bytes == 0
    assert volumes(daemon).ListVolumes(pb.ListVolumesRequest(repairing=True)).volumes == []


def test_copy_loss_matches_the_engine_enum() -> None:
    from_proto = {
        name.removeprefix("COPY_LOSS_"): number
        for name, number in pb.CopyLoss.items()
        if not name.endswith("_UNSPECIFIED")
    }
    assert {m.name: m.value for m in enums.CopyLoss} == from_proto


def test_repair_volume_refuses_what_it_cannot_do(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    stub = volumes(daemon)
    err = fails(stub.RepairVolume, pb.RepairVolumeRequest(volume_id=vol.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_TO_REPAIR")
    err = fails(stub.RepairVolume, pb.RepairVolumeRequest(volume_id="0" * 32))
    assert err.code == grpc.StatusCode.NOT_FOUND
    err = fails(stub.RepairVolume, pb.RepairVolumeRequest(volume_id=""))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    err = fails(
        clusters(daemon).UpdateCluster,
        cpb.UpdateClusterRequest(
            cluster_id=cluster_id,
            repair=cpb.RepairPolicy(max_repairs=0),
            update_mask=mask("repair.max_repairs"),
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_policy_shows_the_daemon_defaults(sqlite_daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = make_topology(sqlite_daemon.store, zones=1)
    got = clusters(sqlite_daemon).InspectCluster(cpb.InspectClusterRequest(cluster_id=cluster_id))
    assert got.cluster.repair == cpb.RepairPolicy(
        paused=False,
        delay_seconds=300,
        maintenance_timeout_seconds=3600,
        max_repairs=2,
        max_repairs_per_drive=1,
    )
    # "repair" alone changes the fields the message sets, and only those.
    changed = (
        clusters(sqlite_daemon)
        .UpdateCluster(
            cpb.UpdateClusterRequest(
                cluster_id=cluster_id,
                repair=cpb.RepairPolicy(paused=True, max_repairs=5),
                update_mask=mask("repair"),
            )
        )
        .cluster.repair
    )
    assert (changed.paused, changed.max_repairs, changed.delay_seconds) == (True, 5, 300)
