"""Snapshots go wherever their copies go, through the wire on both stores.

A pool rebalance, a drive replace and a soft eject each move copies of a
snapshotted volume to other drives (or rebuild them there when their drive
cannot be read); afterwards the volume reverts to its snapshots, a snapshot
delete deletes the snapshot where it now lives, the books balance, and the
driver holds exactly the copies and snapshots the allocations say it does.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from osd.enums import DriveState
from osd.store.models import AllocationRow, DriveRow, SnapshotRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as npb
from osd.v1 import node_pb2_grpc
from osd.v1 import service_pb2 as spb
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import GIB, make_drive, make_pool, make_topology, make_volume
from tests.test_jobs import allocs_on, assert_books, service_stub, start_replace, wait_job
from tests.volume_helpers import mask, volumes

# -- setup and checks ---------------------------------------------------------------


class World:
    """A 3-zone cluster (two drives per node, every node in one pool) with
    ``n`` 3-copy volumes on the first drive of each node, each with a snapshot."""

    def __init__(self, d: RunningDaemon, n: int = 4) -> None:
        self.d = d
        self.cluster_id, self.nodes, self.drives = make_topology(d.store)
        self.pool = make_pool(d.store, self.cluster_id, "p", node_ids=self.nodes)
        self.volumes = [
            make_volume(
                d.store,
                self.cluster_id,
                [self.drives[0], self.drives[2], self.drives[4]],
                GIB,
                pool_id=self.pool,
                driver=d.driver,
            )
            for _ in range(n)
        ]
        stub = volumes(d)
        self.snapshots = {
            v: stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=v)).snapshot.id
            for v in self.volumes
        }
        self.before = self.placement()

    def placement(self) -> dict[str, str]:
        """Allocation id -> drive id."""
        with self.d.store.read() as s:
            return {a.id: a.drive_id for a in s.scalars(select(AllocationRow))}

    def moved(self) -> set[str]:
        after = self.placement()
        return {a for a, drive in self.before.items() if after.get(a) != drive}


def driver_matches_books(d: RunningDaemon) -> None:
    """The driver holds a copy for each allocation of a volume and, on each
    allocation's drive, every snapshot of its chain as a snapshot of that copy;
    nothing else."""
    with d.store.read() as s:
        allocs = list(s.scalars(select(AllocationRow)))
        chain: dict[str, list[str]] = {}
        for snap in s.scalars(select(SnapshotRow)):
            chain.setdefault(snap.volume_id, []).append(snap.id)
        holder = {snap.id: snap.volume_id for snap in s.scalars(select(SnapshotRow))}
    replicas = {(a.drive_id, a.id) for a in allocs if a.volume_id}
    snapshots = {
        (a.drive_id, snap_id, a.id)
        for a in allocs
        for snap_id in chain.get(a.volume_id or holder.get(a.snapshot_id or "", ""), [])
    }
    assert set(d.driver.state.replicas) == replicas
    assert {(drv, sid, rid) for (drv, sid), rid in d.driver.state.snapshots.items()} == snapshots


def revert_all(d: RunningDaemon, world: World) -> None:
    stub = volumes(d)
    for volume_id, snapshot_id in world.snapshots.items():
        stub.RevertVolume(
            pb.RevertVolumeRequest(
                volume_id=volume_id, snapshot_id=snapshot_id, yes_i_really_mean_it=True
            )
        )


def delete_snapshots(d: RunningDaemon, snapshot_ids: list[str]) -> None:
    stub = volumes(d)
    for snapshot_id in snapshot_ids:
        stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot_id))


# -- the three movers -----------------------------------------------------------------


def rebalance(d: RunningDaemon, world: World) -> jpb.Job:
    started = service_stub(d).StartPoolRebalance(
        spb.StartPoolRebalanceRequest(pool_id=world.pool), timeout=10
    )
    return wait_job(d, started.job.id)


def replace(d: RunningDaemon, world: World) -> jpb.Job:
    target = make_drive(d.store, world.nodes[0], "/dev/sdz", 200 * GIB)
    return wait_job(d, start_replace(d, world.drives[0], target).job.id)


def soft_eject(d: RunningDaemon, world: World) -> jpb.Job:
    resp = node_pb2_grpc.NodeServiceStub(d.channel).EjectDrive(
        npb.EjectDriveRequest(drive_id=world.drives[0], soft=True)
    )
    return wait_job(d, resp.job.id)


MOVERS: dict[str, Callable[[RunningDaemon, World], jpb.Job]] = {
    "rebalance": rebalance,
    "replace": replace,
    "soft_eject": soft_eject,
}


@pytest.mark.parametrize("mover", sorted(MOVERS))
def test_a_volume_reverts_to_a_snapshot_after_its_copies_moved(
    daemon: RunningDaemon, mover: str
) -> None:
    world = World(daemon)
    driver_matches_books(daemon)
    job = MOVERS[mover](daemon, world)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert world.moved(), "the mover moved no copy"
    assert_books(daemon.store)
    revert_all(daemon, world)
    assert_books(daemon.store)
    driver_matches_books(daemon)
    # Deleting a snapshot deletes it where it now lives, and nowhere else remains.
    delete_snapshots(daemon, list(world.snapshots.values()))
    assert daemon.driver.state.snapshots == {}
    assert_books(daemon.store)
    driver_matches_books(daemon)


@pytest.mark.parametrize("mover", sorted(MOVERS))
def test_a_moved_volume_freezes_and_its_snapshots_delete_cleanly(
    daemon: RunningDaemon, mover: str
) -> None:
    world = World(daemon, n=2)
    job = MOVERS[mover](daemon, world)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    stub = volumes(daemon)
    frozen = [
        stub.FreezeVolume(pb.FreezeVolumeRequest(volume_id=v, name=f"frozen-{i}")).snapshot.id
        for i, v in enumerate(world.volumes)
    ]
    assert_books(daemon.store)
    driver_matches_books(daemon)
    delete_snapshots(daemon, list(world.snapshots.values()) + frozen)
    assert daemon.driver.state == type(daemon.driver.state)(
        devices=daemon.driver.state.devices, attachments=daemon.driver.state.attachments
    )
    assert_books(daemon.store)


@pytest.mark.parametrize("mover", ["replace", "soft_eject"])
def test_a_frozen_snapshots_copies_move_with_their_chain(daemon: RunningDaemon, mover: str) -> None:
    """A frozen volume's data is its snapshots alone; moving its allocations
    moves them, and deleting the chain afterwards leaves nothing behind."""
    world = World(daemon, n=2)
    stub = volumes(daemon)
    frozen = [
        stub.FreezeVolume(pb.FreezeVolumeRequest(volume_id=v, name=f"frozen-{i}")).snapshot.id
        for i, v in enumerate(world.volumes)
    ]
    driver_matches_books(daemon)
    job = MOVERS[mover](daemon, world)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert world.moved()
    assert allocs_on(daemon.store, world.drives[0]) == []
    assert_books(daemon.store)
    driver_matches_books(daemon)
    delete_snapshots(daemon, list(world.snapshots.values()) + frozen)
    assert daemon.driver.state.snapshots == {} and daemon.driver.state.replicas == {}
    assert_books(daemon.store)


# -- rebuilds: the source cannot be read ---------------------------------------------


def _lose_drive(d: RunningDaemon, drive_id: str, state: DriveState) -> None:
    with d.store.write() as s:
        s.get_one(DriveRow, drive_id).state = int(state)
        for a in s.scalars(select(AllocationRow).where(AllocationRow.drive_id == drive_id)):
            a.state = 3  # UNAVAILABLE


def test_a_copy_rebuilt_by_replace_carries_the_snapshots(daemon: RunningDaemon) -> None:
    world = World(daemon, n=2)
    _lose_drive(daemon, world.drives[0], DriveState.FAILED)
    daemon.driver.fail("copy_replica", times=100)  # nothing may be copied off a failed drive
    job = replace(daemon, world)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert len(world.moved()) == 2
    revert_all(daemon, world)
    assert_books(daemon.store)
    driver_matches_books(daemon)
    delete_snapshots(daemon, list(world.snapshots.values()))
    assert daemon.driver.state.snapshots == {}
    driver_matches_books(daemon)
    assert_books(daemon.store)


def test_a_copy_rebuilt_by_rebalance_carries_the_snapshots(daemon: RunningDaemon) -> None:
    world = World(daemon, n=2)
    node_pb2_grpc.NodeServiceStub(daemon.channel).EjectDrive(
        npb.EjectDriveRequest(drive_id=world.drives[0], yes_i_really_mean_it=True)
    )
    job = rebalance(daemon, world)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    # Nothing was copied off the ejected drive: its copies were rebuilt.
    copied_from = {
        args["source_drive_id"] for op, args in daemon.driver.calls if op == "copy_replica"
    }
    assert world.drives[0] not in copied_from
    assert {a for a, drive in world.before.items() if drive == world.drives[0]} <= world.moved()
    assert allocs_on(daemon.store, world.drives[0]) == []
    revert_all(daemon, world)
    assert_books(daemon.store)
    driver_matches_books(daemon)
    delete_snapshots(daemon, list(world.snapshots.values()))
    assert daemon.driver.state.snapshots == {}
    driver_matches_books(daemon)
    assert_books(daemon.store)


def test_a_rebuild_that_fails_midway_leaves_nothing_on_its_target(daemon: RunningDaemon) -> None:
    world = World(daemon, n=1)
    _lose_drive(daemon, world.drives[0], DriveState.FAILED)
    daemon.driver.fail("copy_snapshots")
    job = replace(daemon, world)
    assert job.state == jpb.JOB_STATE_FAILED
    assert "copy_snapshots" in job.error.message
    # The copy created on the target before the failure was purged with the rollback.
    assert world.moved() == set()
    assert_books(daemon.store)
    driver_matches_books(daemon)


# -- the volume jobs: a replica change and a placement move ---------------------------


def _wait_volume_job(d: RunningDaemon, resp: pb.UpdateVolumeResponse) -> None:
    assert resp.job.id, "the update started no job"
    assert wait_job(d, resp.job.id).state == jpb.JOB_STATE_DONE


def test_a_copy_added_by_a_replica_change_carries_the_snapshots(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, drives = make_topology(daemon.store, zones=4)
    volume_id = make_volume(
        daemon.store, cluster_id, [drives[0], drives[2]], GIB, driver=daemon.driver
    )
    stub = volumes(daemon)
    snapshot_id = stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=volume_id)).snapshot.id
    _wait_volume_job(
        daemon,
        stub.UpdateVolume(
            pb.UpdateVolumeRequest(
                volume_id=volume_id,
                durability=pb.Durability(replicas=3),
                update_mask=mask("durability.replicas"),
            )
        ),
    )
    driver_matches_books(daemon)
    stub.RevertVolume(
        pb.RevertVolumeRequest(
            volume_id=volume_id, snapshot_id=snapshot_id, yes_i_really_mean_it=True
        )
    )
    # Lowering the count again takes the released copy's snapshots with it.
    _wait_volume_job(
        daemon,
        stub.UpdateVolume(
            pb.UpdateVolumeRequest(
                volume_id=volume_id,
                durability=pb.Durability(replicas=2),
                update_mask=mask("durability.replicas"),
            )
        ),
    )
    driver_matches_books(daemon)
    delete_snapshots(daemon, [snapshot_id])
    driver_matches_books(daemon)
    assert_books(daemon.store)


def test_a_placement_move_leaves_no_snapshot_behind(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, drives = make_topology(daemon.store)
    volume_id = make_volume(
        daemon.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=daemon.driver
    )
    # The pool holds the other drive of each node: every copy moves.
    pool = make_pool(daemon.store, cluster_id, "other", drive_ids=[drives[1], drives[3], drives[5]])
    stub = volumes(daemon)
    snapshot_id = stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=volume_id)).snapshot.id
    _wait_volume_job(
        daemon,
        stub.UpdateVolume(
            pb.UpdateVolumeRequest(
                volume_id=volume_id,
                placement=pb.Placement(pool_id=pool),
                update_mask=mask("placement"),
            )
        ),
    )
    assert allocs_on(daemon.store, drives[0]) == []
    driver_matches_books(daemon)
    stub.RevertVolume(
        pb.RevertVolumeRequest(
            volume_id=volume_id, snapshot_id=snapshot_id, yes_i_really_mean_it=True
        )
    )
    delete_snapshots(daemon, [snapshot_id])
    driver_matches_books(daemon)
    assert_books(daemon.store)


def test_a_revert_to_a_smaller_snapshot_leaves_copies_of_its_size(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, drives = make_topology(daemon.store)
    volume_id = make_volume(
        daemon.store, cluster_id, [drives[0], drives[2]], 2 * GIB, driver=daemon.driver
    )
    stub = volumes(daemon)
    snapshot_id = stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=volume_id)).snapshot.id
    stub.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=volume_id, size="3G", update_mask=mask("size"))
    )
    reverted = stub.RevertVolume(
        pb.RevertVolumeRequest(
            volume_id=volume_id, snapshot_id=snapshot_id, yes_i_really_mean_it=True
        )
    ).volume
    assert reverted.size_bytes == 2 * GIB
    with daemon.store.read() as s:
        allocs = list(s.scalars(select(AllocationRow).where(AllocationRow.volume_id == volume_id)))
    # Every copy in the driver is the size the books give it.
    assert {(a.drive_id, a.id): a.bytes for a in allocs} == {
        key: daemon.driver.state.replicas[key] for key in ((a.drive_id, a.id) for a in allocs)
    }
    assert all(a.bytes == 2 * GIB for a in allocs)
    driver_matches_books(daemon)
    assert_books(daemon.store)
