"""The fake driver keeps state like storage does and fails where it is told to."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from osd.engine.drivers import StorageDriver, load
from osd.engine.drivers.base import DriverError
from osd.engine.drivers.fake import CALLS_KEPT, FakeDevice, FakeDriver, FakeState


def test_it_satisfies_the_driver_contract() -> None:
    assert isinstance(load("fake"), StorageDriver)
    with pytest.raises(ValueError, match="unknown storage driver"):
        load("nope")


def test_devices_replicas_and_snapshots_keep_state() -> None:
    d = FakeDriver(default_device_size=1000)
    d.add_device("n1", "/dev/sdb", 4096, has_data=True)
    assert d.probe_drive("n1", "/dev/sdb").size_bytes == 4096
    assert d.probe_drive("n1", "/dev/sdb").has_data
    assert d.probe_drive("n1", "/dev/sdz").size_bytes == 1000
    d.format_drive("n1", "/dev/sdb", "drive-a")
    assert not d.probe_drive("n1", "/dev/sdb").has_data
    with pytest.raises(DriverError, match="belongs to drive-a"):
        d.format_drive("n1", "/dev/sdb", "drive-b")

    d.create_replica("drive-a", "r1", 512)
    d.create_replica("drive-a", "r1", 512)  # idempotent
    with pytest.raises(DriverError, match="another size"):
        d.create_replica("drive-a", "r1", 1024)
    d.copy_replica("drive-a", "drive-b", "r1", 512)
    d.create_snapshot("drive-a", "r1", "s1")
    d.revert_replica("drive-a", "r1", "s1")
    with pytest.raises(DriverError):
        d.revert_replica("drive-b", "r1", "s1")
    d.delete_replica("drive-a", "r1")
    d.delete_replica("drive-a", "r1")  # deleting what is gone is fine
    assert d.state.replicas == {("drive-b", "r1"): 512}


def test_a_clone_fills_a_new_replica_from_another() -> None:
    d = FakeDriver()
    with pytest.raises(DriverError, match="no replica src"):
        d.clone_replica("drive-a", "src", "drive-b", "dst", 1024)
    d.create_replica("drive-a", "src", 512)
    d.clone_replica("drive-a", "src", "drive-b", "dst", 1024)
    d.clone_replica("drive-a", "src", "drive-b", "dst", 1024)  # idempotent
    with pytest.raises(DriverError, match="another size"):
        d.clone_replica("drive-a", "src", "drive-b", "dst", 2048)
    assert d.state.replicas == {("drive-a", "src"): 512, ("drive-b", "dst"): 1024}


def test_faults_fire_as_told() -> None:
    d = FakeDriver()
    d.fail("create_replica", times=2, when=lambda a: a["drive_id"] == "bad")
    d.create_replica("good", "r", 512)
    for _ in range(2):
        with pytest.raises(DriverError, match="injected"):
            d.create_replica("bad", "r", 512)
    d.create_replica("bad", "r", 512)
    assert ("bad", "r") in d.state.replicas
    d.fail("attach", error=TimeoutError("slow"))
    with pytest.raises(TimeoutError):
        d.attach("n1", "v", read_only=True)
    assert [op for op, _ in d.calls].count("create_replica") == 4


def test_the_daemon_keeps_fake_storage_in_its_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OSD_FAKE_DRIVER_STATE", raising=False)
    first = load("fake", tmp_path)
    first.probe_drive("n1", "/dev/sdb")
    first.format_drive("n1", "/dev/sdb", "drive-a")
    first.create_replica("drive-a", "r1", 4096)
    again = load("fake", tmp_path)  # a restarted daemon
    assert isinstance(again, FakeDriver)
    assert again.state.replicas == {("drive-a", "r1"): 4096}
    assert (tmp_path / "fake-driver.db").exists()


def test_the_state_file_is_written_entry_by_entry_and_old_json_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OSD_FAKE_DRIVER_STATE", raising=False)
    old = FakeState(
        devices={("n1", "/dev/sdb"): FakeDevice(4096, True, "drive-a")},
        replicas={("drive-a", "r1"): 4096, ("drive-a", "r2"): 512},
        snapshots={("drive-a", "s1"): "r1"},
        attachments={("n1", "v1"): True},
    )
    (tmp_path / "fake-driver.json").write_text(json.dumps(old.to_json()))
    driver = load("fake", tmp_path)
    assert isinstance(driver, FakeDriver)
    assert not (tmp_path / "fake-driver.json").exists()
    assert driver.state == old
    driver.delete_replica("drive-a", "r2")
    driver.create_replica("drive-a", "r3", 1024)
    driver.detach("n1", "v1")
    again = load("fake", tmp_path)
    assert isinstance(again, FakeDriver)
    assert again.state.replicas == {("drive-a", "r1"): 4096, ("drive-a", "r3"): 1024}
    assert again.state.devices == old.devices and again.state.snapshots == old.snapshots
    assert again.state.attachments == {}
    # The file holds rows, one per entry, not a dump rewritten on each change.
    with sqlite3.connect(tmp_path / "fake-driver.db") as db:
        assert db.execute("SELECT count(*) FROM replicas").fetchone() == (2,)


def test_the_call_log_is_bounded() -> None:
    d = FakeDriver()
    for i in range(2 * CALLS_KEPT + 1):
        d.detach("n1", f"v{i}")
    assert CALLS_KEPT <= len(d.calls) <= 2 * CALLS_KEPT
    assert d.calls[-1] == ("detach", {"node_address": "n1", "volume_id": f"v{2 * CALLS_KEPT}"})


def test_a_copy_carries_its_snapshots_and_a_purge_takes_them() -> None:
    d = FakeDriver()
    d.create_replica("drive-a", "r1", 512)
    d.create_snapshot("drive-a", "r1", "s1")
    d.create_snapshot("drive-a", "r1", "s2")
    d.create_replica("drive-a", "r2", 512)
    d.create_snapshot("drive-a", "r2", "s3")
    d.copy_replica("drive-a", "drive-b", "r1", 512)
    d.copy_replica("drive-a", "drive-b", "r1", 512)  # idempotent
    d.revert_replica("drive-b", "r1", "s1")
    d.revert_replica("drive-b", "r1", "s2")
    assert ("drive-b", "s3") not in d.state.snapshots  # another replica's snapshot stays
    d.purge_replica("drive-a", "r1")
    d.purge_replica("drive-a", "r1")  # purging what is gone is fine
    assert d.state.replicas == {("drive-a", "r2"): 512, ("drive-b", "r1"): 512}
    assert d.state.snapshots == {
        ("drive-a", "s3"): "r2",
        ("drive-b", "s1"): "r1",
        ("drive-b", "s2"): "r1",
    }


def test_a_chain_whose_data_was_deleted_copies_as_its_snapshots() -> None:
    d = FakeDriver()
    with pytest.raises(DriverError, match="no replica r1"):
        d.copy_replica("drive-a", "drive-b", "r1", 512)
    d.create_replica("drive-a", "r1", 512)
    d.create_snapshot("drive-a", "r1", "s1")
    d.delete_replica("drive-a", "r1")  # a deleted volume's snapshots stay
    assert d.state.snapshots == {("drive-a", "s1"): "r1"}
    d.copy_replica("drive-a", "drive-b", "r1", 512)
    assert d.state.replicas == {}
    assert d.state.snapshots == {("drive-a", "s1"): "r1", ("drive-b", "s1"): "r1"}


def test_a_copy_that_would_clash_with_another_replicas_snapshot_does_nothing() -> None:
    d = FakeDriver()
    d.create_replica("drive-a", "r1", 512)
    d.create_snapshot("drive-a", "r1", "s1")
    d.create_replica("drive-b", "other", 512)
    d.create_snapshot("drive-b", "other", "s1")
    before = (dict(d.state.replicas), dict(d.state.snapshots))
    with pytest.raises(DriverError, match="snapshot of other"):
        d.copy_replica("drive-a", "drive-b", "r1", 512)
    with pytest.raises(DriverError, match="snapshot of other"):
        d.copy_snapshots("drive-a", "r1", "drive-b", "r1")
    assert (d.state.replicas, d.state.snapshots) == before


def test_a_rebuilt_copy_takes_the_snapshots_of_the_copy_it_is_rebuilt_from() -> None:
    d = FakeDriver()
    d.create_replica("drive-a", "r1", 512)
    d.create_snapshot("drive-a", "r1", "s1")
    d.create_replica("drive-c", "r3", 512)
    d.copy_snapshots("drive-a", "r1", "drive-c", "r3")
    d.copy_snapshots("drive-a", "r1", "drive-c", "r3")  # idempotent
    d.revert_replica("drive-c", "r3", "s1")
    d.copy_snapshots("drive-a", "none", "drive-c", "r3")  # no snapshot: nothing to copy
    assert d.state.snapshots == {("drive-a", "s1"): "r1", ("drive-c", "s1"): "r3"}
