"""Attachments over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import update

from osd.store.models import NodeRow
from osd.v1 import volume_pb2 as pb
from osd.v1 import volume_pb2_grpc
from tests.conftest import RunningDaemon
from tests.factories import make_cluster, make_node, make_topology
from tests.volume_helpers import counts, create, fails, generation, mask, volumes

Stub = volume_pb2_grpc.VolumeServiceStub
RW, RO = pb.ATTACH_MODE_READ_WRITE, pb.ATTACH_MODE_READ_ONLY


@pytest.fixture
def stub(daemon: RunningDaemon) -> Stub:
    return volumes(daemon)


@pytest.fixture
def topo(daemon: RunningDaemon) -> tuple[str, list[str]]:
    cluster_id, nodes, _ = make_topology(daemon.store)
    return cluster_id, nodes


@pytest.fixture
def volume(stub: Stub, topo: tuple[str, list[str]]) -> pb.Volume:
    return create(stub, topo[0], "vol", replicas=2)


def attach(stub: Stub, volume_id: str, node_id: str, mode: int) -> pb.AttachVolumeResponse:
    return stub.AttachVolume(
        pb.AttachVolumeRequest(volume_id=volume_id, node_id=node_id, mode=mode)  # type: ignore[arg-type]
    )


def attached(stub: Stub, volume_id: str) -> dict[str, int]:
    detail = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume_id))
    return {a.node_id: a.mode for a in detail.attachments}


def test_one_writer_any_number_of_readers(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], volume: pb.Volume
) -> None:
    _, nodes = topo
    resp = attach(stub, volume.id, nodes[0], RW)
    a = resp.attachment
    assert resp.attached and (a.node_id, a.mode) == (nodes[0], RW)
    assert a.device_path == f"/dev/osd/{volume.id}" and resp.generation == generation(daemon)
    assert daemon.driver.state.attachments == {("n0-0.mgmt", volume.id): False}
    err = fails(
        stub.AttachVolume, pb.AttachVolumeRequest(volume_id=volume.id, node_id=nodes[1], mode=RW)
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ATTACH_CONFLICT")
    assert err.metadata["node_id"] == nodes[0]
    attach(stub, volume.id, nodes[1], RO)
    attach(stub, volume.id, nodes[2], RO)
    assert attached(stub, volume.id) == {nodes[0]: RW, nodes[1]: RO, nodes[2]: RO}
    got = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume.id)).volume
    assert got.attachment_count == 3


def test_attach_is_idempotent_and_changes_mode(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], volume: pb.Volume
) -> None:
    _, nodes = topo
    first = attach(stub, volume.id, nodes[0], RO)
    gen = generation(daemon)
    again = attach(stub, volume.id, nodes[0], RO)
    assert not again.attached and again.attachment == first.attachment
    assert generation(daemon) == gen
    changed = attach(stub, volume.id, nodes[0], RW)
    assert changed.attached and changed.attachment.mode == RW
    assert attached(stub, volume.id) == {nodes[0]: RW}


def test_multi_attach_allows_several_writers(stub: Stub, topo: tuple[str, list[str]]) -> None:
    _, nodes = topo
    v = create(stub, topo[0], "shared", replicas=2, multi_attach=True)
    attach(stub, v.id, nodes[0], RW)
    attach(stub, v.id, nodes[1], RW)
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(
            volume_id=v.id, multi_attach=False, update_mask=mask("multi_attach")
        ),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ATTACH_CONFLICT")


def test_attach_refusals(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], volume: pb.Volume
) -> None:
    _, nodes = topo
    elsewhere = make_node(daemon.store, make_cluster(daemon.store, "c2"), "far")
    before = counts(daemon)
    for req, code, field in [
        (
            pb.AttachVolumeRequest(volume_id=volume.id, node_id=nodes[0]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "mode",
        ),
        (
            pb.AttachVolumeRequest(volume_id=volume.id, node_id="x", mode=RW),
            grpc.StatusCode.INVALID_ARGUMENT,
            "node_id",
        ),
        (
            pb.AttachVolumeRequest(volume_id=volume.id, node_id=elsewhere, mode=RW),
            grpc.StatusCode.INVALID_ARGUMENT,
            "node_id",
        ),
        (
            pb.AttachVolumeRequest(volume_id=volume.id, node_id="ab" * 16, mode=RW),
            grpc.StatusCode.NOT_FOUND,
            "node_id",
        ),
        (
            pb.AttachVolumeRequest(volume_id="ab" * 16, node_id=nodes[0], mode=RW),
            grpc.StatusCode.NOT_FOUND,
            "volume_id",
        ),
    ]:
        err = fails(stub.AttachVolume, req)
        assert (err.code, list(err.fields)) == (code, [field]), req
    with daemon.store.write() as s:
        s.execute(update(NodeRow).where(NodeRow.id == nodes[0]).values(state=2))
        s.execute(update(NodeRow).where(NodeRow.id == nodes[1]).values(domain_state=2))
    err = fails(
        stub.AttachVolume, pb.AttachVolumeRequest(volume_id=volume.id, node_id=nodes[0], mode=RO)
    )
    assert err.reason == "NODE_NOT_ONLINE"
    err = fails(
        stub.AttachVolume, pb.AttachVolumeRequest(volume_id=volume.id, node_id=nodes[1], mode=RO)
    )
    assert err.reason == "NODE_FLUSHING"
    assert counts(daemon) == before


def test_a_failed_attach_is_rolled_back(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], volume: pb.Volume
) -> None:
    daemon.driver.fail("attach")
    err = fails(
        stub.AttachVolume, pb.AttachVolumeRequest(volume_id=volume.id, node_id=topo[1][0], mode=RW)
    )
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRIVER_ERROR")
    assert attached(stub, volume.id) == {}


def test_detach_is_idempotent_and_a_busy_device_needs_force(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], volume: pb.Volume
) -> None:
    _, nodes = topo
    for n in nodes:
        attach(stub, volume.id, n, RO)
    resp = stub.DetachVolume(pb.DetachVolumeRequest(volume_id=volume.id, node_id=nodes[0]))
    assert list(resp.detached_node_ids) == [nodes[0]]
    again = stub.DetachVolume(pb.DetachVolumeRequest(volume_id=volume.id, node_id=nodes[0]))
    assert list(again.detached_node_ids) == []
    daemon.driver.fail("detach")
    err = fails(stub.DetachVolume, pb.DetachVolumeRequest(volume_id=volume.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "DEVICE_BUSY")
    assert len(attached(stub, volume.id)) == 2
    daemon.driver.fail("detach")
    resp = stub.DetachVolume(pb.DetachVolumeRequest(volume_id=volume.id, force=True))
    assert sorted(resp.detached_node_ids) == sorted(nodes[1:])
    assert attached(stub, volume.id) == {}


def test_an_attached_volume_cannot_be_deleted_reverted_or_frozen(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], volume: pb.Volume
) -> None:
    _, nodes = topo
    attach(stub, volume.id, nodes[0], RW)
    attach(stub, volume.id, nodes[1], RO)
    s = stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=volume.id, name="s")).snapshot
    before = counts(daemon)
    err = fails(stub.DeleteVolume, pb.DeleteVolumeRequest(volume_id=volume.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_ATTACHED")
    assert set(err.metadata["node_ids"].split(",")) == set(nodes[:2])
    err = fails(
        stub.RevertVolume,
        pb.RevertVolumeRequest(volume_id=volume.id, snapshot_id=s.id, yes_i_really_mean_it=True),
    )
    assert err.reason == "VOLUME_ATTACHED"
    err = fails(stub.FreezeVolume, pb.FreezeVolumeRequest(volume_id=volume.id))
    assert err.reason == "VOLUME_ATTACHED"
    assert counts(daemon) == before


def test_list_attachments(stub: Stub, topo: tuple[str, list[str]], volume: pb.Volume) -> None:
    _, nodes = topo
    other = create(stub, topo[0], "other", replicas=2)
    for n in nodes:
        attach(stub, volume.id, n, RO)
    attach(stub, other.id, nodes[0], RW)
    everything: list[tuple[str, str]] = []
    token = ""
    while True:
        page = stub.ListAttachments(pb.ListAttachmentsRequest(page_size=2, page_token=token))
        everything += [(a.volume_id, a.node_id) for a in page.attachments]
        token = page.next_page_token
        if not token:
            break
    assert everything == sorted(everything) and len(everything) == 4
    on_node = stub.ListAttachments(pb.ListAttachmentsRequest(node_id=nodes[0])).attachments
    assert {a.volume_id for a in on_node} == {volume.id, other.id}
    of_volume = stub.ListAttachments(pb.ListAttachmentsRequest(volume_id=other.id)).attachments
    assert [(a.node_id, a.mode) for a in of_volume] == [(nodes[0], RW)]
    assert len(stub.ListAttachments(pb.ListAttachmentsRequest(cluster_id=topo[0])).attachments) == 4
    err = fails(stub.ListAttachments, pb.ListAttachmentsRequest(node_id="x"))
    assert list(err.fields) == ["node_id"]


# -- reassign --------------------------------------------------------------------


def test_reassign_applies_every_change(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], volume: pb.Volume
) -> None:
    _, nodes = topo
    other = create(stub, topo[0], "other", replicas=2)
    attach(stub, volume.id, nodes[0], RW)
    attach(stub, other.id, nodes[1], RW)
    resp = stub.ReassignAttachments(
        pb.ReassignAttachmentsRequest(
            changes=[
                # Move the writer from n0 to n1, keep n0 as a reader.
                pb.AttachmentChange(
                    volume_id=volume.id,
                    read_only_node_ids=[nodes[0]],
                    read_write_node_ids=[nodes[1]],
                ),
                pb.AttachmentChange(
                    volume_id=other.id, detach_all=True, read_only_node_ids=[nodes[2]]
                ),
            ]
        )
    )
    assert resp.generation == generation(daemon)
    got = {(a.volume_id, a.node_id): a.mode for a in resp.attachments}
    assert got == {(volume.id, nodes[0]): RO, (volume.id, nodes[1]): RW, (other.id, nodes[2]): RO}
    assert attached(stub, other.id) == {nodes[2]: RO}
    assert ("n1-0.mgmt", other.id) not in daemon.driver.state.attachments


def test_reassign_is_all_or_nothing(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str]], volume: pb.Volume
) -> None:
    _, nodes = topo
    other = create(stub, topo[0], "other", replicas=2)
    attach(stub, volume.id, nodes[0], RW)
    before = counts(daemon)
    # The second change breaks the one-writer rule: the first must not apply either.
    err = fails(
        stub.ReassignAttachments,
        pb.ReassignAttachmentsRequest(
            changes=[
                pb.AttachmentChange(volume_id=other.id, read_only_node_ids=[nodes[1]]),
                pb.AttachmentChange(volume_id=volume.id, read_write_node_ids=[nodes[2]]),
            ]
        ),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ATTACH_CONFLICT")
    assert err.metadata["change_index"] == "1"
    assert counts(daemon) == before and attached(stub, other.id) == {}
    # A driver failure halfway undoes the changes already made.
    daemon.driver.fail("attach", when=lambda a: a["volume_id"] == volume.id)
    err = fails(
        stub.ReassignAttachments,
        pb.ReassignAttachmentsRequest(
            changes=[
                pb.AttachmentChange(volume_id=other.id, read_only_node_ids=[nodes[1]]),
                pb.AttachmentChange(volume_id=volume.id, read_only_node_ids=[nodes[2]]),
            ]
        ),
    )
    assert (err.code, err.metadata["change_index"]) == (grpc.StatusCode.UNAVAILABLE, "1")
    assert attached(stub, other.id) == {} and attached(stub, volume.id) == {nodes[0]: RW}
    assert ("n1-0.mgmt", other.id) not in daemon.driver.state.attachments
    # A busy device stops the reassign unless forced.
    daemon.driver.fail("detach")
    change = pb.AttachmentChange(volume_id=volume.id, detach_node_ids=[nodes[0]])
    err = fails(stub.ReassignAttachments, pb.ReassignAttachmentsRequest(changes=[change]))
    assert (err.reason, err.metadata["change_index"]) == ("DEVICE_BUSY", "0")
    assert attached(stub, volume.id) == {nodes[0]: RW}
    daemon.driver.fail("detach")
    change.force = True
    stub.ReassignAttachments(pb.ReassignAttachmentsRequest(changes=[change]))
    assert attached(stub, volume.id) == {}


def test_reassign_bad_input(stub: Stub, topo: tuple[str, list[str]], volume: pb.Volume) -> None:
    _, nodes = topo
    for changes, code, field in [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "changes"),
        (
            [pb.AttachmentChange(volume_id=volume.id)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "changes[0]",
        ),
        (
            [
                pb.AttachmentChange(volume_id=volume.id, detach_all=True),
                pb.AttachmentChange(volume_id=volume.id, detach_all=True),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "changes[1].volume_id",
        ),
        (
            [
                pb.AttachmentChange(
                    volume_id=volume.id,
                    read_only_node_ids=[nodes[0]],
                    read_write_node_ids=[nodes[0]],
                )
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "changes[0]",
        ),
        (
            [pb.AttachmentChange(volume_id="ab" * 16, detach_all=True)],
            grpc.StatusCode.NOT_FOUND,
            "changes[0].volume_id",
        ),
        (
            [pb.AttachmentChange(volume_id=volume.id, read_only_node_ids=["ab" * 16])],
            grpc.StatusCode.NOT_FOUND,
            "changes[0].read_only_node_ids",
        ),
    ]:
        err = fails(stub.ReassignAttachments, pb.ReassignAttachmentsRequest(changes=changes))
        assert (err.code, list(err.fields)) == (code, [field]), changes
