"""The CSI plugin's Identity and Controller services, driven over the plugin's
unix socket as an orchestrator's sidecars drive them, against a daemon with
the fake driver: each call as the specification asks, twice where it must
be idempotent, and each error path it names."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from osd.client import Client
from osd.csi.plugin import Options, Plugin
from osd.csi.v1 import csi_pb2, csi_pb2_grpc
from osd.v1 import volume_pb2
from tests.conftest import RunningDaemon
from tests.factories import make_topology
from tests.volume_helpers import GIB, volumes

MIB = 1 << 20
Code = grpc.StatusCode
Mode = csi_pb2.VolumeCapability.AccessMode
RPC = csi_pb2.ControllerServiceCapability.RPC


def mount_cap(mode: int = Mode.SINGLE_NODE_WRITER, fs_type: str = "") -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type),
        access_mode=Mode(mode=mode),  # type: ignore[arg-type]
    )


def block_cap(mode: int = Mode.SINGLE_NODE_WRITER) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(),
        access_mode=Mode(mode=mode),  # type: ignore[arg-type]
    )


@dataclass
class Csi:
    identity: csi_pb2_grpc.IdentityStub
    controller: csi_pb2_grpc.ControllerStub
    daemon: RunningDaemon
    cluster_id: str
    nodes: list[str]

    def create(
        self, name: str, size: int = GIB, cap: csi_pb2.VolumeCapability | None = None, **kw: object
    ) -> csi_pb2.Volume:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[cap or mount_cap()],
            parameters={"replicas": "1"},
            **kw,  # type: ignore[arg-type]
        )
        return self.controller.CreateVolume(request, timeout=30).volume

    def publish(
        self,
        volume_id: str,
        node_id: str,
        cap: csi_pb2.VolumeCapability | None = None,
        **kw: object,
    ) -> csi_pb2.ControllerPublishVolumeResponse:
        return self.controller.ControllerPublishVolume(
            csi_pb2.ControllerPublishVolumeRequest(
                volume_id=volume_id,
                node_id=node_id,
                volume_capability=cap or mount_cap(),
                **kw,  # type: ignore[arg-type]
            ),
            timeout=30,
        )


@pytest.fixture
def csi(sqlite_daemon: RunningDaemon, tmp_path: Path) -> Iterator[Csi]:
    cluster_id, nodes, _ = make_topology(sqlite_daemon.store)
    socket = tmp_path / "csi.sock"
    with Client(sqlite_daemon.target) as client:
        plugin = Plugin(client, Options(endpoint=f"unix://{socket}", mode="controller"))
        plugin.start()
        try:
            with grpc.insecure_channel(f"unix://{socket}") as channel:
                yield Csi(
                    csi_pb2_grpc.IdentityStub(channel),
                    csi_pb2_grpc.ControllerStub(channel),
                    sqlite_daemon,
                    cluster_id,
                    nodes,
                )
        finally:
            plugin.stop(grace=1)
    assert not socket.exists()


def code_of(call: object, request: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)  # type: ignore[operator]
    return info.value.code(), info.value.details() or ""


# -- identity --------------------------------------------------------------------


def test_identity(csi: Csi) -> None:
    info = csi.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == "csi.osd.dev" and info.vendor_version
    plugin_caps = csi.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    services = {c.service.type for c in plugin_caps.capabilities if c.HasField("service")}
    assert services == {
        csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE,
        csi_pb2.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
    }
    assert csi.identity.Probe(csi_pb2.ProbeRequest()).ready.value is True
    kinds = {
        c.rpc.type
        for c in csi.controller.ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest()
        ).capabilities
    }
    assert {RPC.CREATE_DELETE_VOLUME, RPC.PUBLISH_UNPUBLISH_VOLUME, RPC.CLONE_VOLUME} <= kinds
    assert RPC.MODIFY_VOLUME not in kinds
    code, _ = code_of(
        csi.controller.ControllerModifyVolume,
        csi_pb2.ControllerModifyVolumeRequest(volume_id="f" * 32, mutable_parameters={"a": "b"}),
    )
    assert code == Code.UNIMPLEMENTED


# -- create and delete -----------------------------------------------------------


def test_create_is_idempotent_by_name_and_refuses_another_spec(csi: Csi) -> None:
    first = csi.create("pvc-1", size=GIB + 1)
    assert first.capacity_bytes == GIB + MIB  # whole MiB
    assert first.volume_context["osd.dev/kind"] == "file"
    assert first.volume_context["osd.dev/filesystem"] == "ext4"
    assert [t.segments["osd.dev/zone"] for t in first.accessible_topology]
    again = csi.create("pvc-1", size=GIB + 1)
    assert again.volume_id == first.volume_id
    code, _ = code_of(
        csi.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(
            name="pvc-1",
            capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB),
            volume_capabilities=[mount_cap()],
        ),
    )
    assert code == Code.ALREADY_EXISTS
    code, _ = code_of(
        csi.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(
            name="pvc-1",
            capacity_range=csi_pb2.CapacityRange(required_bytes=GIB + 1),
            volume_capabilities=[block_cap()],
        ),
    )
    assert code == Code.ALREADY_EXISTS
    # A name outside osd's rule is one volume all the same.
    odd = csi.create("pvc with spaces/and slashes")
    assert csi.create("pvc with spaces/and slashes").volume_id == odd.volume_id
    names = {
        v.name for v in volumes(csi.daemon).ListVolumes(volume_pb2.ListVolumesRequest()).volumes
    }
    assert "pvc-1" in names and any(n.startswith("csi-") for n in names)


@pytest.mark.parametrize(
    ("request_kw", "code", "word"),
    [
        ({"name": ""}, Code.INVALID_ARGUMENT, "name"),
        ({"volume_capabilities": []}, Code.INVALID_ARGUMENT, "volume_capabilities"),
        (
            {"volume_capabilities": [csi_pb2.VolumeCapability(access_mode=Mode(mode=1))]},
            Code.INVALID_ARGUMENT,
            "access type",
        ),
        ({"volume_capabilities": [mount_cap(mode=0)]}, Code.INVALID_ARGUMENT, "access_mode"),
        ({"volume_capabilities": [mount_cap(fs_type="zfs")]}, Code.INVALID_ARGUMENT, "fs_type"),
        (
            {"volume_capabilities": [mount_cap(Mode.MULTI_NODE_MULTI_WRITER)]},
            Code.INVALID_ARGUMENT,
            "block",
        ),
        (
            {"volume_capabilities": [mount_cap(), block_cap()]},
            Code.INVALID_ARGUMENT,
            "mix",
        ),
        (
            {"capacity_range": csi_pb2.CapacityRange(required_bytes=2 * GIB, limit_bytes=GIB)},
            Code.OUT_OF_RANGE,
            "exceeds",
        ),
        (
            {"capacity_range": csi_pb2.CapacityRange(required_bytes=100, limit_bytes=200)},
            Code.OUT_OF_RANGE,
            "512-byte",
        ),
        ({"capacity_range": csi_pb2.CapacityRange(required_bytes=1 << 60)}, Code.OUT_OF_RANGE, ""),
        ({"parameters": {"colour": "blue"}}, Code.INVALID_ARGUMENT, "colour"),
        ({"parameters": {"replicas": "two"}}, Code.INVALID_ARGUMENT, "replicas"),
        ({"parameters": {"failureDomain": "rack"}}, Code.INVALID_ARGUMENT, "failureDomain"),
        (
            {
                "volume_content_source": csi_pb2.VolumeContentSource(
                    snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id="f" * 32)
                )
            },
            Code.NOT_FOUND,
            "snapshot",
        ),
        (
            {
                "volume_content_source": csi_pb2.VolumeContentSource(
                    volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id="nope")
                )
            },
            Code.NOT_FOUND,
            "volume",
        ),
        (
            {
                "accessibility_requirements": csi_pb2.TopologyRequirement(
                    requisite=[csi_pb2.Topology(segments={"rack": "r1"})]
                )
            },
            Code.INVALID_ARGUMENT,
            "rack",
        ),
    ],
)
def test_create_refusals(
    csi: Csi, request_kw: dict[str, object], code: grpc.StatusCode, word: str
) -> None:
    fields: dict[str, object] = {
        "name": "bad",
        "capacity_range": csi_pb2.CapacityRange(required_bytes=GIB),
        "volume_capabilities": [mount_cap()],
        **request_kw,
    }
    got, details = code_of(csi.controller.CreateVolume, csi_pb2.CreateVolumeRequest(**fields))  # type: ignore[arg-type]
    assert got == code, details
    assert word in details
    assert not volumes(csi.daemon).ListVolumes(volume_pb2.ListVolumesRequest()).volumes


def test_orchestrator_parameters_are_passed_over_and_ours_are_taken(csi: Csi) -> None:
    volume = csi.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name="pvc-params",
            volume_capabilities=[block_cap(Mode.MULTI_NODE_MULTI_WRITER)],
            parameters={
                "replicas": "2",
                "failureDomain": "zone",
                "provisioning": "thick",
                "csi.storage.k8s.io/pvc/name": "data",
            },
        )
    ).volume
    assert volume.capacity_bytes == GIB  # no range: the default
    osd = volumes(csi.daemon).InspectVolume(
        volume_pb2.InspectVolumeRequest(volume_id=volume.volume_id)
    )
    assert osd.volume.kind == volume_pb2.VOLUME_KIND_BLOCK and osd.volume.multi_attach
    assert osd.volume.durability.replicas == 2
    assert osd.volume.provisioning == volume_pb2.PROVISIONING_THICK
    assert len({a.zone for a in osd.allocations}) == 2
    assert len(volume.accessible_topology) == 2


def test_topology_places_in_the_preferred_zone_first(csi: Csi) -> None:
    def topo(*zones: str) -> list[csi_pb2.Topology]:
        return [csi_pb2.Topology(segments={"osd.dev/zone": z}) for z in zones]

    volume = csi.create(
        "pvc-zone",
        accessibility_requirements=csi_pb2.TopologyRequirement(
            requisite=topo("zone0", "zone1", "zone2"), preferred=topo("zone2", "zone0")
        ),
    )
    assert [dict(t.segments) for t in volume.accessible_topology] == [{"osd.dev/zone": "zone2"}]
    # Asked again: the same volume while a requisite zone holds a copy, and
    # ALREADY_EXISTS once none does.
    again = csi.create(
        "pvc-zone",
        accessibility_requirements=csi_pb2.TopologyRequirement(requisite=topo("zone1", "zone2")),
    )
    assert again.volume_id == volume.volume_id
    code, details = code_of(
        csi.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(
            name="pvc-zone",
            capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
            volume_capabilities=[mount_cap()],
            parameters={"replicas": "1"},
            accessibility_requirements=csi_pb2.TopologyRequirement(requisite=topo("zone1")),
        ),
    )
    assert code == Code.ALREADY_EXISTS and "requisite zone" in details
    code, details = code_of(
        csi.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(
            name="pvc-nowhere",
            volume_capabilities=[mount_cap()],
            parameters={"replicas": "1"},
            accessibility_requirements=csi_pb2.TopologyRequirement(requisite=topo("zone9")),
        ),
    )
    assert code == Code.RESOURCE_EXHAUSTED and "zone9" in details
    assert len(volumes(csi.daemon).ListVolumes(volume_pb2.ListVolumesRequest()).volumes) == 1


def test_delete_is_idempotent_and_refused_while_published(csi: Csi) -> None:
    volume = csi.create("pvc-del")
    csi.publish(volume.volume_id, csi.nodes[0])
    code, details = code_of(
        csi.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id)
    )
    assert code == Code.FAILED_PRECONDITION and "VOLUME_ATTACHED" in details
    code, _ = code_of(csi.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest())
    assert code == Code.INVALID_ARGUMENT
    unpublish = csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=volume.volume_id, node_id=csi.nodes[0]
    )
    csi.controller.ControllerUnpublishVolume(unpublish)
    csi.controller.ControllerUnpublishVolume(unpublish)  # idempotent
    for _ in range(2):
        csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="f" * 32))
    csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="not-an-osd-id"))
    assert not volumes(csi.daemon).ListVolumes(volume_pb2.ListVolumesRequest()).volumes


# -- publish ---------------------------------------------------------------------


def test_publish_is_an_attachment_and_is_idempotent(csi: Csi) -> None:
    volume = csi.create("pvc-pub")
    first = csi.publish(volume.volume_id, csi.nodes[0])
    assert first.publish_context["devicePath"]
    assert csi.publish(volume.volume_id, csi.nodes[0]).publish_context == first.publish_context
    [attached] = (
        volumes(csi.daemon)
        .InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=volume.volume_id))
        .attachments
    )
    assert (attached.node_id, attached.mode) == (csi.nodes[0], volume_pb2.ATTACH_MODE_READ_WRITE)
    # The same node read-only: another publish of the same volume.
    code, _ = code_of(
        csi.controller.ControllerPublishVolume,
        csi_pb2.ControllerPublishVolumeRequest(
            volume_id=volume.volume_id,
            node_id=csi.nodes[0],
            volume_capability=mount_cap(),
            readonly=True,
        ),
    )
    assert code == Code.ALREADY_EXISTS
    # A second writer elsewhere for a single-writer volume.
    code, _ = code_of(
        csi.controller.ControllerPublishVolume,
        csi_pb2.ControllerPublishVolumeRequest(
            volume_id=volume.volume_id, node_id=csi.nodes[1], volume_capability=mount_cap()
        ),
    )
    assert code == Code.FAILED_PRECONDITION
    # Readers elsewhere are fine.
    reader = csi.publish(volume.volume_id, csi.nodes[1], mount_cap(Mode.MULTI_NODE_READER_ONLY))
    assert reader.publish_context["readOnly"] == "true"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        (
            {"volume_id": "", "node_id": "N", "volume_capability": mount_cap()},
            Code.INVALID_ARGUMENT,
        ),
        (
            {"volume_id": "V", "node_id": "", "volume_capability": mount_cap()},
            Code.INVALID_ARGUMENT,
        ),
        ({"volume_id": "V", "node_id": "N"}, Code.INVALID_ARGUMENT),
        ({"volume_id": "f" * 32, "node_id": "N", "volume_capability": mount_cap()}, Code.NOT_FOUND),
        ({"volume_id": "V", "node_id": "f" * 32, "volume_capability": mount_cap()}, Code.NOT_FOUND),
        (
            {"volume_id": "V", "node_id": "N", "volume_capability": block_cap()},
            Code.INVALID_ARGUMENT,
        ),
    ],
)
def test_publish_refusals(csi: Csi, fields: dict[str, object], code: grpc.StatusCode) -> None:
    volume = csi.create("pvc-refused")
    real = {"V": volume.volume_id, "N": csi.nodes[0]}
    resolved = {k: real.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    got, details = code_of(
        csi.controller.ControllerPublishVolume,
        csi_pb2.ControllerPublishVolumeRequest(**resolved),  # type: ignore[arg-type]
    )
    assert got == code, details
    assert (
        not volumes(csi.daemon)
        .InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=volume.volume_id))
        .attachments
    )


def test_validate_capabilities(csi: Csi) -> None:
    volume = csi.create("pvc-val")
    ok = csi.controller.ValidateVolumeCapabilities(
        csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id,
            volume_capabilities=[mount_cap(), mount_cap(Mode.MULTI_NODE_READER_ONLY, "ext4")],
        )
    )
    assert len(ok.confirmed.volume_capabilities) == 2
    refused = csi.controller.ValidateVolumeCapabilities(
        csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[mount_cap(fs_type="xfs")]
        )
    )
    assert not refused.HasField("confirmed") and "ext4" in refused.message
    code, _ = code_of(
        csi.controller.ValidateVolumeCapabilities,
        csi_pb2.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id),
    )
    assert code == Code.INVALID_ARGUMENT
    code, _ = code_of(
        csi.controller.ValidateVolumeCapabilities,
        csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id="f" * 32, volume_capabilities=[mount_cap()]
        ),
    )
    assert code == Code.NOT_FOUND


# -- lists, capacity, get ----------------------------------------------------------


def test_list_volumes_pages_and_tells_where_each_is_published(csi: Csi) -> None:
    made = [csi.create(f"pvc-{i}").volume_id for i in range(5)]
    csi.publish(made[0], csi.nodes[2])
    seen: list[str] = []
    token = ""
    published: dict[str, list[str]] = {}
    while True:
        page = csi.controller.ListVolumes(
            csi_pb2.ListVolumesRequest(max_entries=2, starting_token=token)
        )
        assert len(page.entries) <= 2
        for entry in page.entries:
            seen.append(entry.volume.volume_id)
            published[entry.volume.volume_id] = list(entry.status.published_node_ids)
            assert not entry.status.volume_condition.abnormal
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == sorted(made)
    assert published[made[0]] == [csi.nodes[2]] and published[made[1]] == []
    code, _ = code_of(
        csi.controller.ListVolumes, csi_pb2.ListVolumesRequest(starting_token="garbage")
    )
    assert code == Code.ABORTED
    code, _ = code_of(csi.controller.ListVolumes, csi_pb2.ListVolumesRequest(max_entries=-1))
    assert code == Code.INVALID_ARGUMENT
    got = csi.controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=made[0]))
    assert got.volume.volume_id == made[0] and list(got.status.published_node_ids) == [csi.nodes[2]]
    code, _ = code_of(
        csi.controller.ControllerGetVolume, csi_pb2.ControllerGetVolumeRequest(volume_id="f" * 32)
    )
    assert code == Code.NOT_FOUND


def test_capacity_falls_as_volumes_are_made(csi: Csi) -> None:
    before = csi.controller.GetCapacity(csi_pb2.GetCapacityRequest()).available_capacity
    assert before > 0
    zone = csi.controller.GetCapacity(
        csi_pb2.GetCapacityRequest(
            accessible_topology=csi_pb2.Topology(segments={"osd.dev/zone": "zone1"})
        )
    ).available_capacity
    assert 0 < zone < before
    csi.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name="pvc-thick",
            capacity_range=csi_pb2.CapacityRange(required_bytes=10 * GIB),
            volume_capabilities=[mount_cap()],
            parameters={"replicas": "1", "provisioning": "thick"},
        )
    )
    after = csi.controller.GetCapacity(csi_pb2.GetCapacityRequest()).available_capacity
    assert after <= before - 10 * GIB


# -- snapshots, clones, expansion --------------------------------------------------


def test_snapshots_and_volumes_made_from_them(csi: Csi) -> None:
    volume = csi.create("pvc-src")
    request = csi_pb2.CreateSnapshotRequest(source_volume_id=volume.volume_id, name="snap-1")
    snap = csi.controller.CreateSnapshot(request).snapshot
    assert snap.ready_to_use and snap.source_volume_id == volume.volume_id
    assert snap.size_bytes == volume.capacity_bytes and snap.creation_time.seconds > 0
    assert csi.controller.CreateSnapshot(request).snapshot.snapshot_id == snap.snapshot_id
    other = csi.create("pvc-other")
    code, _ = code_of(
        csi.controller.CreateSnapshot,
        csi_pb2.CreateSnapshotRequest(source_volume_id=other.volume_id, name="snap-1"),
    )
    assert code == Code.ALREADY_EXISTS
    for fields, want in (
        ({"source_volume_id": volume.volume_id}, Code.INVALID_ARGUMENT),
        ({"name": "s"}, Code.INVALID_ARGUMENT),
        ({"name": "s", "source_volume_id": "f" * 32}, Code.NOT_FOUND),
    ):
        code, _ = code_of(csi.controller.CreateSnapshot, csi_pb2.CreateSnapshotRequest(**fields))  # type: ignore[arg-type]
        assert code == want

    got = csi.controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert got.snapshot == snap
    code, _ = code_of(csi.controller.GetSnapshot, csi_pb2.GetSnapshotRequest(snapshot_id="f" * 32))
    assert code == Code.NOT_FOUND
    listed = csi.controller.ListSnapshots(
        csi_pb2.ListSnapshotsRequest(snapshot_id=snap.snapshot_id)
    )
    assert [e.snapshot.snapshot_id for e in listed.entries] == [snap.snapshot_id]
    by_source = csi.controller.ListSnapshots(
        csi_pb2.ListSnapshotsRequest(source_volume_id=volume.volume_id)
    )
    assert [e.snapshot.snapshot_id for e in by_source.entries] == [snap.snapshot_id]
    assert not csi.controller.ListSnapshots(
        csi_pb2.ListSnapshotsRequest(snapshot_id="f" * 32)
    ).entries
    assert not csi.controller.ListSnapshots(
        csi_pb2.ListSnapshotsRequest(source_volume_id="f" * 32)
    ).entries

    source = csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id)
    )
    clone = csi.create("pvc-clone", volume_content_source=source)
    assert clone.content_source.snapshot.snapshot_id == snap.snapshot_id
    assert csi.create("pvc-clone", volume_content_source=source).volume_id == clone.volume_id
    code, _ = code_of(
        csi.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(
            name="pvc-clone",
            capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
            volume_capabilities=[mount_cap()],
        ),
    )
    assert code == Code.ALREADY_EXISTS  # the same name, without the source

    # A snapshot a volume was made from cannot go; once the volume is gone, it can.
    code, _ = code_of(
        csi.controller.DeleteSnapshot, csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id)
    )
    assert code == Code.FAILED_PRECONDITION
    csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=clone.volume_id))
    for _ in range(2):
        csi.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))


def test_a_clone_of_a_volume_is_answered_once_its_copy_is_done(csi: Csi) -> None:
    volume = csi.create("pvc-orig")
    source = csi_pb2.VolumeContentSource(
        volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=volume.volume_id)
    )
    clone = csi.create("pvc-copy", volume_content_source=source)
    assert clone.content_source.volume.volume_id == volume.volume_id
    osd = (
        volumes(csi.daemon)
        .InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=clone.volume_id))
        .volume
    )
    assert osd.state == volume_pb2.VOLUME_STATE_UP


def test_a_clone_still_copying_answers_aborted_and_is_found_when_asked_again(csi: Csi) -> None:
    volume = csi.create("pvc-slow")
    csi.daemon.driver.block("clone_replica")
    source = csi_pb2.VolumeContentSource(
        volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=volume.volume_id)
    )
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-slow-copy",
        capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
        volume_capabilities=[mount_cap()],
        parameters={"replicas": "1"},
        volume_content_source=source,
    )
    with pytest.raises(grpc.RpcError) as info:
        csi.controller.CreateVolume(request, timeout=3)
    assert info.value.code() in (Code.ABORTED, Code.DEADLINE_EXCEEDED)
    csi.daemon.driver.unblock("clone_replica")
    made = csi.controller.CreateVolume(request, timeout=30).volume
    listed = volumes(csi.daemon).ListVolumes(volume_pb2.ListVolumesRequest()).volumes
    assert [v.id for v in listed if v.name == "pvc-slow-copy"] == [made.volume_id]
    job = (
        volumes(csi.daemon)
        .InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=made.volume_id))
        .volume
    )
    assert job.state == volume_pb2.VOLUME_STATE_UP


def test_expansion(csi: Csi) -> None:
    volume = csi.create("pvc-grow")
    grown = csi.controller.ControllerExpandVolume(
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id,
            capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB),
        )
    )
    assert grown.capacity_bytes == 2 * GIB and grown.node_expansion_required
    # Asked again, or for less: as it is.
    again = csi.controller.ControllerExpandVolume(
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=GIB)
        )
    )
    assert again.capacity_bytes == 2 * GIB
    code, _ = code_of(
        csi.controller.ControllerExpandVolume,
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id,
            capacity_range=csi_pb2.CapacityRange(required_bytes=GIB, limit_bytes=GIB),
        ),
    )
    assert code == Code.OUT_OF_RANGE
    code, _ = code_of(
        csi.controller.ControllerExpandVolume,
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id="f" * 32, capacity_range=csi_pb2.CapacityRange(required_bytes=GIB)
        ),
    )
    assert code == Code.NOT_FOUND
    block = csi.create("pvc-grow-block", cap=block_cap())
    grown = csi.controller.ControllerExpandVolume(
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id=block.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=3 * GIB)
        )
    )
    assert grown.capacity_bytes == 3 * GIB and not grown.node_expansion_required


def test_a_create_of_the_same_name_must_ask_for_the_same_volume(csi: Csi) -> None:
    csi.create("pvc-same")
    code, details = code_of(
        csi.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(
            name="pvc-same",
            capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
            volume_capabilities=[mount_cap()],
            parameters={"replicas": "2"},
        ),
    )
    assert code == Code.ALREADY_EXISTS and "copies" in details
    # A range that holds its size, and a capability without a filesystem,
    # ask for the same volume.
    again = csi.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name="pvc-same",
            capacity_range=csi_pb2.CapacityRange(required_bytes=GIB // 2, limit_bytes=2 * GIB),
            volume_capabilities=[mount_cap(fs_type="")],
            parameters={"replicas": "1"},
        )
    ).volume
    assert again.capacity_bytes == GIB


@pytest.mark.parametrize(
    ("parameters", "source", "word"),
    [
        ({"poolId": "f" * 32}, None, "pool"),
        ({"clusterId": "f" * 32}, None, "cluster"),
        ({"replicas": "0"}, None, "replicas"),
        (
            {},
            csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource()),
            "snapshot_id",
        ),
        (
            {},
            csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource()),
            "volume_id",
        ),
    ],
)
def test_bad_parameters_and_empty_sources_are_invalid(
    csi: Csi, parameters: dict[str, str], source: csi_pb2.VolumeContentSource | None, word: str
) -> None:
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-bad", volume_capabilities=[mount_cap()], parameters=parameters
    )
    if source is not None:
        request.volume_content_source.CopyFrom(source)
    code, details = code_of(csi.controller.CreateVolume, request)
    assert code == Code.INVALID_ARGUMENT and word in details, details


def test_single_node_modes_take_one_node(csi: Csi) -> None:
    volume = csi.create("pvc-one-node")
    csi.publish(volume.volume_id, csi.nodes[0])
    code, details = code_of(
        csi.controller.ControllerPublishVolume,
        csi_pb2.ControllerPublishVolumeRequest(
            volume_id=volume.volume_id,
            node_id=csi.nodes[1],
            volume_capability=mount_cap(Mode.SINGLE_NODE_READER_ONLY),
        ),
    )
    assert code == Code.FAILED_PRECONDITION and "one node" in details
    code, _ = code_of(
        csi.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(
            name="pvc-msw", volume_capabilities=[mount_cap(Mode.MULTI_NODE_SINGLE_WRITER)]
        ),
    )
    assert code == Code.INVALID_ARGUMENT


def test_a_volume_from_a_source_is_at_least_its_size(csi: Csi) -> None:
    volume = csi.create("pvc-big", size=2 * GIB)
    snap = csi.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=volume.volume_id, name="big-snap")
    ).snapshot
    source = csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id)
    )
    clone = csi.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name="pvc-big-clone", volume_capabilities=[mount_cap()], volume_content_source=source
        )
    ).volume
    assert clone.capacity_bytes == 2 * GIB
    code, _ = code_of(
        csi.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(
            name="pvc-small-clone",
            capacity_range=csi_pb2.CapacityRange(required_bytes=GIB, limit_bytes=GIB),
            volume_capabilities=[mount_cap()],
            volume_content_source=source,
        ),
    )
    assert code == Code.OUT_OF_RANGE


def test_lists_without_a_limit_answer_everything(csi: Csi) -> None:
    made = {csi.create(f"pvc-many-{i}", size=MIB).volume_id for i in range(105)}
    listed = csi.controller.ListVolumes(csi_pb2.ListVolumesRequest(), timeout=60)
    assert {e.volume.volume_id for e in listed.entries} == made and not listed.next_token
    some = sorted(made)[:3]
    for i, volume_id in enumerate(some):
        csi.controller.CreateSnapshot(
            csi_pb2.CreateSnapshotRequest(source_volume_id=volume_id, name=f"snap-{i}")
        )
    seen, token = [], ""
    while True:
        page = csi.controller.ListSnapshots(
            csi_pb2.ListSnapshotsRequest(max_entries=2, starting_token=token)
        )
        assert len(page.entries) <= 2
        seen += [e.snapshot.source_volume_id for e in page.entries]
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == some
    assert len(csi.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest()).entries) == 3
    code, _ = code_of(
        csi.controller.ListSnapshots, csi_pb2.ListSnapshotsRequest(starting_token="garbage")
    )
    assert code == Code.ABORTED


def test_capacity_counts_the_copies_and_refuses_what_osd_cannot_serve(csi: Csi) -> None:
    one = csi.controller.GetCapacity(csi_pb2.GetCapacityRequest()).available_capacity
    two = csi.controller.GetCapacity(
        csi_pb2.GetCapacityRequest(parameters={"replicas": "2"})
    ).available_capacity
    assert two == one // 2
    none = csi.controller.GetCapacity(
        csi_pb2.GetCapacityRequest(volume_capabilities=[mount_cap(Mode.MULTI_NODE_MULTI_WRITER)])
    )
    assert none.available_capacity == 0


def test_a_snapshot_still_being_copied_is_deleted_by_cancelling_its_copy(csi: Csi) -> None:
    volume = csi.create("pvc-copying")
    csi.daemon.driver.copying_snapshots = True
    csi.daemon.driver.block("create_snapshot")
    snap = csi.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=volume.volume_id, name="copying")
    ).snapshot
    assert not snap.ready_to_use
    assert csi.daemon.driver.wait_blocked("create_snapshot")
    timer = threading.Timer(0.5, csi.daemon.driver.unblock, ("create_snapshot",))
    timer.start()
    try:
        csi.controller.DeleteSnapshot(
            csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id), timeout=30
        )
    finally:
        timer.join()
    assert not csi.controller.ListSnapshots(
        csi_pb2.ListSnapshotsRequest(snapshot_id=snap.snapshot_id)
    ).entries
    assert csi.daemon.driver.state.snapshots == {}


def test_probe_says_when_the_daemon_is_gone(tmp_path: Path) -> None:
    socket = tmp_path / "csi.sock"
    with Client("127.0.0.1:1", retries=1) as client:
        plugin = Plugin(client, Options(endpoint=f"unix://{socket}", mode="controller"))
        plugin.start()
        try:
            with grpc.insecure_channel(f"unix://{socket}") as channel:
                code, details = code_of(
                    csi_pb2_grpc.IdentityStub(channel).Probe, csi_pb2.ProbeRequest()
                )
        finally:
            plugin.stop(grace=1)
    assert code == Code.FAILED_PRECONDITION and "does not answer" in details
