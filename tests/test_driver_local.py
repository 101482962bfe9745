"""The local driver on real loop devices: bytes written through an attached
volume, snapshots, copies checked byte for byte, resize, restarts and faults.

Each test formats scratch image files as drives (see tests/scratch_devices.py)
and reads the host back with the same tools an operator would: the loop
device table, the mount table and the files on the drives.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from osd.engine.drivers import DriveFull, DriverError, NoAgent
from osd.engine.drivers.local import LocalDriver, loop_devices, sync_file
from tests.scratch_devices import make_images, mounted_at, read_at, write_at

MIB = 1 << 20
HERE = "127.0.0.1"


def _driver(scratch: Path, count: int = 2, filesystem: str = "xfs") -> LocalDriver:
    driver = LocalDriver(scratch / "data", filesystem=filesystem)
    for i, image in enumerate(make_images(scratch / "images", count)):
        driver.probe_drive(HERE, str(image))
        driver.format_drive(HERE, str(image), f"drive{i}")
    return driver


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _replica(scratch: Path, drive: str, replica: str) -> Path:
    return scratch / "data" / "local-driver" / "drives" / drive / "replicas" / replica


@pytest.mark.parametrize("filesystem", ["xfs", "btrfs"])
def test_a_snapshot_brings_back_what_was_overwritten(scratch: Path, filesystem: str) -> None:
    d = _driver(scratch, 1, filesystem)
    mounted = mounted_at(scratch / "data" / "local-driver" / "drives" / "drive0")
    assert mounted is not None and mounted[1] == filesystem
    d.create_replica("drive0", "r1", 32 * MIB)
    device = d.attach(HERE, "v1", False, [("drive0", "r1")])
    assert loop_devices()[device] == (str(_replica(scratch, "drive0", "r1")), False)
    original = os.urandom(MIB)
    write_at(device, 5 * MIB, original)
    d.detach(HERE, "v1")
    assert device not in loop_devices()

    d.create_snapshot("drive0", "r1", "s1")
    device = d.attach(HERE, "v1", False, [("drive0", "r1")])
    write_at(device, 5 * MIB, b"\xff" * MIB)
    d.detach(HERE, "v1")
    d.revert_replica("drive0", "r1", "s1")

    device = d.attach(HERE, "v1", True, [("drive0", "r1")])
    assert loop_devices()[device][1]  # read-only
    assert read_at(device, 5 * MIB, MIB) == original
    with pytest.raises(OSError):
        write_at(device, 0, b"x")
    d.detach(HERE, "v1")


def test_a_snapshot_shares_blocks_where_the_filesystem_can(scratch: Path) -> None:
    d = _driver(scratch, 1)
    d.create_replica("drive0", "r1", 64 * MIB)
    device = d.attach(HERE, "v1", False, [("drive0", "r1")])
    write_at(device, 0, os.urandom(48 * MIB))
    d.detach(HERE, "v1")
    _size, free = d.drive_usage("drive0")
    d.create_snapshot("drive0", "r1", "s1")
    _size, after = d.drive_usage("drive0")
    assert free - after < 4 * MIB  # a reflink, not a 48 MiB copy


def test_a_copy_to_another_drive_holds_the_same_bytes_and_stays_sparse(scratch: Path) -> None:
    d = _driver(scratch)
    d.create_replica("drive0", "r1", 128 * MIB)
    device = d.attach(HERE, "v1", False, [("drive0", "r1")])
    write_at(device, 0, os.urandom(MIB))
    write_at(device, 100 * MIB, os.urandom(MIB))
    d.detach(HERE, "v1")
    d.create_snapshot("drive0", "r1", "s1")
    d.copy_replica("drive0", "drive1", "r1", 128 * MIB)

    source, copy = _replica(scratch, "drive0", "r1"), _replica(scratch, "drive1", "r1")
    assert _sha(copy) == _sha(source)
    assert copy.stat().st_size == 128 * MIB
    assert copy.stat().st_blocks * 512 < 8 * MIB  # the holes stayed holes
    snapshot = copy.parent.parent / "snapshots" / "r1" / "s1"
    assert _sha(snapshot) == _sha(source)
    assert not list(copy.parent.glob("*.part"))


def test_growing_an_attached_copy_grows_its_device(scratch: Path) -> None:
    d = _driver(scratch, 1)
    d.create_replica("drive0", "r1", 16 * MIB)
    device = d.attach(HERE, "v1", False, [("drive0", "r1")])
    d.resize_replica("drive0", "r1", 48 * MIB)
    size = subprocess.run(
        ["blockdev", "--getsize64", device], capture_output=True, text=True, check=True
    ).stdout
    assert int(size) == 48 * MIB
    with pytest.raises(DriverError, match="attached"):
        d.delete_replica("drive0", "r1")
    d.detach(HERE, "v1")


def test_a_restart_mounts_the_drives_and_mends_the_loop_devices(scratch: Path) -> None:
    d = _driver(scratch)
    for r in ("r1", "r2", "r3"):
        d.create_replica("drive0", r, 8 * MIB)
    kept = d.attach(HERE, "v1", False, [("drive0", "r1")])
    lost = d.attach(HERE, "v2", False, [("drive0", "r2")])
    gone = d.attach(HERE, "v3", False, [("drive0", "r3")])
    # A loop device someone removed, and a drive someone unmounted.
    subprocess.run(["losetup", "-d", lost], check=True)
    subprocess.run(
        ["umount", str(scratch / "data" / "local-driver" / "drives" / "drive1")], check=True
    )

    again = LocalDriver(scratch / "data")
    assert (scratch / "data" / "local-driver" / "drives" / "drive1" / ".osd-drive").exists()
    # The store records v1 and v2 attached; v3 was detached while the daemon was down.
    devices = again.restore_attachments(
        [
            (HERE, "v1", False, [("drive0", "r1")], None),
            (HERE, "v2", False, [("drive0", "r2")], None),
        ]
    )
    assert devices["v1"] == kept
    now = loop_devices()
    assert now[devices["v2"]][0] == str(_replica(scratch, "drive0", "r2"))
    assert str(_replica(scratch, "drive0", "r3")) not in {b for b, _ in now.values()}
    assert gone not in now or now[gone][0] != str(_replica(scratch, "drive0", "r3"))


def test_an_orphan_loop_device_over_a_copy_is_removed(scratch: Path) -> None:
    d = _driver(scratch, 1)
    d.create_replica("drive0", "r1", 8 * MIB)
    path = str(_replica(scratch, "drive0", "r1"))
    # A daemon killed between losetup and recording it leaves this behind.
    subprocess.run(["losetup", "--find", "--show", path], check=True, capture_output=True)
    d.restore_attachments([])
    assert path not in {b for b, _ in loop_devices().values()}


def test_work_for_another_host_is_refused(scratch: Path) -> None:
    d = _driver(scratch, 1)
    with pytest.raises(NoAgent, match="no agent here"):
        d.probe_drive("10.250.0.9", "/dev/sdb")
    with pytest.raises(NoAgent):
        d.attach("10.250.0.9", "v1", False, [("drive0", "r1")])
    with pytest.raises(NoAgent, match="not a drive of this host"):
        d.create_replica("drive-elsewhere", "r1", MIB)
    with pytest.raises(NoAgent, match="no copy on a drive of this host"):
        d.attach(HERE, "v1", False, [("drive-elsewhere", "r1")])
    named = LocalDriver(scratch / "other", node_name="rack1-node7")
    with pytest.raises(DriverError, match="No such file"):
        named.probe_drive("RACK1-node7", "/dev/nothing-here")


def test_a_device_that_holds_a_filesystem_says_so(scratch: Path) -> None:
    [image] = make_images(scratch / "images", 1)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    d = LocalDriver(scratch / "data")
    assert d.probe_drive(HERE, str(image)).has_data
    folder = scratch / "dir-drive"
    folder.mkdir()
    assert not d.probe_drive(HERE, str(folder)).has_data
    (folder / "someone's file").write_text("x")
    assert d.probe_drive(HERE, str(folder)).has_data


def test_a_directory_on_a_mounted_filesystem_is_a_drive(scratch: Path) -> None:
    folder = scratch / "dir-drive"
    folder.mkdir()
    d = LocalDriver(scratch / "data")
    info = d.probe_drive(HERE, str(folder))
    assert info.size_bytes == os.statvfs(folder).f_blocks * os.statvfs(folder).f_frsize
    d.format_drive(HERE, str(folder), "dir0")
    d.create_replica("dir0", "r1", 4 * MIB)
    assert (folder / "replicas" / "r1").stat().st_size == 4 * MIB
    d.release_drive(HERE, str(folder), "dir0")
    assert not (folder / ".osd-drive").exists()


def test_a_full_drive_is_a_clear_error_and_leaves_no_half_copy(scratch: Path) -> None:
    d = _driver(scratch)
    _size, free = d.drive_usage("drive1")
    d.create_replica("drive1", "filler", free - 16 * MIB)
    device = d.attach(HERE, "filler", False, [("drive1", "filler")])
    with open(device, "r+b") as f:
        chunk = b"\x5a" * (8 * MIB)
        for _ in range((free - 16 * MIB) // len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    d.detach(HERE, "filler")
    d.create_replica("drive0", "r1", 64 * MIB)
    device = d.attach(HERE, "v1", False, [("drive0", "r1")])
    write_at(device, 0, os.urandom(48 * MIB))
    d.detach(HERE, "v1")
    with pytest.raises(DriveFull, match="full") as raised:
        d.copy_replica("drive0", "drive1", "r1", 64 * MIB)
    assert not raised.value.retryable
    replicas = _replica(scratch, "drive1", "r1").parent
    assert sorted(p.name for p in replicas.iterdir()) == ["filler"]


def test_a_missing_copy_file_is_a_clear_error(scratch: Path) -> None:
    d = _driver(scratch, 1)
    d.create_replica("drive0", "r1", 4 * MIB)
    _replica(scratch, "drive0", "r1").unlink()
    with pytest.raises(DriverError, match="missing"):
        d.attach(HERE, "v1", False, [("drive0", "r1")])
    with pytest.raises(DriverError, match="no replica"):
        d.create_snapshot("drive0", "r1", "s1")


def test_the_other_copies_take_the_writes_when_a_writer_detaches(scratch: Path) -> None:
    d = _driver(scratch)
    copies = [("drive0", "r1"), ("drive1", "r1")]
    for drive, replica in copies:
        d.create_replica(drive, replica, 16 * MIB)
    device = d.attach(HERE, "v1", False, copies)
    data = os.urandom(MIB)
    write_at(device, 2 * MIB, data)
    # A snapshot of the copy not attached, taken while attached, holds the writes.
    d.create_snapshot("drive1", "r1", "s1")
    snapshot = scratch / "data" / "local-driver" / "drives" / "drive1" / "snapshots" / "r1" / "s1"
    assert snapshot.read_bytes()[2 * MIB : 3 * MIB] == data
    d.detach(HERE, "v1")
    first, second = (_replica(scratch, drive, replica) for drive, replica in copies)
    assert _sha(first) == _sha(second)
    assert second.read_bytes()[2 * MIB : 3 * MIB] == data


def test_a_restart_removes_what_a_killed_copy_left_half_written(scratch: Path) -> None:
    d = _driver(scratch)
    d.create_replica("drive0", "r1", 8 * MIB)
    d.create_snapshot("drive0", "r1", "s1")
    # What a daemon killed in the middle of a copy and of a snapshot leaves.
    half = _replica(scratch, "drive1", "r1.part")
    half.write_bytes(b"half")
    snap_half = half.parent.parent / "snapshots" / "r1" / "s2.part"
    snap_half.parent.mkdir(parents=True)
    snap_half.write_bytes(b"half")
    LocalDriver(scratch / "data")
    assert not half.exists() and not snap_half.exists()
    assert _replica(scratch, "drive0", "r1").exists()
    # The copy is made again in full, as the engine's retry asks.
    d.copy_replica("drive0", "drive1", "r1", 8 * MIB)
    assert _replica(scratch, "drive1", "r1").stat().st_size == 8 * MIB


def test_bringing_a_copy_into_line_keeps_it_allocated_and_clears_what_the_source_lacks(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    with open(source, "wb") as f:
        f.truncate(8 * MIB)
        f.seek(MIB)
        f.write(b"\x11" * MIB)
    fd = os.open(target, os.O_RDWR | os.O_CREAT)
    try:
        os.posix_fallocate(fd, 0, 8 * MIB)  # a THICK copy
        os.pwrite(fd, b"\x22" * MIB, 4 * MIB)  # stale data where the source has a hole
    finally:
        os.close(fd)
    sync_file(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert target.stat().st_blocks * 512 >= 8 * MIB  # still allocated in full


def test_a_thick_copy_that_moves_stays_allocated_in_full(scratch: Path) -> None:
    d = _driver(scratch)
    d.create_replica("drive0", "thick", 32 * MIB, thick=True)
    d.create_replica("drive0", "thin", 32 * MIB)
    for replica in ("thick", "thin"):
        d.copy_replica("drive0", "drive1", replica, 32 * MIB)
    moved = _replica(scratch, "drive1", "thick").stat().st_blocks * 512
    assert moved >= 32 * MIB
    assert _replica(scratch, "drive1", "thin").stat().st_blocks * 512 < MIB


def test_a_block_device_is_probed_formatted_and_released(scratch: Path) -> None:
    [image] = make_images(scratch / "images", 1)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    d = LocalDriver(scratch / "data")
    info = d.probe_drive(HERE, device)
    assert (info.size_bytes, info.has_data) == (image.stat().st_size, False)
    d.format_drive(HERE, device, "blk0")
    root = scratch / "data" / "local-driver" / "drives" / "blk0"
    assert mounted_at(root) == (device, "xfs")
    d.create_replica("blk0", "r1", 4 * MIB)
    assert (root / "replicas" / "r1").stat().st_size == 4 * MIB
    d.release_drive(HERE, device, "blk0")
    assert mounted_at(root) is None
    # What osd made on it is a filesystem now: adding it again needs confirmation.
    assert LocalDriver(scratch / "again").probe_drive(HERE, device).has_data


def test_on_a_filesystem_without_reflink_a_snapshot_is_a_full_copy_with_progress(
    scratch: Path,
) -> None:
    [image] = make_images(scratch / "ext4", 1)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    where = scratch / "ext4-mount"
    where.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
    folder = where / "drive"
    folder.mkdir()
    d = _driver(scratch, 1)
    d.probe_drive(HERE, str(folder))
    d.format_drive(HERE, str(folder), "plain")
    assert d.shares_blocks("plain") is False
    assert d.shares_blocks("drive0") is True  # xfs with reflink
    d.create_replica("plain", "r1", 64 * MIB)
    data = os.urandom(24 * MIB)
    with open(folder / "replicas" / "r1", "r+b") as f:
        f.seek(8 * MIB)
        f.write(data)
    seen: list[int] = []
    d.create_snapshot("plain", "r1", "s1", progress=seen.append)
    # Each chunk of data is reported, holes skipped: 24 MiB read, in order.
    assert len(seen) > 1 and seen == sorted(seen) and seen[-1] == len(data)
    kept = folder / "snapshots" / "r1" / "s1"
    assert _sha(kept) == _sha(folder / "replicas" / "r1")
    assert kept.stat().st_blocks * 512 < 32 * MIB  # still sparse

    def stop(copied: int) -> None:
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        d.create_snapshot("plain", "r1", "s2", progress=stop)
    assert sorted(p.name for p in (folder / "snapshots" / "r1").iterdir()) == ["s1"]
