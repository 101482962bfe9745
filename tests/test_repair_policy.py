"""The repair policy through the wire: the delay, the pause switch, nodes in
maintenance, the limit on repairs at once, and which volume goes first."""

from __future__ import annotations

import time
from datetime import timedelta

from osd.store.models import utcnow
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as npb
from osd.v1 import service_pb2 as spb
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_cluster, make_drive, make_node, make_pool, make_topology
from tests.test_jobs import service_stub, wait_job
from tests.test_repair import (
    assert_healed,
    drive_of,
    inspect,
    repaired,
    repairs,
    set_policy,
    until,
    world,
)
from tests.volume_helpers import create, hard_eject, node_stub, volumes

QUIET = 0.6  # how long a test watches for a repair that must not start


def test_repair_waits_for_the_delay(daemon: RunningDaemon) -> None:
    # Long enough that a slow machine still checks well inside it.
    cluster_id, _nodes, _drives = world(daemon, delay_seconds=3)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    hard_eject(daemon, drive_of(daemon, vol.id, 0)[0])
    time.sleep(QUIET)
    assert repairs(daemon) == []
    assert inspect(daemon, vol.id).volume.state == pb.VOLUME_STATE_DEGRADED
    # Once the delay has passed the controller starts it by itself.
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert_healed(daemon, vol.id)


def test_a_node_back_within_the_delay_is_not_rebuilt_around(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon, delay_seconds=300)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    before = {a.id: a.drive_id for a in inspect(daemon, vol.id).allocations}
    _drive, node = drive_of(daemon, vol.id, 1)
    node_stub(daemon).SetNodeState(
        npb.SetNodeStateRequest(node_id=node, state=npb.NODE_STATE_OFFLINE)
    )
    v = inspect(daemon, vol.id).volume
    assert [m.loss for m in v.missing_copies] == [pb.COPY_LOSS_NODE_OFFLINE]
    node_stub(daemon).SetNodeState(
        npb.SetNodeStateRequest(node_id=node, state=npb.NODE_STATE_ONLINE)
    )
    # The controller looks again as if the delay had passed: nothing is due.
    daemon.daemon.engine.repair.scan(now=utcnow() + timedelta(seconds=301))
    assert repairs(daemon) == []
    got = assert_healed(daemon, vol.id)
    assert {a.id: a.drive_id for a in got.allocations} == before


def test_a_delay_past_the_calendar_is_never_and_holds_no_other_cluster_back(
    daemon: RunningDaemon,
) -> None:
    # Any int64 is a valid delay, but a datetime ends in year 9999: the scan
    # once failed on it for every cluster, and no volume was repaired at all.
    cluster_id, _nodes, _drives = world(daemon)
    never = make_topology(
        daemon.store, zones=4, drives_per_node=1, drive_bytes=8 << 30, cluster_name="a-never"
    )[0]
    longest = 2**63 - 1
    policy = set_policy(
        daemon, never, delay_seconds=longest, maintenance_timeout_seconds=longest
    ).repair
    assert (policy.delay_seconds, policy.maintenance_timeout_seconds) == (longest, longest)
    kept = create(volumes(daemon), never, "kept", size="64M")
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    hard_eject(daemon, drive_of(daemon, kept.id, 0)[0])
    service_stub(daemon).EnterMaintenance(
        spb.EnterMaintenanceRequest(node_id=drive_of(daemon, kept.id, 1)[1])
    )
    hard_eject(daemon, drive_of(daemon, vol.id, 0)[0])
    # The other cluster's volume is repaired; this one's copies wait for ever.
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert_healed(daemon, vol.id)
    assert daemon.daemon.engine.repair.scan(now=utcnow() + timedelta(days=365_000)) is None
    assert repairs(daemon, kept.id) == []
    assert inspect(daemon, kept.id).volume.state == pb.VOLUME_STATE_DEGRADED


def test_pause_holds_repair_back_and_repair_volume_overrides_it(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon, paused=True)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    hard_eject(daemon, drive_of(daemon, vol.id, 2)[0])
    time.sleep(QUIET)
    assert repairs(daemon) == []
    started = volumes(daemon).RepairVolume(pb.RepairVolumeRequest(volume_id=vol.id))
    assert started.started and started.job.kind == jpb.JOB_KIND_VOLUME_REPAIR
    assert started.volume.repair_job_id == started.job.id
    job = wait_job(daemon, started.job.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert_healed(daemon, vol.id)


def test_maintenance_is_not_repaired_around_until_its_timeout(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    drive, node = drive_of(daemon, vol.id, 0)
    service_stub(daemon).EnterMaintenance(spb.EnterMaintenanceRequest(node_id=node))
    v = inspect(daemon, vol.id).volume
    assert [(m.loss, m.node_id) for m in v.missing_copies] == [
        (pb.COPY_LOSS_NODE_MAINTENANCE, node)
    ]
    time.sleep(QUIET)
    assert repairs(daemon) == []
    # The timeout passes (here: the operator shortens it); the copy is rebuilt.
    set_policy(daemon, cluster_id, maintenance_timeout_seconds=0)
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    got = assert_healed(daemon, vol.id)
    assert drive not in {a.drive_id for a in got.allocations}


def test_an_operator_repairs_around_maintenance_at_once(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    _drive, node = drive_of(daemon, vol.id, 1)
    service_stub(daemon).EnterMaintenance(spb.EnterMaintenanceRequest(node_id=node))
    time.sleep(QUIET)
    assert repairs(daemon) == []
    started = volumes(daemon).RepairVolume(pb.RepairVolumeRequest(volume_id=vol.id))
    assert wait_job(daemon, started.job.id).state == jpb.JOB_STATE_DONE
    got = assert_healed(daemon, vol.id)
    assert node not in {a.node_id for a in got.allocations}


def test_one_repair_at_a_time_the_most_endangered_first(daemon: RunningDaemon) -> None:
    store = daemon.store
    cluster_id = make_cluster(store)
    node_ids, drive_ids = [], []
    for i in range(8):
        node_ids.append(make_node(store, cluster_id, f"n{i}", f"zone{i}"))
        drive_ids.append(make_drive(store, node_ids[-1], total_bytes=8 << 30))
    pool_a = make_pool(store, cluster_id, "a", node_ids=node_ids[:4])
    pool_b = make_pool(store, cluster_id, "b", node_ids=node_ids[4:])
    set_policy(daemon, cluster_id, delay_seconds=0, paused=True, max_repairs=1)
    stub = volumes(daemon)
    a = create(stub, cluster_id, "a", size="64M", placement=pb.Placement(pool_id=pool_a))
    b = create(stub, cluster_id, "b", size="64M", placement=pb.Placement(pool_id=pool_b))
    # B loses a copy first (it is degraded the longest); A then loses two.
    hard_eject(daemon, drive_of(daemon, b.id, 0)[0])
    time.sleep(0.05)
    hard_eject(daemon, drive_of(daemon, a.id, 0)[0])
    hard_eject(daemon, drive_of(daemon, a.id, 1)[0])
    assert inspect(daemon, a.id).volume.live_copies == 1
    assert inspect(daemon, b.id).volume.live_copies == 2

    daemon.driver.block("create_replica")
    try:
        set_policy(daemon, cluster_id, paused=False)
        assert daemon.driver.wait_blocked("create_replica")
        first = until(lambda: repairs(daemon))
        assert [j.target.id for j in first] == [a.id]
        time.sleep(QUIET)
        assert len(repairs(daemon)) == 1  # the limit holds B back
    finally:
        daemon.driver.unblock("create_replica")
    done_a = wait_job(daemon, first[0].id)
    assert done_a.state == jpb.JOB_STATE_DONE, done_a.error
    # A's pool has one spare zone: one copy rebuilt, one reported.
    assert dict(done_a.result.counts)["rebuilt"] == 1
    job_b = repaired(daemon, b.id)
    assert job_b.state == jpb.JOB_STATE_DONE, job_b.error
    assert job_b.create_time.ToDatetime() >= done_a.end_time.ToDatetime()
    assert_healed(daemon, b.id)
    v = inspect(daemon, a.id).volume
    assert (v.live_copies, len(v.missing_copies)) == (2, 1)
