"""A snapshot attached with the local driver: a read-only loop device over
the snapshot's own file, through `osd serve --driver local` on scratch image
files, checked on the host as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from osd.engine.drivers.local import loop_devices
from osd.v1 import volume_pb2
from tests.helpers import error_of
from tests.scratch_devices import read_at, write_at
from tests.test_local_wire import MIB, Host, T, host, local_daemon

__all__ = ["host"]


def test_a_snapshot_is_attached_read_only_with_its_own_bytes(host: Host) -> None:
    volume = host.create("data")
    device = host.attach(volume.id)
    original = os.urandom(2 * MIB)
    write_at(device, 5 * MIB, original)
    host.detach(volume.id)
    snap = host.volumes.CreateSnapshot(
        volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="before"), timeout=T
    ).snapshot
    # The volume moves on; the snapshot keeps what it had.
    device = host.attach(volume.id)
    write_at(device, 5 * MIB, b"\xff" * (2 * MIB))

    got = host.volumes.AttachSnapshot(
        volume_pb2.AttachSnapshotRequest(snapshot_id=snap.id, node_id=host.node_id), timeout=T
    ).attachment
    snap_device = got.device_path
    backing, read_only = loop_devices()[snap_device]
    assert read_only and Path(backing).name == snap.id
    assert Path(backing).parent.parent.name == "snapshots"
    assert read_at(snap_device, 5 * MIB, 2 * MIB) == original
    assert read_at(device, 5 * MIB, 2 * MIB) == b"\xff" * (2 * MIB)
    with pytest.raises(OSError):
        write_at(snap_device, 0, b"x")
    assert (
        host.volumes.InspectSnapshot(
            volume_pb2.InspectSnapshotRequest(snapshot_id=snap.id), timeout=T
        )
        .attachments[0]
        .device_path
        == snap_device
    )

    with pytest.raises(Exception) as refused:
        host.volumes.DeleteSnapshot(
            volume_pb2.DeleteSnapshotRequest(snapshot_id=snap.id), timeout=T
        )
    assert error_of(refused.value).reason == "SNAPSHOT_ATTACHED"  # type: ignore[arg-type]
    assert Path(backing).exists()

    host.volumes.DetachSnapshot(volume_pb2.DetachSnapshotRequest(snapshot_id=snap.id), timeout=T)
    assert snap_device not in loop_devices() or loop_devices()[snap_device][0] != backing
    host.detach(volume.id)
    host.volumes.DeleteSnapshot(volume_pb2.DeleteSnapshotRequest(snapshot_id=snap.id), timeout=T)
    assert not Path(backing).exists()


def test_a_killed_daemon_sets_up_a_snapshot_device_again(scratch: Path) -> None:
    with local_daemon(scratch) as (proc, port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            h = Host(channel, scratch)
            h.topology()
            volume = h.create("kept")
            device = h.attach(volume.id)
            write_at(device, 0, b"snap" * 1000)
            h.detach(volume.id)
            snap = h.volumes.CreateSnapshot(
                volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="s"), timeout=T
            ).snapshot
            first = h.volumes.AttachSnapshot(
                volume_pb2.AttachSnapshotRequest(snapshot_id=snap.id, node_id=h.node_id),
                timeout=T,
            ).attachment.device_path
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # While the daemon is down the device goes away (a reboot); the store keeps it.
    subprocess.run(["losetup", "-d", first], check=True)
    with (
        local_daemon(scratch) as (_proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        h = Host(channel, scratch)
        [attachment] = h.volumes.InspectSnapshot(
            volume_pb2.InspectSnapshotRequest(snapshot_id=snap.id), timeout=T
        ).attachments
        backing, read_only = loop_devices()[attachment.device_path]
        assert read_only and Path(backing).name == snap.id
        assert read_at(attachment.device_path, 0, 4000) == b"snap" * 1000
        h.volumes.DetachSnapshot(volume_pb2.DetachSnapshotRequest(snapshot_id=snap.id), timeout=T)
    assert not any(b.endswith(snap.id) for b, _ in loop_devices().values())
