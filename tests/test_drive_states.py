"""Drive states an operator sets (NodeService.SetDriveState) over the wire, on
SQLite and PostgreSQL: OFFLINE keeps a drive's copies serving but out of
placement, FAILED takes them out of service (confirmed), and ONLINE readmits
a drive that came back, its stale copies resynced by a repair."""

from __future__ import annotations

import grpc
from sqlalchemy import select

from osd.store.models import AllocationRow
from osd.v1 import common_pb2
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as npb
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.test_repair import assert_healed, drive_of, inspect, repaired, set_policy, world
from tests.volume_helpers import create, fails, generation, hard_eject, node_stub, volumes

ACTIVE = common_pb2.ALLOCATION_STATE_ACTIVE
UNAVAILABLE = common_pb2.ALLOCATION_STATE_UNAVAILABLE


def set_state(
    d: RunningDaemon, drive_id: str, state: int, **kw: object
) -> npb.SetDriveStateResponse:
    return node_stub(d).SetDriveState(
        npb.SetDriveStateRequest(drive_id=drive_id, state=state, **kw), timeout=10
    )


def one_copy(d: RunningDaemon, cluster_id: str, name: str) -> pb.Volume:
    """A volume of a single copy (durability NONE)."""
    none = pb.Durability(type=pb.DURABILITY_TYPE_NONE)
    return create(volumes(d), cluster_id, name, size="64M", replicas=None, durability=none)


def snapshot_copy_state(d: RunningDaemon, snapshot_id: str, drive_id: str) -> int:
    with d.store.read() as s:
        return int(
            s.scalars(
                select(AllocationRow.state).where(
                    AllocationRow.snapshot_id == snapshot_id, AllocationRow.drive_id == drive_id
                )
            ).one()
        )


def drive_state(d: RunningDaemon, drive_id: str) -> int:
    return node_stub(d).InspectDrive(npb.InspectDriveRequest(drive_id=drive_id)).drive.state


def copy_states(d: RunningDaemon, volume_id: str) -> dict[str, int]:
    """drive id -> the state of the volume's copy there."""
    return {a.drive_id: a.state for a in inspect(d, volume_id).allocations}


def test_an_offline_drive_keeps_serving_its_copies_but_takes_no_new_ones(
    daemon: RunningDaemon,
) -> None:
    cluster_id, _nodes, drives = world(daemon, zones=4)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    offline, _node = drive_of(daemon, vol.id, 0)

    done = set_state(daemon, offline, npb.DRIVE_STATE_OFFLINE)
    assert done.drive.state == npb.DRIVE_STATE_OFFLINE
    assert done.generation == generation(daemon)
    assert drive_state(daemon, offline) == npb.DRIVE_STATE_OFFLINE
    # Its copy still serves: the volume is UP with every copy live.
    got = inspect(daemon, vol.id)
    assert got.volume.state == pb.VOLUME_STATE_UP
    assert copy_states(daemon, vol.id)[offline] == ACTIVE
    # New copies go elsewhere, single ones and replicated ones alike.
    for i in range(6):
        made = one_copy(daemon, cluster_id, f"s{i}")
        assert offline not in copy_states(daemon, made.id)
    made = create(volumes(daemon), cluster_id, "r3", size="64M")
    assert sorted(copy_states(daemon, made.id)) == sorted(set(drives) - {offline})

    # Again: nothing changes.
    before = generation(daemon)
    again = set_state(daemon, offline, npb.DRIVE_STATE_OFFLINE)
    assert again.generation == before == generation(daemon)

    back = set_state(daemon, offline, npb.DRIVE_STATE_ONLINE)
    assert back.drive.state == npb.DRIVE_STATE_ONLINE
    assert (list(back.restored_volume_ids), list(back.resync_volume_ids)) == ([], [])
    placed = {
        d for i in range(8) for d in copy_states(daemon, one_copy(daemon, cluster_id, f"b{i}").id)
    }
    assert offline in placed  # the emptiest drive again


def test_failed_needs_confirmation_then_readmit_restores_last_copies_and_resyncs_stale_ones(
    daemon: RunningDaemon,
) -> None:
    cluster_id, _nodes, _drives = world(daemon, zones=4, paused=True)
    stub = volumes(daemon)
    vol = create(stub, cluster_id, "v1", size="64M")
    # A snapshot whose volume is gone holds copies of its own.
    gone = create(stub, cluster_id, "gone", size="64M")
    snap = stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=gone.id, name="s1")).snapshot
    stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=gone.id))
    with daemon.store.read() as s:
        held = set(
            s.scalars(select(AllocationRow.drive_id).where(AllocationRow.snapshot_id == snap.id))
        )
    shared = set(copy_states(daemon, vol.id)) & held
    # A single-copy volume on a drive of both.
    for i in range(8):
        single = one_copy(daemon, cluster_id, f"one{i}")
        [lost] = copy_states(daemon, single.id)
        if lost in shared:
            break
    assert lost in shared
    before = generation(daemon)
    refused = fails(
        node_stub(daemon).SetDriveState,
        npb.SetDriveStateRequest(drive_id=lost, state=npb.DRIVE_STATE_FAILED),
    )
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONFIRMATION_REQUIRED",
    )
    assert generation(daemon) == before
    assert drive_state(daemon, lost) == npb.DRIVE_STATE_ONLINE

    failed = set_state(daemon, lost, npb.DRIVE_STATE_FAILED, yes_i_really_mean_it=True)
    assert failed.drive.state == npb.DRIVE_STATE_FAILED
    assert copy_states(daemon, vol.id)[lost] == UNAVAILABLE
    assert inspect(daemon, vol.id).volume.state == pb.VOLUME_STATE_DEGRADED
    assert copy_states(daemon, single.id) == {lost: UNAVAILABLE}
    assert inspect(daemon, single.id).volume.state == pb.VOLUME_STATE_DOWN
    assert snapshot_copy_state(daemon, snap.id, lost) == UNAVAILABLE

    back = set_state(daemon, lost, npb.DRIVE_STATE_ONLINE)
    assert back.drive.state == npb.DRIVE_STATE_ONLINE
    # The single copy is the volume's latest data: live again as it is.
    assert single.id in back.restored_volume_ids
    assert copy_states(daemon, single.id) == {lost: ACTIVE}
    assert inspect(daemon, single.id).volume.state == pb.VOLUME_STATE_UP
    # The replicated volume was readable elsewhere and may have been written:
    # its copy here waits for a resync.
    assert list(back.resync_volume_ids) == [vol.id]
    assert vol.id not in back.restored_volume_ids
    assert copy_states(daemon, vol.id)[lost] == UNAVAILABLE
    # A snapshot does not change: its copies here are live again.
    assert list(back.restored_snapshot_ids) == [snap.id]
    assert snapshot_copy_state(daemon, snap.id, lost) == ACTIVE

    set_policy(daemon, cluster_id, paused=False)
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    healed = assert_healed(daemon, vol.id)
    assert lost not in {a.drive_id for a in healed.allocations}


def test_wrong_states_and_drives_are_refused_and_change_nothing(daemon: RunningDaemon) -> None:
    _cluster_id, _nodes, drives = world(daemon, zones=4)
    before = generation(daemon)
    stub = node_stub(daemon)
    for state in (npb.DRIVE_STATE_EJECTED, npb.DRIVE_STATE_ADDING, npb.DRIVE_STATE_UNSPECIFIED):
        err = fails(stub.SetDriveState, npb.SetDriveStateRequest(drive_id=drives[0], state=state))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert list(err.fields) == ["state"]
    err = fails(
        stub.SetDriveState, npb.SetDriveStateRequest(drive_id="x", state=npb.DRIVE_STATE_OFFLINE)
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["drive_id"])
    err = fails(
        stub.SetDriveState,
        npb.SetDriveStateRequest(drive_id="a" * 32, state=npb.DRIVE_STATE_OFFLINE),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    err = fails(
        stub.SetDriveState,
        npb.SetDriveStateRequest(
            drive_id=drives[0], state=npb.DRIVE_STATE_OFFLINE, expected_generation=1
        ),
    )
    assert err.code == grpc.StatusCode.ABORTED
    assert generation(daemon) == before

    hard_eject(daemon, drives[1])
    before = generation(daemon)
    err = fails(
        stub.SetDriveState,
        npb.SetDriveStateRequest(drive_id=drives[1], state=npb.DRIVE_STATE_OFFLINE),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "DRIVE_STATE_CONFLICT")
    assert err.metadata["state"] == "EJECTED"
    assert generation(daemon) == before
    assert drive_state(daemon, drives[1]) == npb.DRIVE_STATE_EJECTED
    # An ejected drive that came back is readmitted.
    assert set_state(daemon, drives[1], npb.DRIVE_STATE_ONLINE).drive.state == (
        npb.DRIVE_STATE_ONLINE
    )
