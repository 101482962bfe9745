"""Snapshot chains and rebase over gRPC, on SQLite and PostgreSQL: a snapshot
records its parent, lists walk the chain both ways, and a volume or a
snapshot is rebased onto an ancestor or made independent (StorPool's
VolumeRebase and SnapshotRebase)."""

from __future__ import annotations

import grpc

from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_topology
from tests.volume_helpers import create, fails, generation, volumes


def snap(stub: object, volume_id: str, name: str) -> pb.Snapshot:
    return stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=volume_id, name=name)).snapshot  # type: ignore[attr-defined]


def parent_of(stub: object, snapshot_id: str) -> str:
    got = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=snapshot_id))  # type: ignore[attr-defined]
    return str(got.snapshot.parent_snapshot_id)


def test_a_chain_is_recorded_walked_and_rebased(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = make_topology(daemon.store, zones=3)
    stub = volumes(daemon)
    base = create(stub, cluster_id, "base", size="64M")
    s1 = snap(stub, base.id, "s1")
    s2 = snap(stub, base.id, "s2")
    # The first snapshot is a chain's root; the next one sits on it.
    assert (s1.parent_snapshot_id, s2.parent_snapshot_id) == ("", s1.id)

    clone = create(stub, cluster_id, "clone", size="64M", source=pb.VolumeSource(snapshot_id=s2.id))
    assert clone.parent_snapshot_id == s2.id
    c1 = snap(stub, clone.id, "c1")
    assert c1.parent_snapshot_id == s2.id  # a clone's snapshots go on its origin

    # Lists walk the chain down: children of a snapshot, clones of it.
    children = stub.ListSnapshots(pb.ListSnapshotsRequest(parent_snapshot_id=s2.id)).snapshots
    assert [s.id for s in children] == [c1.id]
    clones = stub.ListVolumes(pb.ListVolumesRequest(parent_snapshot_id=s2.id)).volumes
    assert [v.id for v in clones] == [clone.id]

    # s2 is kept for its clone, until the clone is rebased higher up.
    err = fails(stub.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=s2.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SNAPSHOT_HAS_CLONES")
    rebased = stub.RebaseVolume(
        pb.RebaseVolumeRequest(volume_id=clone.id, parent_snapshot_id=s1.id)
    )
    assert rebased.volume.parent_snapshot_id == s1.id
    assert rebased.generation == generation(daemon)
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=s2.id))
    # Its child stays in the chain, on its parent.
    assert parent_of(stub, c1.id) == s1.id

    # Independent: nothing keeps s1 any more.
    free = stub.RebaseVolume(pb.RebaseVolumeRequest(volume_id=clone.id)).volume
    assert free.parent_snapshot_id == ""
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=s1.id))
    assert parent_of(stub, c1.id) == ""
    # The clone's data is its own: it still serves, and snapshots again.
    again = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=clone.id)).volume
    assert again.state == pb.VOLUME_STATE_UP
    c2 = snap(stub, clone.id, "c2")
    assert c2.parent_snapshot_id == c1.id


def test_a_snapshot_is_rebased_only_higher_in_its_chain(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = make_topology(daemon.store, zones=3)
    stub = volumes(daemon)
    vol = create(stub, cluster_id, "v", size="64M")
    other = create(stub, cluster_id, "w", size="64M")
    s1, s2, s3 = (snap(stub, vol.id, n) for n in ("s1", "s2", "s3"))
    elsewhere = snap(stub, other.id, "x1")
    assert parent_of(stub, s3.id) == s2.id

    before = generation(daemon)
    same = stub.RebaseSnapshot(
        pb.RebaseSnapshotRequest(snapshot_id=s3.id, parent_snapshot_id=s2.id)
    )
    assert same.generation == before == generation(daemon)

    # Not in its chain, below it, itself, gone, malformed: refused, nothing changes.
    for wanted, code, field_or_reason in (
        (elsewhere.id, grpc.StatusCode.FAILED_PRECONDITION, "NOT_AN_ANCESTOR"),
        (s3.id, grpc.StatusCode.FAILED_PRECONDITION, "NOT_AN_ANCESTOR"),
        ("a" * 32, grpc.StatusCode.NOT_FOUND, "parent_snapshot_id"),
        ("nope", grpc.StatusCode.INVALID_ARGUMENT, "parent_snapshot_id"),
    ):
        err = fails(
            stub.RebaseSnapshot,
            pb.RebaseSnapshotRequest(snapshot_id=s3.id, parent_snapshot_id=wanted),
        )
        assert err.code == code, err
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            assert err.reason == field_or_reason
        else:
            assert list(err.fields) == [field_or_reason]
    err = fails(
        stub.RebaseSnapshot,
        pb.RebaseSnapshotRequest(
            snapshot_id=s2.id, parent_snapshot_id=s1.id, expected_generation=1
        ),
    )
    assert err.code == grpc.StatusCode.ABORTED
    assert generation(daemon) == before
    assert parent_of(stub, s3.id) == s2.id

    up = stub.RebaseSnapshot(pb.RebaseSnapshotRequest(snapshot_id=s3.id, parent_snapshot_id=s1.id))
    assert up.snapshot.parent_snapshot_id == s1.id
    root = stub.RebaseSnapshot(pb.RebaseSnapshotRequest(snapshot_id=s3.id)).snapshot
    assert root.parent_snapshot_id == ""
    # A root can only stay one.
    err = fails(
        stub.RebaseSnapshot, pb.RebaseSnapshotRequest(snapshot_id=s3.id, parent_snapshot_id=s1.id)
    )
    assert err.reason == "NOT_AN_ANCESTOR"
    # A volume without a parent likewise.
    err = fails(
        stub.RebaseVolume, pb.RebaseVolumeRequest(volume_id=vol.id, parent_snapshot_id=s1.id)
    )
    assert err.reason == "NOT_AN_ANCESTOR"
