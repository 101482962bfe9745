"""Data-safety rules through the wire, on SQLite and PostgreSQL.

A replica count change counts live copies (ACTIVE allocations on serving
drives): lowering the count of a degraded volume drops lost or unavailable
copies first and never a live copy the new count keeps room for; raising it
makes as many copies as the new count of live copies needs.
"""

from __future__ import annotations

import pytest

from osd.v1 import (
    common_pb2,
    node_pb2,
    node_pb2_grpc,
    volume_pb2_grpc,
)
from osd.v1 import job_pb2 as jpb
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_pool, make_topology
from tests.test_jobs import assert_books, wait_job
from tests.volume_helpers import (
    mask,
    replicated,
    volumes,
)

ACTIVE = common_pb2.ALLOCATION_STATE_ACTIVE
Stub = volume_pb2_grpc.VolumeServiceStub


@pytest.fixture
def stub(daemon: RunningDaemon) -> Stub:
    return volumes(daemon)


def nodes(daemon: RunningDaemon) -> node_pb2_grpc.NodeServiceStub:
    return node_pb2_grpc.NodeServiceStub(daemon.channel)


def inspect(stub: Stub, volume_id: str) -> pb.InspectVolumeResponse:
    return stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume_id))


def create(stub: Stub, cluster_id: str, name: str, replicas: int, **kw: object) -> pb.Volume:
    return stub.CreateVolume(
        pb.CreateVolumeRequest(
            cluster_id=cluster_id,
            name=name,
            size="4G",
            durability=replicated(replicas),
            **kw,  # type: ignore[arg-type]
        )
    ).volume


def change_replicas(daemon: RunningDaemon, stub: Stub, volume_id: str, replicas: int) -> None:
    job = stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=volume_id,
            durability=replicated(replicas),
            update_mask=mask("durability.replicas"),
        )
    ).job
    assert job.kind == jpb.JOB_KIND_VOLUME_REPLICA_CHANGE
    assert wait_job(daemon, job.id).state == jpb.JOB_STATE_DONE


def live(detail: pb.InspectVolumeResponse) -> set[str]:
    return {a.id for a in detail.allocations if a.state == ACTIVE}


def lose_copy(daemon: RunningDaemon, drive_id: str, node_id: str, how: str) -> None:
    """Makes the copy on ``drive_id`` lost (forgotten) or unavailable (ejected,
    or its node OFFLINE)."""
    stub = nodes(daemon)
    if how == "offline":
        stub.SetNodeState(
            node_pb2.SetNodeStateRequest(node_id=node_id, state=node_pb2.NODE_STATE_OFFLINE)
        )
        return
    stub.EjectDrive(node_pb2.EjectDriveRequest(drive_id=drive_id, yes_i_really_mean_it=True))
    if how == "forgotten":
        stub.ForgetDrive(node_pb2.ForgetDriveRequest(drive_id=drive_id, yes_i_really_mean_it=True))


def assert_settled(daemon: RunningDaemon, stub: Stub, volume_id: str, replicas: int) -> None:
    """The volume claims ``replicas`` copies and has them, live, in distinct zones."""
    after = inspect(stub, volume_id)
    assert after.volume.durability.replicas == replicas
    assert [a.state for a in after.allocations] == [ACTIVE] * replicas
    assert [a.index for a in after.allocations] == list(range(replicas))
    assert len({a.zone for a in after.allocations}) == replicas
    assert after.volume.state == pb.VOLUME_STATE_UP and after.volume.active_job_id == ""
    held = {replica for _, replica in daemon.driver.state.replicas}
    assert live(after) <= held
    assert_books(daemon.store)


# -- a replica change on a degraded volume -------------------------------------------


@pytest.mark.parametrize("how", ["forgotten", "ejected", "offline"])
def test_lowering_the_count_of_a_degraded_volume_keeps_its_live_copies(
    daemon: RunningDaemon, stub: Stub, how: str
) -> None:
    cluster_id, _, _ = make_topology(daemon.store, zones=4)
    v = create(stub, cluster_id, "v", replicas=3)
    lost = inspect(stub, v.id).allocations[0]
    lose_copy(daemon, lost.drive_id, lost.node_id, how)
    before = inspect(stub, v.id)
    assert before.volume.state == pb.VOLUME_STATE_DEGRADED
    survivors = live(before)
    assert len(survivors) == 2

    change_replicas(daemon, stub, v.id, 2)
    after = inspect(stub, v.id)
    # Both live copies stay; the lost or unavailable one is what goes.
    assert live(after) == survivors and lost.id not in {a.id for a in after.allocations}
    assert_settled(daemon, stub, v.id, 2)

    # Raising it again makes the copy it needs: the count it claims is what it has.
    change_replicas(daemon, stub, v.id, 3)
    assert survivors < live(inspect(stub, v.id))
    assert_settled(daemon, stub, v.id, 3)


@pytest.mark.parametrize("how", ["forgotten", "ejected", "offline"])
def test_raising_the_count_of_a_degraded_volume_reaches_that_many_live_copies(
    daemon: RunningDaemon, stub: Stub, how: str
) -> None:
    cluster_id, _, _ = make_topology(daemon.store, zones=5)
    v = create(stub, cluster_id, "v", replicas=3)
    lost = inspect(stub, v.id).allocations[1]
    lose_copy(daemon, lost.drive_id, lost.node_id, how)
    survivors = live(inspect(stub, v.id))

    change_replicas(daemon, stub, v.id, 4)
    after = inspect(stub, v.id)
    assert survivors < live(after) and lost.id not in {a.id for a in after.allocations}
    assert_settled(daemon, stub, v.id, 4)


def test_lowering_drops_unavailable_copies_before_live_ones(
    daemon: RunningDaemon, stub: Stub
) -> None:
    cluster_id, _, _ = make_topology(daemon.store, zones=5)
    v = create(stub, cluster_id, "v", replicas=4)
    allocs = inspect(stub, v.id).allocations
    lose_copy(daemon, allocs[0].drive_id, allocs[0].node_id, "ejected")
    survivors = live(inspect(stub, v.id))
    assert len(survivors) == 3

    change_replicas(daemon, stub, v.id, 2)
    after = inspect(stub, v.id)
    # One live copy goes besides the unavailable one; no more.
    assert live(after) < survivors and allocs[0].id not in {a.id for a in after.allocations}
    assert_settled(daemon, stub, v.id, 2)


def test_a_lost_tail_copy_is_replaced_in_the_tail_pool(daemon: RunningDaemon, stub: Stub) -> None:
    cluster_id, _, drives = make_topology(daemon.store, zones=5)
    main = make_pool(daemon.store, cluster_id, "main", drives[:6])
    tail = make_pool(daemon.store, cluster_id, "tail", drives[6:])
    v = create(
        stub, cluster_id, "v", replicas=3, placement=pb.Placement(pool_id=main, tail_pool_id=tail)
    )
    tail_copy = inspect(stub, v.id).allocations[2]
    assert tail_copy.drive_id in drives[6:]
    lose_copy(daemon, tail_copy.drive_id, tail_copy.node_id, "forgotten")

    change_replicas(daemon, stub, v.id, 4)
    allocs = inspect(stub, v.id).allocations
    assert all(a.drive_id in drives[:6] for a in allocs[:-1]) and allocs[-1].drive_id in drives[6:]
    assert_settled(daemon, stub, v.id, 4)
