"""AttachSnapshot and DetachSnapshot over the wire, on SQLite and PostgreSQL:
a snapshot is attached read-only, and an attached snapshot is not deleted."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import func, select

from osd.engine.drivers import DriverError
from osd.store.models import SnapshotAttachmentRow
from osd.v1 import node_pb2 as npb
from osd.v1 import volume_pb2 as pb
from osd.v1 import volume_pb2_grpc
from tests.auth_helpers import PERMISSION_DENIED, Call, Wire, World
from tests.conftest import RunningDaemon
from tests.factories import make_cluster, make_node, make_topology
from tests.test_ownership import (
    NOT_FOUND,
    _node_id,
    delete_snapshot,
    grants,
    inspect_snapshot,
    ok,
    rpc,
    snapshot,
    update,
    who,
)
from tests.test_ownership import create as create_call
from tests.volume_helpers import create, fails, generation, node_stub, volumes

Stub = volume_pb2_grpc.VolumeServiceStub


@pytest.fixture
def stub(daemon: RunningDaemon) -> Stub:
    return volumes(daemon)


@pytest.fixture
def topo(daemon: RunningDaemon) -> tuple[str, list[str]]:
    cluster_id, nodes, _ = make_topology(daemon.store)
    return cluster_id, nodes


@pytest.fixture
def snap(stub: Stub, topo: tuple[str, list[str]]) -> pb.Snapshot:
    vol = create(stub, topo[0], "vol", replicas=2)
    return stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=vol.id, name="s1")).snapshot


def attached(daemon: RunningDaemon, snapshot_id: str) -> set[str]:
    """Where the driver has the snapshot attached (node addresses)."""
    return {a for (a, s) in daemon.driver.state.snapshot_attachments if s == snapshot_id}


def stored(daemon: RunningDaemon) -> int:
    with daemon.store.read() as s:
        return int(s.scalar(select(func.count()).select_from(SnapshotAttachmentRow)) or 0)


def test_attach_detach_and_inspect(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], snap: pb.Snapshot
) -> None:
    _, nodes = topo
    first = stub.AttachSnapshot(pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=nodes[0]))
    a = first.attachment
    assert first.attached and (a.snapshot_id, a.node_id) == (snap.id, nodes[0])
    assert a.device_path == f"/dev/osd/snapshots/{snap.id}"
    assert first.generation == generation(daemon)
    assert attached(daemon, snap.id) == {"n0-0.mgmt"}
    # The driver reads it from a copy that holds the snapshot.
    [(drive, _)] = [
        (v, k) for k, v in daemon.driver.state.snapshot_attachments.items() if k[1] == snap.id
    ]
    assert (drive, snap.id) in daemon.driver.state.snapshots

    gen = generation(daemon)
    again = stub.AttachSnapshot(pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=nodes[0]))
    assert not again.attached and again.attachment == first.attachment
    assert generation(daemon) == gen

    stub.AttachSnapshot(pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=nodes[1]))
    shown = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=snap.id))
    assert [x.node_id for x in shown.attachments] == sorted(nodes[:2])
    assert shown.generation == generation(daemon)

    one = stub.DetachSnapshot(pb.DetachSnapshotRequest(snapshot_id=snap.id, node_id=nodes[0]))
    assert list(one.detached_node_ids) == [nodes[0]]
    assert attached(daemon, snap.id) == {"n1-0.mgmt"}
    rest = stub.DetachSnapshot(pb.DetachSnapshotRequest(snapshot_id=snap.id))
    assert list(rest.detached_node_ids) == [nodes[1]]
    assert attached(daemon, snap.id) == set() and stored(daemon) == 0
    gen = generation(daemon)
    none = stub.DetachSnapshot(pb.DetachSnapshotRequest(snapshot_id=snap.id))
    assert list(none.detached_node_ids) == [] and generation(daemon) == gen


def test_an_attached_snapshot_is_not_deleted(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], snap: pb.Snapshot
) -> None:
    _, nodes = topo
    stub.AttachSnapshot(pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=nodes[2]))
    gen = generation(daemon)
    err = fails(stub.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=snap.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SNAPSHOT_ATTACHED")
    assert err.metadata["node_ids"] == nodes[2]
    assert generation(daemon) == gen
    shown = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=snap.id)).snapshot
    assert shown.state == pb.SNAPSHOT_STATE_READY

    # Nor is the node that holds it.
    err = fails(node_stub(daemon).DeleteNode, npb.DeleteNodeRequest(node_id=nodes[2]))
    assert err.reason == "NODE_NOT_EMPTY"

    stub.DetachSnapshot(pb.DetachSnapshotRequest(snapshot_id=snap.id))
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.id))
    fails(stub.InspectSnapshot, pb.InspectSnapshotRequest(snapshot_id=snap.id))


def test_a_snapshot_whose_volume_is_gone_is_attached_from_its_own_copies(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]]
) -> None:
    _, nodes = topo
    vol = create(stub, topo[0], "frozen", replicas=2)
    snap = stub.FreezeVolume(pb.FreezeVolumeRequest(volume_id=vol.id)).snapshot
    got = stub.AttachSnapshot(pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=nodes[0]))
    assert got.attached
    own = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=snap.id)).allocations
    drive = daemon.driver.state.snapshot_attachments[("n0-0.mgmt", snap.id)]
    assert drive in {a.drive_id for a in own}


def test_refusals_change_nothing(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], snap: pb.Snapshot
) -> None:
    _, nodes = topo
    other_cluster = make_cluster(daemon.store, "c2")
    far = make_node(daemon.store, other_cluster, "far", "z1")
    flushed = nodes[1]
    node_stub(daemon).SetNodeState(
        npb.SetNodeStateRequest(node_id=flushed, domain_state=npb.DOMAIN_STATE_FLUSH)
    )
    gen = generation(daemon)
    cases = [
        (pb.AttachSnapshotRequest(snapshot_id="x", node_id=nodes[0]), "snapshot_id", None),
        (pb.AttachSnapshotRequest(snapshot_id=snap.id), "node_id", None),
        (pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=far), "node_id", None),
        (pb.AttachSnapshotRequest(snapshot_id="0" * 32, node_id=nodes[0]), None, "NOT_FOUND"),
        (pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id="0" * 32), None, "NOT_FOUND"),
        (pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=flushed), None, "NODE_FLUSHING"),
    ]
    for request, field, reason in cases:
        err = fails(stub.AttachSnapshot, request)
        if field is not None:
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT and field in err.fields, request
        elif reason == "NOT_FOUND":
            assert err.code == grpc.StatusCode.NOT_FOUND, request
        else:
            assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reason)
    assert generation(daemon) == gen and stored(daemon) == 0

    daemon.driver.fail("attach_snapshot", error=DriverError("no loop device left"))
    err = fails(
        stub.AttachSnapshot, pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=nodes[0])
    )
    assert err.code != grpc.StatusCode.OK and "no loop device left" in err.message
    assert stored(daemon) == 0 and attached(daemon, snap.id) == set()

    stub.AttachSnapshot(pb.AttachSnapshotRequest(snapshot_id=snap.id, node_id=nodes[0]))
    daemon.driver.fail("detach_snapshot", error=DriverError("device open"))
    err = fails(stub.DetachSnapshot, pb.DetachSnapshotRequest(snapshot_id=snap.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "DEVICE_BUSY")
    assert err.metadata["snapshot_id"] == snap.id
    assert stored(daemon) == 1
    daemon.driver.fail("detach_snapshot", error=DriverError("device open"))
    forced = stub.DetachSnapshot(pb.DetachSnapshotRequest(snapshot_id=snap.id, force=True))
    assert list(forced.detached_node_ids) == [nodes[0]] and stored(daemon) == 0


def test_there_is_no_read_write_snapshot_attachment() -> None:
    """The request has no mode: a snapshot is read-only by construction."""
    names = {f.name for f in pb.AttachSnapshotRequest.DESCRIPTOR.fields}
    assert names == {"snapshot_id", "node_id"}


# -- ownership, over gRPC and REST --------------------------------------------------


def attach_snapshot(snapshot_id: str, node_id: str) -> Call:
    req = pb.AttachSnapshotRequest(snapshot_id=snapshot_id, node_id=node_id)
    path = "/v1/snapshots/{snapshot_id}:attach"
    return rpc("AttachSnapshot", req, pb.AttachSnapshotResponse, "POST", path)


def detach_snapshot(snapshot_id: str) -> Call:
    req = pb.DetachSnapshotRequest(snapshot_id=snapshot_id)
    path = "/v1/snapshots/{snapshot_id}:detach"
    return rpc("DetachSnapshot", req, pb.DetachSnapshotResponse, "POST", path)


def test_a_snapshot_attaches_for_whoever_may_write_its_volume(w: World, wire: Wire) -> None:
    alice, bob, dan = who(w, "alice"), who(w, "bob"), who(w, "dan", "view")
    volume = ok(wire, w, create_call(w.cluster_id, "v"), alice)["volume"]
    snap = ok(wire, w, snapshot(volume["id"], "s"), alice)["snapshot"]
    node_id = _node_id(w)
    # Others cannot tell it from a missing snapshot; a viewer may not attach.
    assert wire(w, attach_snapshot(snap["id"], node_id), bob).code == NOT_FOUND
    assert wire(w, attach_snapshot(snap["id"], node_id), dan).code == PERMISSION_DENIED
    ok(wire, w, update(volume["id"], ["acl"], acl=grants(bob=pb.ACCESS_READ)), alice)
    assert wire(w, attach_snapshot(snap["id"], node_id), bob).code == PERMISSION_DENIED

    got = ok(wire, w, attach_snapshot(snap["id"], node_id), alice)
    assert got["attachment"]["node_id"] == node_id and got["attached"] is True
    shown = ok(wire, w, inspect_snapshot(snap["id"]), bob)
    assert [a["node_id"] for a in shown["attachments"]] == [node_id]
    refused = wire(w, delete_snapshot(snap["id"]), alice)
    assert (refused.code, refused.reason) == ("FAILED_PRECONDITION", "SNAPSHOT_ATTACHED")
    assert wire(w, detach_snapshot(snap["id"]), bob).code == PERMISSION_DENIED

    ok(wire, w, update(volume["id"], ["acl"], acl=grants(bob=pb.ACCESS_WRITE)), alice)
    gone = ok(wire, w, detach_snapshot(snap["id"]), bob)
    assert gone["detached_node_ids"] == [node_id]
    ok(wire, w, delete_snapshot(snap["id"]), alice)
