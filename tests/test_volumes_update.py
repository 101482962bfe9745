"""VolumeService update and delete over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import select

from osd.store.models import AllocationRow, VolumeRow
from osd.v1 import job_pb2, volume_pb2_grpc
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_job_row, make_pool, make_topology
from tests.test_jobs import wait_job
from tests.volume_helpers import (
    GIB,
    books,
    counts,
    create,
    fails,
    generation,
    mask,
    replicated,
    volumes,
)

Topology = tuple[str, list[str], list[str]]


@pytest.fixture
def stub(daemon: RunningDaemon) -> volume_pb2_grpc.VolumeServiceStub:
    return volumes(daemon)


@pytest.fixture
def topo(daemon: RunningDaemon) -> Topology:
    return make_topology(daemon.store)


def allocated(stub: volume_pb2_grpc.VolumeServiceStub, volume_id: str) -> list[int]:
    detail = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=volume_id))
    return [a.bytes for a in detail.allocations]


def stored_volume(daemon: RunningDaemon, volume_id: str) -> VolumeRow | None:
    with daemon.store.read() as s:
        return s.get(VolumeRow, volume_id)


# -- update --------------------------------------------------------------------


def test_grow_reserves_the_extra_bytes_on_every_copy(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="10G")
    resp = stub.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=v.id, size="20G", update_mask=mask("size"))
    )
    assert resp.volume.size_bytes == 20 * GIB and resp.generation == generation(daemon)
    assert allocated(stub, v.id) == [20 * GIB] * 3
    assert set(daemon.driver.state.replicas.values()) == {20 * GIB}
    assert counts(daemon).used_bytes == 60 * GIB and books(daemon) == []


def test_shrink_needs_shrink_ok(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="10G")
    gen = generation(daemon)
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(volume_id=v.id, size_bytes=5 * GIB, update_mask=mask("size_bytes")),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SHRINK_NOT_ALLOWED")
    assert generation(daemon) == gen and allocated(stub, v.id) == [10 * GIB] * 3
    resp = stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=v.id, size_bytes=5 * GIB, shrink_ok=True, update_mask=mask("size_bytes")
        )
    )
    assert resp.volume.size_bytes == 5 * GIB
    assert allocated(stub, v.id) == [5 * GIB] * 3 and books(daemon) == []


def test_grow_beyond_the_free_space_changes_nothing(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="10G")
    before, gen = counts(daemon), generation(daemon)
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(
            volume_id=v.id, size="150G", name="renamed", update_mask=mask("size", "name")
        ),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CAPACITY")
    assert counts(daemon) == before and generation(daemon) == gen
    row = stored_volume(daemon, v.id)
    assert row is not None and (row.name, row.size_bytes) == ("v", 10 * GIB)


def test_a_driver_failure_during_a_grow_rolls_everything_back(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="10G")
    calls: list[int] = []

    def second(_args: dict[str, Any]) -> bool:
        calls.append(1)
        return len(calls) == 2

    daemon.driver.fail("resize_replica", when=second)
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(
            volume_id=v.id, size="20G", name="renamed", update_mask=mask("size", "name")
        ),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRIVER_ERROR")
    row = stored_volume(daemon, v.id)
    assert row is not None and (row.name, row.size_bytes) == ("v", 10 * GIB)
    assert allocated(stub, v.id) == [10 * GIB] * 3
    assert set(daemon.driver.state.replicas.values()) == {10 * GIB}
    with daemon.store.read() as s:
        states = set(s.scalars(select(AllocationRow.state)))
    assert states == {2}  # ACTIVE
    assert counts(daemon).used_bytes == 30 * GIB and books(daemon) == []


def test_rename_qos_labels_and_multi_attach(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", replicas=2, qos=pb.Qos(iops_limit=100, bandwidth_limit_bytes=5))
    resp = stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=v.id,
            name="w",
            qos=pb.Qos(iops_limit=500, bandwidth_limit_bytes=99),
            labels={"x": "y"},
            multi_attach=True,
            update_mask=mask("name", "qos.iops_limit", "labels", "multi_attach"),
            expected_generation=v.generation,
        )
    )
    w = resp.volume
    assert (w.name, w.qos.iops_limit, w.qos.bandwidth_limit_bytes) == ("w", 500, 5)
    assert dict(w.labels) == {"x": "y"} and w.multi_attach
    assert w.generation == resp.generation > v.generation
    w2 = stub.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=v.id, qos=pb.Qos(), update_mask=mask("qos"))
    ).volume
    assert (w2.qos.iops_limit, w2.qos.bandwidth_limit_bytes) == (0, 0)


def test_update_refusals(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", replicas=2)
    create(stub, topo[0], "taken", replicas=2)
    gen = generation(daemon)

    def refused(**kw: Any) -> Any:
        return fails(stub.UpdateVolume, pb.UpdateVolumeRequest(volume_id=v.id, **kw))

    err = refused(name="taken", update_mask=mask("name"))
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "VOLUME_EXISTS")
    err = refused(name="x", update_mask=mask("name"), expected_generation=v.generation + 100)
    assert (err.code, err.reason) == (grpc.StatusCode.ABORTED, "GENERATION_MISMATCH")
    for kw, field in [
        ({"update_mask": mask()}, "update_mask"),
        ({"update_mask": mask("kind")}, "update_mask"),
        ({"name": "bad name", "update_mask": mask("name")}, "name"),
        ({"size_bytes": 100, "update_mask": mask("size_bytes")}, "size_bytes"),
        ({"size": "12Q", "update_mask": mask("size")}, "size"),
        ({"update_mask": mask("size", "size_bytes")}, "update_mask"),
        ({"qos": pb.Qos(iops_limit=-1), "update_mask": mask("qos")}, "qos.iops_limit"),
        ({"labels": {"": "v"}, "update_mask": mask("labels")}, "labels['']"),
        (
            {"durability": replicated(9), "update_mask": mask("durability.replicas")},
            "durability.replicas",
        ),
        ({"update_mask": mask("durability.replicas", "placement")}, "update_mask"),
    ]:
        err = refused(**kw)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, kw
        assert field in err.fields, (kw, err.fields)
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(volume_id="ab" * 16, name="q", update_mask=mask("name")),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["volume_id"])
    assert generation(daemon) == gen


def test_replica_count_and_moving_placement_start_jobs(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    """The jobs themselves are tested in tests/test_volumes_jobs.py."""
    cluster_id, nodes, _ = topo
    v = create(stub, cluster_id, "v", replicas=2)
    started = stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=v.id, durability=replicated(3), update_mask=mask("durability.replicas")
        )
    )
    assert started.job.kind == job_pb2.JOB_KIND_VOLUME_REPLICA_CHANGE
    assert started.volume.active_job_id == started.job.id
    assert wait_job(daemon, started.job.id).state == job_pb2.JOB_STATE_DONE
    # The same count is no change at all, and starts no job.
    same = stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=v.id, durability=replicated(3), update_mask=mask("durability.replicas")
        )
    )
    assert same.volume.durability.replicas == 3 and not same.HasField("job")
    # A placement its copies already obey is recorded at once.
    everywhere = make_pool(daemon.store, cluster_id, "all", node_ids=nodes)
    moved = stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=v.id,
            placement=pb.Placement(pool_id=everywhere),
            update_mask=mask("placement"),
        )
    )
    assert moved.volume.placement.pool_id == everywhere and not moved.HasField("job")
    # One they do not obey starts a move job; a pool with no drive has no room for it.
    nowhere = make_pool(daemon.store, cluster_id, "none")
    gen = generation(daemon)
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(
            volume_id=v.id, placement=pb.Placement(pool_id=nowhere), update_mask=mask("placement")
        ),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLACEMENT_IMPOSSIBLE")
    assert generation(daemon) == gen
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(
            volume_id=v.id,
            placement=pb.Placement(pool_id="ab" * 16),
            update_mask=mask("placement"),
        ),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["placement.pool_id"])


def test_a_volume_with_a_running_job_refuses_resizes(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", replicas=2)
    job = make_job_row(daemon.store, topo[0], v.id, kind=6, target_kind=5)
    with daemon.store.write() as s:
        s.get_one(VolumeRow, v.id).active_job_id = job
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(volume_id=v.id, size="2G", update_mask=mask("size")),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_IN_PROGRESS")
    err = fails(stub.DeleteVolume, pb.DeleteVolumeRequest(volume_id=v.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_IN_PROGRESS")


# -- delete --------------------------------------------------------------------


def test_delete_releases_every_allocation(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="10G")
    resp = stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v.id))
    assert resp.deleted and resp.generation == generation(daemon)
    c = counts(daemon)
    assert (c.volumes, c.allocations, c.used_bytes) == (0, 0, 0)
    assert daemon.driver.state.replicas == {}
    assert books(daemon) == []
    err = fails(stub.DeleteVolume, pb.DeleteVolumeRequest(volume_id=v.id))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["volume_id"])
    again = stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v.id, allow_missing=True))
    assert not again.deleted and again.generation == generation(daemon)


def test_a_delete_the_driver_interrupts_finishes_on_retry(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="10G")
    daemon.driver.fail("delete_replica")
    err = fails(stub.DeleteVolume, pb.DeleteVolumeRequest(volume_id=v.id))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRIVER_ERROR")
    row = stored_volume(daemon, v.id)
    assert row is not None and row.state == pb.VOLUME_STATE_DELETING
    assert books(daemon) == []
    # Every other change is refused meanwhile.
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(volume_id=v.id, size="20G", update_mask=mask("size")),
    )
    assert err.reason == "VOLUME_NOT_AVAILABLE"
    assert stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v.id)).deleted
    assert counts(daemon).volumes == 0 and counts(daemon).used_bytes == 0
    assert daemon.driver.state.replicas == {} and books(daemon) == []


# -- state follows the copies ----------------------------------------------------


def test_volume_state_follows_its_copies(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    from osd.v1 import node_pb2, node_pb2_grpc

    cluster_id, nodes, _ = topo
    v = create(stub, cluster_id, "v", size="1G")
    node_stub = node_pb2_grpc.NodeServiceStub(daemon.channel)

    def set_state(node_id: str, state: int) -> None:
        node_stub.SetNodeState(node_pb2.SetNodeStateRequest(node_id=node_id, state=state))  # type: ignore[arg-type]

    def state() -> int:
        return stub.InspectVolume(pb.InspectVolumeRequest(volume_id=v.id)).volume.state

    set_state(nodes[0], node_pb2.NODE_STATE_OFFLINE)
    assert state() == pb.VOLUME_STATE_DEGRADED
    set_state(nodes[1], node_pb2.NODE_STATE_OFFLINE)
    set_state(nodes[2], node_pb2.NODE_STATE_OFFLINE)
    assert state() == pb.VOLUME_STATE_DOWN
    err = fails(stub.CreateSnapshot, pb.CreateSnapshotRequest(volume_id=v.id, name="s"))
    assert err.reason == "VOLUME_NOT_AVAILABLE"
    for n in nodes:
        set_state(n, node_pb2.NODE_STATE_ONLINE)
    assert state() == pb.VOLUME_STATE_UP
    assert books(daemon) == []


def test_size_add_grows_by_a_delta_from_the_size_at_the_update(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="10G", durability=replicated(3))
    resp = stub.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=v.id, size_add="2G", update_mask=mask("size_add"))
    )
    assert resp.volume.size_bytes == 12 * GIB
    assert allocated(stub, v.id) == [12 * GIB] * 3
    again = stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=v.id,
            size_add="512M",
            update_mask=mask("size_add"),
            expected_generation=resp.volume.generation,
        )
    )
    assert again.volume.size_bytes == 12 * GIB + 512 * 2**20
    # A retry of that call, with the same expected generation, adds nothing.
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(
            volume_id=v.id,
            size_add="512M",
            update_mask=mask("size_add"),
            expected_generation=resp.volume.generation,
        ),
    )
    assert err.code == grpc.StatusCode.ABORTED
    assert counts(daemon).used_bytes == 3 * (12 * GIB + 512 * 2**20)
    assert books(daemon) == []


@pytest.mark.parametrize(
    ("size_add", "paths", "field"),
    [
        ("0", ["size_add"], "size_add"),
        ("-1G", ["size_add"], "size_add"),
        ("lots", ["size_add"], "size_add"),
        ("1G", ["size_add", "size"], "update_mask"),
        ("9000000P", ["size_add"], "size_add"),
    ],
)
def test_a_bad_size_add_changes_nothing(
    stub: volume_pb2_grpc.VolumeServiceStub,
    daemon: RunningDaemon,
    topo: Topology,
    size_add: str,
    paths: list[str],
    field: str,
) -> None:
    v = create(stub, topo[0], "v", size="10G")
    before = counts(daemon)
    request = pb.UpdateVolumeRequest(volume_id=v.id, update_mask=mask(*paths))
    request.size_add = size_add
    err = fails(stub.UpdateVolume, request)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.fields, err
    assert counts(daemon) == before
    assert stored_volume(daemon, v.id).size_bytes == 10 * GIB  # type: ignore[union-attr]
