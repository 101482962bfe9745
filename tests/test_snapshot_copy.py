"""A snapshot on drives that share no blocks is a full copy, taken by a
SNAPSHOT_COPY job (over the wire, on SQLite and PostgreSQL; the fake driver
told to share no blocks, as a filesystem without reflink)."""

from __future__ import annotations

import grpc
import pytest

from osd.v1 import job_pb2 as jpb
from osd.v1 import volume_pb2 as pb
from osd.v1 import volume_pb2_grpc
from tests.conftest import RunningDaemon
from tests.factories import make_topology
from tests.test_jobs import assert_books, jobs_stub, wait_job
from tests.volume_helpers import GIB, counts, create, fails, volumes

Stub = volume_pb2_grpc.VolumeServiceStub
RW, RO = pb.ATTACH_MODE_READ_WRITE, pb.ATTACH_MODE_READ_ONLY


@pytest.fixture
def topology(daemon: RunningDaemon) -> tuple[str, list[str]]:
    daemon.driver.copying_snapshots = True
    cluster_id, nodes, _ = make_topology(daemon.store)
    return cluster_id, nodes


@pytest.fixture
def stub(daemon: RunningDaemon) -> Stub:
    return volumes(daemon)


@pytest.fixture
def volume(stub: Stub, topology: tuple[str, list[str]]) -> pb.Volume:
    return create(stub, topology[0], "vol", size="10G", replicas=2)


def start(stub: Stub, volume_id: str, name: str = "s1") -> pb.CreateSnapshotResponse:
    return stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=volume_id, name=name))


def attach(stub: Stub, volume_id: str, node_id: str, mode: int) -> pb.AttachVolumeResponse:
    return stub.AttachVolume(
        pb.AttachVolumeRequest(volume_id=volume_id, node_id=node_id, mode=mode)  # type: ignore[arg-type]
    )


def snapshot_state(stub: Stub, snapshot_id: str) -> int:
    return stub.InspectSnapshot(pb.InspectSnapshotRequest(snapshot_id=snapshot_id)).snapshot.state


def test_the_copy_is_a_job_and_the_volume_is_held_while_it_runs(
    daemon: RunningDaemon, stub: Stub, volume: pb.Volume, topology: tuple[str, list[str]]
) -> None:
    node = topology[1][0]
    daemon.driver.block("create_snapshot")
    resp = start(stub, volume.id)
    assert resp.created and resp.snapshot.state == pb.SNAPSHOT_STATE_CREATING
    job = resp.job
    assert job.kind == jpb.JOB_KIND_SNAPSHOT_COPY
    assert (job.target.kind, job.target.id) == (jpb.OBJECT_KIND_SNAPSHOT, resp.snapshot.id)
    assert [r.id for r in job.related] == [volume.id]
    assert job.progress.total_steps == 2 and job.progress.total_bytes == 2 * 10 * GIB
    assert daemon.driver.wait_blocked("create_snapshot")

    # The same create again answers the snapshot and its job, at once.
    again = start(stub, volume.id)
    assert (again.created, again.snapshot.id, again.job.id) == (False, resp.snapshot.id, job.id)
    # The volume is held: no writer, no resize, no delete; the snapshot cannot
    # be deleted but by cancelling its job.
    err = fails(
        stub.AttachVolume, pb.AttachVolumeRequest(volume_id=volume.id, node_id=node, mode=RW)
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_IN_PROGRESS")
    assert err.metadata["job_id"] == job.id
    err = fails(stub.DeleteVolume, pb.DeleteVolumeRequest(volume_id=volume.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_IN_PROGRESS")
    err = fails(stub.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=resp.snapshot.id))
    assert (err.reason, err.metadata["job_id"]) == ("SNAPSHOT_NOT_READY", job.id)
    # Reading it is fine.
    assert attach(stub, volume.id, node, RO).attached
    assert snapshot_state(stub, resp.snapshot.id) == pb.SNAPSHOT_STATE_CREATING

    daemon.driver.unblock("create_snapshot")
    done = wait_job(daemon, job.id)
    assert done.state == jpb.JOB_STATE_DONE, done.error
    assert done.progress.done_steps == 2 and done.progress.done_bytes == 2 * 10 * GIB
    assert snapshot_state(stub, resp.snapshot.id) == pb.SNAPSHOT_STATE_READY
    assert sorted(d for d, snap in daemon.driver.state.snapshots if snap == resp.snapshot.id) == (
        sorted(
            a.drive_id
            for a in stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume.id)).allocations
        )
    )
    # The volume is free again: a writer may attach.
    assert attach(stub, volume.id, node, RW).attachment.mode == RW
    assert (
        stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume.id)).volume.active_job_id == ""
    )
    assert_books(daemon.store)


def test_a_volume_attached_read_write_is_refused(
    daemon: RunningDaemon, stub: Stub, volume: pb.Volume, topology: tuple[str, list[str]]
) -> None:
    attach(stub, volume.id, topology[1][0], RW)
    before = counts(daemon)
    err = fails(stub.CreateSnapshot, pb.CreateSnapshotRequest(volume_id=volume.id, name="s1"))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_ATTACHED")
    assert err.metadata["node_id"] == topology[1][0]
    assert counts(daemon) == before
    listed = jobs_stub(daemon).ListJobs(jpb.ListJobsRequest()).jobs
    assert [j for j in listed if j.kind == jpb.JOB_KIND_SNAPSHOT_COPY] == []


def test_a_cancelled_copy_leaves_no_snapshot(
    daemon: RunningDaemon, stub: Stub, volume: pb.Volume
) -> None:
    before = counts(daemon)
    daemon.driver.block("create_snapshot")
    resp = start(stub, volume.id)
    assert daemon.driver.wait_blocked("create_snapshot")
    jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=resp.job.id))
    daemon.driver.unblock("create_snapshot")
    assert wait_job(daemon, resp.job.id).state == jpb.JOB_STATE_CANCELLED
    assert counts(daemon) == before
    assert daemon.driver.state.snapshots == {}
    err = fails(stub.InspectSnapshot, pb.InspectSnapshotRequest(snapshot_id=resp.snapshot.id))
    assert err.code == grpc.StatusCode.NOT_FOUND
    # The name is free again, and the volume may be deleted.
    daemon.driver.copying_snapshots = False
    assert start(stub, volume.id).snapshot.state == pb.SNAPSHOT_STATE_READY


def test_a_failed_copy_is_rolled_back_on_every_drive(
    daemon: RunningDaemon, stub: Stub, volume: pb.Volume
) -> None:
    before = counts(daemon)
    daemon.driver.fail("create_snapshot", when=lambda a: len(daemon.driver.state.snapshots) == 1)
    resp = start(stub, volume.id)
    failed = wait_job(daemon, resp.job.id)
    assert failed.state == jpb.JOB_STATE_FAILED
    assert failed.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert b"DRIVER_ERROR" in failed.error.details[0].value
    assert counts(daemon) == before
    assert daemon.driver.state.snapshots == {}
    assert (
        stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume.id)).volume.active_job_id == ""
    )
    assert_books(daemon.store)


def test_drives_that_share_blocks_take_a_snapshot_at_once(
    daemon: RunningDaemon, stub: Stub, volume: pb.Volume
) -> None:
    daemon.driver.copying_snapshots = False
    resp = start(stub, volume.id)
    assert resp.snapshot.state == pb.SNAPSHOT_STATE_READY
    assert not resp.HasField("job")
