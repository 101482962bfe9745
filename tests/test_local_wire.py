"""The local driver through the real wire: `osd serve --driver local` on
scratch image files, driven over gRPC as a user would, and checked on the
host with what an operator would look at: loop devices, files and bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from osd.engine.drivers.local import loop_devices
from osd.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    service_pb2,
    service_pb2_grpc,
    volume_pb2,
    volume_pb2_grpc,
)
from tests.helpers import error_of
from tests.scratch_devices import IMAGE_BYTES, make_images, mounted_at, read_at, write_at
from tests.test_daemon import serving

MIB = 1 << 20
T = 60


def local_daemon(
    scratch: Path, *extra: str
) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[str], int]]:
    """`osd serve --driver local` on the scratch folder, one process, and
    volumes mounted below the scratch folder alone."""
    return serving(
        scratch / "data",
        "--driver",
        "local",
        "--processes",
        "1",
        "--local-mount-roots",
        str(scratch / "mnt"),
        *extra,
    )


class Host:
    """A daemon with the local driver, its stubs, and a node for this host
    with two image files as drives."""

    def __init__(self, channel: grpc.Channel, scratch: Path) -> None:
        self.scratch = scratch
        self.stubs(channel)

    def stubs(self, channel: grpc.Channel) -> None:
        self.clusters = cluster_pb2_grpc.ClusterServiceStub(channel)
        self.nodes = node_pb2_grpc.NodeServiceStub(channel)
        self.volumes = volume_pb2_grpc.VolumeServiceStub(channel)
        self.jobs = job_pb2_grpc.JobServiceStub(channel)
        self.service = service_pb2_grpc.ServiceStub(channel)

    def topology(self, drives: int = 2, size: int = IMAGE_BYTES) -> None:
        self.cluster_id = self.clusters.CreateCluster(
            cluster_pb2.CreateClusterRequest(name="local"), timeout=T
        ).cluster.id
        self.node_id = self.nodes.CreateNode(
            node_pb2.CreateNodeRequest(
                cluster_id=self.cluster_id,
                name="this-host",
                zone="z1",
                management_addresses=["127.0.0.1"],
            ),
            timeout=T,
        ).node.id
        self.drives = [
            self.nodes.CreateDrive(
                node_pb2.CreateDriveRequest(node_id=self.node_id, device_path=str(image)),
                timeout=T,
            ).drive
            for image in make_images(self.scratch / "images", drives, size)
        ]
        self.drive_ids = [d.id for d in self.drives]

    def create(self, name: str, size: str = "64M", **kw: object) -> volume_pb2.Volume:
        request = volume_pb2.CreateVolumeRequest(
            cluster_id=self.cluster_id,
            name=name,
            size=size,
            durability=volume_pb2.Durability(type=volume_pb2.DURABILITY_TYPE_REPLICATE, replicas=2),
            placement=volume_pb2.Placement(failure_domain=volume_pb2.FAILURE_DOMAIN_DRIVE),
            **kw,  # type: ignore[arg-type]
        )
        return self.volumes.CreateVolume(request, timeout=T).volume

    def attach(self, volume_id: str, read_only: bool = False) -> str:
        mode = volume_pb2.ATTACH_MODE_READ_ONLY if read_only else volume_pb2.ATTACH_MODE_READ_WRITE
        return self.volumes.AttachVolume(
            volume_pb2.AttachVolumeRequest(volume_id=volume_id, node_id=self.node_id, mode=mode),
            timeout=T,
        ).attachment.device_path

    def detach(self, volume_id: str) -> None:
        self.volumes.DetachVolume(volume_pb2.DetachVolumeRequest(volume_id=volume_id), timeout=T)

    def copies(self, volume_id: str) -> list[Path]:
        """The files of a volume's copies, found on the drives by allocation id."""
        drives = self.scratch / "data" / "local-driver" / "drives"
        inspected = self.volumes.InspectVolume(
            volume_pb2.InspectVolumeRequest(volume_id=volume_id), timeout=T
        )
        return [drives / a.drive_id / "replicas" / a.id for a in inspected.allocations]


@pytest.fixture
def host(scratch: Path) -> Iterator[Host]:
    with (
        local_daemon(scratch) as (_proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        h = Host(channel, scratch)
        h.topology(size=2 << 30)  # sparse: room for an xfs volume, at no cost
        yield h


def test_write_snapshot_overwrite_revert_and_clone(host: Host) -> None:
    volume = host.create("data")
    files = host.copies(volume.id)
    assert len(files) == 2 and all(f.stat().st_size == 64 * MIB for f in files)
    assert {f.parent.parent.name for f in files} == set(host.drive_ids)

    device = host.attach(volume.id)
    assert loop_devices()[device][0] in {str(f) for f in files}
    original = os.urandom(2 * MIB)
    write_at(device, 3 * MIB, original)
    host.detach(volume.id)
    assert device not in loop_devices()

    snap = host.volumes.CreateSnapshot(
        volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="before"), timeout=T
    ).snapshot
    device = host.attach(volume.id)
    write_at(device, 3 * MIB, b"\0" * (2 * MIB))
    host.detach(volume.id)
    host.volumes.RevertVolume(
        volume_pb2.RevertVolumeRequest(
            volume_id=volume.id, snapshot_id=snap.id, yes_i_really_mean_it=True
        ),
        timeout=T,
    )
    device = host.attach(volume.id, read_only=True)
    assert read_at(device, 3 * MIB, 2 * MIB) == original
    host.detach(volume.id)

    clone = host.create("clone", source=volume_pb2.VolumeSource(snapshot_id=snap.id))
    device = host.attach(clone.id)
    assert read_at(device, 3 * MIB, 2 * MIB) == original
    host.detach(clone.id)
    digests = {hashlib.sha256(f.read_bytes()).hexdigest() for f in host.copies(clone.id)}
    assert len(digests) == 1  # both copies hold the snapshot's bytes

    clone_files = host.copies(clone.id)
    host.volumes.DeleteVolume(volume_pb2.DeleteVolumeRequest(volume_id=clone.id), timeout=T)
    assert not any(f.exists() for f in clone_files)
    assert all(f.exists() for f in files)


def test_storage_of_another_host_is_refused_with_the_reason(host: Host) -> None:
    far = host.nodes.CreateNode(
        node_pb2.CreateNodeRequest(
            cluster_id=host.cluster_id, name="far", zone="z2", management_addresses=["10.250.0.9"]
        ),
        timeout=T,
    ).node
    with pytest.raises(grpc.RpcError) as info:
        host.nodes.CreateDrive(
            node_pb2.CreateDriveRequest(node_id=far.id, device_path="/dev/sdb"), timeout=T
        )
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_NODE_AGENT")
    assert "no agent here" in err.message

    volume = host.create("v")
    with pytest.raises(grpc.RpcError) as info:
        host.volumes.AttachVolume(
            volume_pb2.AttachVolumeRequest(
                volume_id=volume.id, node_id=far.id, mode=volume_pb2.ATTACH_MODE_READ_WRITE
            ),
            timeout=T,
        )
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_NODE_AGENT")
    listed = host.volumes.ListAttachments(
        volume_pb2.ListAttachmentsRequest(volume_id=volume.id), timeout=T
    )
    assert not listed.attachments  # rolled back


def test_a_killed_daemon_finds_its_devices_again(scratch: Path) -> None:
    with local_daemon(scratch) as (proc, port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            h = Host(channel, scratch)
            h.topology()
            volume = h.create("kept")
            other = h.create("also-attached")
            device = h.attach(volume.id)
            write_at(device, 0, b"osd" * 1000)
            h.attach(other.id)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # While the daemon is down, one device goes away; the store still records it.
    subprocess.run(["losetup", "-d", device], check=True)
    with (
        local_daemon(scratch) as (_proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        h = Host(channel, scratch)
        h.node_id = h.nodes.ListNodes(node_pb2.ListNodesRequest(), timeout=T).nodes[0].id
        [attachment] = h.volumes.ListAttachments(
            volume_pb2.ListAttachmentsRequest(volume_id=volume.id), timeout=T
        ).attachments
        now = loop_devices()
        assert now[attachment.device_path][0] in {str(f) for f in h.copies(volume.id)}
        assert read_at(attachment.device_path, 0, 3000) == b"osd" * 1000
        h.detach(volume.id)
        h.detach(other.id)
    backing = {b for b, _ in loop_devices().values()}
    assert not any(str(scratch) in b and "/replicas/" in b for b in backing)


def _files_on_drives(scratch: Path) -> set[Path]:
    drives = scratch / "data" / "local-driver" / "drives"
    return {p for p in drives.glob("*/replicas/*")} | {p for p in drives.glob("*/snapshots/*/*")}


def test_a_drive_replace_killed_midway_leaves_every_copy_whole(scratch: Path) -> None:
    """The replace copies a copy with 180 MiB of data to another drive; the
    daemon is killed while it runs. After a restart the job ends, and every
    copy the store records holds the volume's bytes, with nothing else left
    on the drives and no loop device over a copy."""
    with local_daemon(scratch) as (proc, port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            h = Host(channel, scratch)
            h.topology(drives=3)
            volume = h.create("big", size="200M")
            device = h.attach(volume.id)
            write_at(device, 0, os.urandom(180 * MIB))
            h.detach(volume.id)  # the other copy takes the bytes
            files = h.copies(volume.id)
            [digest] = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
            source = files[0].parent.parent.name
            [target] = set(h.drive_ids) - {f.parent.parent.name for f in files}
            job = h.service.StartDriveReplace(
                service_pb2.StartDriveReplaceRequest(
                    source_drive_id=source, target_drive_id=target
                ),
                timeout=T,
            ).job
            assert job.id
            # Killed while the copy is half-written on the target.
            target_replicas = scratch / "data" / "local-driver" / "drives" / target / "replicas"
            deadline = time.monotonic() + 60
            while not list(target_replicas.glob("*.part")) and time.monotonic() < deadline:
                time.sleep(0.002)
            assert list(target_replicas.glob("*.part")), "the copy was not seen in flight"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with (
        local_daemon(scratch) as (_proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        h = Host(channel, scratch)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ended = h.jobs.InspectJob(job_pb2.InspectJobRequest(job_id=job.id), timeout=T).job
            if ended.state in (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_FAILED):
                break
            time.sleep(0.1)
        assert ended.state in (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_FAILED), ended
        files = h.copies(volume.id)
        assert len(files) == 2
        if ended.state == job_pb2.JOB_STATE_DONE:
            assert source not in {f.parent.parent.name for f in files}
        for f in files:
            assert hashlib.sha256(f.read_bytes()).hexdigest() == digest
        assert _files_on_drives(scratch) == set(files)
    backing = {b for b, _ in loop_devices().values()}
    assert not any("/replicas/" in b and str(scratch) in b for b in backing)


def test_a_thick_volume_takes_its_space_at_once_and_a_thin_one_does_not(host: Host) -> None:
    thick = host.create("thick", provisioning=volume_pb2.PROVISIONING_THICK)
    thin = host.create("thin", provisioning=volume_pb2.PROVISIONING_THIN)
    for f in host.copies(thick.id):
        assert f.stat().st_blocks * 512 >= 64 * MIB
    for f in host.copies(thin.id):
        assert f.stat().st_blocks * 512 < MIB


def _attach_at(
    host: Host,
    volume_id: str,
    where: Path,
    *,
    read_only: bool = False,
    options: tuple[str, ...] = (),
) -> volume_pb2.Attachment:
    mode = volume_pb2.ATTACH_MODE_READ_ONLY if read_only else volume_pb2.ATTACH_MODE_READ_WRITE
    return host.volumes.AttachVolume(
        volume_pb2.AttachVolumeRequest(
            volume_id=volume_id,
            node_id=host.node_id,
            mode=mode,
            mount_path=str(where),
            mount_options=options,
        ),
        timeout=T,
    ).attachment


def _resize(host: Host, volume_id: str, size: str, shrink_ok: bool = False) -> None:
    host.volumes.UpdateVolume(
        volume_pb2.UpdateVolumeRequest(
            volume_id=volume_id, size=size, shrink_ok=shrink_ok, update_mask={"paths": ["size"]}
        ),
        timeout=T,
    )


def _df_bytes(where: Path) -> int:
    st = os.statvfs(where)
    return st.f_blocks * st.f_frsize


def test_a_file_volume_is_made_mounted_and_unmounted_and_grows_when_next_mounted(
    host: Host,
) -> None:
    volume = host.create(
        "files", kind=volume_pb2.VOLUME_KIND_FILE, provisioning=volume_pb2.PROVISIONING_THIN
    )
    assert volume.filesystem == volume_pb2.FILESYSTEM_EXT4
    where = host.scratch / "mnt" / "files"
    attached = _attach_at(host, volume.id, where, options=("noatime",))
    assert (attached.mount_path, list(attached.mount_options)) == (str(where), ["noatime"])
    assert mounted_at(where) == (attached.device_path, "ext4")
    (where / "hello.txt").write_text("kept")
    before = _df_bytes(where)

    # Asked elsewhere while mounted here: detach first.
    with pytest.raises(grpc.RpcError) as info:
        _attach_at(host, volume.id, host.scratch / "mnt" / "other")
    assert error_of(info.value).reason == "MOUNT_CONFLICT"

    host.detach(volume.id)
    assert mounted_at(where) is None
    _resize(host, volume.id, "128M")
    # Mounted again: the filesystem was not made again, and has grown.
    _attach_at(host, volume.id, where)
    assert (where / "hello.txt").read_text() == "kept"
    assert _df_bytes(where) > 1.8 * before
    host.detach(volume.id)
    again = _attach_at(host, volume.id, where, read_only=True)
    assert mounted_at(where) == (again.device_path, "ext4")
    with pytest.raises(OSError):
        (where / "new.txt").write_text("no")
    host.detach(volume.id)
    assert mounted_at(where) is None


def test_a_mounted_xfs_volume_grows_online_and_never_shrinks(host: Host) -> None:
    volume = host.create(
        "xfs",
        size="400M",
        kind=volume_pb2.VOLUME_KIND_FILE,
        filesystem=volume_pb2.FILESYSTEM_XFS,
        provisioning=volume_pb2.PROVISIONING_THIN,
    )
    where = host.scratch / "mnt" / "xfs"
    attached = _attach_at(host, volume.id, where)
    assert mounted_at(where) == (attached.device_path, "xfs")
    before = _df_bytes(where)
    _resize(host, volume.id, "800M")
    assert _df_bytes(where) > 1.8 * before  # what df shows, grown while mounted

    with pytest.raises(grpc.RpcError) as info:
        _resize(host, volume.id, "400M", shrink_ok=True)
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_MOUNTED"), err
    host.detach(volume.id)
    assert mounted_at(where) is None


def test_a_mount_is_for_file_volumes_only_and_a_path_must_be_absolute(host: Host) -> None:
    block = host.create("block")
    with pytest.raises(grpc.RpcError) as info:
        _attach_at(host, block.id, host.scratch / "mnt")
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_FILE_VOLUME")
    for path, options, field in (
        ("relative/path", [], "mount_path"),
        ("/mnt/../etc", [], "mount_path"),
        ("/mnt/x", ["rw,exec"], "mount_options[0]"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            host.volumes.AttachVolume(
                volume_pb2.AttachVolumeRequest(
                    volume_id=block.id,
                    node_id=host.node_id,
                    mode=volume_pb2.ATTACH_MODE_READ_WRITE,
                    mount_path=path,
                    mount_options=options,
                ),
                timeout=T,
            )
        err = error_of(info.value)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.fields, err
    with pytest.raises(grpc.RpcError) as info:
        host.create(
            "blocky", kind=volume_pb2.VOLUME_KIND_BLOCK, filesystem=volume_pb2.FILESYSTEM_XFS
        )
    assert error_of(info.value).code == grpc.StatusCode.INVALID_ARGUMENT
    # A filesystem asked with no kind makes a FILE volume.
    implied = host.create("implied", size="400M", filesystem=volume_pb2.FILESYSTEM_XFS)
    assert implied.kind == volume_pb2.VOLUME_KIND_FILE


def test_a_mount_that_fails_takes_the_attachment_back(host: Host) -> None:
    volume = host.create(
        "files", kind=volume_pb2.VOLUME_KIND_FILE, provisioning=volume_pb2.PROVISIONING_THIN
    )
    taken = host.scratch / "mnt" / "a-file-not-a-folder"
    taken.parent.mkdir(exist_ok=True)
    taken.write_text("x")
    with pytest.raises(grpc.RpcError) as info:
        _attach_at(host, volume.id, taken)
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRIVER_ERROR"), err
    assert "mount point" in err.message
    listed = host.volumes.ListAttachments(
        volume_pb2.ListAttachmentsRequest(volume_id=volume.id), timeout=T
    )
    assert not listed.attachments
    copies = {str(f) for f in host.copies(volume.id)}
    assert not copies & {b for b, _ in loop_devices().values()}
    assert taken.read_text() == "x"


def test_a_drive_counts_the_room_its_filesystem_gives(host: Host) -> None:
    for drive in host.drives:
        root = host.scratch / "data" / "local-driver" / "drives" / drive.id
        st = os.statvfs(root)
        assert drive.capacity.total_bytes == st.f_blocks * st.f_frsize
        assert drive.capacity.total_bytes < 2 << 30  # the image's size, less xfs's own


def _no_volumes(host: Host) -> None:
    listed = host.volumes.ListVolumes(volume_pb2.ListVolumesRequest(), timeout=T).volumes
    assert [v.name for v in listed] == []
    assert _files_on_drives(host.scratch) == set()


def test_a_drive_without_room_answers_drive_full_and_keeps_nothing(host: Host) -> None:
    room = min(d.capacity.total_bytes for d in host.drives)
    with pytest.raises(grpc.RpcError) as info:
        host.volumes.CreateVolume(
            volume_pb2.CreateVolumeRequest(
                cluster_id=host.cluster_id,
                name="too-thick",
                size_bytes=(room - MIB) // 512 * 512,
                provisioning=volume_pb2.PROVISIONING_THICK,
                durability=volume_pb2.Durability(
                    type=volume_pb2.DURABILITY_TYPE_REPLICATE, replicas=2
                ),
                placement=volume_pb2.Placement(failure_domain=volume_pb2.FAILURE_DOMAIN_DRIVE),
            ),
            timeout=T,
        )
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DRIVE_FULL"), err
    assert err.metadata["retryable"] == "false"
    _no_volumes(host)


def test_a_drive_that_went_away_answers_unavailable_and_keeps_nothing(host: Host) -> None:
    gone = host.drives[0]
    root = host.scratch / "data" / "local-driver" / "drives" / gone.id
    subprocess.run(["umount", str(root)], check=True)
    for device, (backing, _ro) in loop_devices().items():
        if backing == gone.device_path:
            subprocess.run(["losetup", "-d", device], check=True)
    Path(gone.device_path).unlink()  # the device is pulled
    with pytest.raises(grpc.RpcError) as info:
        host.create("v")
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRIVER_ERROR"), err
    assert err.metadata["retryable"] == "true"
    _no_volumes(host)


def test_used_space_is_measured_on_the_drives(scratch: Path) -> None:
    """A volume's stored bytes are what its copy holds; a snapshot's space used
    is what it alone holds once the volume moved on from it."""
    with (
        local_daemon(scratch, "--usage-interval-seconds", "0.2") as (_proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        h = Host(channel, scratch)
        h.topology()
        volume = h.create("measured", provisioning=volume_pb2.PROVISIONING_THIN)
        device = h.attach(volume.id)
        write_at(device, 0, os.urandom(8 * MIB))
        h.detach(volume.id)
        snap = h.volumes.CreateSnapshot(
            volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="s"), timeout=T
        ).snapshot
        device = h.attach(volume.id)
        write_at(device, 0, os.urandom(2 * MIB))  # the snapshot now holds these 2 MiB alone
        h.detach(volume.id)

        def figures() -> tuple[int, int]:
            v = h.volumes.InspectVolume(
                volume_pb2.InspectVolumeRequest(volume_id=volume.id), timeout=T
            ).volume
            s = h.volumes.InspectSnapshot(
                volume_pb2.InspectSnapshotRequest(snapshot_id=snap.id), timeout=T
            ).snapshot
            return v.usage.stored_bytes, s.space_used_bytes

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and figures() != (8 * MIB, 2 * MIB):
            time.sleep(0.1)
        assert figures() == (8 * MIB, 2 * MIB)

        # Rounds that find nothing new write nothing: the generation stands.
        def generation() -> int:
            with sqlite3.connect(scratch / "data" / "osd.db") as db:
                return int(db.execute("SELECT generation FROM osd_state").fetchone()[0])

        before = generation()
        time.sleep(1.0)  # five rounds
        assert generation() == before


def test_a_volume_is_mounted_below_the_allowed_roots_only(host: Host) -> None:
    volume = host.create(
        "files", kind=volume_pb2.VOLUME_KIND_FILE, provisioning=volume_pb2.PROVISIONING_THIN
    )
    (host.scratch / "mnt").mkdir(exist_ok=True)
    escape = host.scratch / "mnt" / "escape"
    escape.symlink_to(host.scratch / "outside")
    for where in (host.scratch / "outside" / "x", escape / "x", host.scratch / "mnt"):
        with pytest.raises(grpc.RpcError) as info:
            _attach_at(host, volume.id, where)
        err = error_of(info.value)
        assert (err.code, err.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "MOUNT_PATH_NOT_ALLOWED",
        ), (where, err)
    assert not (host.scratch / "outside").exists()
    listed = host.volumes.ListAttachments(
        volume_pb2.ListAttachmentsRequest(volume_id=volume.id), timeout=T
    )
    assert not listed.attachments
    assert not {str(f) for f in host.copies(volume.id)} & {b for b, _ in loop_devices().values()}


def _ext4_folders(scratch: Path, count: int) -> list[Path]:
    """``count`` folders on one ext4 filesystem (which shares no blocks
    between files) made on a scratch image and mounted under the scratch
    folder."""
    [image] = make_images(scratch / "ext4-image", 1, 1 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    where = scratch / "ext4"
    where.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
    folders = [where / f"drive{i}" for i in range(count)]
    for folder in folders:
        folder.mkdir()
    return folders


def _folder_topology(h: Host, folders: list[Path]) -> None:
    h.cluster_id = h.clusters.CreateCluster(
        cluster_pb2.CreateClusterRequest(name="local"), timeout=T
    ).cluster.id
    h.node_id = h.nodes.CreateNode(
        node_pb2.CreateNodeRequest(
            cluster_id=h.cluster_id, name="this-host", zone="z1", management_addresses=["127.0.0.1"]
        ),
        timeout=T,
    ).node.id
    h.drive_ids = [
        h.nodes.CreateDrive(
            node_pb2.CreateDriveRequest(node_id=h.node_id, device_path=str(folder)), timeout=T
        ).drive.id
        for folder in folders
    ]


def _wait_job(h: Host, job_id: str, timeout: float = 120) -> job_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = h.jobs.InspectJob(job_pb2.InspectJobRequest(job_id=job_id), timeout=T).job
        if job.state in (
            job_pb2.JOB_STATE_DONE,
            job_pb2.JOB_STATE_FAILED,
            job_pb2.JOB_STATE_CANCELLED,
        ):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _folder_copies(h: Host, folders: list[Path], volume_id: str) -> list[Path]:
    """The files of a volume's copies on folder drives (a folder is its drive's root)."""
    roots = dict(zip(h.drive_ids, folders, strict=True))
    inspected = h.volumes.InspectVolume(
        volume_pb2.InspectVolumeRequest(volume_id=volume_id), timeout=T
    )
    return [roots[a.drive_id] / "replicas" / a.id for a in inspected.allocations]


def _snapshot_files(copies: list[Path], snapshot_id: str) -> list[Path]:
    return [f.parent.parent / "snapshots" / f.name / snapshot_id for f in copies]


def test_without_reflink_a_snapshot_is_a_full_copy_by_a_job(scratch: Path) -> None:
    folders = _ext4_folders(scratch, 2)
    with (
        local_daemon(scratch) as (_proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        h = Host(channel, scratch)
        _folder_topology(h, folders)
        volume = h.create("data")
        device = h.attach(volume.id)
        original = os.urandom(2 * MIB)
        write_at(device, 3 * MIB, original)
        # Attached read-write, its data moves under a copy: refused.
        with pytest.raises(grpc.RpcError) as info:
            h.volumes.CreateSnapshot(
                volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="before"), timeout=T
            )
        assert error_of(info.value).reason == "VOLUME_ATTACHED"
        h.detach(volume.id)

        started = h.volumes.CreateSnapshot(
            volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="before"), timeout=T
        )
        assert started.snapshot.state == volume_pb2.SNAPSHOT_STATE_CREATING
        assert started.job.kind == job_pb2.JOB_KIND_SNAPSHOT_COPY
        done = _wait_job(h, started.job.id)
        assert done.state == job_pb2.JOB_STATE_DONE, done.error
        assert done.progress.done_bytes == done.progress.total_bytes == 2 * 64 * MIB
        snap = h.volumes.InspectSnapshot(
            volume_pb2.InspectSnapshotRequest(snapshot_id=started.snapshot.id), timeout=T
        ).snapshot
        assert snap.state == volume_pb2.SNAPSHOT_STATE_READY
        copies = _folder_copies(h, folders, volume.id)
        assert len(copies) == 2
        for copy, kept in zip(copies, _snapshot_files(copies, snap.id), strict=True):
            assert kept.read_bytes() == copy.read_bytes()

        device = h.attach(volume.id)
        write_at(device, 3 * MIB, b"\0" * (2 * MIB))
        h.detach(volume.id)
        h.volumes.RevertVolume(
            volume_pb2.RevertVolumeRequest(
                volume_id=volume.id, snapshot_id=snap.id, yes_i_really_mean_it=True
            ),
            timeout=T,
        )
        device = h.attach(volume.id, read_only=True)
        assert read_at(device, 3 * MIB, 2 * MIB) == original
        h.detach(volume.id)
        clone = h.create("clone", source=volume_pb2.VolumeSource(snapshot_id=snap.id))
        device = h.attach(clone.id, read_only=True)
        assert read_at(device, 3 * MIB, 2 * MIB) == original
        h.detach(clone.id)


def test_a_snapshot_copy_killed_midway_is_resumed_whole(scratch: Path) -> None:
    folders = _ext4_folders(scratch, 2)
    with local_daemon(scratch) as (proc, port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            h = Host(channel, scratch)
            _folder_topology(h, folders)
            volume = h.create("big", size="200M")
            device = h.attach(volume.id)
            write_at(device, 0, os.urandom(180 * MIB))
            h.detach(volume.id)
            copies = _folder_copies(h, folders, volume.id)
            [digest] = {hashlib.sha256(f.read_bytes()).hexdigest() for f in copies}
            started = h.volumes.CreateSnapshot(
                volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="s"), timeout=T
            )
            snapshots = [f.parent.parent / "snapshots" / f.name for f in copies]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(list(folder.glob("*.part")) for folder in snapshots if folder.exists()):
                    break
                time.sleep(0.002)
            else:
                pytest.fail("the copy was not seen in flight")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with (
        local_daemon(scratch) as (_proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        h = Host(channel, scratch)
        done = _wait_job(h, started.job.id)
        assert done.state == job_pb2.JOB_STATE_DONE, done.error
        assert done.restart_count >= 1
        snap = h.volumes.InspectSnapshot(
            volume_pb2.InspectSnapshotRequest(snapshot_id=started.snapshot.id), timeout=T
        ).snapshot
        assert snap.state == volume_pb2.SNAPSHOT_STATE_READY
        for kept in _snapshot_files(copies, snap.id):
            assert hashlib.sha256(kept.read_bytes()).hexdigest() == digest
        assert [p for folder in snapshots for p in folder.glob("*.part")] == []
