"""Two data-safety rules through the wire, on SQLite and PostgreSQL.

A replica count change counts live copies (ACTIVE allocations on serving
drives): lowering the count of a degraded volume drops lost or unavailable
copies first and never a live copy the new count keeps room for; raising it
makes as many copies as the new count of live copies needs.

A clone (from a snapshot, a volume or a datastore version) takes its
source's durability and placement unless the request gives its own; a
template's are weaker than the source's.
"""

from __future__ import annotations

import grpc
import pytest

from osd.v1 import (
    common_pb2,
    datastore_pb2,
    datastore_pb2_grpc,
    node_pb2,
    volume_pb2_grpc,
)
from osd.v1 import job_pb2 as jpb
from osd.v1 import template_pb2 as tpb
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_pool, make_topology
from tests.test_jobs import assert_books, wait_job
from tests.volume_helpers import (
    REPLICATE,
    books,
    fails,
    hard_eject,
    mask,
    node_stub,
    replicated,
    templates,
    volumes,
)

ACTIVE = common_pb2.ALLOCATION_STATE_ACTIVE
Stub = volume_pb2_grpc.VolumeServiceStub


@pytest.fixture
def stub(daemon: RunningDaemon) -> Stub:
    return volumes(daemon)


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
    stub = node_stub(daemon)
    if how == "offline":
        stub.SetNodeState(
            node_pb2.SetNodeStateRequest(node_id=node_id, state=node_pb2.NODE_STATE_OFFLINE)
        )
        return
    hard_eject(daemon, drive_id)
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


def test_lowering_keeps_the_tail_copy_last_when_copies_are_lost(
    daemon: RunningDaemon, stub: Stub
) -> None:
    cluster_id, _, drives = make_topology(daemon.store, zones=5)
    main = make_pool(daemon.store, cluster_id, "main", drives[:6])
    tail = make_pool(daemon.store, cluster_id, "tail", drives[6:])
    v = create(
        stub, cluster_id, "v", replicas=4, placement=pb.Placement(pool_id=main, tail_pool_id=tail)
    )
    allocs = inspect(stub, v.id).allocations
    tail_copy = allocs[3]
    assert tail_copy.drive_id in drives[6:]
    for lost in allocs[1:3]:
        lose_copy(daemon, lost.drive_id, lost.node_id, "forgotten")

    change_replicas(daemon, stub, v.id, 3)
    after = inspect(stub, v.id)
    # The tail copy is copy 2 of 3, the last; copy 1 is the one missing, to be
    # rebuilt in the main pool.
    assert {a.id: a.index for a in after.allocations} == {allocs[0].id: 0, tail_copy.id: 2}
    assert [m.index for m in after.volume.missing_copies] == [1]
    assert_books(daemon.store)


# -- clones keep their source's durability and placement -----------------------------


@pytest.fixture
def topo(daemon: RunningDaemon) -> tuple[str, list[str], str]:
    """Four zones; a pool of the drives of three of them (the first drive of each)."""
    cluster_id, _, drives = make_topology(daemon.store, zones=4)
    pool = make_pool(daemon.store, cluster_id, "fast", drives[0:6:2])
    return cluster_id, drives, pool


def shape(stub: Stub, volume_id: str) -> tuple[int, int, str, int]:
    """(durability type, replicas, pool, number of copies) as stored and placed."""
    detail = inspect(stub, volume_id)
    d = detail.volume.durability
    return d.type, d.replicas, detail.volume.placement.pool_id, len(detail.allocations)


def source_volume(stub: Stub, topo: tuple[str, list[str], str]) -> pb.Volume:
    cluster_id, drives, pool = topo
    v = create(stub, cluster_id, "src", replicas=3, placement=pb.Placement(pool_id=pool))
    assert {a.drive_id for a in inspect(stub, v.id).allocations} == set(drives[0:6:2])
    return v


def snapshot_of(stub: Stub, volume_id: str, name: str = "s") -> pb.Snapshot:
    return stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=volume_id, name=name)).snapshot


def test_a_clone_of_a_snapshot_keeps_its_durability_and_placement(
    daemon: RunningDaemon, stub: Stub, topo: tuple[str, list[str], str]
) -> None:
    _, drives, pool = topo
    s = snapshot_of(stub, source_volume(stub, topo).id)
    clone = stub.CreateVolume(
        pb.CreateVolumeRequest(name="clone", source=pb.VolumeSource(snapshot_id=s.id))
    ).volume
    assert shape(stub, clone.id) == (REPLICATE, 3, pool, 3)
    assert {a.drive_id for a in inspect(stub, clone.id).allocations} <= set(drives[0:6:2])
    assert clone.state == pb.VOLUME_STATE_UP
    # The same request again is the same volume (idempotent by name and spec).
    again = stub.CreateVolume(
        pb.CreateVolumeRequest(name="clone", source=pb.VolumeSource(snapshot_id=s.id))
    )
    assert not again.created and again.volume.id == clone.id
    # What the request gives wins.
    two = stub.CreateVolume(
        pb.CreateVolumeRequest(
            name="two",
            durability=replicated(2),
            placement=pb.Placement(failure_domain=pb.FAILURE_DOMAIN_ZONE),
            source=pb.VolumeSource(snapshot_id=s.id),
        )
    ).volume
    assert shape(stub, two.id) == (REPLICATE, 2, "", 2)
    plain = stub.CreateVolume(
        pb.CreateVolumeRequest(
            name="plain",
            durability=pb.Durability(type=pb.DURABILITY_TYPE_NONE),
            source=pb.VolumeSource(snapshot_id=s.id),
        )
    ).volume
    assert shape(stub, plain.id) == (pb.DURABILITY_TYPE_NONE, 0, pool, 1)
    assert books(daemon) == []


def test_a_clone_of_a_deleted_volumes_snapshot_keeps_its_durability(
    daemon: RunningDaemon, stub: Stub, topo: tuple[str, list[str], str]
) -> None:
    v = source_volume(stub, topo)
    s = snapshot_of(stub, v.id)
    stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v.id))
    clone = stub.CreateVolume(
        pb.CreateVolumeRequest(name="clone", source=pb.VolumeSource(snapshot_id=s.id))
    ).volume
    # The snapshot keeps the durability; the placement went with its volume.
    assert shape(stub, clone.id) == (REPLICATE, 3, "", 3)
    assert books(daemon) == []


def test_a_template_is_weaker_than_the_source_and_the_request(
    daemon: RunningDaemon, stub: Stub, topo: tuple[str, list[str], str]
) -> None:
    cluster_id, _, pool = topo
    s = snapshot_of(stub, source_volume(stub, topo).id)
    t = (
        templates(daemon)
        .CreateTemplate(
            tpb.CreateTemplateRequest(
                cluster_id=cluster_id,
                name="t",
                durability=replicated(2),
                qos=pb.Qos(iops_limit=500),
            )
        )
        .template
    )
    clone = stub.CreateVolume(
        pb.CreateVolumeRequest(
            name="clone", template_id=t.id, source=pb.VolumeSource(snapshot_id=s.id)
        )
    ).volume
    assert shape(stub, clone.id) == (REPLICATE, 3, pool, 3)
    assert clone.qos.iops_limit == 500  # what the source does not give, the template does
    asked = stub.CreateVolume(
        pb.CreateVolumeRequest(
            name="asked",
            template_id=t.id,
            durability=replicated(4),
            placement=pb.Placement(),
            source=pb.VolumeSource(snapshot_id=s.id),
        )
    ).volume
    assert shape(stub, asked.id) == (REPLICATE, 4, "", 4)
    # Without a source the template still gives them.
    fresh = stub.CreateVolume(
        pb.CreateVolumeRequest(name="fresh", template_id=t.id, size="1G")
    ).volume
    assert shape(stub, fresh.id) == (REPLICATE, 2, "", 2)


def test_a_copy_of_a_volume_keeps_its_durability_and_placement(
    daemon: RunningDaemon, stub: Stub, topo: tuple[str, list[str], str]
) -> None:
    pool = topo[2]
    v = source_volume(stub, topo)
    resp = stub.CreateVolume(
        pb.CreateVolumeRequest(name="copy", source=pb.VolumeSource(volume_id=v.id))
    )
    assert resp.job.kind == jpb.JOB_KIND_VOLUME_COPY
    assert wait_job(daemon, resp.job.id).state == jpb.JOB_STATE_DONE
    assert shape(stub, resp.volume.id) == (REPLICATE, 3, pool, 3)
    assert inspect(stub, resp.volume.id).volume.state == pb.VOLUME_STATE_UP
    asked = stub.CreateVolume(
        pb.CreateVolumeRequest(
            name="asked", durability=replicated(2), source=pb.VolumeSource(volume_id=v.id)
        )
    )
    assert wait_job(daemon, asked.job.id).state == jpb.JOB_STATE_DONE
    assert shape(stub, asked.volume.id) == (REPLICATE, 2, pool, 2)
    assert_books(daemon.store)


def test_a_volume_from_a_datastore_version_keeps_its_images_durability(
    daemon: RunningDaemon, stub: Stub, topo: tuple[str, list[str], str]
) -> None:
    _, _, pool = topo
    image = snapshot_of(stub, source_volume(stub, topo).id, "golden")
    stub.UpdateSnapshot(
        pb.UpdateSnapshotRequest(snapshot_id=image.id, image=True, update_mask=mask("image"))
    )
    version = (
        datastore_pb2_grpc.DatastoreServiceStub(daemon.channel)
        .CreateDatastoreVersion(
            datastore_pb2.CreateDatastoreVersionRequest(
                datastore="mysql", name="8.0", image_snapshot_id=image.id
            )
        )
        .datastore_version
    )
    db = stub.CreateVolume(
        pb.CreateVolumeRequest(name="db", source=pb.VolumeSource(datastore_version_id=version.id))
    ).volume
    assert db.parent_snapshot_id == image.id
    assert shape(stub, db.id) == (REPLICATE, 3, pool, 3)
    assert books(daemon) == []


def test_an_inherited_placement_that_cannot_be_met_is_refused_naming_it(
    daemon: RunningDaemon, stub: Stub, topo: tuple[str, list[str], str]
) -> None:
    s = snapshot_of(stub, source_volume(stub, topo).id)
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            name="four",
            durability=replicated(4),
            source=pb.VolumeSource(snapshot_id=s.id),
        ),
    )
    # The pool has drives in three zones only.
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLACEMENT_IMPOSSIBLE")
    assert (err.metadata["needed"], err.metadata["available"]) == ("4", "3")
    assert err.metadata["field"] == "durability.replicas"
    assert inspect(stub, s.volume_id).volume.placement.pool_id == topo[2]
