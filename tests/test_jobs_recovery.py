"""Jobs survive their daemon: a daemon that starts resumes (or rolls back) every
job a gone daemon left RUNNING, so none stays RUNNING and no capacity leaks.

In process, on both stores: a daemon's job is handed to a new daemon as if
the first had died. As a process, on SQLite: ``osd serve`` is killed with
SIGKILL in the middle of a drive replace and started again on the same data
directory.
"""

from __future__ import annotations

import copy
import signal
import time
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select, update

from osd.engine.drivers.fake import FakeDriver, FakeState
from osd.engine.engine import Engine
from osd.engine.jobs.jobs import MAX_RESTARTS
from osd.enums import DriveState, JobKind, JobState
from osd.store import allocations
from osd.store.db import Store, sqlite_url
from osd.store.models import AllocationRow, DriveRow, JobRow, utcnow
from osd.v1 import job_pb2 as jpb
from osd.v1 import job_pb2_grpc, service_pb2_grpc
from osd.v1 import service_pb2 as spb
from tests.conftest import Database, RunningDaemon, running_daemon
from tests.factories import GIB, make_drive, make_topology, make_volume
from tests.test_daemon import serving
from tests.test_jobs import (
    FINAL,
    allocs_on,
    assert_books,
    daemon_with,
    drive_row,
    start_replace,
    wait_job,
)

GONE_OWNER = "host-that-is-gone:1:dead"


def _job(store: Store, job_id: str) -> JobRow:
    with store.read() as s:
        return s.get_one(JobRow, job_id)


def _orphan(store: Store, job_id: str) -> None:
    """Makes a job look like the daemon running it died an hour ago."""
    with store.write() as s:
        s.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(owner=GONE_OWNER, heartbeat_time=utcnow() - timedelta(hours=1))
        )


def test_a_new_daemon_resumes_the_move_in_flight(database: Database) -> None:
    with running_daemon(database) as first:
        _, source, target, _ = _replace_setup(first)
        first.driver.block("copy_replica")
        job_id = start_replace(first, source, target).job.id
        assert first.driver.wait_blocked("copy_replica")
        # The first daemon "dies" holding the job with a reservation in flight:
        # its runner stops (without waiting for the job) and its heartbeat ages.
        first.daemon.engine.jobs.stop(timeout=0)
        with first.store.read() as s:
            pending = list(s.scalars(select(AllocationRow).where(AllocationRow.state == 1)))
        assert [a.job_id for a in pending] == [job_id]
        _orphan(first.store, job_id)
        # The storage outlives the daemon: the next one sees the same replicas.
        storage = copy.deepcopy(first.driver.state)
        with daemon_with(database, _driver_with(storage)) as second:
            job = wait_job(second, job_id)
            assert job.state == jpb.JOB_STATE_DONE
            assert job.restart_count == 1
            # The first daemon's runner wakes up, finds the job taken, and changes nothing.
            first.driver.unblock("copy_replica")
            _wait_idle(first)
            assert _job(second.store, job_id).state == JobState.DONE
            assert allocs_on(second.store, source) == []
            assert len(allocs_on(second.store, target)) == 3
            assert drive_row(second.store, source).state == DriveState.EJECTED
            assert_books(second.store)


def _driver_with(state: FakeState) -> FakeDriver:
    """A driver over storage that outlived its daemon."""
    driver = FakeDriver()
    driver.state = state
    return driver


def _replace_setup(d: RunningDaemon) -> tuple[str, str, str, list[str]]:
    cluster_id, nodes, drives = make_topology(d.store)
    vols = [
        make_volume(d.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=d.driver)
        for _ in range(3)
    ]
    target = make_drive(d.store, nodes[0], "/dev/sdz", 200 * GIB)
    return cluster_id, drives[0], target, vols


def _recorded_replace(database: Database, cluster: str = "c1") -> tuple[str, str, str, FakeDriver]:
    """A replace job recorded by an engine that never ran it (PENDING)."""
    store = Store(database.url)
    driver = FakeDriver()
    try:
        cluster_id, nodes, drives = make_topology(store, cluster_name=cluster)
        for _ in range(2):
            make_volume(store, cluster_id, [drives[0], drives[2]], GIB, driver=driver)
        target = make_drive(store, nodes[0], "/dev/sdz", 200 * GIB)
        engine = Engine(store, driver)
        started = engine.jobs.start(
            JobKind.DRIVE_REPLACE, {"source_drive_id": drives[0], "target_drive_id": target}
        )
        return started.job.id, drives[0], target, driver
    finally:
        store.close()


def test_a_cancel_a_crash_interrupted_is_finished_at_start(database: Database) -> None:
    job_id, source, target, driver = _recorded_replace(database)
    store = Store(database.url)
    with store.write() as s:
        s.execute(update(JobRow).where(JobRow.id == job_id).values(cancel_requested=True))
    store.close()
    with daemon_with(database, driver) as d:
        job = wait_job(d, job_id)
        assert job.state == jpb.JOB_STATE_CANCELLED
        assert drive_row(d.store, source).state == DriveState.ONLINE
        assert drive_row(d.store, source).active_job_id is None
        assert drive_row(d.store, target).active_job_id is None
        assert len(allocs_on(d.store, source)) == 2
        assert_books(d.store)


def test_a_job_that_never_settles_is_failed_and_releases_its_reservations(
    database: Database,
) -> None:
    job_id, source, target, driver = _recorded_replace(database)
    store = Store(database.url)
    with store.write() as s:
        drive = s.get_one(DriveRow, target)
        allocations.reserve(
            s,
            drive_id=target,
            node_id=drive.node_id,
            nbytes=GIB,
            index=0,
            state=1,
            volume_id=allocs_on(store, source)[0].volume_id,
            job_id=job_id,
        )
        s.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(state=int(JobState.RUNNING), restart_count=MAX_RESTARTS)
        )
    _orphan(store, job_id)
    store.close()
    with daemon_with(database, driver) as d:
        job = wait_job(d, job_id)
        assert job.state == jpb.JOB_STATE_FAILED
        assert job.restart_count == MAX_RESTARTS + 1
        assert b"JOB_ABANDONED" in job.error.details[0].value
        assert drive_row(d.store, target).used_bytes == 0
        assert_books(d.store)


def test_a_live_peer_keeps_its_job_and_a_stale_one_loses_it(database: Database) -> None:
    """On a shared store a daemon adopts only jobs whose runner stopped beating."""
    live, _, _, _ = _recorded_replace(database, "c1")
    stale, _, _, driver = _recorded_replace(database, "c2")
    store = Store(database.url)
    with store.write() as s:
        s.execute(
            update(JobRow)
            .where(JobRow.id.in_([live, stale]))
            .values(state=int(JobState.RUNNING), owner="peer-host:4242:beating")
        )
        s.execute(update(JobRow).where(JobRow.id == live).values(heartbeat_time=utcnow()))
    _orphan(store, stale)
    store.close()
    with daemon_with(database, driver) as d:
        # Adoption at start is done before the daemon serves.
        kept = _job(d.store, live)
        assert (kept.owner, kept.restart_count) == ("peer-host:4242:beating", 0)
        assert _job(d.store, stale).restart_count == 1
        assert wait_job(d, stale).state == jpb.JOB_STATE_DONE
        assert _job(d.store, live).owner == "peer-host:4242:beating"


def test_a_job_left_by_a_clean_stop_is_resumed(database: Database) -> None:
    with running_daemon(database) as first:
        _, source, target, _ = _replace_setup(first)
        storage = first.driver.state
        first.driver.block("copy_replica")
        job_id = start_replace(first, source, target).job.id
        assert first.driver.wait_blocked("copy_replica")
        # The daemon stops: the job stops at its next safe point, left for the next one.
        first.daemon.engine.jobs.stop(timeout=0)
        first.driver.unblock("copy_replica")
        _wait_idle(first)
        left = _job(first.store, job_id)
        assert (left.state, left.owner, left.progress_done_steps) == (JobState.RUNNING, None, 1)
    with daemon_with(database, _driver_with(storage)) as second:
        job = wait_job(second, job_id)
        assert job.state == jpb.JOB_STATE_DONE
        assert job.restart_count == 1
        assert len(allocs_on(second.store, target)) == 3
        assert_books(second.store)


def _wait_idle(d: RunningDaemon) -> None:
    deadline = time.monotonic() + 30
    while d.daemon.engine.jobs.running():
        assert time.monotonic() < deadline
        time.sleep(0.02)


# -- a real crash ------------------------------------------------------------------


@pytest.mark.parametrize("storage_survives", [True, False], ids=["storage-kept", "storage-lost"])
def test_sigkill_mid_replace_then_restart_settles_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage_survives: bool
) -> None:
    """``osd serve`` is killed mid-replace; the restarted daemon finishes the job when
    the storage kept its state (the fake driver's state file), or fails it, rolled
    back, when the storage lost it; either way the books balance."""
    url = sqlite_url(tmp_path)
    store = Store(url)
    store.upgrade()
    state_file = tmp_path / "fake-driver.json"
    driver = FakeDriver(state_file=state_file)
    cluster_id, nodes, drives = make_topology(store)
    source = drives[0]
    for _ in range(12):
        make_volume(store, cluster_id, [source, drives[2], drives[4]], GIB, driver=driver)
    target = make_drive(store, nodes[0], "/dev/sdz", 200 * GIB)
    monkeypatch.setenv("OSD_FAKE_DRIVER_DELAY", "0.05")
    monkeypatch.setenv("OSD_FAKE_DRIVER_STATE", str(state_file))

    with serving(tmp_path) as (proc, port), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        job_id = (
            service_pb2_grpc.ServiceStub(ch)
            .StartDriveReplace(
                spb.StartDriveReplaceRequest(source_drive_id=source, target_drive_id=target),
                timeout=10,
            )
            .job.id
        )
        jobs = job_pb2_grpc.JobServiceStub(ch)
        deadline = time.monotonic() + 60
        while (
            jobs.InspectJob(
                jpb.InspectJobRequest(job_id=job_id), timeout=10
            ).job.progress.done_steps
            < 3
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    left = _job(store, job_id)
    assert left.state == JobState.RUNNING, "the kill was meant to land mid-job"
    moved_before = len(allocs_on(store, target))
    assert 3 <= moved_before < 12

    if not storage_survives:
        state_file = tmp_path / "fresh-driver.json"
        monkeypatch.setenv("OSD_FAKE_DRIVER_STATE", str(state_file))
    with serving(tmp_path) as (_proc, port), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        jobs = job_pb2_grpc.JobServiceStub(ch)
        deadline = time.monotonic() + 60
        while True:
            job = jobs.InspectJob(jpb.InspectJobRequest(job_id=job_id), timeout=10).job
            if job.state in FINAL:
                break
            assert time.monotonic() < deadline, jpb.JobState.Name(job.state)
            time.sleep(0.05)

    assert job.restart_count == 1
    if storage_survives:
        assert job.state == jpb.JOB_STATE_DONE
        assert allocs_on(store, source) == []
        assert len(allocs_on(store, target)) == 12
        assert drive_row(store, source).state == DriveState.EJECTED
    else:
        assert job.state == jpb.JOB_STATE_FAILED
        assert job.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        # What moved before the crash stays on the target; the rest is on the source.
        on_target = len(allocs_on(store, target))
        assert on_target >= moved_before
        assert on_target + len(allocs_on(store, source)) == 12
        assert drive_row(store, source).state == DriveState.ONLINE
    assert_books(store)
    store.close()


def test_the_fake_driver_state_file_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "driver.json"
    monkeypatch.setenv("OSD_FAKE_DRIVER_STATE", str(path))
    monkeypatch.setenv("OSD_FAKE_DRIVER_DELAY", "0")
    before = FakeDriver()
    before.add_device("n1", "/dev/sdb", 4096, has_data=True)
    before.format_drive("n1", "/dev/sdb", "drive-a")
    before.create_replica("drive-a", "r1", 512)
    before.copy_replica("drive-a", "drive-b", "r1", 512)
    before.create_snapshot("drive-a", "r1", "s1")
    before.attach("n1", "v1", True)
    after = FakeDriver()
    assert after.state == before.state
    assert after.state.devices[("n1", "/dev/sdb")].drive_id == "drive-a"
    assert FakeDriver(state_file=tmp_path / "other.json").state.replicas == {}
