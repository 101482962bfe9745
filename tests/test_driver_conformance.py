"""One contract for every storage driver: the same calls and the same answers
from the fake driver and from the local driver on real loop devices.

The engine relies on each of these: idempotent calls, a copy that carries
its snapshots, a delete that keeps them and a purge that does not, a clone
that takes its own size, an attach that answers the same device twice, and
a driver that refuses what is not there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from osd.engine.drivers import DriverError, StorageDriver
from osd.engine.drivers.fake import FakeDriver
from osd.engine.drivers.local import LocalDriver
from tests.scratch_devices import clean_up, make_images, require_loop_devices

MIB = 1 << 20
HERE = "127.0.0.1"


@dataclass
class Rig:
    driver: StorageDriver
    devices: list[str]
    data_dir: Path


@pytest.fixture(params=["fake", "local"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    if request.param == "fake":
        yield Rig(FakeDriver(), ["/dev/sdb", "/dev/sdc"], tmp_path)
        return
    require_loop_devices()
    folder = tmp_path / "scratch"
    images = make_images(folder, 2)
    try:
        yield Rig(LocalDriver(folder / "data"), [str(i) for i in images], folder / "data")
    finally:
        clean_up(folder)


def _two_drives(rig: Rig) -> tuple[str, str]:
    for device, drive_id in zip(rig.devices, ("drive-a", "drive-b"), strict=True):
        rig.driver.probe_drive(HERE, device)  # as the engine does, first
        rig.driver.format_drive(HERE, device, drive_id)
    return "drive-a", "drive-b"


def test_a_new_device_is_probed_and_formatted_once(rig: Rig) -> None:
    info = rig.driver.probe_drive(HERE, rig.devices[0])
    assert info.size_bytes > 0
    assert not info.has_data
    rig.driver.format_drive(HERE, rig.devices[0], "drive-a")
    rig.driver.format_drive(HERE, rig.devices[0], "drive-a")  # idempotent
    with pytest.raises(DriverError, match="belongs to"):
        rig.driver.format_drive(HERE, rig.devices[0], "drive-b")
    assert rig.driver.probe_drive(HERE, rig.devices[0]).size_bytes == info.size_bytes


def test_replicas_are_created_once_at_one_size(rig: Rig) -> None:
    a, _ = _two_drives(rig)
    rig.driver.create_replica(a, "r1", 8 * MIB)
    rig.driver.create_replica(a, "r1", 8 * MIB)
    with pytest.raises(DriverError, match="another size"):
        rig.driver.create_replica(a, "r1", 16 * MIB)
    rig.driver.resize_replica(a, "r1", 16 * MIB)
    rig.driver.create_replica(a, "r1", 16 * MIB)  # the size it has now
    rig.driver.delete_replica(a, "r1")
    rig.driver.delete_replica(a, "r1")  # what is gone is fine
    rig.driver.create_replica(a, "r1", 4 * MIB)


def test_a_copy_carries_its_snapshots_and_a_delete_keeps_them(rig: Rig) -> None:
    a, b = _two_drives(rig)
    rig.driver.create_replica(a, "r1", 8 * MIB)
    rig.driver.create_snapshot(a, "r1", "s1")
    rig.driver.create_snapshot(a, "r1", "s1")  # idempotent
    rig.driver.copy_replica(a, b, "r1", 8 * MIB)
    rig.driver.copy_replica(a, b, "r1", 8 * MIB)  # idempotent
    rig.driver.revert_replica(b, "r1", "s1")  # the snapshot came along
    rig.driver.delete_replica(a, "r1")
    # The snapshot chain outlives the copy's data: copied alone, and usable.
    rig.driver.copy_replica(a, "drive-b", "r1", 8 * MIB)
    rig.driver.purge_replica(a, "r1")
    with pytest.raises(DriverError):
        rig.driver.copy_replica(a, b, "r1", 8 * MIB)


def test_snapshots_are_copied_to_a_rebuilt_copy(rig: Rig) -> None:
    a, b = _two_drives(rig)
    rig.driver.create_replica(a, "r1", 8 * MIB)
    rig.driver.create_snapshot(a, "r1", "s1")
    rig.driver.create_replica(b, "r2", 8 * MIB)
    rig.driver.copy_snapshots(a, "r1", b, "r2")
    rig.driver.copy_snapshots(a, "r1", b, "r2")  # idempotent
    rig.driver.revert_replica(b, "r2", "s1")
    rig.driver.copy_snapshots(a, "nothing", b, "r2")  # no snapshot: nothing to do
    rig.driver.delete_snapshot(b, "s1")
    with pytest.raises(DriverError):
        rig.driver.revert_replica(b, "r2", "s1")


def test_a_clone_takes_its_own_size(rig: Rig) -> None:
    a, b = _two_drives(rig)
    with pytest.raises(DriverError):
        rig.driver.clone_replica(a, "src", b, "dst", 8 * MIB)
    rig.driver.create_replica(a, "src", 4 * MIB)
    rig.driver.clone_replica(a, "src", b, "dst", 8 * MIB)
    rig.driver.clone_replica(a, "src", b, "dst", 8 * MIB)  # idempotent
    with pytest.raises(DriverError, match="another size"):
        rig.driver.clone_replica(a, "src", b, "dst", 16 * MIB)


def test_an_attach_answers_one_device_until_detached(rig: Rig) -> None:
    a, _ = _two_drives(rig)
    rig.driver.create_replica(a, "r1", 8 * MIB)
    device = rig.driver.attach(HERE, "vol", False, [(a, "r1")])
    assert device.startswith("/dev/")
    assert rig.driver.attach(HERE, "vol", False, [(a, "r1")]) == device
    rig.driver.detach(HERE, "vol")
    rig.driver.detach(HERE, "vol")  # idempotent


def test_a_released_drive_can_be_formatted_again(rig: Rig) -> None:
    a, _ = _two_drives(rig)
    rig.driver.release_drive(HERE, rig.devices[0], a)
    rig.driver.release_drive(HERE, rig.devices[0], a)  # idempotent
    rig.driver.format_drive(HERE, rig.devices[0], "drive-c")


def test_a_process_that_serves_reads_knows_what_the_primary_takes_as_drives(
    tmp_path: Path,
) -> None:
    from osd.engine.drivers import ReadsOnly
    from osd.engine.topology.drives import device_path_violation, takes_files

    assert takes_files(ReadsOnly(takes_files=True))
    assert not takes_files(ReadsOnly())
    assert not takes_files(FakeDriver())
    assert device_path_violation("/srv/a.img", files=True) is None
    refused = device_path_violation("/srv/a.img", files=takes_files(FakeDriver()))
    assert refused is not None and "under /dev" in refused.description


def test_a_drive_says_whether_its_snapshots_share_blocks(rig: Rig) -> None:
    """Formatted drives (xfs with reflink) share blocks; a drive the driver
    does not hold answers True, leaving the snapshot call to say why."""
    a, _ = _two_drives(rig)
    assert rig.driver.shares_blocks(a) is True
    assert rig.driver.shares_blocks("no-such-drive") is True


def test_a_full_copy_snapshot_reports_its_progress(rig: Rig) -> None:
    """Where a snapshot is a full copy, the bytes copied are reported as it goes,
    ending at the copy's data; a snapshot that shares blocks reports nothing
    or the same end."""
    a, _ = _two_drives(rig)
    rig.driver.create_replica(a, "r1", 8 * MIB)
    seen: list[int] = []
    rig.driver.create_snapshot(a, "r1", "s1", progress=seen.append)
    assert seen == sorted(seen) and all(0 < n <= 8 * MIB for n in seen)
    rig.driver.revert_replica(a, "r1", "s1")
