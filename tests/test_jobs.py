"""JobService through the wire on both stores: the life of a job, pause,
resume, cancel, the limit of active jobs, listing.

The driver's ``block`` holds a job at an exact driver call, so each test
sees the state it asserts without timing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from osd import config
from osd.config import Settings
from osd.daemon import Daemon
from osd.engine.drivers.fake import FakeDriver
from osd.engine.engine import Engine
from osd.engine.jobs.kinds.drive_evacuate import DriveEvacuateSpec
from osd.engine.jobs.records import RecordError
from osd.enums import DriveState, JobKind, JobState, NodeState
from osd.store import allocations
from osd.store.db import Store
from osd.store.models import AllocationRow, DriveRow, JobRow, NodeRow, PoolRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import job_pb2_grpc, service_pb2_grpc
from osd.v1 import service_pb2 as spb
from tests.conftest import Database, RunningDaemon
from tests.factories import (
    GIB,
    make_drive,
    make_job_row,
    make_pool,
    make_topology,
    make_volume,
)
from tests.helpers import error_of

FINAL = (jpb.JOB_STATE_DONE, jpb.JOB_STATE_FAILED, jpb.JOB_STATE_CANCELLED)


# -- helpers other job and service tests use ---------------------------------------


def jobs_stub(d: RunningDaemon) -> job_pb2_grpc.JobServiceStub:
    return job_pb2_grpc.JobServiceStub(d.channel)


def service_stub(d: RunningDaemon) -> service_pb2_grpc.ServiceStub:
    return service_pb2_grpc.ServiceStub(d.channel)


def wait_job(
    d: RunningDaemon, job_id: str, states: tuple[int, ...] = FINAL, timeout: float = 60
) -> jpb.Job:
    """Polls InspectJob until the job is in one of ``states``."""
    stub = jobs_stub(d)
    deadline = time.monotonic() + timeout
    while True:
        job = stub.InspectJob(jpb.InspectJobRequest(job_id=job_id), timeout=10).job
        if job.state in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stayed {jpb.JobState.Name(job.state)}"
        time.sleep(0.02)


def assert_books(store: Store) -> None:
    """Used bytes equal the allocations, and no reservation is left PENDING."""
    with store.read() as s:
        assert allocations.check(s) == []
        assert list(s.scalars(select(AllocationRow).where(AllocationRow.state == 1))) == []


def drive_row(store: Store, drive_id: str) -> DriveRow:
    with store.read() as s:
        return s.get_one(DriveRow, drive_id)


def allocs_on(store: Store, drive_id: str) -> list[AllocationRow]:
    with store.read() as s:
        return list(s.scalars(select(AllocationRow).where(AllocationRow.drive_id == drive_id)))


def job_count(store: Store) -> int:
    with store.read() as s:
        return len(list(s.scalars(select(JobRow))))


@contextlib.contextmanager
def daemon_with(
    database: Database, driver: FakeDriver | None = None, **engine_args: int
) -> Iterator[RunningDaemon]:
    """A daemon on ``driver`` (a new FakeDriver by default) whose engine takes
    ``engine_args`` (e.g. max_jobs)."""
    driver = driver or FakeDriver()
    settings = Settings(
        grpc_listen="127.0.0.1:0",
        rest_enabled=False,
        database_url=database.url,
        workers=8,
        grace_seconds=2,
    )
    d = Daemon(settings, engine=Engine(Store(database.url), driver, **engine_args))
    d.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{d.grpc_port}")
    try:
        yield RunningDaemon(d, driver, channel, database)
    finally:
        channel.close()
        d.stop(grace=1)


def replace_setup(d: RunningDaemon, volumes: int = 3) -> tuple[str, str, str, list[str]]:
    """A 3-zone cluster with ``volumes`` 3-replica volumes that each have a copy on
    the first drive, and an empty target drive on the same node.

    Returns (cluster id, source drive, target drive, volume ids).
    """
    cluster_id, nodes, drives = make_topology(d.store)
    vols = [
        make_volume(d.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=d.driver)
        for _ in range(volumes)
    ]
    target = make_drive(d.store, nodes[0], "/dev/sdz", 200 * GIB)
    return cluster_id, drives[0], target, vols


def start_replace(d: RunningDaemon, source: str, target: str) -> spb.StartDriveReplaceResponse:
    return service_stub(d).StartDriveReplace(
        spb.StartDriveReplaceRequest(source_drive_id=source, target_drive_id=target), timeout=10
    )


# -- the life of a job -------------------------------------------------------------


def test_a_job_goes_pending_running_done(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon)
    daemon.driver.block("copy_replica")
    started = start_replace(daemon, source, target)
    assert started.started
    assert started.job.state == jpb.JOB_STATE_PENDING
    assert not started.job.HasField("start_time")
    assert started.job.pausable and started.job.cancellable
    assert daemon.driver.wait_blocked("copy_replica")
    running = wait_job(daemon, started.job.id, (jpb.JOB_STATE_RUNNING,))
    assert running.HasField("start_time") and not running.HasField("end_time")
    daemon.driver.unblock("copy_replica")
    done = wait_job(daemon, started.job.id)
    assert done.state == jpb.JOB_STATE_DONE
    assert done.progress.percent == 100
    assert done.progress.done_steps == done.progress.total_steps == 3
    assert done.progress.done_bytes == 3 * GIB
    assert done.HasField("end_time") and not done.HasField("error")
    assert not done.pausable and not done.cancellable
    assert done.generation > started.job.generation
    assert_books(daemon.store)


def test_pause_stops_at_a_safe_point_and_resume_finishes(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon)
    jobs = jobs_stub(daemon)
    daemon.driver.block("copy_replica")
    job_id = start_replace(daemon, source, target).job.id
    assert daemon.driver.wait_blocked("copy_replica")
    asked = jobs.PauseJob(jpb.PauseJobRequest(job_id=job_id), timeout=10)
    assert asked.job.state == jpb.JOB_STATE_RUNNING
    daemon.driver.unblock("copy_replica")
    paused = wait_job(daemon, job_id, (jpb.JOB_STATE_PAUSED,))
    assert paused.progress.done_steps == 1
    assert paused.progress.message == "paused"
    # Paused at a safe point: one allocation moved, nothing half done.
    assert len(allocs_on(daemon.store, target)) == 1
    assert len(allocs_on(daemon.store, source)) == 2
    assert_books(daemon.store)
    # Pausing again changes nothing.
    again = jobs.PauseJob(jpb.PauseJobRequest(job_id=job_id), timeout=10)
    assert again.job.state == jpb.JOB_STATE_PAUSED and again.generation == paused.generation
    resumed = jobs.ResumeJob(jpb.ResumeJobRequest(job_id=job_id), timeout=10)
    assert resumed.job.state == jpb.JOB_STATE_PENDING
    done = wait_job(daemon, job_id)
    assert done.state == jpb.JOB_STATE_DONE
    assert allocs_on(daemon.store, source) == []
    assert len(allocs_on(daemon.store, target)) == 3
    assert_books(daemon.store)


def test_cancel_of_a_running_job_settles_and_restores_the_source(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon)
    jobs = jobs_stub(daemon)
    daemon.driver.block("copy_replica")
    job_id = start_replace(daemon, source, target).job.id
    assert daemon.driver.wait_blocked("copy_replica")
    asked = jobs.CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=10)
    assert asked.job.state == jpb.JOB_STATE_RUNNING and asked.job.cancel_requested
    # Asking again changes nothing.
    again = jobs.CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=10)
    assert again.generation == asked.generation
    daemon.driver.unblock("copy_replica")
    cancelled = wait_job(daemon, job_id)
    assert cancelled.state == jpb.JOB_STATE_CANCELLED
    assert not cancelled.cancel_requested and cancelled.HasField("end_time")
    # The copy in flight finished; the contract keeps moved copies on the target.
    assert len(allocs_on(daemon.store, target)) == 1
    assert len(allocs_on(daemon.store, source)) == 2
    assert drive_row(daemon.store, source).state == 2  # ONLINE again
    assert drive_row(daemon.store, source).active_job_id is None
    assert drive_row(daemon.store, target).active_job_id is None
    assert_books(daemon.store)
    # A cancelled job can be cancelled again; not paused or resumed.
    assert jobs.CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=10).job.state == (
        jpb.JOB_STATE_CANCELLED
    )
    for call in (jobs.PauseJob, jobs.ResumeJob):
        with pytest.raises(grpc.RpcError) as info:
            call(jpb.PauseJobRequest(job_id=job_id), timeout=10)  # type: ignore[operator]
        err = error_of(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_FINISHED")


def test_cancel_of_a_paused_job_rolls_back_at_once(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon)
    jobs = jobs_stub(daemon)
    daemon.driver.block("copy_replica")
    job_id = start_replace(daemon, source, target).job.id
    assert daemon.driver.wait_blocked("copy_replica")
    jobs.PauseJob(jpb.PauseJobRequest(job_id=job_id), timeout=10)
    daemon.driver.unblock("copy_replica")
    wait_job(daemon, job_id, (jpb.JOB_STATE_PAUSED,))
    cancelled = jobs.CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=10)
    assert cancelled.job.state == jpb.JOB_STATE_CANCELLED
    assert drive_row(daemon.store, source).state == 2
    assert_books(daemon.store)


def test_a_finished_job_cannot_be_cancelled(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon, volumes=1)
    job_id = start_replace(daemon, source, target).job.id
    assert wait_job(daemon, job_id).state == jpb.JOB_STATE_DONE
    with pytest.raises(grpc.RpcError) as info:
        jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=10)
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_FINISHED")
    assert err.metadata["job_id"] == job_id


def test_a_driver_failure_fails_the_job_with_the_error(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon, volumes=1)
    daemon.driver.fail("copy_replica")
    job = wait_job(daemon, start_replace(daemon, source, target).job.id)
    assert job.state == jpb.JOB_STATE_FAILED
    assert job.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "injected failure" in job.error.message
    assert job.error.details[0].type_url.endswith("google.rpc.ErrorInfo")
    assert b"DRIVER_ERROR" in job.error.details[0].value
    assert_books(daemon.store)


def test_a_drive_add_job_is_not_pausable(daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(daemon.store)
    daemon.driver.block("format_drive")
    started = service_stub(daemon).StartDriveAdd(
        spb.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/sdq"), timeout=10
    )
    assert not started.job.pausable
    with pytest.raises(grpc.RpcError) as info:
        jobs_stub(daemon).PauseJob(jpb.PauseJobRequest(job_id=started.job.id), timeout=10)
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_PAUSABLE")
    daemon.driver.unblock("format_drive")
    assert wait_job(daemon, started.job.id).state == jpb.JOB_STATE_DONE


# -- a job's spec and checkpoint ---------------------------------------------------


def test_a_job_stores_its_kinds_spec_as_json(daemon: RunningDaemon) -> None:
    _, source, target, _ = replace_setup(daemon)
    daemon.driver.block("copy_replica")
    job_id = start_replace(daemon, source, target).job.id
    assert daemon.driver.wait_blocked("copy_replica")
    with daemon.store.read() as s:
        row = s.get_one(JobRow, job_id)
        spec, checkpoint = dict(row.spec), dict(row.checkpoint)
    assert spec == {
        "source_state": int(DriveState.ONLINE),
        "target_drive_id": target,
        "new_device": False,
        "device_path": drive_row(daemon.store, target).device_path,
        "address": spec["address"],
    }
    assert spec["address"]
    assert checkpoint["inflight"]["reservation_id"]
    assert checkpoint["inflight"]["target_drive_id"] == target
    daemon.driver.unblock("copy_replica")
    assert wait_job(daemon, job_id).state == jpb.JOB_STATE_DONE


def test_a_start_takes_the_kinds_request_or_its_json_form(daemon: RunningDaemon) -> None:
    _, _, drives = make_topology(daemon.store)
    jobs = daemon.daemon.engine.jobs
    with pytest.raises(TypeError, match="NODE_DRAIN"):
        jobs.start(JobKind.NODE_DRAIN, DriveEvacuateSpec(drives[0]))
    started = jobs.start(JobKind.DRIVE_EVACUATE, {"drive_id": drives[0]})
    assert started.started and started.job.target.id == drives[0]
    assert wait_job(daemon, started.job.id).state == jpb.JOB_STATE_DONE
    with pytest.raises(RecordError, match=r"NodeDrainSpec\.node_id: is missing"):
        jobs.start(JobKind.NODE_DRAIN, {"drive_id": drives[0]})
    assert job_count(daemon.store) == 1


def test_a_job_whose_stored_spec_cannot_be_read_fails(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _ = make_topology(daemon.store)
    job_id = make_job_row(daemon.store, cluster_id, nodes[0], state=int(JobState.PENDING))
    job = wait_job(daemon, job_id)
    assert job.state == jpb.JOB_STATE_FAILED
    assert b"JOB_ABANDONED" in job.error.details[0].value
    assert "NodeDrainSpec.node_id: is missing" in job.error.message
    with daemon.store.read() as s:
        assert s.get_one(NodeRow, nodes[0]).state == NodeState.ONLINE


# -- the limit of active jobs ------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_too_many_jobs_is_resource_exhausted(request: pytest.FixtureRequest, backend: str) -> None:
    database: Database = request.getfixturevalue(f"{backend}_database")
    database.reset()
    with daemon_with(database, max_jobs=1) as d:
        cluster_id, source, target, _ = replace_setup(d)
        pool = make_pool(d.store, cluster_id, "p1", [source, target])
        jobs, svc = jobs_stub(d), service_stub(d)
        d.driver.block("copy_replica")
        first = start_replace(d, source, target).job.id
        assert d.driver.wait_blocked("copy_replica")
        with pytest.raises(grpc.RpcError) as info:
            svc.StartPoolRebalance(spb.StartPoolRebalanceRequest(pool_id=pool), timeout=10)
        err = error_of(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_JOBS")
        assert job_count(d.store) == 1
        with d.store.read() as s:
            assert s.get_one(PoolRow, pool).active_job_id is None
        # A PAUSED job gives its slot back ...
        jobs.PauseJob(jpb.PauseJobRequest(job_id=first), timeout=10)
        d.driver.unblock("copy_replica")
        wait_job(d, first, (jpb.JOB_STATE_PAUSED,))
        # (A drive add held in its format step keeps the slot for as long as the
        # test needs; a rebalance with nothing to move could end at any time.)
        with d.store.read() as s:
            node_id = s.get_one(DriveRow, source).node_id
        d.driver.block("format_drive")
        second = svc.StartDriveAdd(
            spb.StartDriveAddRequest(node_id=node_id, device_path="/dev/sdq"), timeout=10
        )
        assert second.started
        assert d.driver.wait_blocked("format_drive")
        # ... and cannot resume while the limit is reached.
        with pytest.raises(grpc.RpcError) as info:
            jobs.ResumeJob(jpb.ResumeJobRequest(job_id=first), timeout=10)
        err = error_of(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_JOBS")
        d.driver.unblock("format_drive")
        assert wait_job(d, second.job.id).state == jpb.JOB_STATE_DONE
        jobs.ResumeJob(jpb.ResumeJobRequest(job_id=first), timeout=10)
        assert wait_job(d, first).state == jpb.JOB_STATE_DONE
        assert_books(d.store)


def test_the_max_jobs_setting_reaches_the_engine(tmp_path: Path) -> None:
    settings = config.load({"data_dir": str(tmp_path)}, {"OSD_MAX_JOBS": "7"})
    assert settings.max_jobs == 7
    daemon = Daemon(settings)
    try:
        assert daemon.engine.jobs.max_jobs == 7
    finally:
        daemon.engine.store.close()
    assert config.load({}, {}).max_jobs == 4
    with pytest.raises(config.SettingsError, match="--max-jobs"):
        config.load({"max_jobs": "0"}, {})


# -- inspect and list --------------------------------------------------------------


def test_inspect_refuses_bad_and_unknown_ids(daemon: RunningDaemon) -> None:
    jobs = jobs_stub(daemon)
    with pytest.raises(grpc.RpcError) as info:
        jobs.InspectJob(jpb.InspectJobRequest(job_id="nope"), timeout=10)
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in err.fields
    for call in (jobs.InspectJob, jobs.CancelJob, jobs.PauseJob, jobs.ResumeJob):
        with pytest.raises(grpc.RpcError) as info:
            call(jpb.InspectJobRequest(job_id="0" * 32), timeout=10)  # type: ignore[operator]
        err = error_of(info.value)
        assert err.code == grpc.StatusCode.NOT_FOUND and "job_id" in err.fields


def _add_jobs(d: RunningDaemon, n: int) -> tuple[str, list[str]]:
    """``n`` finished drive add jobs on one node (oldest first)."""
    cluster_id, nodes, _ = make_topology(d.store, zones=1, drives_per_node=0)
    ids = []
    for i in range(n):
        started = service_stub(d).StartDriveAdd(
            spb.StartDriveAddRequest(node_id=nodes[0], device_path=f"/dev/vd{i}"), timeout=10
        )
        ids.append(wait_job(d, started.job.id).id)
    return cluster_id, ids


def test_list_is_newest_first_paginated_and_filtered(daemon: RunningDaemon) -> None:
    cluster_id, ids = _add_jobs(daemon, 5)
    jobs = jobs_stub(daemon)
    seen: list[str] = []
    token = ""
    while True:
        page = jobs.ListJobs(jpb.ListJobsRequest(page_size=2, page_token=token), timeout=10)
        assert len(page.jobs) <= 2
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))

    def listed(**filters: object) -> list[str]:
        req = jpb.ListJobsRequest(**filters)  # type: ignore[arg-type]
        return [j.id for j in jobs.ListJobs(req, timeout=10).jobs]

    assert listed(kinds=[jpb.JOB_KIND_DRIVE_ADD]) == list(reversed(ids))
    assert listed(kinds=[jpb.JOB_KIND_POOL_REBALANCE]) == []
    assert listed(states=[jpb.JOB_STATE_DONE]) == list(reversed(ids))
    assert listed(states=[jpb.JOB_STATE_PENDING, jpb.JOB_STATE_RUNNING]) == []
    assert listed(cluster_id=cluster_id) == list(reversed(ids))
    assert listed(cluster_id="0" * 32) == []
    assert listed(target_kind=jpb.OBJECT_KIND_DRIVE) == list(reversed(ids))
    assert listed(target_kind=jpb.OBJECT_KIND_POOL) == []
    target = jobs.InspectJob(jpb.InspectJobRequest(job_id=ids[2]), timeout=10).job.target.id
    assert listed(target_id=target) == [ids[2]]


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"kinds": [99]}, "kinds"),
        ({"states": [42]}, "states"),
        ({"target_kind": 17}, "target_kind"),
        ({"target_id": "x"}, "target_id"),
        ({"cluster_id": "y"}, "cluster_id"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
    ],
)
def test_list_refuses_bad_filters(
    sqlite_daemon: RunningDaemon, filters: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        jobs_stub(sqlite_daemon).ListJobs(jpb.ListJobsRequest(**filters), timeout=10)  # type: ignore[arg-type]
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.fields
