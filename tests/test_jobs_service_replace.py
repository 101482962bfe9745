"""Drive replace through the wire on both stores: allocations move and the
accounting follows; refusals change nothing; a driver failure midway rolls
back the move in flight."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from osd.enums import DriveState, NodeState
from osd.store.models import AllocationRow, DriveRow, NodeRow, PoolDriveRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as npb
from osd.v1 import service_pb2 as spb
from tests.conftest import RunningDaemon
from tests.factories import GIB, make_drive, make_node, make_pool, make_topology, make_volume
from tests.helpers import error_of
from tests.test_jobs import (
    allocs_on,
    assert_books,
    drive_row,
    job_count,
    replace_setup,
    service_stub,
    start_replace,
    wait_job,
)


def _address(d: RunningDaemon, node_id: str) -> str:
    with d.store.read() as s:
        return str(s.get_one(NodeRow, node_id).management_addresses[0])


def test_replace_moves_every_allocation_and_the_books_follow(daemon: RunningDaemon) -> None:
    cluster_id, source, target, vols = replace_setup(daemon)
    pool = make_pool(daemon.store, cluster_id, "p", [source])
    moved = {a.id for a in allocs_on(daemon.store, source)}
    started = start_replace(daemon, source, target)
    assert started.source_drive.state == npb.DRIVE_STATE_REPLACING
    assert started.source_drive.active_job_id == started.job.id
    assert started.target_drive.active_job_id == started.job.id
    assert [r.id for r in started.job.related] == [target]
    job = wait_job(daemon, started.job.id)
    assert job.state == jpb.JOB_STATE_DONE
    # The same allocations, now on the target; used bytes follow them.
    assert {a.id for a in allocs_on(daemon.store, target)} == moved
    assert all(a.state == 2 for a in allocs_on(daemon.store, target))
    assert drive_row(daemon.store, source).used_bytes == 0
    assert drive_row(daemon.store, target).used_bytes == 3 * GIB
    assert drive_row(daemon.store, source).state == DriveState.EJECTED
    assert_books(daemon.store)
    # The target took the source's place in its pool; the source left it.
    with daemon.store.read() as s:
        members = set(s.scalars(select(PoolDriveRow.drive_id).where(PoolDriveRow.pool_id == pool)))
    assert members == {target}
    # The driver holds the copies on the target, none on the source.
    assert {r for (drv, r) in daemon.driver.state.replicas if drv == target} == moved
    assert not any(drv == source for (drv, _r) in daemon.driver.state.replicas)
    status = service_stub(daemon).GetDriveReplaceStatus(
        spb.GetDriveReplaceStatusRequest(source_drive_id=source), timeout=10
    )
    assert status.job.id == job.id
    assert status.source_drive.state == npb.DRIVE_STATE_EJECTED
    assert status.target_drive.capacity.used_bytes == 3 * GIB
    assert len(vols) == 3


def test_replace_onto_a_new_device(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    make_volume(daemon.store, cluster_id, [drives[0], drives[2]], GIB, driver=daemon.driver)
    daemon.driver.add_device(_address(daemon, nodes[0]), "/dev/sdn", 300 * GIB)
    started = service_stub(daemon).StartDriveReplace(
        spb.StartDriveReplaceRequest(source_drive_id=drives[0], target_device_path="/dev/sdn"),
        timeout=10,
    )
    assert started.target_drive.state == npb.DRIVE_STATE_ADDING
    assert started.target_drive.capacity.total_bytes == 300 * GIB
    job = wait_job(daemon, started.job.id)
    assert job.state == jpb.JOB_STATE_DONE
    assert job.progress.done_steps == 2  # prepare the device, move one allocation
    target = drive_row(daemon.store, started.target_drive.id)
    assert (target.state, target.used_bytes) == (DriveState.ONLINE, GIB)
    assert_books(daemon.store)


def test_starting_again_returns_the_unfinished_replace(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon)
    daemon.driver.block("copy_replica")
    first = start_replace(daemon, source, target)
    again = start_replace(daemon, source, target)
    assert not again.started and again.job.id == first.job.id
    daemon.driver.unblock("copy_replica")
    wait_job(daemon, first.job.id)


def _refusal(
    d: RunningDaemon, request: spb.StartDriveReplaceRequest
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        service_stub(d).StartDriveReplace(request, timeout=10)
    err = error_of(info.value)
    return err.code, err.reason, err.fields


def _snapshot(d: RunningDaemon) -> list[tuple[str, int, int, str | None]]:
    with d.store.read() as s:
        return sorted(
            (r.id, r.state, r.used_bytes, r.active_job_id) for r in s.scalars(select(DriveRow))
        )


def test_replace_refusals_change_nothing(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    source = drives[0]
    make_volume(daemon.store, cluster_id, [source, drives[2]], GIB)
    small = make_drive(daemon.store, nodes[0], "/dev/small", 50 * GIB)
    full = make_drive(daemon.store, nodes[0], "/dev/full", 200 * GIB)
    make_volume(daemon.store, cluster_id, [full, drives[4]], GIB)
    journal = make_drive(daemon.store, nodes[0], "/dev/journal", 200 * GIB, journal=True)
    ejected = make_drive(daemon.store, nodes[0], "/dev/gone", state=DriveState.EJECTED)
    elsewhere = drives[2]
    address = _address(daemon, nodes[0])
    daemon.driver.add_device(address, "/dev/tiny", 10 * GIB)
    daemon.driver.add_device(address, "/dev/used", 500 * GIB, has_data=True)
    off_node = make_node(daemon.store, cluster_id, "off", "zone0", state=NodeState.OFFLINE)
    off_source = make_drive(daemon.store, off_node, "/dev/sdb")
    off_target = make_drive(daemon.store, off_node, "/dev/sdc")
    before = _snapshot(daemon)
    fp, inv = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT
    R = spb.StartDriveReplaceRequest
    cases = [
        (R(source_drive_id="x", target_drive_id=small), inv, "", "source_drive_id"),
        (R(source_drive_id=source), inv, "", "target_device_path"),
        (R(source_drive_id=source, target_drive_id="y"), inv, "", "target_drive_id"),
        (R(source_drive_id=source, target_device_path="sdb"), inv, "", "target_device_path"),
        (R(source_drive_id=source, target_drive_id=source), inv, "", "target_drive_id"),
        (R(source_drive_id=source, target_drive_id=elsewhere), inv, "", "target_drive_id"),
        (R(source_drive_id=source, target_drive_id=journal), inv, "", "target_drive_id"),
        (
            R(source_drive_id="0" * 32, target_drive_id=small),
            grpc.StatusCode.NOT_FOUND,
            "",
            "source_drive_id",
        ),
        (
            R(source_drive_id=source, target_drive_id="0" * 32),
            grpc.StatusCode.NOT_FOUND,
            "",
            "target_drive_id",
        ),
        (R(source_drive_id=source, target_drive_id=small), fp, "TARGET_TOO_SMALL", ""),
        (R(source_drive_id=source, target_device_path="/dev/tiny"), fp, "TARGET_TOO_SMALL", ""),
        (R(source_drive_id=source, target_drive_id=full), fp, "TARGET_NOT_EMPTY", ""),
        (R(source_drive_id=source, target_drive_id=ejected), fp, "TARGET_NOT_EMPTY", ""),
        (R(source_drive_id=ejected, target_drive_id=small), fp, "DRIVE_STATE_CONFLICT", ""),
        (R(source_drive_id=off_source, target_drive_id=off_target), fp, "NODE_NOT_ONLINE", ""),
        (
            R(source_drive_id=source, target_device_path="/dev/used"),
            fp,
            "CONFIRMATION_REQUIRED",
            "",
        ),
        (
            R(source_drive_id=source, target_device_path="/dev/small"),
            grpc.StatusCode.ALREADY_EXISTS,
            "DRIVE_EXISTS",
            "",
        ),
    ]
    for request, code, reason, field in cases:
        got_code, got_reason, fields = _refusal(daemon, request)
        assert got_code == code, request
        if reason:
            assert got_reason == reason, request
        if field:
            assert field in fields, (request, fields)
    assert _snapshot(daemon) == before
    assert job_count(daemon.store) == 0
    assert_books(daemon.store)


def test_a_driver_failure_midway_rolls_back_the_move_in_flight(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon)
    on_source = sorted(a.id for a in allocs_on(daemon.store, source))
    # The second copy fails: the first has moved, the second is in flight.
    daemon.driver.fail("copy_replica", when=lambda args: args["replica_id"] == on_source[1])
    job = wait_job(daemon, start_replace(daemon, source, target).job.id)
    assert job.state == jpb.JOB_STATE_FAILED
    assert job.progress.done_steps == 1
    assert [a.id for a in allocs_on(daemon.store, target)] == [on_source[0]]
    assert sorted(a.id for a in allocs_on(daemon.store, source)) == on_source[1:]
    assert drive_row(daemon.store, source).state == DriveState.ONLINE
    assert drive_row(daemon.store, source).used_bytes == 2 * GIB
    assert drive_row(daemon.store, target).used_bytes == GIB
    assert drive_row(daemon.store, source).active_job_id is None
    assert drive_row(daemon.store, target).active_job_id is None
    # No copy of the failed move is left on the target.
    assert (target, on_source[1]) not in daemon.driver.state.replicas
    assert_books(daemon.store)
    # The target now holds a copy, so it is no longer a valid target; another
    # empty drive is, and this time the replace finishes.
    code, reason, _ = _refusal(
        daemon, spb.StartDriveReplaceRequest(source_drive_id=source, target_drive_id=target)
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TARGET_NOT_EMPTY")
    spare = make_drive(daemon.store, drive_row(daemon.store, source).node_id, "/dev/sdy", 200 * GIB)
    retry = wait_job(daemon, start_replace(daemon, source, spare).job.id)
    assert retry.state == jpb.JOB_STATE_DONE
    assert len(allocs_on(daemon.store, spare)) == 2
    assert_books(daemon.store)


def test_a_failed_new_device_target_is_removed(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, drives = make_topology(daemon.store)
    make_volume(daemon.store, cluster_id, [drives[0], drives[2]], GIB, driver=daemon.driver)
    daemon.driver.fail("format_drive")
    started = service_stub(daemon).StartDriveReplace(
        spb.StartDriveReplaceRequest(source_drive_id=drives[0], target_device_path="/dev/sdm"),
        timeout=10,
    )
    assert wait_job(daemon, started.job.id).state == jpb.JOB_STATE_FAILED
    with daemon.store.read() as s:
        assert s.get(DriveRow, started.target_drive.id) is None
    status = service_stub(daemon).GetDriveReplaceStatus(
        spb.GetDriveReplaceStatusRequest(source_drive_id=drives[0]), timeout=10
    )
    assert status.source_drive.state == npb.DRIVE_STATE_ONLINE
    assert not status.HasField("target_drive")
    assert_books(daemon.store)


def test_a_failed_source_is_rebuilt_from_the_other_copies(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon, volumes=2)
    with daemon.store.write() as s:
        s.get_one(DriveRow, source).state = int(DriveState.FAILED)
        for a in s.scalars(select(AllocationRow).where(AllocationRow.drive_id == source)):
            a.state = 3  # UNAVAILABLE
    ids = sorted(a.id for a in allocs_on(daemon.store, source))
    daemon.driver.fail("copy_replica", times=100)  # nothing may be copied off a failed drive
    job = wait_job(daemon, start_replace(daemon, source, target).job.id)
    assert job.state == jpb.JOB_STATE_DONE
    rebuilt = sorted(allocs_on(daemon.store, target), key=lambda a: a.id)
    assert [a.id for a in rebuilt] == ids and all(a.state == 2 for a in rebuilt)
    assert {r for (drv, r) in daemon.driver.state.replicas if drv == target} == set(ids)
    assert_books(daemon.store)


def test_a_failed_source_with_a_lone_copy_is_data_unavailable(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    make_volume(daemon.store, cluster_id, [drives[0]], GIB)
    target = make_drive(daemon.store, nodes[0], "/dev/sdz", 200 * GIB)
    with daemon.store.write() as s:
        s.get_one(DriveRow, drives[0]).state = int(DriveState.FAILED)
    before = _snapshot(daemon)
    code, reason, _ = _refusal(
        daemon, spb.StartDriveReplaceRequest(source_drive_id=drives[0], target_drive_id=target)
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "DATA_UNAVAILABLE")
    assert _snapshot(daemon) == before


def test_replace_on_a_node_in_maintenance(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon, volumes=2)
    node_id = drive_row(daemon.store, source).node_id
    svc = service_stub(daemon)
    svc.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=node_id), timeout=10)
    job = wait_job(daemon, start_replace(daemon, source, target).job.id)
    assert job.state == jpb.JOB_STATE_DONE
    assert [a.state for a in allocs_on(daemon.store, target)] == [3, 3]  # UNAVAILABLE
    svc.ExitMaintenance(spb.ExitMaintenanceRequest(node_id=node_id), timeout=10)
    assert [a.state for a in allocs_on(daemon.store, target)] == [2, 2]
    assert_books(daemon.store)


def test_replace_status_of_an_unreplaced_drive_is_not_found(daemon: RunningDaemon) -> None:
    _, _, drives = make_topology(daemon.store)
    svc = service_stub(daemon)
    for drive_id, code in (
        (drives[0], "NOT_FOUND"),
        ("0" * 32, "NOT_FOUND"),
        ("x", "INVALID_ARGUMENT"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            svc.GetDriveReplaceStatus(
                spb.GetDriveReplaceStatusRequest(source_drive_id=drive_id), timeout=10
            )
        err = error_of(info.value)
        assert err.code.name == code and "source_drive_id" in err.fields
