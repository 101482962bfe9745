"""The volume jobs through the wire on both stores: a copy of a volume
(CreateVolume with source.volume_id, VOLUME_COPY), a replica count change
(VOLUME_REPLICA_CHANGE) and a placement change that moves copies
(VOLUME_MOVE), each to DONE, failed by the driver, cancelled, refused.

The driver's ``block`` holds a job at an exact driver call, so each test
sees the state it asserts without timing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import select, update

from osd.engine.drivers.fake import FakeDriver
from osd.store import allocations
from osd.store.models import AllocationRow, DriveRow, JobRow, NodeRow, VolumeRow, utcnow
from osd.v1 import common_pb2, volume_pb2_grpc
from osd.v1 import job_pb2 as jpb
from osd.v1 import volume_pb2 as pb
from tests.conftest import Database, RunningDaemon, running_daemon
from tests.factories import make_pool, make_topology
from tests.helpers import error_of
from tests.test_jobs import assert_books, daemon_with, job_count, jobs_stub, wait_job
from tests.volume_helpers import (
    GIB,
    counts,
    create,
    fails,
    generation,
    mask,
    replicated,
    volumes,
)

Topology = tuple[str, list[str], list[str]]
ACTIVE = common_pb2.ALLOCATION_STATE_ACTIVE
PENDING = common_pb2.ALLOCATION_STATE_PENDING


@pytest.fixture
def stub(daemon: RunningDaemon) -> volume_pb2_grpc.VolumeServiceStub:
    return volumes(daemon)


@pytest.fixture
def topo(daemon: RunningDaemon) -> Topology:
    """Three zones of one node with two 100 GiB drives each."""
    return make_topology(daemon.store)


def inspect(stub: volume_pb2_grpc.VolumeServiceStub, volume_id: str) -> pb.InspectVolumeResponse:
    return stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume_id))


def nth_call(n: int) -> Callable[[dict[str, Any]], bool]:
    """A fault filter that matches the ``n``-th call only."""
    seen: list[int] = []

    def when(_args: dict[str, Any]) -> bool:
        seen.append(1)
        return len(seen) == n

    return when


def replicas_of(daemon: RunningDaemon) -> set[tuple[str, str]]:
    """(drive id, replica id) of every copy the driver holds."""
    return set(daemon.driver.state.replicas)


def stored_copies(daemon: RunningDaemon) -> set[tuple[str, str]]:
    """(drive id, allocation id) of every volume allocation in the store."""
    with daemon.store.read() as s:
        return {
            (a.drive_id, a.id)
            for a in s.scalars(select(AllocationRow).where(AllocationRow.volume_id.is_not(None)))
        }


def copy_request(cluster_id: str, source_id: str, name: str = "copy", **kw: Any) -> Any:
    return pb.CreateVolumeRequest(
        cluster_id=cluster_id, name=name, source=pb.VolumeSource(volume_id=source_id), **kw
    )


def replicas_request(volume_id: str, replicas: int, **kw: Any) -> pb.UpdateVolumeRequest:
    paths = ["durability.replicas", *kw.pop("paths", [])]
    return pb.UpdateVolumeRequest(
        volume_id=volume_id, durability=replicated(replicas), update_mask=mask(*paths), **kw
    )


def placement_request(volume_id: str, pool_id: str, **kw: Any) -> pb.UpdateVolumeRequest:
    paths = ["placement", *kw.pop("paths", [])]
    return pb.UpdateVolumeRequest(
        volume_id=volume_id,
        placement=pb.Placement(pool_id=pool_id),
        update_mask=mask(*paths),
        **kw,
    )


# -- VOLUME_COPY -------------------------------------------------------------------


def test_a_copy_runs_to_done_and_the_volume_is_creating_until_then(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id = topo[0]
    source = create(stub, cluster_id, "src", size="2G", replicas=2)
    source_allocs = {a.id for a in inspect(stub, source.id).allocations}
    daemon.driver.block("clone_replica")
    resp = stub.CreateVolume(copy_request(cluster_id, source.id, durability=replicated(3)))
    job, vol = resp.job, resp.volume
    assert resp.created and job.kind == jpb.JOB_KIND_VOLUME_COPY
    assert job.state == jpb.JOB_STATE_PENDING and job.cancellable and job.pausable
    assert (job.target.kind, job.target.id) == (jpb.OBJECT_KIND_VOLUME, vol.id)
    assert [(r.kind, r.id) for r in job.related] == [(jpb.OBJECT_KIND_VOLUME, source.id)]
    assert vol.state == pb.VOLUME_STATE_CREATING and vol.active_job_id == job.id
    assert vol.size_bytes == 2 * GIB and vol.source.volume_id == source.id
    # The answer carries the create's generation (the runner may have moved the
    # store on since, taking the job).
    assert vol.generation == resp.generation > 0

    assert daemon.driver.wait_blocked("clone_replica")
    held = inspect(stub, vol.id)
    assert held.volume.state == pb.VOLUME_STATE_CREATING
    assert [a.state for a in held.allocations] == [PENDING] * 3
    # While it is read, the source can be neither deleted nor resized; the copy
    # cannot be deleted before its job ends.
    assert inspect(stub, source.id).volume.active_job_id == job.id
    for call, req in (
        (stub.DeleteVolume, pb.DeleteVolumeRequest(volume_id=source.id)),
        (stub.DeleteVolume, pb.DeleteVolumeRequest(volume_id=vol.id)),
        (
            stub.UpdateVolume,
            pb.UpdateVolumeRequest(volume_id=source.id, size="3G", update_mask=mask("size")),
        ),
    ):
        err = fails(call, req)
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_IN_PROGRESS")
    assert_books_balanced(daemon)
    daemon.driver.unblock("clone_replica")

    done = wait_job(daemon, job.id)
    assert done.state == jpb.JOB_STATE_DONE
    assert done.progress.done_steps == done.progress.total_steps == 4
    assert done.progress.done_bytes == 3 * 2 * GIB
    copy = inspect(stub, vol.id)
    assert copy.volume.state == pb.VOLUME_STATE_UP and copy.volume.active_job_id == ""
    assert copy.volume.generation > vol.generation
    assert [a.index for a in copy.allocations] == [0, 1, 2]
    assert all(a.state == ACTIVE and a.bytes == 2 * GIB for a in copy.allocations)
    assert len({a.zone for a in copy.allocations}) == 3
    assert inspect(stub, source.id).volume.active_job_id == ""
    # Every copy was filled from a copy of the source.
    clones = [args for op, args in daemon.driver.calls if op == "clone_replica"]
    assert {c["source_replica_id"] for c in clones} <= source_allocs
    assert {(c["target_drive_id"], c["target_replica_id"]) for c in clones} == {
        (a.drive_id, a.id) for a in copy.allocations
    }
    assert replicas_of(daemon) == stored_copies(daemon)
    assert_books(daemon.store)

    # The same request again returns the volume and its (finished) job.
    again = stub.CreateVolume(copy_request(cluster_id, source.id, durability=replicated(3)))
    assert not again.created and again.volume.id == vol.id
    assert (again.job.id, again.job.state) == (job.id, jpb.JOB_STATE_DONE)
    # The copy is a volume of its own: deleting the source leaves it.
    stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=source.id))
    assert inspect(stub, vol.id).volume.state == pb.VOLUME_STATE_UP


def test_two_copies_of_one_source_share_its_mark(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    source = create(stub, topo[0], "src", replicas=2)
    daemon.driver.block("clone_replica")
    first = stub.CreateVolume(copy_request(topo[0], source.id, "a")).job
    second = stub.CreateVolume(copy_request(topo[0], source.id, "b")).job
    assert inspect(stub, source.id).volume.active_job_id == first.id
    daemon.driver.unblock("clone_replica")
    assert wait_job(daemon, first.id).state == jpb.JOB_STATE_DONE
    assert wait_job(daemon, second.id).state == jpb.JOB_STATE_DONE
    assert inspect(stub, source.id).volume.active_job_id == ""
    assert_books(daemon.store)


def test_a_driver_failure_mid_copy_rolls_the_copy_back(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    source = create(stub, topo[0], "src", replicas=2)
    before, replicas = counts(daemon), replicas_of(daemon)
    daemon.driver.fail("clone_replica", when=nth_call(2))
    resp = stub.CreateVolume(copy_request(topo[0], source.id, durability=replicated(3)))
    job = wait_job(daemon, resp.job.id)
    assert job.state == jpb.JOB_STATE_FAILED
    assert job.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert b"DRIVER_ERROR" in job.error.details[0].value
    err = fails(stub.InspectVolume, pb.InspectVolumeRequest(volume_id=resp.volume.id))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert counts(daemon) == before and replicas_of(daemon) == replicas
    assert inspect(stub, source.id).volume.active_job_id == ""
    assert_books(daemon.store)


def test_cancelling_a_copy_rolls_it_back(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    source = create(stub, topo[0], "src", replicas=2)
    before, replicas = counts(daemon), replicas_of(daemon)
    daemon.driver.block("clone_replica")
    resp = stub.CreateVolume(copy_request(topo[0], source.id))
    assert daemon.driver.wait_blocked("clone_replica")
    asked = jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=resp.job.id))
    assert asked.job.state == jpb.JOB_STATE_RUNNING and asked.job.cancel_requested
    daemon.driver.unblock("clone_replica")
    assert wait_job(daemon, resp.job.id).state == jpb.JOB_STATE_CANCELLED
    assert counts(daemon) == before and replicas_of(daemon) == replicas
    assert inspect(stub, source.id).volume.active_job_id == ""
    assert_books(daemon.store)


def test_copies_that_cannot_be_made_are_refused_writing_nothing(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id = topo[0]
    source = create(stub, cluster_id, "src", size="2G", replicas=2)
    before, gen = counts(daemon), generation(daemon)
    err = fails(stub.CreateVolume, copy_request(cluster_id, "ab" * 16))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["source.volume_id"])
    err = fails(stub.CreateVolume, copy_request(cluster_id, source.id, size="1G"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["size"])
    err = fails(stub.CreateVolume, copy_request(cluster_id, source.id, durability=replicated(4)))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLACEMENT_IMPOSSIBLE")
    assert (err.metadata["needed"], err.metadata["available"]) == ("4", "3")
    with daemon.store.write() as s:
        s.get_one(VolumeRow, source.id).state = pb.VOLUME_STATE_DOWN
    gen = generation(daemon)
    err = fails(stub.CreateVolume, copy_request(cluster_id, source.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SOURCE_NOT_AVAILABLE")
    assert err.metadata["volume_id"] == source.id
    assert counts(daemon) == before and generation(daemon) == gen
    assert job_count(daemon.store) == 0


# -- VOLUME_REPLICA_CHANGE ---------------------------------------------------------


def test_more_replicas_are_placed_reserved_created_and_activated(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="4G", replicas=2)
    kept = {(a.id, a.drive_id) for a in inspect(stub, v.id).allocations}
    daemon.driver.block("create_replica")
    resp = stub.UpdateVolume(replicas_request(v.id, 3, labels={"a": "b"}, paths=["labels"]))
    job = resp.job
    assert job.kind == jpb.JOB_KIND_VOLUME_REPLICA_CHANGE and job.state == jpb.JOB_STATE_PENDING
    assert (job.target.kind, job.target.id) == (jpb.OBJECT_KIND_VOLUME, v.id)
    # The volume keeps its count until the job is done; the other fields changed.
    assert resp.volume.durability.replicas == 2 and resp.volume.active_job_id == job.id
    assert dict(resp.volume.labels) == {"a": "b"}

    assert daemon.driver.wait_blocked("create_replica")
    held = inspect(stub, v.id)
    assert [a.state for a in held.allocations] == [ACTIVE, ACTIVE, PENDING]
    assert held.volume.state == pb.VOLUME_STATE_UP
    err = fails(stub.UpdateVolume, replicas_request(v.id, 4))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_IN_PROGRESS")
    assert_books_balanced(daemon)
    daemon.driver.unblock("create_replica")

    assert wait_job(daemon, job.id).state == jpb.JOB_STATE_DONE
    after = inspect(stub, v.id)
    assert after.volume.durability.replicas == 3 and after.volume.active_job_id == ""
    assert after.volume.state == pb.VOLUME_STATE_UP
    assert after.volume.usage.allocated_bytes == after.volume.usage.provisioned_bytes == 12 * GIB
    assert [a.index for a in after.allocations] == [0, 1, 2]
    assert all(a.state == ACTIVE and a.bytes == 4 * GIB for a in after.allocations)
    assert len({a.zone for a in after.allocations}) == 3
    assert kept <= {(a.id, a.drive_id) for a in after.allocations}
    assert replicas_of(daemon) == stored_copies(daemon)
    assert_books(daemon.store)


def test_fewer_replicas_release_the_copies_that_go(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="4G", replicas=3)
    used = counts(daemon).used_bytes
    resp = stub.UpdateVolume(replicas_request(v.id, 2))
    assert resp.job.kind == jpb.JOB_KIND_VOLUME_REPLICA_CHANGE
    assert wait_job(daemon, resp.job.id).state == jpb.JOB_STATE_DONE
    after = inspect(stub, v.id)
    assert after.volume.durability.replicas == 2 and after.volume.state == pb.VOLUME_STATE_UP
    assert [a.index for a in after.allocations] == [0, 1]
    assert len({a.zone for a in after.allocations}) == 2
    assert counts(daemon).used_bytes == used - 4 * GIB
    assert replicas_of(daemon) == stored_copies(daemon)
    assert_books(daemon.store)


def test_a_driver_failure_mid_replica_change_rolls_it_back(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    cluster_id, _, _ = make_topology(daemon.store, zones=4)
    v = create(stub, cluster_id, "v", replicas=2)
    before, replicas, allocs = counts(daemon), replicas_of(daemon), stored_copies(daemon)
    daemon.driver.fail("create_replica", when=nth_call(2))
    job = wait_job(daemon, stub.UpdateVolume(replicas_request(v.id, 4)).job.id)
    assert job.state == jpb.JOB_STATE_FAILED
    assert b"DRIVER_ERROR" in job.error.details[0].value
    after = inspect(stub, v.id).volume
    assert after.durability.replicas == 2 and after.active_job_id == ""
    assert after.state == pb.VOLUME_STATE_UP
    assert counts(daemon) == before and stored_copies(daemon) == allocs
    assert replicas_of(daemon) == replicas
    assert_books(daemon.store)


def test_cancelling_a_replica_change_rolls_it_back(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", replicas=2)
    before, replicas = counts(daemon), replicas_of(daemon)
    daemon.driver.block("create_replica")
    job_id = stub.UpdateVolume(replicas_request(v.id, 3)).job.id
    assert daemon.driver.wait_blocked("create_replica")
    jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=job_id))
    daemon.driver.unblock("create_replica")
    assert wait_job(daemon, job_id).state == jpb.JOB_STATE_CANCELLED
    after = inspect(stub, v.id).volume
    assert after.durability.replicas == 2 and after.active_job_id == ""
    assert counts(daemon) == before and replicas_of(daemon) == replicas
    assert_books(daemon.store)


def test_a_paused_replica_change_resumes_to_done(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    cluster_id, _, _ = make_topology(daemon.store, zones=4)
    v = create(stub, cluster_id, "v", replicas=2)
    jobs = jobs_stub(daemon)
    daemon.driver.block("create_replica")
    job_id = stub.UpdateVolume(replicas_request(v.id, 4)).job.id
    assert daemon.driver.wait_blocked("create_replica")
    jobs.PauseJob(jpb.PauseJobRequest(job_id=job_id))
    daemon.driver.unblock("create_replica")
    paused = wait_job(daemon, job_id, (jpb.JOB_STATE_PAUSED,))
    assert paused.progress.done_steps == 1
    held = inspect(stub, v.id)
    assert held.volume.active_job_id == job_id and held.volume.durability.replicas == 2
    assert sorted(a.state for a in held.allocations) == [PENDING, PENDING, ACTIVE, ACTIVE]
    assert_books_balanced(daemon)
    jobs.ResumeJob(jpb.ResumeJobRequest(job_id=job_id))
    assert wait_job(daemon, job_id).state == jpb.JOB_STATE_DONE
    after = inspect(stub, v.id)
    assert after.volume.durability.replicas == 4
    assert len({a.zone for a in after.allocations}) == 4
    assert_books(daemon.store)


def test_the_tail_copy_stays_the_last_copy_whatever_the_count(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    cluster_id, _, drives = make_topology(daemon.store, zones=4)
    main = make_pool(daemon.store, cluster_id, "main", drives[:6])
    tail = make_pool(daemon.store, cluster_id, "tail", drives[6:])
    v = create(
        stub, cluster_id, "v", replicas=3, placement=pb.Placement(pool_id=main, tail_pool_id=tail)
    )
    tail_copy = inspect(stub, v.id).allocations[2]
    assert tail_copy.drive_id in drives[6:]
    for replicas in (4, 2):
        job = stub.UpdateVolume(replicas_request(v.id, replicas)).job
        assert wait_job(daemon, job.id).state == jpb.JOB_STATE_DONE
        allocs = inspect(stub, v.id).allocations
        assert [a.index for a in allocs] == list(range(replicas))
        assert (allocs[-1].id, allocs[-1].drive_id) == (tail_copy.id, tail_copy.drive_id)
        assert all(a.drive_id in drives[:6] for a in allocs[:-1])
        assert len({a.zone for a in allocs}) == replicas
    assert replicas_of(daemon) == stored_copies(daemon)
    assert_books(daemon.store)


def test_more_replicas_than_zones_is_refused_before_any_job(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", replicas=3)
    before, gen = counts(daemon), generation(daemon)
    err = fails(stub.UpdateVolume, replicas_request(v.id, 4, name="renamed", paths=["name"]))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLACEMENT_IMPOSSIBLE")
    assert err.metadata["field"] == "durability.replicas"
    assert (err.metadata["needed"], err.metadata["available"]) == ("4", "3")
    assert counts(daemon) == before and generation(daemon) == gen
    assert job_count(daemon.store) == 0
    after = inspect(stub, v.id).volume
    assert (after.name, after.durability.replicas, after.active_job_id) == ("v", 3, "")


def test_a_job_and_a_size_change_are_not_one_call(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", replicas=2)
    gen = generation(daemon)
    err = fails(stub.UpdateVolume, replicas_request(v.id, 3, size="2G", paths=["size"]))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask"])
    assert generation(daemon) == gen and job_count(daemon.store) == 0


# -- VOLUME_MOVE -------------------------------------------------------------------


def move_setup(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub
) -> tuple[pb.Volume, str, list[str]]:
    """Three zones of two nodes of one drive; a 3-copy volume; a pool of the drives
    that hold none of its copies. Returns (volume, pool id, the pool's drives)."""
    cluster_id, _, drives = make_topology(daemon.store, nodes_per_zone=2, drives_per_node=1)
    v = create(stub, cluster_id, "v", size="2G", replicas=3)
    held = {a.drive_id for a in inspect(stub, v.id).allocations}
    free = [d for d in drives if d not in held]
    return v, make_pool(daemon.store, cluster_id, "elsewhere", free), free


def test_a_placement_the_copies_do_not_obey_moves_them(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    v, pool, free = move_setup(daemon, stub)
    old = {a.id: a.drive_id for a in inspect(stub, v.id).allocations}
    daemon.driver.block("copy_replica")
    resp = stub.UpdateVolume(placement_request(v.id, pool))
    job = resp.job
    assert job.kind == jpb.JOB_KIND_VOLUME_MOVE and job.state == jpb.JOB_STATE_PENDING
    assert (job.target.kind, job.target.id) == (jpb.OBJECT_KIND_VOLUME, v.id)
    # The new placement is recorded once the copies obey it.
    assert resp.volume.placement.pool_id == "" and resp.volume.active_job_id == job.id

    assert daemon.driver.wait_blocked("copy_replica")
    held = inspect(stub, v.id)
    assert sorted(a.state for a in held.allocations) == [PENDING] * 3 + [ACTIVE] * 3
    assert held.volume.state == pb.VOLUME_STATE_UP
    assert_books_balanced(daemon)
    daemon.driver.unblock("copy_replica")

    done = wait_job(daemon, job.id)
    assert done.state == jpb.JOB_STATE_DONE
    assert done.progress.done_bytes == 3 * 2 * GIB
    after = inspect(stub, v.id)
    assert after.volume.placement.pool_id == pool and after.volume.active_job_id == ""
    assert after.volume.state == pb.VOLUME_STATE_UP
    # Each copy kept its allocation (its name in the driver) and moved into the pool.
    assert {a.id for a in after.allocations} == set(old)
    assert {a.drive_id for a in after.allocations} == set(free)
    assert all(a.state == ACTIVE for a in after.allocations)
    assert len({a.zone for a in after.allocations}) == 3
    assert replicas_of(daemon) == stored_copies(daemon)
    assert_books(daemon.store)


def test_only_the_copies_that_do_not_obey_move(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    v, _, free = move_setup(daemon, stub)
    allocs = inspect(stub, v.id).allocations
    stay = {a.id: a.drive_id for a in allocs[:2]}
    moving = allocs[2]
    # The pool holds two of the copies' drives and, in the third zone, another drive.
    spare = next(d for d in free if daemon_zone(daemon, d) == moving.zone)
    pool = make_pool(daemon.store, v.cluster_id, "mixed", [*stay.values(), spare])
    job = wait_job(daemon, stub.UpdateVolume(placement_request(v.id, pool)).job.id)
    assert job.state == jpb.JOB_STATE_DONE and job.progress.total_steps == 2
    after = {a.id: a.drive_id for a in inspect(stub, v.id).allocations}
    assert after == {**stay, moving.id: spare}
    assert [op for op, _ in daemon.driver.calls].count("copy_replica") == 1
    assert_books(daemon.store)


def daemon_zone(daemon: RunningDaemon, drive_id: str) -> str:
    with daemon.store.read() as s:
        return s.get_one(NodeRow, s.get_one(DriveRow, drive_id).node_id).zone


def test_a_driver_failure_mid_move_rolls_it_back(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    v, pool, _ = move_setup(daemon, stub)
    before, replicas, allocs = counts(daemon), replicas_of(daemon), stored_copies(daemon)
    daemon.driver.fail("copy_replica", when=nth_call(2))
    job = wait_job(daemon, stub.UpdateVolume(placement_request(v.id, pool)).job.id)
    assert job.state == jpb.JOB_STATE_FAILED
    assert b"DRIVER_ERROR" in job.error.details[0].value
    after = inspect(stub, v.id).volume
    assert after.placement.pool_id == "" and after.active_job_id == ""
    assert after.state == pb.VOLUME_STATE_UP
    assert counts(daemon) == before and stored_copies(daemon) == allocs
    assert replicas_of(daemon) == replicas
    assert_books(daemon.store)


def test_cancelling_a_move_rolls_it_back(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    v, pool, _ = move_setup(daemon, stub)
    before, replicas, allocs = counts(daemon), replicas_of(daemon), stored_copies(daemon)
    daemon.driver.block("copy_replica")
    job_id = stub.UpdateVolume(placement_request(v.id, pool)).job.id
    assert daemon.driver.wait_blocked("copy_replica")
    jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=job_id))
    daemon.driver.unblock("copy_replica")
    assert wait_job(daemon, job_id).state == jpb.JOB_STATE_CANCELLED
    assert inspect(stub, v.id).volume.placement.pool_id == ""
    assert counts(daemon) == before and stored_copies(daemon) == allocs
    assert replicas_of(daemon) == replicas
    assert_books(daemon.store)


def test_a_switched_move_can_no_longer_be_cancelled(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    v, pool, _ = move_setup(daemon, stub)
    daemon.driver.block("purge_replica")
    job_id = stub.UpdateVolume(placement_request(v.id, pool)).job.id
    assert daemon.driver.wait_blocked("purge_replica")
    running = jobs_stub(daemon).InspectJob(jpb.InspectJobRequest(job_id=job_id)).job
    assert running.state == jpb.JOB_STATE_RUNNING and not running.cancellable
    assert inspect(stub, v.id).volume.placement.pool_id == pool
    with pytest.raises(grpc.RpcError) as info:
        jobs_stub(daemon).CancelJob(jpb.CancelJobRequest(job_id=job_id))
    assert error_reason(info.value) == "JOB_NOT_CANCELLABLE"
    daemon.driver.unblock("purge_replica")
    assert wait_job(daemon, job_id).state == jpb.JOB_STATE_DONE
    assert replicas_of(daemon) == stored_copies(daemon)
    assert_books(daemon.store)


def error_reason(err: grpc.RpcError) -> str:
    return error_of(err).reason


def test_a_move_with_nowhere_to_go_is_refused_before_any_job(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    v, _, free = move_setup(daemon, stub)
    two_zones = make_pool(daemon.store, v.cluster_id, "two", free[:2])
    before, gen = counts(daemon), generation(daemon)
    err = fails(stub.UpdateVolume, placement_request(v.id, two_zones))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLACEMENT_IMPOSSIBLE")
    assert (err.metadata["needed"], err.metadata["available"]) == ("3", "2")
    assert counts(daemon) == before and generation(daemon) == gen
    assert job_count(daemon.store) == 0
    assert inspect(stub, v.id).volume.placement.pool_id == ""


# -- a daemon that goes away -------------------------------------------------------


def test_a_new_daemon_resumes_a_copy_its_predecessor_left(database: Database) -> None:
    with running_daemon(database) as first:
        stub = volumes(first)
        cluster_id, _, _ = make_topology(first.store)
        source = create(stub, cluster_id, "src", replicas=2)
        first.driver.block("clone_replica")
        resp = stub.CreateVolume(copy_request(cluster_id, source.id, durability=replicated(3)))
        assert first.driver.wait_blocked("clone_replica")
        # The first daemon "dies" in the middle of the copy: its runner stops
        # without waiting for the job, and its heartbeat ages.
        first.daemon.engine.jobs.stop(timeout=0)
        with first.store.write() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == resp.job.id)
                .values(owner="gone:1:dead", heartbeat_time=utcnow() - timedelta(hours=1))
            )
        driver = FakeDriver()
        driver.state = copy.deepcopy(first.driver.state)  # the storage outlives the daemon
        with daemon_with(database, driver) as second:
            job = wait_job(second, resp.job.id)
            assert (job.state, job.restart_count) == (jpb.JOB_STATE_DONE, 1)
            after = inspect(volumes(second), resp.volume.id)
            assert after.volume.state == pb.VOLUME_STATE_UP and after.volume.active_job_id == ""
            assert all(a.state == ACTIVE for a in after.allocations)
            assert replicas_of(second) == stored_copies(second)
            first.driver.unblock("clone_replica")
            assert_books(second.store)


def test_a_copy_left_without_its_job_is_undone_at_start(database: Database) -> None:
    with running_daemon(database) as first:
        stub = volumes(first)
        cluster_id, _, _ = make_topology(first.store)
        source = create(stub, cluster_id, "src", replicas=2)
        before = counts(first)
        first.driver.block("clone_replica")
        resp = stub.CreateVolume(copy_request(cluster_id, source.id))
        assert first.driver.wait_blocked("clone_replica")
        first.daemon.engine.jobs.stop(timeout=0)
        # The job ended without settling its volume (as one abandoned does).
        with first.store.write() as s:
            s.execute(update(JobRow).values(state=int(jpb.JOB_STATE_FAILED), owner=None))
            s.get_one(VolumeRow, resp.volume.id).active_job_id = None
        with daemon_with(database, FakeDriver()) as second:
            err = fails(
                volumes(second).InspectVolume, pb.InspectVolumeRequest(volume_id=resp.volume.id)
            )
            assert err.code == grpc.StatusCode.NOT_FOUND
            assert counts(second) == before
            assert_books(second.store)
        first.driver.unblock("clone_replica")


# -- the limit of active jobs ------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_volume_jobs_answer_too_many_jobs_writing_nothing(
    request: pytest.FixtureRequest, backend: str
) -> None:
    database: Database = request.getfixturevalue(f"{backend}_database")
    database.reset()
    with daemon_with(database, max_jobs=1) as d:
        stub = volumes(d)
        cluster_id, _, drives = make_topology(d.store, zones=4)
        busy = create(stub, cluster_id, "busy", replicas=2)
        other = create(stub, cluster_id, "other", replicas=2)
        d.driver.block("create_replica")
        first = stub.UpdateVolume(replicas_request(busy.id, 3)).job
        assert d.driver.wait_blocked("create_replica")
        held = {a.drive_id for a in inspect(stub, other.id).allocations}
        pool = make_pool(d.store, cluster_id, "p", [x for x in drives if x not in held])
        before, gen = counts(d), generation(d)
        for call, req in (
            (stub.UpdateVolume, replicas_request(other.id, 3, labels={"x": "y"}, paths=["labels"])),
            (stub.UpdateVolume, placement_request(other.id, pool)),
            (stub.CreateVolume, copy_request(cluster_id, other.id)),
        ):
            err = fails(call, req)
            assert (err.code, err.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_JOBS",
            ), req
        assert counts(d) == before and generation(d) == gen and job_count(d.store) == 1
        unchanged = inspect(stub, other.id).volume
        assert dict(unchanged.labels) == {} and unchanged.active_job_id == ""
        assert unchanged.placement.pool_id == ""
        d.driver.unblock("create_replica")
        assert wait_job(d, first.id).state == jpb.JOB_STATE_DONE
        assert_books(d.store)


# -- helpers -----------------------------------------------------------------------


def assert_books_balanced(daemon: RunningDaemon) -> None:
    """Used bytes equal the allocations (reservations included) while a job runs."""
    with daemon.store.read() as s:
        assert allocations.check(s) == []
        jobs = {j.id for j in s.scalars(select(JobRow))}
        pending = s.scalars(select(AllocationRow).where(AllocationRow.state == PENDING))
        assert all(a.job_id in jobs for a in pending)


def test_a_single_copy_volume_becomes_replicated(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="4G", replicas=None)
    assert v.durability.type == pb.DURABILITY_TYPE_NONE
    [first] = inspect(stub, v.id).allocations
    resp = stub.UpdateVolume(replicas_request(v.id, 3))
    assert resp.job.kind == jpb.JOB_KIND_VOLUME_REPLICA_CHANGE
    # Until the switch it is the single copy it was.
    assert resp.volume.durability.type == pb.DURABILITY_TYPE_NONE
    assert wait_job(daemon, resp.job.id).state == jpb.JOB_STATE_DONE
    after = inspect(stub, v.id)
    assert after.volume.durability.type == pb.DURABILITY_TYPE_REPLICATE
    assert after.volume.durability.replicas == 3
    assert after.volume.live_copies == after.volume.declared_copies == 3
    assert [a.index for a in after.allocations] == [0, 1, 2]
    assert (first.id, first.drive_id) in {(a.id, a.drive_id) for a in after.allocations}
    assert len({a.zone for a in after.allocations}) == 3
    assert replicas_of(daemon) == stored_copies(daemon)
    assert_books(daemon.store)


def test_one_copy_loses_redundancy_only_when_confirmed(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="4G", replicas=3)
    used = counts(daemon).used_bytes
    err = fails(stub.UpdateVolume, replicas_request(v.id, 1))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_REQUIRED")
    assert job_count(daemon.store) == 0 and counts(daemon).used_bytes == used
    assert inspect(stub, v.id).volume.durability.replicas == 3
    resp = stub.UpdateVolume(replicas_request(v.id, 1, yes_i_really_mean_it=True))
    assert wait_job(daemon, resp.job.id).state == jpb.JOB_STATE_DONE
    after = inspect(stub, v.id)
    assert after.volume.durability.type == pb.DURABILITY_TYPE_NONE
    assert after.volume.declared_copies == after.volume.live_copies == 1
    [kept] = after.allocations
    assert kept.index == 0 and kept.state == ACTIVE
    assert counts(daemon).used_bytes == used - 8 * GIB
    assert replicas_of(daemon) == stored_copies(daemon)
    # And back again.
    back = stub.UpdateVolume(replicas_request(v.id, 2))
    assert wait_job(daemon, back.job.id).state == jpb.JOB_STATE_DONE
    assert inspect(stub, v.id).volume.durability.replicas == 2
    assert_books(daemon.store)


def test_one_copy_is_refused_while_a_tail_pool_holds_the_last(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, _, drives = topo
    main = make_pool(daemon.store, cluster_id, "main", drive_ids=drives[:4])
    tail = make_pool(daemon.store, cluster_id, "tail", drive_ids=drives[4:])
    v = create(
        stub,
        cluster_id,
        "v",
        size="1G",
        replicas=2,
        placement=pb.Placement(pool_id=main, tail_pool_id=tail),
    )
    err = fails(stub.UpdateVolume, replicas_request(v.id, 1, yes_i_really_mean_it=True))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TAIL_POOL")
    assert job_count(daemon.store) == 0
