"""Service through the wire on both stores: maintenance and drive add."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from osd.engine.jobs.service_api import RebalanceStatus
from osd.enums import DurabilityType, NodeState
from osd.store.models import AllocationRow, DriveRow, NodeRow, PoolDriveRow, VolumeRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as npb
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
from tests.test_jobs import assert_books, job_count, jobs_stub, service_stub, wait_job


def _states(d: RunningDaemon, node_id: str) -> list[int]:
    with d.store.read() as s:
        return sorted(
            a.state
            for a in s.scalars(select(AllocationRow).where(AllocationRow.node_id == node_id))
        )


def _node(d: RunningDaemon, node_id: str) -> NodeRow:
    with d.store.read() as s:
        return s.get_one(NodeRow, node_id)


def _volume_state(d: RunningDaemon, volume_id: str) -> int:
    with d.store.read() as s:
        return s.get_one(VolumeRow, volume_id).state


def test_rebalance_status_enum_matches_the_proto() -> None:
    from_proto = {
        name.removeprefix("REBALANCE_STATUS_"): number
        for name, number in spb.RebalanceStatus.items()
        if not name.endswith("_UNSPECIFIED")
    }
    assert {m.name: m.value for m in RebalanceStatus} == from_proto


# -- maintenance ---------------------------------------------------------------------


def test_maintenance_makes_the_node_copies_unavailable_and_back(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    vol = make_volume(daemon.store, cluster_id, [drives[0], drives[2], drives[4]])
    svc = service_stub(daemon)
    entered = svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=nodes[0]), timeout=10)
    assert entered.node.state == npb.NODE_STATE_MAINTENANCE
    assert list(entered.affected_volume_ids) == [vol]
    assert _states(daemon, nodes[0]) == [3]  # UNAVAILABLE
    assert _states(daemon, nodes[1]) == [2]
    assert _volume_state(daemon, vol) == 3  # DEGRADED
    # Entering again changes nothing.
    again = svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=nodes[0]), timeout=10)
    assert again.generation == entered.generation
    assert again.node.state == npb.NODE_STATE_MAINTENANCE
    exited = svc.ExitMaintenance(spb.ExitMaintenanceRequest(node_id=nodes[0]), timeout=10)
    assert exited.node.state == npb.NODE_STATE_ONLINE
    assert exited.generation > entered.generation
    assert _states(daemon, nodes[0]) == [2]
    assert _volume_state(daemon, vol) == 2  # UP
    same = svc.ExitMaintenance(spb.ExitMaintenanceRequest(node_id=nodes[0]), timeout=10)
    assert same.generation == exited.generation
    assert_books(daemon.store)


@pytest.mark.parametrize(
    ("layout", "at_risk"),
    [
        ("none", True),  # the only copy is on the node
        ("replicate-alone", True),  # the other copy is on a node already out
        ("replicate-ok", False),
        ("erasure-short", True),  # 2+1 with a fragment already out: 1 left < 2
        ("erasure-ok", False),  # 2+1: 2 fragments left
    ],
)
def test_maintenance_refuses_to_leave_a_volume_below_its_durability(
    daemon: RunningDaemon, layout: str, at_risk: bool
) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    a, b, c = drives[0], drives[2], drives[4]
    if layout == "none":
        vol = make_volume(daemon.store, cluster_id, [a])
    elif layout.startswith("replicate"):
        vol = make_volume(daemon.store, cluster_id, [a, b])
    else:
        vol = make_volume(
            daemon.store,
            cluster_id,
            [a, b, c],
            durability=DurabilityType.ERASURE,
            data_fragments=2,
            redundancy_fragments=1,
        )
    svc = service_stub(daemon)
    if layout in ("replicate-alone", "erasure-short"):
        svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=nodes[1], force=True), timeout=10)
    before = _states(daemon, nodes[0])
    if not at_risk:
        svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=nodes[0]), timeout=10)
        assert _node(daemon, nodes[0]).state == NodeState.MAINTENANCE
        return
    with pytest.raises(grpc.RpcError) as info:
        svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=nodes[0]), timeout=10)
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "DURABILITY_AT_RISK")
    assert err.metadata == {"volume_ids": vol, "count": "1"}
    assert vol in err.message
    # Nothing changed.
    assert _node(daemon, nodes[0]).state == NodeState.ONLINE
    assert _states(daemon, nodes[0]) == before
    # Forced, it goes.
    forced = svc.EnterMaintenance(
        spb.EnterMaintenanceRequest(node_id=nodes[0], force=True), timeout=10
    )
    assert forced.node.state == npb.NODE_STATE_MAINTENANCE
    assert list(forced.affected_volume_ids) == [vol]
    assert _volume_state(daemon, vol) == 4  # DOWN: no complete copy available
    assert_books(daemon.store)


def test_maintenance_names_at_most_ten_volumes(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    vols = sorted(make_volume(daemon.store, cluster_id, [drives[0]]) for _ in range(12))
    with pytest.raises(grpc.RpcError) as info:
        service_stub(daemon).EnterMaintenance(
            spb.EnterMaintenanceRequest(node_id=nodes[0]), timeout=10
        )
    err = error_of(info.value)
    assert err.metadata["count"] == "12"
    assert err.metadata["volume_ids"].split(",") == vols[:10]


def test_maintenance_refuses_bad_nodes_and_states(daemon: RunningDaemon) -> None:
    cluster_id = make_cluster(daemon.store)
    draining = make_node(daemon.store, cluster_id, "dr", state=NodeState.DRAINING)
    offline = make_node(daemon.store, cluster_id, "off", state=NodeState.OFFLINE)
    svc = service_stub(daemon)
    cases = [
        (svc.EnterMaintenance, spb.EnterMaintenanceRequest(node_id="bad"), "INVALID_ARGUMENT"),
        (svc.EnterMaintenance, spb.EnterMaintenanceRequest(node_id="0" * 32), "NOT_FOUND"),
        (svc.ExitMaintenance, spb.ExitMaintenanceRequest(node_id=""), "INVALID_ARGUMENT"),
        (svc.ExitMaintenance, spb.ExitMaintenanceRequest(node_id="1" * 32), "NOT_FOUND"),
    ]
    for call, request, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)  # type: ignore[operator]
        err = error_of(info.value)
        assert err.code.name == code and "node_id" in err.fields
    for call, request in (
        (svc.EnterMaintenance, spb.EnterMaintenanceRequest(node_id=draining)),
        (svc.ExitMaintenance, spb.ExitMaintenanceRequest(node_id=draining)),
        (svc.ExitMaintenance, spb.ExitMaintenanceRequest(node_id=offline)),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)  # type: ignore[operator]
        err = error_of(info.value)
        assert (err.code, err.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NODE_STATE_CONFLICT",
        )
    # An OFFLINE node may enter maintenance.
    entered = svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=offline), timeout=10)
    assert entered.node.state == npb.NODE_STATE_MAINTENANCE


def test_maintenance_waits_for_a_job_filling_the_node(daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(daemon.store)
    daemon.driver.block("format_drive")
    svc = service_stub(daemon)
    started = svc.StartDriveAdd(
        spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/sdx"), timeout=10
    )
    with pytest.raises(grpc.RpcError) as info:
        svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=nodes[0], force=True), timeout=10)
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_IN_PROGRESS")
    assert err.metadata["job_id"] == started.job.id
    daemon.driver.unblock("format_drive")
    wait_job(daemon, started.job.id)
    svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=nodes[0]), timeout=10)


# -- drive add -------------------------------------------------------------------------


def test_drive_add_prepares_the_drive_and_joins_pools(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _ = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "fast")
    address = _node(daemon, nodes[0]).management_addresses[0]
    daemon.driver.add_device(address, "/dev/nvme0n1", 500 * GIB)
    svc = service_stub(daemon)
    daemon.driver.block("format_drive")
    request = spb.StartDriveAddRequest(
        node_id=nodes[0],
        device_path="/dev/nvme0n1",
        labels={"tier": "nvme"},
        description="fast one",
        pool_ids=[pool],
    )
    started = svc.StartDriveAdd(request, timeout=10)
    assert started.started
    assert started.drive.state == npb.DRIVE_STATE_ADDING
    assert started.drive.capacity.total_bytes == 500 * GIB
    assert started.drive.active_job_id == started.job.id
    assert started.job.kind == jpb.JOB_KIND_DRIVE_ADD
    assert started.job.target.id == started.drive.id
    # Starting again while the add runs returns the same job.
    again = svc.StartDriveAdd(request, timeout=10)
    assert not again.started and again.job.id == started.job.id
    daemon.driver.unblock("format_drive")
    assert wait_job(daemon, started.job.id).state == jpb.JOB_STATE_DONE
    status = svc.GetDriveAddStatus(
        spb.GetDriveAddStatusRequest(node_id=nodes[0], device_path="/dev/nvme0n1"), timeout=10
    )
    assert status.job.id == started.job.id and status.job.state == jpb.JOB_STATE_DONE
    assert status.drive.state == npb.DRIVE_STATE_ONLINE
    assert status.drive.labels == {"tier": "nvme"}
    assert list(status.drive.pool_ids) == [pool]
    assert status.drive.active_job_id == ""
    # The device is a drive now.
    with pytest.raises(grpc.RpcError) as info:
        svc.StartDriveAdd(request, timeout=10)
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DRIVE_EXISTS")


def test_drive_add_of_a_device_with_data_needs_confirmation(daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(daemon.store)
    address = _node(daemon, nodes[0]).management_addresses[0]
    daemon.driver.add_device(address, "/dev/old", 10 * GIB, has_data=True)
    svc = service_stub(daemon)
    with pytest.raises(grpc.RpcError) as info:
        svc.StartDriveAdd(
            spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/old"), timeout=10
        )
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_REQUIRED")
    assert job_count(daemon.store) == 0
    with daemon.store.read() as s:
        assert s.scalars(select(DriveRow).where(DriveRow.device_path == "/dev/old")).first() is None
    confirmed = svc.StartDriveAdd(
        spb.StartDriveAddRequest(
            node_id=nodes[0], device_path="/dev/old", yes_i_really_mean_it=True
        ),
        timeout=10,
    )
    assert wait_job(daemon, confirmed.job.id).state == jpb.JOB_STATE_DONE


def test_a_failed_drive_add_removes_the_drive(daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(daemon.store)
    daemon.driver.fail("format_drive")
    svc = service_stub(daemon)
    started = svc.StartDriveAdd(
        spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/bad"), timeout=10
    )
    job = wait_job(daemon, started.job.id)
    assert job.state == jpb.JOB_STATE_FAILED
    status = svc.GetDriveAddStatus(
        spb.GetDriveAddStatusRequest(node_id=nodes[0], device_path="/dev/bad"), timeout=10
    )
    assert status.job.id == job.id and not status.HasField("drive")
    with daemon.store.read() as s:
        assert s.get(DriveRow, started.drive.id) is None
    assert (
        "release_drive",
        {"node_address": "n0-0.mgmt", "device_path": "/dev/bad", "drive_id": started.drive.id},
    ) in daemon.driver.calls


def test_a_cancelled_drive_add_removes_the_drive(daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(daemon.store)
    daemon.driver.block("format_drive")
    svc = service_stub(daemon)
    started = svc.StartDriveAdd(
        spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/sdk"), timeout=10
    )
    assert daemon.driver.wait_blocked("format_drive")
    jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=started.job.id), timeout=10)
    daemon.driver.unblock("format_drive")
    assert wait_job(daemon, started.job.id).state == jpb.JOB_STATE_CANCELLED
    with daemon.store.read() as s:
        assert s.get(DriveRow, started.drive.id) is None


def test_drive_add_refusals_name_the_field_and_write_nothing(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _ = make_topology(daemon.store)
    other = make_cluster(daemon.store, "c2")
    foreign = make_pool(daemon.store, other, "theirs")
    out = make_node(daemon.store, cluster_id, "out", "zone0", state=NodeState.MAINTENANCE)
    make_drive(daemon.store, nodes[0], "/dev/taken")
    svc = service_stub(daemon)
    cases: list[tuple[spb.StartDriveAddRequest, grpc.StatusCode, str, str]] = [
        (
            spb.StartDriveAddRequest(device_path="/dev/a"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "node_id",
            "",
        ),
        (
            spb.StartDriveAddRequest(node_id=nodes[0], device_path="dev"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "device_path",
            "",
        ),
        (
            spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/a", description="!" * 40),
            grpc.StatusCode.INVALID_ARGUMENT,
            "description",
            "",
        ),
        (
            spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/a", pool_ids=["zz"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "pool_ids[0]",
            "",
        ),
        (
            spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/a", pool_ids=[foreign]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "pool_ids[0]",
            "",
        ),
        (
            spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/a", pool_ids=["0" * 32]),
            grpc.StatusCode.NOT_FOUND,
            "pool_ids",
            "",
        ),
        (
            spb.StartDriveAddRequest(node_id="0" * 32, device_path="/dev/a"),
            grpc.StatusCode.NOT_FOUND,
            "node_id",
            "",
        ),
        (
            spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/taken"),
            grpc.StatusCode.ALREADY_EXISTS,
            "",
            "DRIVE_EXISTS",
        ),
        (
            spb.StartDriveAddRequest(node_id=out, device_path="/dev/a"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "",
            "NODE_NOT_ONLINE",
        ),
    ]
    with daemon.store.read() as s:
        drives_before = len(list(s.scalars(select(DriveRow))))
    for request, code, field, reason in cases:
        with pytest.raises(grpc.RpcError) as info:
            svc.StartDriveAdd(request, timeout=10)
        err = error_of(info.value)
        assert err.code == code, request
        if field:
            assert field in err.fields, (request, err.fields)
        if reason:
            assert err.reason == reason
    assert job_count(daemon.store) == 0
    with daemon.store.read() as s:
        assert len(list(s.scalars(select(DriveRow)))) == drives_before
        assert list(s.scalars(select(PoolDriveRow))) == []


def test_drive_add_status_of_an_unknown_device_is_not_found(daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(daemon.store)
    svc = service_stub(daemon)
    with pytest.raises(grpc.RpcError) as info:
        svc.GetDriveAddStatus(
            spb.GetDriveAddStatusRequest(node_id=nodes[0], device_path="/dev/never"), timeout=10
        )
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.NOT_FOUND and "device_path" in err.fields
    with pytest.raises(grpc.RpcError) as info:
        svc.GetDriveAddStatus(spb.GetDriveAddStatusRequest(node_id=nodes[0]), timeout=10)
    assert error_of(info.value).code == grpc.StatusCode.INVALID_ARGUMENT
