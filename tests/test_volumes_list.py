"""VolumeService inspect, list and the capacity summary over the wire, on both stores."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import select

from osd.store.models import AllocationRow, VolumeRow
from osd.v1 import volume_pb2 as pb
from osd.v1 import volume_pb2_grpc
from tests.conftest import RunningDaemon
from tests.factories import make_pool, make_topology
from tests.volume_helpers import GIB, create, fails, generation, volumes

Topology = tuple[str, list[str], list[str]]


@pytest.fixture
def stub(daemon: RunningDaemon) -> volume_pb2_grpc.VolumeServiceStub:
    return volumes(daemon)


@pytest.fixture
def topo(daemon: RunningDaemon) -> Topology:
    return make_topology(daemon.store)


# -- inspect and list ----------------------------------------------------------


def test_inspect_unknown_or_bad_id(stub: volume_pb2_grpc.VolumeServiceStub, topo: Topology) -> None:
    err = fails(stub.InspectVolume, pb.InspectVolumeRequest(volume_id="ab" * 16))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["volume_id"])
    err = fails(stub.InspectVolume, pb.InspectVolumeRequest(volume_id="nope"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["volume_id"])


def test_list_pages_by_name_with_filters(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, nodes, _ = topo
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    for i in range(7):
        create(
            stub,
            cluster_id,
            f"vol-{i}",
            replicas=2,
            labels={"tier": "gold" if i % 2 else "silver"},
            placement=pb.Placement(pool_id=pool) if i < 3 else None,
        )
    names: list[str] = []
    token = ""
    while True:
        page = stub.ListVolumes(pb.ListVolumesRequest(page_size=3, page_token=token))
        names += [v.name for v in page.volumes]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"vol-{i}" for i in range(7)]

    def listed(**kw: Any) -> list[str]:
        return [v.name for v in stub.ListVolumes(pb.ListVolumesRequest(**kw)).volumes]

    assert listed(labels={"tier": "gold"}) == ["vol-1", "vol-3", "vol-5"]
    assert listed(name_regex="[56]$") == ["vol-5", "vol-6"]
    assert listed(pool_id=pool) == ["vol-0", "vol-1", "vol-2"]
    assert listed(cluster_id=cluster_id, states=[pb.VOLUME_STATE_UP]) == names
    assert listed(states=[pb.VOLUME_STATE_DELETING]) == []
    on_node = {v.name for v in stub.ListVolumes(pb.ListVolumesRequest(node_id=nodes[0])).volumes}
    with daemon.store.read() as s:
        expected = set(
            s.scalars(
                select(VolumeRow.name)
                .join(AllocationRow, AllocationRow.volume_id == VolumeRow.id)
                .where(AllocationRow.node_id == nodes[0])
            )
        )
    assert on_node == expected and on_node


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"cluster_id": "x"}, "cluster_id"),
        ({"pool_id": "x"}, "pool_id"),
        ({"node_id": "x"}, "node_id"),
        ({"template_id": "x"}, "template_id"),
        ({"name_regex": "("}, "name_regex"),
        ({"states": [42]}, "states"),
    ],
)
def test_list_bad_arguments(
    stub: volume_pb2_grpc.VolumeServiceStub,
    topo: Topology,
    request_fields: dict[str, Any],
    field: str,
) -> None:
    err = fails(stub.ListVolumes, pb.ListVolumesRequest(**request_fields))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


# -- capacity ------------------------------------------------------------------


def test_capacity_summary(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, nodes, _ = topo
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes[:2])
    create(stub, cluster_id, "a", size="10G", replicas=3)
    create(stub, cluster_id, "b", size="10G", replicas=2, provisioning=pb.PROVISIONING_THIN)
    resp = stub.GetCapacitySummary(pb.GetCapacitySummaryRequest(cluster_id=cluster_id))
    [c] = resp.clusters
    assert c.cluster_id == cluster_id and c.volume_count == 2
    assert c.capacity.total_bytes == 600 * GIB and c.capacity.used_bytes == 30 * GIB
    assert c.capacity.free_bytes == 570 * GIB and c.available_bytes == 570 * GIB
    assert c.logical_bytes == 20 * GIB and c.provisioned_bytes == 50 * GIB
    [p] = c.pools
    assert p.pool_id == pool and p.capacity.total_bytes == 400 * GIB
    assert resp.generation == generation(daemon)
    err = fails(stub.GetCapacitySummary, pb.GetCapacitySummaryRequest(cluster_id="ab" * 16))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_a_filter_that_turns_most_rows_down_pages_by_a_bounded_scan(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub, monkeypatch: Any
) -> None:
    """A page ends early once the budget of rows turned down is spent, with a
    token after the last row looked at: each call costs the same however many
    volumes the filters skip, and following the tokens finds every match."""
    from osd.engine.shared import paging
    from tests.factories import make_cluster, make_volume_row

    monkeypatch.setattr(paging, "SCAN_BUDGET", 10)
    cluster_id = make_cluster(daemon.store)
    for i in range(45):
        make_volume_row(daemon.store, cluster_id, f"v{i:03d}", labels={"k": str(i % 20)})
    # A pattern is matched here, row by row: the budget bounds each call.
    request = pb.ListVolumesRequest(cluster_id=cluster_id, name_regex="^v0[02]7$", page_size=100)
    pages = []
    while True:
        page = stub.ListVolumes(request)
        pages.append([v.name for v in page.volumes])
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert [n for p in pages for n in p] == ["v007", "v027"]
    assert len(pages) >= 4  # 43 rows turned down, 10 a call
    assert [] in pages  # a page may be empty and still lead on
    # Labels are matched by the database: no row is turned down here, and
    # one call finds the labels k=7 on v007 and v027 alone.
    by_label = stub.ListVolumes(
        pb.ListVolumesRequest(cluster_id=cluster_id, labels={"k": "7"}, page_size=100)
    )
    assert [v.name for v in by_label.volumes] == ["v007", "v027"]
    assert by_label.next_page_token == ""
    # A filter matching nothing ends, page by page, with an empty token.
    none = pb.ListVolumesRequest(cluster_id=cluster_id, name_regex="^nothing", page_size=5)
    calls = 0
    while True:
        calls += 1
        page = stub.ListVolumes(none)
        assert not page.volumes
        if not page.next_page_token:
            break
        none.page_token = page.next_page_token
    assert calls == 5  # 45 rows, 10 turned down a call


def test_the_degraded_filter_reads_copies_in_batches_and_finds_every_match(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub, monkeypatch: Any
) -> None:
    """ListVolumes(degraded) checks the copies of the scanned volumes a batch
    at a time, ahead of the page: across batches, a scan budget that ends
    pages early and tokens followed, it lists exactly the volumes that lack
    a live copy, each once, in order."""
    from sqlalchemy import update

    from osd.engine.shared import paging
    from osd.engine.volumes import volumes as volume_engine
    from osd.enums import AllocationState, VolumeState
    from osd.store.state import bump_generation
    from tests.factories import make_cluster, make_drive, make_node, make_volume

    monkeypatch.setattr(paging, "SCAN_BUDGET", 2)
    monkeypatch.setattr(volume_engine, "DEGRADED_BATCH", 16)
    store = daemon.store
    cluster_id = make_cluster(store)
    drives = [
        make_drive(store, make_node(store, cluster_id, f"n{z}", f"z{z}"), "/dev/sdb")
        for z in range(3)
    ]
    made = [make_volume(store, cluster_id, drives, name=f"v{i:03d}") for i in range(100)]
    lacking = {made[i] for i in range(0, 100, 9)}
    with store.write() as s:
        bump_generation(s)
        for volume_id in lacking:
            first = s.scalars(
                select(AllocationRow.id)
                .where(AllocationRow.volume_id == volume_id)
                .order_by(AllocationRow.index)
            ).first()
            s.execute(
                update(AllocationRow)
                .where(AllocationRow.id == first)
                .values(state=AllocationState.UNAVAILABLE)
            )
        # DEGRADED as stored, every copy live all the same: a candidate turned down.
        s.execute(
            update(VolumeRow)
            .where(VolumeRow.id.in_([made[i] for i in range(4, 100, 9)] + sorted(lacking)))
            .values(state=VolumeState.DEGRADED)
        )
    request = pb.ListVolumesRequest(cluster_id=cluster_id, degraded=True, page_size=4)
    listed: list[str] = []
    calls = 0
    while True:
        calls += 1
        page = stub.ListVolumes(request)
        listed += [v.id for v in page.volumes]
        assert all(v.missing_copies for v in page.volumes)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert listed == [m for m in made if m in lacking]
    # Scanned, one lacking a copy and one not by turns: two turned down end a page.
    assert calls >= 6


def test_labels_with_dots_slashes_and_colons_filter_in_the_database(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub
) -> None:
    from tests.factories import make_cluster, make_volume_row

    cluster_id = make_cluster(daemon.store)
    make_volume_row(
        daemon.store, cluster_id, "a", labels={"app.kubernetes.io/name": "db", "team:x": "a b"}
    )
    make_volume_row(daemon.store, cluster_id, "b", labels={"app.kubernetes.io/name": "web"})
    make_volume_row(daemon.store, cluster_id, "c", labels={"app": "db"})

    def names(**labels: str) -> list[str]:
        request = pb.ListVolumesRequest(cluster_id=cluster_id, labels=labels)
        return [v.name for v in stub.ListVolumes(request).volumes]

    assert names(**{"app.kubernetes.io/name": "db"}) == ["a"]
    assert names(**{"app.kubernetes.io/name": "db", "team:x": "a b"}) == ["a"]
    assert names(**{"app.kubernetes.io/name": "db", "team:x": "a"}) == []
    assert names(app="db") == ["c"]
    assert names(**{"app.kubernetes.io": "db"}) == []  # a key, not a path
