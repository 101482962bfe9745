"""The CSI plugin end to end on this host: `osd csi --mode all` beside
`osd serve --driver local`, driven over the plugin's unix socket the way an
orchestrator does (create, controller publish, stage, publish, unpublish,
unstage, controller unpublish, delete; each step twice), with mount and
block access, read-only, statistics and expansion, checked on the host with
the mount table and the loop devices."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from osd.csi.v1 import csi_pb2, csi_pb2_grpc
from osd.engine.drivers.local import loop_devices, mount_table
from tests.test_local_wire import Host, local_daemon

MIB = 1 << 20
Mode = csi_pb2.VolumeCapability.AccessMode
T = 60


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


@contextlib.contextmanager
def csi_plugin(scratch: Path, osd_port: int, node_id: str) -> Iterator[grpc.Channel]:
    """`osd csi --mode all` as a child process, and a channel to its socket."""
    socket = scratch / "plugin" / "csi.sock"
    socket.parent.mkdir(parents=True, exist_ok=True)
    log = scratch / "plugin" / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "osd.cli",
                "csi",
                "--endpoint",
                f"unix://{socket}",
                "--mode",
                "all",
                "--node-id",
                node_id,
                "--osd-endpoint",
                f"127.0.0.1:{osd_port}",
            ],
            stderr=stderr,
            text=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the plugin did not start"
            time.sleep(0.05)
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            yield channel
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert not socket.exists()


@dataclass
class Rig:
    host: Host
    identity: csi_pb2_grpc.IdentityStub
    controller: csi_pb2_grpc.ControllerStub
    node: csi_pb2_grpc.NodeStub
    scratch: Path

    def create(self, name: str, cap: csi_pb2.VolumeCapability, size: int = 64 * MIB) -> str:
        return self.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=name,
                capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                volume_capabilities=[cap],
                parameters={"replicas": "2", "failureDomain": "drive"},
            ),
            timeout=T,
        ).volume.volume_id

    def publish(
        self, volume_id: str, cap: csi_pb2.VolumeCapability, **kw: object
    ) -> dict[str, str]:
        return dict(
            self.controller.ControllerPublishVolume(
                csi_pb2.ControllerPublishVolumeRequest(
                    volume_id=volume_id,
                    node_id=self.host.node_id,
                    volume_capability=cap,
                    **kw,  # type: ignore[arg-type]
                ),
                timeout=T,
            ).publish_context
        )

    def stage(self, volume_id: str, cap: csi_pb2.VolumeCapability, context: dict[str, str]) -> Path:
        staging = self.scratch / "kubelet" / "staging" / volume_id
        for _ in range(2):
            self.node.NodeStageVolume(
                csi_pb2.NodeStageVolumeRequest(
                    volume_id=volume_id,
                    publish_context=context,
                    staging_target_path=str(staging),
                    volume_capability=cap,
                ),
                timeout=T,
            )
        return staging

    def node_publish(
        self,
        volume_id: str,
        cap: csi_pb2.VolumeCapability,
        context: dict[str, str],
        staging: Path,
        pod: str = "pod-a",
        readonly: bool = False,
    ) -> Path:
        target = self.scratch / "kubelet" / "pods" / pod / volume_id / "mount"
        for _ in range(2):
            self.node.NodePublishVolume(
                csi_pb2.NodePublishVolumeRequest(
                    volume_id=volume_id,
                    publish_context=context,
                    staging_target_path=str(staging),
                    target_path=str(target),
                    volume_capability=cap,
                    readonly=readonly,
                ),
                timeout=T,
            )
        return target

    def tear_down(self, volume_id: str, target: Path, staging: Path) -> None:
        for _ in range(2):
            self.node.NodeUnpublishVolume(
                csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)),
                timeout=T,
            )
        assert not target.exists()
        for _ in range(2):
            self.node.NodeUnstageVolume(
                csi_pb2.NodeUnstageVolumeRequest(
                    volume_id=volume_id, staging_target_path=str(staging)
                ),
                timeout=T,
            )
        for _ in range(2):
            self.controller.ControllerUnpublishVolume(
                csi_pb2.ControllerUnpublishVolumeRequest(
                    volume_id=volume_id, node_id=self.host.node_id
                ),
                timeout=T,
            )


@pytest.fixture
def rig(scratch: Path) -> Iterator[Rig]:
    with (
        local_daemon(scratch) as (_proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        host = Host(channel, scratch)
        host.topology(size=2 << 30)
        with csi_plugin(scratch, port, host.node_id) as plugin:
            yield Rig(
                host,
                csi_pb2_grpc.IdentityStub(plugin),
                csi_pb2_grpc.ControllerStub(plugin),
                csi_pb2_grpc.NodeStub(plugin),
                scratch,
            )


def _stats(rig: Rig, volume_id: str, path: Path) -> csi_pb2.NodeGetVolumeStatsResponse:
    return rig.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(path)), timeout=T
    )


def test_the_node_reports_itself(rig: Rig) -> None:
    info = rig.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=T)
    assert info.node_id == rig.host.node_id
    assert dict(info.accessible_topology.segments) == {"osd.dev/zone": "z1"}
    kinds = {
        c.rpc.type
        for c in rig.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest()).capabilities
    }
    assert csi_pb2.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME in kinds
    assert rig.identity.Probe(csi_pb2.ProbeRequest()).ready.value


def test_a_mounted_volume_from_create_to_delete(rig: Rig) -> None:
    cap = mount_cap()
    volume_id = rig.create("pvc-files", cap)
    context = rig.publish(volume_id, cap)
    assert rig.publish(volume_id, cap) == context
    device = context["devicePath"]
    assert device in loop_devices()
    staging = rig.stage(volume_id, cap, context)
    assert mount_table()[str(staging)] == (device, "ext4")
    target = rig.node_publish(volume_id, cap, context, staging)
    (target / "hello.txt").write_text("hello from a pod")
    assert (staging / "hello.txt").read_text() == "hello from a pod"
    stats = _stats(rig, volume_id, target)
    [by_bytes] = [u for u in stats.usage if u.unit == csi_pb2.VolumeUsage.BYTES]
    assert 0 < by_bytes.used < by_bytes.total <= 64 * MIB
    assert not stats.volume_condition.abnormal

    rig.tear_down(volume_id, target, staging)
    assert str(staging) not in mount_table()
    assert device not in loop_devices()
    for _ in range(2):
        rig.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=T)
    backing = {b for b, _ in loop_devices().values()}
    assert not any(str(rig.scratch) in b and "/replicas/" in b for b in backing)

    # Deleted: the files of its copies are gone from the drives.
    drives = rig.scratch / "data" / "local-driver" / "drives"
    assert not list(drives.glob("*/replicas/*"))


def test_a_block_volume_is_the_device_itself_at_the_target(rig: Rig) -> None:
    cap = block_cap()
    volume_id = rig.create("pvc-block", cap)
    context = rig.publish(volume_id, cap)
    staging = rig.stage(volume_id, cap, context)
    target = rig.node_publish(volume_id, cap, context, staging)
    pattern = os.urandom(MIB)
    with open(target, "r+b") as f:
        f.seek(5 * MIB)
        f.write(pattern)
        f.flush()
        os.fsync(f.fileno())
    with open(context["devicePath"], "rb") as f:
        f.seek(5 * MIB)
        assert f.read(MIB) == pattern
    [usage] = _stats(rig, volume_id, target).usage
    assert usage.total == 64 * MIB
    rig.tear_down(volume_id, target, staging)
    rig.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=T)


def test_read_only_publishing_refuses_writes(rig: Rig) -> None:
    cap = mount_cap()
    volume_id = rig.create("pvc-ro", cap)
    context = rig.publish(volume_id, cap)
    staging = rig.stage(volume_id, cap, context)
    writer = rig.node_publish(volume_id, cap, context, staging, pod="writer")
    (writer / "data.txt").write_text("kept")
    reader = rig.node_publish(volume_id, cap, context, staging, pod="reader", readonly=True)
    assert (reader / "data.txt").read_text() == "kept"
    with pytest.raises(OSError) as info:
        (reader / "other.txt").write_text("refused")
    assert info.value.errno == 30  # EROFS
    # The same target asked for read-write now: another publish.
    with pytest.raises(grpc.RpcError) as err:
        rig.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                publish_context=context,
                staging_target_path=str(staging),
                target_path=str(reader),
                volume_capability=cap,
            ),
            timeout=T,
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    rig.node.NodeUnpublishVolume(
        csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(reader)),
        timeout=T,
    )
    rig.tear_down(volume_id, writer, staging)


def test_a_mounted_xfs_volume_grows_through_the_node(rig: Rig) -> None:
    cap = mount_cap(fs_type="xfs")
    volume_id = rig.create("pvc-grow", cap, size=320 * MIB)
    context = rig.publish(volume_id, cap)
    staging = rig.stage(volume_id, cap, context)
    assert mount_table()[str(staging)][1] == "xfs"
    target = rig.node_publish(volume_id, cap, context, staging)
    before = os.statvfs(target).f_blocks * os.statvfs(target).f_frsize
    grown = rig.controller.ControllerExpandVolume(
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=640 * MIB)
        ),
        timeout=T,
    )
    assert grown.node_expansion_required and grown.capacity_bytes == 640 * MIB
    expanded = rig.node.NodeExpandVolume(
        csi_pb2.NodeExpandVolumeRequest(
            volume_id=volume_id,
            volume_path=str(target),
            capacity_range=csi_pb2.CapacityRange(required_bytes=640 * MIB),
        ),
        timeout=T,
    )
    assert expanded.capacity_bytes == 640 * MIB
    after = os.statvfs(target).f_blocks * os.statvfs(target).f_frsize
    assert after > before + 250 * MIB
    rig.tear_down(volume_id, target, staging)


def test_node_refusals(rig: Rig) -> None:
    cap = mount_cap()
    volume_id = rig.create("pvc-node-errors", cap)
    staging = str(rig.scratch / "kubelet" / "staging" / "x")
    target = str(rig.scratch / "kubelet" / "pods" / "x" / "mount")
    cases = [
        (
            rig.node.NodeStageVolume,
            csi_pb2.NodeStageVolumeRequest(staging_target_path=staging, volume_capability=cap),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            rig.node.NodeStageVolume,
            csi_pb2.NodeStageVolumeRequest(volume_id=volume_id, volume_capability=cap),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            rig.node.NodeStageVolume,
            csi_pb2.NodeStageVolumeRequest(volume_id=volume_id, staging_target_path=staging),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            rig.node.NodeStageVolume,
            csi_pb2.NodeStageVolumeRequest(
                volume_id="f" * 32, staging_target_path=staging, volume_capability=cap
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        # Not published to this node yet.
        (
            rig.node.NodeStageVolume,
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id, staging_target_path=staging, volume_capability=cap
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            rig.node.NodePublishVolume,
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id, staging_target_path=staging, volume_capability=cap
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            rig.node.NodePublishVolume,
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id, target_path=target, staging_target_path=staging
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            rig.node.NodePublishVolume,
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id, target_path=target, volume_capability=cap
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        # A filesystem volume is not served as a block device.
        (
            rig.node.NodeStageVolume,
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id, staging_target_path=staging, volume_capability=block_cap()
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            rig.node.NodeUnpublishVolume,
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            rig.node.NodeUnstageVolume,
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            rig.node.NodeGetVolumeStats,
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            rig.node.NodeGetVolumeStats,
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=target),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            rig.node.NodeExpandVolume,
            csi_pb2.NodeExpandVolumeRequest(volume_id=volume_id),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for call, request, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=T)  # type: ignore[operator]
        assert info.value.code() == code, (type(request).__name__, info.value.details())
    # What was never published is unpublished: OK.
    rig.node.NodeUnpublishVolume(
        csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target), timeout=T
    )
    rig.node.NodeUnstageVolume(
        csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=staging),
        timeout=T,
    )
    assert not Path(staging).exists() or not any(Path(staging).iterdir())


def test_a_volume_restored_larger_than_its_snapshot_has_the_room(rig: Rig) -> None:
    cap = mount_cap()
    volume_id = rig.create("pvc-small", cap)
    context = rig.publish(volume_id, cap)
    staging = rig.stage(volume_id, cap, context)
    target = rig.node_publish(volume_id, cap, context, staging)
    (target / "kept.txt").write_text("from the snapshot")
    rig.tear_down(volume_id, target, staging)
    snap = rig.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=volume_id, name="small-snap"), timeout=T
    ).snapshot
    restored = rig.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name="pvc-restored",
            capacity_range=csi_pb2.CapacityRange(required_bytes=256 * MIB),
            volume_capabilities=[cap],
            parameters={"replicas": "2", "failureDomain": "drive"},
            volume_content_source=csi_pb2.VolumeContentSource(
                snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id)
            ),
        ),
        timeout=T,
    ).volume
    assert restored.capacity_bytes == 256 * MIB
    context = rig.publish(restored.volume_id, cap)
    staging = rig.stage(restored.volume_id, cap, context)
    target = rig.node_publish(restored.volume_id, cap, context, staging)
    assert (target / "kept.txt").read_text() == "from the snapshot"
    assert os.statvfs(target).f_blocks * os.statvfs(target).f_frsize > 200 * MIB
    rig.tear_down(restored.volume_id, target, staging)
