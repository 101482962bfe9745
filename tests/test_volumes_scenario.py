"""The issue's "done when": a 3-copy volume in three zones, snapshot, clone, the
clone attached read-only on two nodes, grown, and all of it deleted, over gRPC."""

from __future__ import annotations

from osd.v1 import common_pb2
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_topology
from tests.volume_helpers import GIB, books, counts, mask, over_committed, replicated, volumes


def test_volume_life_from_create_to_delete(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _ = make_topology(daemon.store, zones=3, nodes_per_zone=2)
    stub = volumes(daemon)

    volume = stub.CreateVolume(
        pb.CreateVolumeRequest(
            cluster_id=cluster_id, name="pg-data", size="20G", durability=replicated(3)
        )
    ).volume
    detail = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume.id))
    assert len({a.zone for a in detail.allocations}) == 3
    assert {a.state for a in detail.allocations} == {common_pb2.ALLOCATION_STATE_ACTIVE}

    snapshot = stub.CreateSnapshot(
        pb.CreateSnapshotRequest(volume_id=volume.id, name="pg-data.1")
    ).snapshot
    assert snapshot.state == pb.SNAPSHOT_STATE_READY

    clone = stub.CreateVolume(
        pb.CreateVolumeRequest(
            name="pg-report",
            durability=replicated(3),
            source=pb.VolumeSource(snapshot_id=snapshot.id),
        )
    ).volume
    assert clone.parent_snapshot_id == snapshot.id and clone.size_bytes == 20 * GIB
    clone_allocs = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=clone.id)).allocations
    assert len({a.zone for a in clone_allocs}) == 3

    readers = nodes[:2]
    for node_id in readers:
        stub.AttachVolume(
            pb.AttachVolumeRequest(
                volume_id=clone.id, node_id=node_id, mode=pb.ATTACH_MODE_READ_ONLY
            )
        )
    attachments = stub.ListAttachments(pb.ListAttachmentsRequest(volume_id=clone.id)).attachments
    assert sorted(a.node_id for a in attachments) == sorted(readers)
    assert {a.mode for a in attachments} == {pb.ATTACH_MODE_READ_ONLY}

    grown = stub.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=clone.id, size="30G", update_mask=mask("size"))
    ).volume
    assert grown.size_bytes == 30 * GIB and grown.usage.allocated_bytes == 90 * GIB
    assert counts(daemon).used_bytes == 150 * GIB
    assert books(daemon) == [] and over_committed(daemon) == []

    detached = stub.DetachVolume(pb.DetachVolumeRequest(volume_id=clone.id))
    assert sorted(detached.detached_node_ids) == sorted(readers)
    assert stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=clone.id)).deleted
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.id))
    assert stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.id)).deleted

    c = counts(daemon)
    assert (c.volumes, c.snapshots, c.allocations, c.attachments, c.used_bytes) == (0, 0, 0, 0, 0)
    assert daemon.driver.state.replicas == {} and daemon.driver.state.snapshots == {}
    assert daemon.driver.state.attachments == {}
    assert books(daemon) == []
