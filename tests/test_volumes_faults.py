"""Volume invariants under concurrency, driver failures and crashes, on both stores."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import select, update

from osd.engine.drivers.fake import FakeDriver
from osd.engine.engine import Engine
from osd.store.db import Store
from osd.store.models import AllocationRow, DriveRow, SnapshotRow, VolumeRow
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon, running_daemon
from tests.factories import make_topology
from tests.helpers import error_of
from tests.volume_helpers import (
    GIB,
    books,
    counts,
    create,
    fails,
    mask,
    over_committed,
    replicated,
    volumes,
)


class Crash(Exception):
    """Stands for the daemon dying at this point: nothing catches it."""


def nth_call(n: int) -> Callable[[dict[str, Any]], bool]:
    seen: list[int] = []

    def when(_args: dict[str, Any]) -> bool:
        seen.append(1)
        return len(seen) == n

    return when


def restart(daemon: RunningDaemon, driver: FakeDriver) -> None:
    """What a daemon starting on the same store does before it serves."""
    engine = Engine(Store(daemon.database.url), driver)
    try:
        engine.start()
    finally:
        engine.close()


def race(n: int, call: Callable[[int], Any]) -> tuple[list[Any], list[grpc.RpcError]]:
    results: list[Any] = []
    errors: list[grpc.RpcError] = []
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results.append(call(i))
        except grpc.RpcError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_creates_of_one_name_make_one_volume(daemon: RunningDaemon) -> None:
    cluster_id, _, _ = make_topology(daemon.store)
    stub = volumes(daemon)
    req = pb.CreateVolumeRequest(
        cluster_id=cluster_id, name="race", size="1G", durability=replicated(3)
    )
    results, errors = race(8, lambda _i: stub.CreateVolume(req))
    assert errors == []
    assert sum(r.created for r in results) == 1
    assert len({r.volume.id for r in results}) == 1
    c = counts(daemon)
    assert (c.volumes, c.allocations) == (1, 3)
    assert books(daemon) == []


def test_concurrent_creates_never_over_commit_a_drive(daemon: RunningDaemon) -> None:
    # Three zones of one 10 GiB drive: room for three 3-copy volumes of 3 GiB.
    cluster_id, _, _ = make_topology(daemon.store, drives_per_node=1, drive_bytes=10 * GIB)
    stub = volumes(daemon)
    results, errors = race(
        8,
        lambda i: stub.CreateVolume(
            pb.CreateVolumeRequest(
                cluster_id=cluster_id, name=f"v{i}", size="3G", durability=replicated(3)
            )
        ),
    )
    assert len(results) == 3 and len(errors) == 5
    assert {error_of(e).reason for e in errors} == {"INSUFFICIENT_CAPACITY"}
    assert over_committed(daemon) == []
    assert counts(daemon).used_bytes == 27 * GIB
    assert books(daemon) == []


def test_a_driver_failing_halfway_through_a_replicated_create_leaks_nothing(
    daemon: RunningDaemon,
) -> None:
    cluster_id, _, _ = make_topology(daemon.store)
    stub = volumes(daemon)
    before = counts(daemon)
    daemon.driver.fail("create_replica", when=nth_call(2))
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=cluster_id, name="v", size="5G", durability=replicated(3)
        ),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRIVER_ERROR")
    assert counts(daemon) == before
    assert daemon.driver.state.replicas == {}
    assert books(daemon) == []
    # The name is free again and the space usable.
    assert create(stub, cluster_id, "v", size="5G").state == pb.VOLUME_STATE_UP


def test_a_create_a_crash_interrupted_is_finished_on_restart(daemon: RunningDaemon) -> None:
    cluster_id, _, _ = make_topology(daemon.store)
    stub = volumes(daemon)
    daemon.driver.fail("create_replica", when=nth_call(2), error=Crash("killed"))
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=cluster_id, name="v", size="5G", durability=replicated(3)
        ),
    )
    assert err.code == grpc.StatusCode.INTERNAL
    with daemon.store.read() as s:
        [row] = s.scalars(select(VolumeRow))
        assert row.state == pb.VOLUME_STATE_CREATING
        assert set(s.scalars(select(AllocationRow.state))) == {1}  # PENDING
    assert books(daemon) == []
    # A daemon that starts on the same store finishes the create.
    with running_daemon(daemon.database) as restarted:
        v = volumes(restarted).InspectVolume(pb.InspectVolumeRequest(volume_id=row.id))
        assert v.volume.state == pb.VOLUME_STATE_UP
        assert {a.state for a in v.allocations} == {2}  # ACTIVE
        assert len(restarted.driver.state.replicas) == 3
        assert books(restarted) == []


def test_a_create_whose_recovery_fails_is_undone(daemon: RunningDaemon) -> None:
    cluster_id, _, _ = make_topology(daemon.store)
    stub = volumes(daemon)
    daemon.driver.fail("create_replica", error=Crash("killed"))
    fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=cluster_id, name="v", size="5G", durability=replicated(3)
        ),
    )
    assert counts(daemon).volumes == 1
    driver = FakeDriver()
    driver.fail("create_replica", when=nth_call(3))
    restart(daemon, driver)
    c = counts(daemon)
    assert (c.volumes, c.allocations, c.used_bytes) == (0, 0, 0)
    assert driver.state.replicas == {}
    assert books(daemon) == []


@pytest.mark.parametrize("step", ["resize_replica", "delete_replica"])
def test_crashed_resizes_and_deletes_are_settled_on_restart(
    daemon: RunningDaemon, step: str
) -> None:
    cluster_id, _, _ = make_topology(daemon.store)
    stub = volumes(daemon)
    v = create(stub, cluster_id, "v", size="10G")
    daemon.driver.fail(step, when=nth_call(2), error=Crash("killed"))
    if step == "resize_replica":
        call, request = (
            stub.UpdateVolume,
            pb.UpdateVolumeRequest(volume_id=v.id, size="20G", update_mask=mask("size")),
        )
    else:
        call, request = stub.DeleteVolume, pb.DeleteVolumeRequest(volume_id=v.id)
    assert fails(call, request).code == grpc.StatusCode.INTERNAL
    assert books(daemon) == []
    with running_daemon(daemon.database) as restarted:
        c = counts(restarted)
        if step == "resize_replica":
            # Rolled back to the recorded size.
            detail = volumes(restarted).InspectVolume(pb.InspectVolumeRequest(volume_id=v.id))
            assert detail.volume.size_bytes == 10 * GIB
            assert [a.bytes for a in detail.allocations] == [10 * GIB] * 3
            assert {a.state for a in detail.allocations} == {2}
            assert c.used_bytes == 30 * GIB
        else:
            assert (c.volumes, c.allocations, c.used_bytes) == (0, 0, 0)
        assert books(restarted) == []


def test_crashed_snapshot_work_is_settled_on_restart(daemon: RunningDaemon) -> None:
    cluster_id, _, _ = make_topology(daemon.store)
    stub = volumes(daemon)
    v = create(stub, cluster_id, "v", size="1G")
    daemon.driver.fail("create_snapshot", when=nth_call(2), error=Crash("killed"))
    fails(stub.CreateSnapshot, pb.CreateSnapshotRequest(volume_id=v.id, name="s"))
    with daemon.store.read() as s:
        [snap] = s.scalars(select(SnapshotRow))
        assert snap.state == pb.SNAPSHOT_STATE_CREATING
    # The storage keeps its replicas across the restart: start an engine on the
    # same store and the same (fake) storage.
    restart(daemon, daemon.driver)
    got = stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=snap.id))
    assert got.snapshot.state == pb.SNAPSHOT_STATE_READY
    assert len(daemon.driver.state.snapshots) == 3
    assert books(daemon) == []


def test_osd_db_check_proves_the_books(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    from osd import cli

    cluster_id, _, drives = make_topology(daemon.store)
    create(volumes(daemon), cluster_id, "v", size="2G")
    argv = ["db", "check", "--database-url", daemon.database.url]
    assert cli.main(argv) == 0
    assert "balance" in capsys.readouterr().out
    with daemon.store.write() as s:
        s.execute(update(DriveRow).where(DriveRow.id == drives[0]).values(used_bytes=12345))
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert f"drive {drives[0]}: used_bytes 12345" in out
