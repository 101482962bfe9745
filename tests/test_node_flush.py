"""FlushNode and ReadyNode over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import threading
from contextlib import redirect_stdout
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from osd import cli
from osd.engine.drivers import DriverError
from osd.store.models import AttachmentRow, FlushMoveRow
from osd.v1 import node_pb2 as npb
from osd.v1 import node_pb2_grpc
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_cluster, make_drive, make_node
from tests.volume_helpers import create, fails, generation, volumes

RW, RO = pb.ATTACH_MODE_READ_WRITE, pb.ATTACH_MODE_READ_ONLY
FLUSH, READY = npb.DOMAIN_STATE_FLUSH, npb.DOMAIN_STATE_READY
GIB = 1 << 30


@pytest.fixture
def world(daemon: RunningDaemon) -> dict[str, str]:
    """Nodes a and b in zone z1, c in zone z2, d in zone z3, each with two drives."""
    cluster_id = make_cluster(daemon.store, "c1")
    out = {"cluster": cluster_id}
    for name, zone in (("a", "z1"), ("b", "z1"), ("c", "z2"), ("d", "z3")):
        out[name] = make_node(daemon.store, cluster_id, name, zone)
        for dev in ("/dev/sdb", "/dev/sdc"):
            make_drive(daemon.store, out[name], dev, 100 * GIB)
    return out


def nodes(daemon: RunningDaemon) -> node_pb2_grpc.NodeServiceStub:
    return node_pb2_grpc.NodeServiceStub(daemon.channel)


def attach(daemon: RunningDaemon, volume_id: str, node_id: str, mode: int, **kw: object) -> None:
    volumes(daemon).AttachVolume(
        pb.AttachVolumeRequest(volume_id=volume_id, node_id=node_id, mode=mode, **kw)  # type: ignore[arg-type]
    )


def held(daemon: RunningDaemon, volume_id: str) -> dict[str, int]:
    detail = volumes(daemon).InspectVolume(pb.InspectVolumeRequest(volume_id=volume_id))
    return {a.node_id: a.mode for a in detail.attachments}


def devices(daemon: RunningDaemon, volume_id: str) -> dict[str, bool]:
    """Where the driver has the volume attached: node address -> read-only."""
    return {a: ro for (a, v), ro in daemon.driver.state.attachments.items() if v == volume_id}


def moves(r: npb.FlushNodeResponse | npb.ReadyNodeResponse) -> set[tuple[str, str, str, int]]:
    got = r.moved if isinstance(r, npb.FlushNodeResponse) else r.returned
    return {(m.volume_id, m.from_node_id, m.to_node_id, m.mode) for m in got}


def test_flush_moves_attachments_off_and_ready_takes_them_back(
    daemon: RunningDaemon, world: dict[str, str]
) -> None:
    stub = volumes(daemon)
    a, b, c = world["a"], world["b"], world["c"]
    writer = create(stub, world["cluster"], "writer", replicas=2)
    reader = create(stub, world["cluster"], "reader", replicas=2)
    attach(daemon, writer.id, a, RW)
    attach(daemon, reader.id, a, RO)
    attach(daemon, reader.id, b, RO)
    daemon.driver.calls.clear()

    flushed = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a))
    assert flushed.node.domain_state == FLUSH
    assert flushed.generation == generation(daemon)
    # The writer goes to b, in a's zone; the reader is already on b, so it
    # goes to the other zone with the fewest attachments.
    assert moves(flushed) == {(writer.id, a, b, RW), (reader.id, a, c, RO)}
    assert list(flushed.not_moved) == []
    assert held(daemon, writer.id) == {b: RW}
    assert held(daemon, reader.id) == {b: RO, c: RO}
    assert devices(daemon, writer.id) == {"b.mgmt": False}
    assert devices(daemon, reader.id) == {"b.mgmt": True, "c.mgmt": True}
    # The old node lets go before the new one takes it: never two writers.
    writer_ops = [
        (op, args["node_address"])
        for op, args in daemon.driver.calls
        if args.get("volume_id") == writer.id
    ]
    assert writer_ops == [("detach", "a.mgmt"), ("attach", "b.mgmt")]

    # A flushed node takes no new attachment.
    other = create(stub, world["cluster"], "other", replicas=2)
    err = fails(stub.AttachVolume, pb.AttachVolumeRequest(volume_id=other.id, node_id=a, mode=RO))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NODE_FLUSHING")

    # Flushing again changes nothing.
    gen = generation(daemon)
    again = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a))
    assert (moves(again), list(again.not_moved)) == (set(), [])
    assert again.generation == gen == generation(daemon)

    readied = nodes(daemon).ReadyNode(npb.ReadyNodeRequest(node_id=a))
    assert readied.node.domain_state == READY
    assert moves(readied) == {(writer.id, b, a, RW), (reader.id, c, a, RO)}
    assert held(daemon, writer.id) == {a: RW}
    assert held(daemon, reader.id) == {a: RO, b: RO}
    assert devices(daemon, writer.id) == {"a.mgmt": False}
    with daemon.store.read() as s:
        assert s.scalars(select(FlushMoveRow)).all() == []

    gen = generation(daemon)
    nothing = nodes(daemon).ReadyNode(npb.ReadyNodeRequest(node_id=a))
    assert (moves(nothing), list(nothing.not_returned)) == (set(), [])
    assert generation(daemon) == gen


def test_what_cannot_move_stays_and_says_why(daemon: RunningDaemon) -> None:
    cluster_id = make_cluster(daemon.store, "c1")
    a = make_node(daemon.store, cluster_id, "a", "z1")
    b = make_node(daemon.store, cluster_id, "b", "z2")
    for node in (a, b):
        make_drive(daemon.store, node, "/dev/sdb", 100 * GIB)
    stub = volumes(daemon)
    vol = create(stub, cluster_id, "v", replicas=2)
    attach(daemon, vol.id, a, RW)
    # The only other node is flushed too: nowhere to go.
    nodes(daemon).SetNodeState(npb.SetNodeStateRequest(node_id=b, domain_state=FLUSH))

    flushed = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a))
    assert flushed.node.domain_state == FLUSH and list(flushed.moved) == []
    [why] = flushed.not_moved
    assert (why.volume_id, why.node_id, why.reason) == (vol.id, a, "NO_TARGET_NODE")
    assert held(daemon, vol.id) == {a: RW}
    with daemon.store.read() as s:
        assert s.scalars(select(FlushMoveRow)).all() == []
    # Flushing again tries again, and changes nothing when it still cannot.
    gen = generation(daemon)
    again = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a))
    assert [n.reason for n in again.not_moved] == ["NO_TARGET_NODE"]
    assert again.generation == gen == generation(daemon)

    # b is READY again, but its driver fails to attach: rolled back, still on a.
    nodes(daemon).SetNodeState(npb.SetNodeStateRequest(node_id=b, domain_state=READY))
    daemon.driver.fail("attach", error=DriverError("no path to b"))
    retried = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a))
    [why] = retried.not_moved
    assert (why.reason, why.node_id) == ("DRIVER_FAILED", a) and "no path to b" in why.message
    assert held(daemon, vol.id) == {a: RW}
    assert devices(daemon, vol.id) == {"a.mgmt": False}
    with daemon.store.read() as s:
        assert s.scalars(select(FlushMoveRow)).all() == []

    # A device that is busy on a stays there.
    daemon.driver.fail("detach", error=DriverError("device open"))
    busy = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a))
    assert [n.reason for n in busy.not_moved] == ["DEVICE_BUSY"]
    assert held(daemon, vol.id) == {a: RW}

    # Flushing once more, with nothing in the way, moves it.
    done = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a))
    assert moves(done) == {(vol.id, a, b, RW)} and list(done.not_moved) == []
    assert devices(daemon, vol.id) == {"b.mgmt": False}


def test_ready_takes_back_only_what_is_still_where_the_flush_put_it(
    daemon: RunningDaemon, world: dict[str, str]
) -> None:
    stub = volumes(daemon)
    a, b = world["a"], world["b"]
    kept = create(stub, world["cluster"], "kept", replicas=2)
    gone = create(stub, world["cluster"], "gone", replicas=2)
    attach(daemon, kept.id, a, RW, mount_path="")
    attach(daemon, gone.id, a, RO)
    flushed = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a))
    assert {m.volume_id for m in flushed.moved} == {kept.id, gone.id}
    stub.DetachVolume(pb.DetachVolumeRequest(volume_id=gone.id))
    # The node went down: nothing can come back to it yet.
    nodes(daemon).SetNodeState(npb.SetNodeStateRequest(node_id=a, state=npb.NODE_STATE_OFFLINE))

    first = nodes(daemon).ReadyNode(npb.ReadyNodeRequest(node_id=a))
    assert first.node.domain_state == READY and list(first.returned) == []
    why = {n.volume_id: (n.reason, n.node_id) for n in first.not_returned}
    assert why == {kept.id: ("NODE_NOT_ONLINE", b), gone.id: ("ATTACHMENT_GONE", "")}
    assert held(daemon, kept.id) == {b: RW}
    with daemon.store.read() as s:
        assert [(r.volume_id, r.node_id) for r in s.scalars(select(FlushMoveRow))] == [(kept.id, a)]

    nodes(daemon).SetNodeState(npb.SetNodeStateRequest(node_id=a, state=npb.NODE_STATE_ONLINE))
    second = nodes(daemon).ReadyNode(npb.ReadyNodeRequest(node_id=a))
    assert moves(second) == {(kept.id, b, a, RW)} and list(second.not_returned) == []
    assert held(daemon, kept.id) == {a: RW}
    assert devices(daemon, kept.id) == {"a.mgmt": False}


def test_a_move_is_recorded_with_the_attachment_it_moves(
    daemon: RunningDaemon, world: dict[str, str]
) -> None:
    """A daemon that stops between the records and the devices finds the
    move recorded: the store never holds an attachment moved without its
    record, and a restart's restore makes the devices follow."""
    stub = volumes(daemon)
    a = world["a"]
    vol = create(stub, world["cluster"], "v", replicas=2)
    attach(daemon, vol.id, a, RW)
    daemon.driver.block("detach")

    out: list[npb.FlushNodeResponse] = []
    t = threading.Thread(
        target=lambda: out.append(nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=a)))
    )
    t.start()
    try:
        assert daemon.driver.wait_blocked("detach")
        with daemon.store.read() as s:
            rows = [(r.volume_id, r.node_id) for r in s.scalars(select(AttachmentRow))]
            records = [
                (r.volume_id, r.node_id, r.target_node_id) for r in s.scalars(select(FlushMoveRow))
            ]
        assert rows == [(vol.id, world["b"])]
        assert records == [(vol.id, a, world["b"])]
    finally:
        daemon.driver.unblock("detach")
        t.join(30)
    assert moves(out[0]) == {(vol.id, a, world["b"], RW)}


def test_bad_input_is_refused_and_changes_nothing(daemon: RunningDaemon) -> None:
    stub = nodes(daemon)
    for call in (stub.FlushNode, stub.ReadyNode):
        gen = generation(daemon)
        req = npb.FlushNodeRequest if call is stub.FlushNode else npb.ReadyNodeRequest
        err = fails(call, req(node_id="nope"))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "node_id" in err.fields
        err = fails(call, req(node_id="0" * 32))
        assert err.code == grpc.StatusCode.NOT_FOUND
        assert generation(daemon) == gen


def test_a_deleted_node_takes_its_flush_records_with_it(
    daemon: RunningDaemon, world: dict[str, str]
) -> None:
    stub = volumes(daemon)
    vol = create(stub, world["cluster"], "v", replicas=2)
    # A node with no drives: a consumer only.
    e = make_node(daemon.store, world["cluster"], "e", "z1")
    attach(daemon, vol.id, e, RO)
    flushed = nodes(daemon).FlushNode(npb.FlushNodeRequest(node_id=e))
    assert [(m.volume_id, m.from_node_id) for m in flushed.moved] == [(vol.id, e)]
    assert flushed.moved[0].to_node_id in (world["a"], world["b"])  # its zone
    err = fails(nodes(daemon).DeleteNode, npb.DeleteNodeRequest(node_id=world["a"]))
    assert err.reason == "NODE_NOT_EMPTY"
    with daemon.store.read() as s:
        assert len(s.scalars(select(FlushMoveRow)).all()) == 1
    nodes(daemon).DeleteNode(npb.DeleteNodeRequest(node_id=e))
    with daemon.store.read() as s:
        assert s.scalars(select(FlushMoveRow)).all() == []


def osd(daemon: RunningDaemon, *argv: str) -> tuple[int, Any]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli.main([*argv, "--endpoint", daemon.target, "-o", "json"])
    return rc, json.loads(out.getvalue()) if out.getvalue().strip() else None


def test_the_command_line_flushes_and_readies(daemon: RunningDaemon, world: dict[str, str]) -> None:
    stub = volumes(daemon)
    a = world["a"]
    vol = create(stub, world["cluster"], "v", replicas=2)
    attach(daemon, vol.id, a, RO)
    rc, flushed = osd(daemon, "node", "flush", a)
    assert rc == 0 and flushed["node"]["domain_state"] == "DOMAIN_STATE_FLUSH"
    assert [m["volume_id"] for m in flushed["moved"]] == [vol.id]
    assert a not in held(daemon, vol.id)
    rc, readied = osd(daemon, "node", "ready", a)
    assert rc == 0 and readied["node"]["domain_state"] == "DOMAIN_STATE_READY"
    assert [m["to_node_id"] for m in readied["returned"]] == [a]
    assert held(daemon, vol.id) == {a: RO}
