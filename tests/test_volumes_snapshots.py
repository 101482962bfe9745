"""Snapshots, clones, revert and freeze over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import update

from osd.store.models import VolumeRow
from osd.v1 import common_pb2, datastore_pb2, datastore_pb2_grpc, volume_pb2_grpc
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_topology
from tests.volume_helpers import (
    GIB,
    books,
    counts,
    create,
    fails,
    generation,
    mask,
    volumes,
)

Stub = volume_pb2_grpc.VolumeServiceStub


@pytest.fixture
def stub(daemon: RunningDaemon) -> Stub:
    return volumes(daemon)


@pytest.fixture
def cluster_id(daemon: RunningDaemon) -> str:
    return make_topology(daemon.store)[0]


@pytest.fixture
def volume(stub: Stub, cluster_id: str) -> pb.Volume:
    return create(stub, cluster_id, "vol", size="10G")


def snap(stub: Stub, volume_id: str, name: str = "", **kw: object) -> pb.Snapshot:
    return stub.CreateSnapshot(
        pb.CreateSnapshotRequest(volume_id=volume_id, name=name, **kw)  # type: ignore[arg-type]
    ).snapshot


def own_allocations(stub: Stub, snapshot_id: str) -> list[common_pb2.Allocation]:
    return list(
        stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=snapshot_id)).allocations
    )


# -- create, read, update --------------------------------------------------------


def test_create_named_and_automatic(stub: Stub, daemon: RunningDaemon, volume: pb.Volume) -> None:
    resp = stub.CreateSnapshot(
        pb.CreateSnapshotRequest(volume_id=volume.id, name="before-upgrade", labels={"k": "v"})
    )
    s = resp.snapshot
    assert resp.created and resp.generation == generation(daemon)
    assert (s.name, s.auto_named, s.volume_id, s.size_bytes) == (
        "before-upgrade",
        False,
        volume.id,
        10 * GIB,
    )
    assert s.state == pb.SNAPSHOT_STATE_READY and dict(s.labels) == {"k": "v"}
    assert (s.durability.type, s.durability.replicas) == (pb.DURABILITY_TYPE_REPLICATE, 3)
    assert len(daemon.driver.state.snapshots) == 3
    auto = snap(stub, volume.id)
    assert auto.auto_named and auto.name.startswith("vol.snap-")
    assert snap(stub, volume.id).name != auto.name
    # While the volume exists a snapshot holds nothing of its own.
    assert own_allocations(stub, s.id) == [] and s.space_used_bytes == 0
    v = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume.id)).volume
    assert v.snapshot_count == 3


def test_create_is_idempotent_by_name(
    stub: Stub, daemon: RunningDaemon, cluster_id: str, volume: pb.Volume
) -> None:
    first = snap(stub, volume.id, "s")
    gen = generation(daemon)
    again = stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=volume.id, name="s"))
    assert not again.created and again.snapshot.id == first.id and generation(daemon) == gen
    other = create(stub, cluster_id, "other", replicas=2)
    err = fails(stub.CreateSnapshot, pb.CreateSnapshotRequest(volume_id=other.id, name="s"))
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "SNAPSHOT_EXISTS")


def test_create_refusals(stub: Stub, daemon: RunningDaemon, volume: pb.Volume) -> None:
    before = counts(daemon)
    for req, code, field in [
        (pb.CreateSnapshotRequest(volume_id="ab" * 16), grpc.StatusCode.NOT_FOUND, "volume_id"),
        (pb.CreateSnapshotRequest(volume_id="x"), grpc.StatusCode.INVALID_ARGUMENT, "volume_id"),
        (
            pb.CreateSnapshotRequest(volume_id=volume.id, name="no way"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "name",
        ),
        (
            pb.CreateSnapshotRequest(volume_id=volume.id, labels={"": "x"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "labels['']",
        ),
    ]:
        err = fails(stub.CreateSnapshot, req)
        assert (err.code, list(err.fields)) == (code, [field])
    with daemon.store.write() as s:
        s.execute(update(VolumeRow).values(state=pb.VOLUME_STATE_DOWN))
    err = fails(stub.CreateSnapshot, pb.CreateSnapshotRequest(volume_id=volume.id, name="s"))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_NOT_AVAILABLE")
    assert counts(daemon) == before


def test_a_failed_snapshot_is_rolled_back(
    stub: Stub, daemon: RunningDaemon, volume: pb.Volume
) -> None:
    daemon.driver.fail("create_snapshot", when=lambda a: len(daemon.driver.state.snapshots) == 1)
    err = fails(stub.CreateSnapshot, pb.CreateSnapshotRequest(volume_id=volume.id, name="s"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRIVER_ERROR")
    assert counts(daemon).snapshots == 0 and daemon.driver.state.snapshots == {}


def test_list_and_update(stub: Stub, cluster_id: str, volume: pb.Volume) -> None:
    other = create(stub, cluster_id, "other", replicas=2)
    for i in range(4):
        snap(stub, volume.id, f"a{i}", labels={"n": str(i % 2)})
    snap(stub, other.id, "b0")

    def names(**kw: object) -> list[str]:
        return [
            s.name
            for s in stub.ListSnapshots(pb.ListSnapshotsRequest(**kw)).snapshots  # type: ignore[arg-type]
        ]

    assert names() == ["a0", "a1", "a2", "a3", "b0"]
    assert names(volume_id=other.id) == ["b0"]
    assert names(labels={"n": "1"}) == ["a1", "a3"]
    assert names(name_regex="^a[23]") == ["a2", "a3"]
    page = stub.ListSnapshots(pb.ListSnapshotsRequest(page_size=2))
    assert [s.name for s in page.snapshots] == ["a0", "a1"]
    page = stub.ListSnapshots(pb.ListSnapshotsRequest(page_size=2, page_token=page.next_page_token))
    assert [s.name for s in page.snapshots] == ["a2", "a3"]

    [a0] = stub.ListSnapshots(pb.ListSnapshotsRequest(name_regex="^a0$")).snapshots
    resp = stub.UpdateSnapshot(
        pb.UpdateSnapshotRequest(
            snapshot_id=a0.id,
            name="golden",
            image=True,
            labels={"os": "debian"},
            update_mask=mask("name", "image", "labels"),
            expected_generation=a0.generation,
        )
    )
    s = resp.snapshot
    assert (s.name, s.image, dict(s.labels)) == ("golden", True, {"os": "debian"})
    assert names(images_only=True) == ["golden"]
    err = fails(
        stub.UpdateSnapshot,
        pb.UpdateSnapshotRequest(snapshot_id=a0.id, name="b0", update_mask=mask("name")),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "SNAPSHOT_EXISTS")
    err = fails(
        stub.UpdateSnapshot,
        pb.UpdateSnapshotRequest(
            snapshot_id=a0.id, name="x", update_mask=mask("name"), expected_generation=1
        ),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.ABORTED, "GENERATION_MISMATCH")
    err = fails(
        stub.UpdateSnapshot, pb.UpdateSnapshotRequest(snapshot_id=a0.id, update_mask=mask("size"))
    )
    assert list(err.fields) == ["update_mask"]


# -- clones ----------------------------------------------------------------------


def test_clone_from_a_snapshot(stub: Stub, cluster_id: str, volume: pb.Volume) -> None:
    s = snap(stub, volume.id, "s")
    clone = stub.CreateVolume(
        pb.CreateVolumeRequest(name="clone", source=pb.VolumeSource(snapshot_id=s.id))
    ).volume
    assert clone.cluster_id == cluster_id and clone.size_bytes == 10 * GIB
    assert clone.parent_snapshot_id == s.id and clone.source.snapshot_id == s.id
    assert clone.state == pb.VOLUME_STATE_UP
    bigger = stub.CreateVolume(
        pb.CreateVolumeRequest(name="bigger", size="20G", source=pb.VolumeSource(snapshot_id=s.id))
    ).volume
    assert bigger.size_bytes == 20 * GIB
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(name="small", size="5G", source=pb.VolumeSource(snapshot_id=s.id)),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["size"])
    got = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=s.id)).snapshot
    assert got.clone_count == 2
    err = fails(stub.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=s.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SNAPSHOT_HAS_CLONES")
    assert err.metadata["count"] == "2"
    assert set(err.metadata["volume_ids"].split(",")) == {clone.id, bigger.id}
    for v in (clone, bigger):
        stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v.id))
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=s.id))


def test_datastore_images_and_their_clones(
    stub: Stub, daemon: RunningDaemon, volume: pb.Volume
) -> None:
    image = snap(stub, volume.id, "mysql-8")
    stub.UpdateSnapshot(
        pb.UpdateSnapshotRequest(snapshot_id=image.id, image=True, update_mask=mask("image"))
    )
    datastores = datastore_pb2_grpc.DatastoreServiceStub(daemon.channel)
    version = datastores.CreateDatastoreVersion(
        datastore_pb2.CreateDatastoreVersionRequest(
            datastore="mysql", name="8.0", image_snapshot_id=image.id
        )
    ).datastore_version
    db = stub.CreateVolume(
        pb.CreateVolumeRequest(
            name="db", source=pb.VolumeSource(datastore_version_id=version.id), labels={"a": "b"}
        )
    ).volume
    assert db.parent_snapshot_id == image.id
    assert dict(db.labels) == {
        "a": "b",
        "osd.dev/datastore": "mysql",
        "osd.dev/datastore-version": "8.0",
    }
    listed = stub.ListVolumes(pb.ListVolumesRequest(datastore_version_id=version.id)).volumes
    assert [v.id for v in listed] == [db.id]
    stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=db.id))
    got = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=image.id)).snapshot
    assert got.datastore_version_count == 1
    err = fails(
        stub.UpdateSnapshot,
        pb.UpdateSnapshotRequest(snapshot_id=image.id, image=False, update_mask=mask("image")),
    )
    assert err.reason == "SNAPSHOT_IN_USE_AS_IMAGE"
    err = fails(stub.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=image.id))
    assert (err.code, err.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SNAPSHOT_IN_USE_AS_IMAGE",
    )
    assert err.metadata["datastore_version_ids"] == version.id


# -- the books of a snapshot chain -----------------------------------------------


def test_snapshots_keep_the_data_of_a_deleted_volume(
    stub: Stub, daemon: RunningDaemon, volume: pb.Volume
) -> None:
    older = snap(stub, volume.id, "older")
    newer = snap(stub, volume.id, "newer")
    stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.id))
    # The newest snapshot took the volume's allocations over; nothing was freed.
    assert counts(daemon).used_bytes == 30 * GIB and books(daemon) == []
    held = own_allocations(stub, newer.id)
    assert len(held) == 3 and all(a.snapshot_id == newer.id and not a.volume_id for a in held)
    assert own_allocations(stub, older.id) == []
    # Deleting it would free nothing while the older one needs the data.
    got = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=newer.id)).snapshot
    assert got.space_used_bytes == 0
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=newer.id))
    assert len(own_allocations(stub, older.id)) == 3
    assert counts(daemon).used_bytes == 30 * GIB and books(daemon) == []
    got = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=older.id)).snapshot
    assert got.space_used_bytes == 30 * GIB
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=older.id))
    c = counts(daemon)
    assert (c.snapshots, c.allocations, c.used_bytes) == (0, 0, 0)
    assert daemon.driver.state.snapshots == {} and books(daemon) == []


def test_deleting_a_snapshot_of_a_live_volume_frees_nothing(
    stub: Stub, daemon: RunningDaemon, volume: pb.Volume
) -> None:
    s = snap(stub, volume.id, "s")
    resp = stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=s.id))
    assert resp.generation == generation(daemon)
    assert counts(daemon).snapshots == 0 and counts(daemon).used_bytes == 30 * GIB
    assert daemon.driver.state.snapshots == {}
    err = fails(stub.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=s.id))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["snapshot_id"])


# -- revert and freeze -----------------------------------------------------------


def test_revert_takes_the_snapshots_data_and_size(
    stub: Stub, daemon: RunningDaemon, volume: pb.Volume
) -> None:
    s = snap(stub, volume.id, "s")
    stub.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=volume.id, size="20G", update_mask=mask("size"))
    )
    err = fails(stub.RevertVolume, pb.RevertVolumeRequest(volume_id=volume.id, snapshot_id=s.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_REQUIRED")
    resp = stub.RevertVolume(
        pb.RevertVolumeRequest(volume_id=volume.id, snapshot_id=s.id, yes_i_really_mean_it=True)
    )
    assert resp.volume.size_bytes == 10 * GIB and resp.generation == generation(daemon)
    assert counts(daemon).used_bytes == 30 * GIB and books(daemon) == []
    assert sum(op == "revert_replica" for op, _ in daemon.driver.calls) == 3


def test_revert_refusals(stub: Stub, cluster_id: str, volume: pb.Volume) -> None:
    other = create(stub, cluster_id, "other", replicas=2)
    foreign = snap(stub, other.id, "foreign")
    err = fails(
        stub.RevertVolume,
        pb.RevertVolumeRequest(
            volume_id=volume.id, snapshot_id=foreign.id, yes_i_really_mean_it=True
        ),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["snapshot_id"])
    err = fails(
        stub.RevertVolume,
        pb.RevertVolumeRequest(
            volume_id=volume.id, snapshot_id="ab" * 16, yes_i_really_mean_it=True
        ),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["snapshot_id"])


def test_freeze_turns_the_volume_into_a_snapshot(
    stub: Stub, daemon: RunningDaemon, volume: pb.Volume
) -> None:
    earlier = snap(stub, volume.id, "earlier")
    resp = stub.FreezeVolume(pb.FreezeVolumeRequest(volume_id=volume.id))
    frozen = resp.snapshot
    assert (frozen.name, frozen.state, frozen.volume_id) == (
        "vol",
        pb.SNAPSHOT_STATE_READY,
        volume.id,
    )
    assert resp.generation == generation(daemon)
    err = fails(stub.InspectVolume, pb.InspectVolumeRequest(volume_id=volume.id))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert len(own_allocations(stub, frozen.id)) == 3
    assert stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=earlier.id)).snapshot.id
    assert counts(daemon).used_bytes == 30 * GIB and books(daemon) == []
    assert daemon.driver.state.replicas == {}
    # Deleting both releases everything.
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=frozen.id))
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=earlier.id))
    assert counts(daemon).used_bytes == 0 and books(daemon) == []


def test_freeze_name_taken(stub: Stub, volume: pb.Volume) -> None:
    snap(stub, volume.id, "vol")
    err = fails(stub.FreezeVolume, pb.FreezeVolumeRequest(volume_id=volume.id))
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "SNAPSHOT_EXISTS")
    assert stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume.id)).volume.state == (
        pb.VOLUME_STATE_UP
    )
