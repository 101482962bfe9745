"""ClusterService over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import func, select

from osd.store.models import ClusterRow, NodeRow, StateRow
from osd.v1 import cluster_pb2 as pb
from osd.v1 import cluster_pb2_grpc
from tests.conftest import RunningDaemon
from tests.helpers import ErrorView, error_of, node_row


@pytest.fixture
def stub(daemon: RunningDaemon) -> cluster_pb2_grpc.ClusterServiceStub:
    return cluster_pb2_grpc.ClusterServiceStub(daemon.channel)


def fails(call: Callable[[Any], Any], request: Any) -> ErrorView:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return error_of(info.value)


def stored_clusters(daemon: RunningDaemon) -> list[ClusterRow]:
    with daemon.store.read() as s:
        return list(s.scalars(select(ClusterRow).order_by(ClusterRow.name)))


def stored_generation(daemon: RunningDaemon) -> int:
    with daemon.store.read() as s:
        return s.scalars(select(StateRow.generation)).one()


def create(stub: cluster_pb2_grpc.ClusterServiceStub, name: str, **kw: Any) -> pb.Cluster:
    return stub.CreateCluster(pb.CreateClusterRequest(name=name, **kw)).cluster


# -- create -------------------------------------------------------------------


def test_create_stores_the_cluster_and_bumps_the_generation(
    stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon
) -> None:
    resp = stub.CreateCluster(
        pb.CreateClusterRequest(name="east-1", labels={"env": "prod"}, block=False)
    )
    assert resp.created
    assert resp.generation == 1
    c = resp.cluster
    assert len(c.id) == 32 and c.name == "east-1"
    assert dict(c.labels) == {"env": "prod"}
    assert (c.block, c.file) == (False, True)
    assert c.generation == 1
    assert c.create_time.seconds > 0 and c.create_time == c.update_time

    [row] = stored_clusters(daemon)
    assert (row.id, row.name, row.labels, row.block, row.file) == (
        c.id,
        "east-1",
        {"env": "prod"},
        False,
        True,
    )
    assert stored_generation(daemon) == 1


def test_create_is_idempotent_by_name(
    stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon
) -> None:
    first = stub.CreateCluster(pb.CreateClusterRequest(name="c1", labels={"a": "1"}))
    again = stub.CreateCluster(pb.CreateClusterRequest(name="c1", labels={"a": "1"}))
    assert not again.created
    assert again.cluster == first.cluster
    assert again.generation == first.generation  # nothing changed, nothing bumped
    assert stored_generation(daemon) == 1

    err = fails(stub.CreateCluster, pb.CreateClusterRequest(name="c1", labels={"a": "2"}))
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "CLUSTER_EXISTS"
    assert err.metadata["cluster_id"] == first.cluster.id
    assert len(stored_clusters(daemon)) == 1


def test_concurrent_creates_of_one_name_make_one_cluster(
    stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon
) -> None:
    results: list[pb.CreateClusterResponse] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(stub.CreateCluster(pb.CreateClusterRequest(name="race")))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.created for r in results) == 1
    assert len({r.cluster.id for r in results}) == 1
    assert len(stored_clusters(daemon)) == 1


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "is required"),
        ("has space", "may contain only"),
        ("slash/no", "may contain only"),
        ("x" * 201, "at most 200"),
        ("list", "reserved"),
        ("status", "reserved"),
        ("..", "reserved"),
        ("ünïcode", "may contain only"),
    ],
)
def test_create_refuses_bad_names_and_writes_nothing(
    stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon, name: str, why: str
) -> None:
    err = fails(stub.CreateCluster, pb.CreateClusterRequest(name=name))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert why in err.fields["name"]
    assert "name" in err.message
    assert stored_clusters(daemon) == []
    assert stored_generation(daemon) == 0


def test_name_rule_accepts_its_whole_alphabet(stub: cluster_pb2_grpc.ClusterServiceStub) -> None:
    assert create(stub, "Az09_.:-").name == "Az09_.:-"
    assert create(stub, "y" * 200).name == "y" * 200


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"": "v"}, "labels['']"),
        ({"-lead": "v"}, "labels['-lead']"),
        ({"sp ace": "v"}, "labels['sp ace']"),
        ({"k" * 64: "v"}, "labels['" + "k" * 64 + "']"),
        ({"k": "v" * 254}, "labels['k']"),
        ({"k": "tab\there"}, "labels['k']"),
    ],
)
def test_create_refuses_bad_labels(
    stub: cluster_pb2_grpc.ClusterServiceStub,
    daemon: RunningDaemon,
    labels: dict[str, str],
    field: str,
) -> None:
    err = fails(stub.CreateCluster, pb.CreateClusterRequest(name="ok", labels=labels))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.fields
    assert stored_clusters(daemon) == []


def test_too_many_labels(stub: cluster_pb2_grpc.ClusterServiceStub) -> None:
    labels = {f"k{i}": "v" for i in range(65)}
    err = fails(stub.CreateCluster, pb.CreateClusterRequest(name="ok", labels=labels))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 64" in err.fields["labels"]


# -- inspect ------------------------------------------------------------------


def test_inspect(stub: cluster_pb2_grpc.ClusterServiceStub) -> None:
    c = create(stub, "c", labels={"x": "y"})
    assert stub.InspectCluster(pb.InspectClusterRequest(cluster_id=c.id)).cluster == c


@pytest.mark.parametrize(
    ("cluster_id", "code"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("not-an-id", grpc.StatusCode.INVALID_ARGUMENT),
        ("A" * 32, grpc.StatusCode.INVALID_ARGUMENT),
        (uuid.uuid4().hex, grpc.StatusCode.NOT_FOUND),
    ],
)
def test_inspect_bad_ids(
    stub: cluster_pb2_grpc.ClusterServiceStub, cluster_id: str, code: grpc.StatusCode
) -> None:
    err = fails(stub.InspectCluster, pb.InspectClusterRequest(cluster_id=cluster_id))
    assert err.code == code
    assert "cluster_id" in err.fields
    if code == grpc.StatusCode.NOT_FOUND:
        assert err.reason == "NOT_FOUND"
        assert err.metadata == {"kind": "cluster", "field": "cluster_id", "id": cluster_id}


# -- list ---------------------------------------------------------------------


def test_list_pages_through_every_cluster_in_name_order(
    stub: cluster_pb2_grpc.ClusterServiceStub,
) -> None:
    names = [f"c{i:02d}" for i in range(23)]
    for name in reversed(names):
        create(stub, name)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        resp = stub.ListClusters(pb.ListClustersRequest(page_size=5, page_token=token))
        pages += 1
        assert len(resp.clusters) <= 5
        seen.extend(c.name for c in resp.clusters)
        token = resp.next_page_token
        if not token:
            break
    assert seen == names
    assert pages == 5


def test_list_exact_multiple_has_no_empty_last_page(
    stub: cluster_pb2_grpc.ClusterServiceStub,
) -> None:
    for i in range(4):
        create(stub, f"n{i}")
    first = stub.ListClusters(pb.ListClustersRequest(page_size=2))
    second = stub.ListClusters(
        pb.ListClustersRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [c.name for c in second.clusters] == ["n2", "n3"]
    assert second.next_page_token == ""


def test_list_filters_by_regex_and_labels_across_pages(
    stub: cluster_pb2_grpc.ClusterServiceStub,
) -> None:
    for i in range(10):
        create(stub, f"{'prod' if i % 2 else 'dev'}-{i}", labels={"tier": "gold" if i < 6 else "x"})
    resp = stub.ListClusters(
        pb.ListClustersRequest(name_regex="^prod-", labels={"tier": "gold"}, page_size=2)
    )
    assert [c.name for c in resp.clusters] == ["prod-1", "prod-3"]
    rest = stub.ListClusters(
        pb.ListClustersRequest(
            name_regex="^prod-",
            labels={"tier": "gold"},
            page_size=2,
            page_token=resp.next_page_token,
        )
    )
    assert [c.name for c in rest.clusters] == ["prod-5"]
    assert rest.next_page_token == ""


@pytest.mark.parametrize(
    ("request_kw", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"page_token": "eyJrIjoibm9kZSIsImEiOnt9fQ"}, "page_token"),  # another list's token
        ({"name_regex": "("}, "name_regex"),
        ({"labels": {"bad key": "v"}}, "labels['bad key']"),
    ],
)
def test_list_bad_input(
    stub: cluster_pb2_grpc.ClusterServiceStub, request_kw: dict[str, Any], field: str
) -> None:
    err = fails(stub.ListClusters, pb.ListClustersRequest(**request_kw))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.fields


# -- update -------------------------------------------------------------------


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_update_changes_only_masked_fields(
    stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon
) -> None:
    c = create(stub, "c", labels={"a": "1"})
    resp = stub.UpdateCluster(
        pb.UpdateClusterRequest(
            cluster_id=c.id,
            block=False,
            file=False,
            labels={"b": "2"},
            name="ignored",
            update_mask=mask("block", "labels"),
        )
    )
    u = resp.cluster
    assert (u.name, u.block, u.file, dict(u.labels)) == ("c", False, True, {"b": "2"})
    assert resp.generation == 2 and u.generation == 2
    assert u.create_time == c.create_time
    [row] = stored_clusters(daemon)
    assert (row.block, row.file, row.labels, row.generation) == (False, True, {"b": "2"}, 2)


def test_update_rename_and_conflicts(stub: cluster_pb2_grpc.ClusterServiceStub) -> None:
    a = create(stub, "a")
    create(stub, "b")
    renamed = stub.UpdateCluster(
        pb.UpdateClusterRequest(cluster_id=a.id, name="a2", update_mask=mask("name"))
    ).cluster
    assert renamed.name == "a2"
    err = fails(
        stub.UpdateCluster,
        pb.UpdateClusterRequest(cluster_id=a.id, name="b", update_mask=mask("name")),
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    err = fails(
        stub.UpdateCluster,
        pb.UpdateClusterRequest(cluster_id=a.id, name="bad name", update_mask=mask("name")),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "name" in err.fields


def test_update_expected_generation(
    stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon
) -> None:
    c = create(stub, "c")
    ok = stub.UpdateCluster(
        pb.UpdateClusterRequest(
            cluster_id=c.id,
            block=False,
            update_mask=mask("block"),
            expected_generation=c.generation,
        )
    )
    err = fails(
        stub.UpdateCluster,
        pb.UpdateClusterRequest(
            cluster_id=c.id, file=False, update_mask=mask("file"), expected_generation=c.generation
        ),
    )
    assert err.code == grpc.StatusCode.ABORTED
    assert err.reason == "GENERATION_MISMATCH"
    assert err.metadata["generation"] == str(ok.cluster.generation)
    [row] = stored_clusters(daemon)
    assert row.file is True


@pytest.mark.parametrize("paths", [(), ("id",), ("name", "create_time")])
def test_update_bad_mask_writes_nothing(
    stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon, paths: tuple[str, ...]
) -> None:
    c = create(stub, "c")
    err = fails(
        stub.UpdateCluster,
        pb.UpdateClusterRequest(cluster_id=c.id, name="z", update_mask=mask(*paths)),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in err.fields
    assert stored_generation(daemon) == 1


def test_update_unknown_cluster(stub: cluster_pb2_grpc.ClusterServiceStub) -> None:
    err = fails(
        stub.UpdateCluster,
        pb.UpdateClusterRequest(cluster_id=uuid.uuid4().hex, block=True, update_mask=mask("block")),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND


# -- delete and status --------------------------------------------------------


def add_node_row(daemon: RunningDaemon, cluster_id: str, name: str) -> None:
    """Puts a node in the store directly: the node API is not served yet."""
    with daemon.store.write() as s:
        s.add(node_row(cluster_id, name))


def test_delete(stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon) -> None:
    c = create(stub, "c")
    resp = stub.DeleteCluster(pb.DeleteClusterRequest(cluster_id=c.id))
    assert resp.generation == 2
    assert stored_clusters(daemon) == []
    err = fails(stub.DeleteCluster, pb.DeleteClusterRequest(cluster_id=c.id))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_delete_refuses_a_cluster_with_nodes(
    stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon
) -> None:
    c = create(stub, "c")
    add_node_row(daemon, c.id, "n1")
    add_node_row(daemon, c.id, "n2")
    err = fails(stub.DeleteCluster, pb.DeleteClusterRequest(cluster_id=c.id))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "CLUSTER_NOT_EMPTY"
    assert "2 nodes" in err.message
    assert err.metadata == {"nodes": "2"}
    assert len(stored_clusters(daemon)) == 1
    with daemon.store.read() as s:
        assert s.scalar(select(func.count()).select_from(NodeRow)) == 2


def test_status(stub: cluster_pb2_grpc.ClusterServiceStub, daemon: RunningDaemon) -> None:
    c = create(stub, "c")
    create(stub, "other")
    add_node_row(daemon, c.id, "n1")
    st = stub.GetClusterStatus(pb.GetClusterStatusRequest(cluster_id=c.id))
    assert st.cluster == c
    assert st.node_count == 1
    assert (st.drive_count, st.pool_count, st.volume_count, st.snapshot_count) == (0, 0, 0, 0)
    assert st.capacity.total_bytes == 0 and st.capacity.free_bytes == 0
    assert st.generation == stored_generation(daemon) == 2
    err = fails(stub.GetClusterStatus, pb.GetClusterStatusRequest(cluster_id=uuid.uuid4().hex))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_wait_for_generation(daemon: RunningDaemon) -> None:
    stub = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    made = stub.CreateCluster(pb.CreateClusterRequest(name="waited"))
    reached = stub.WaitForGeneration(pb.WaitForGenerationRequest(generation=made.generation))
    assert reached.reached and reached.generation >= made.generation
    # A generation still to come: answered when it comes.
    later = stub.WaitForGeneration.future(
        pb.WaitForGenerationRequest(generation=made.generation + 1, wait_seconds=20), timeout=30
    )
    time.sleep(0.3)
    assert not later.done()
    stub.CreateCluster(pb.CreateClusterRequest(name="next"))
    assert later.result(timeout=30).reached
    # One that does not come in time.
    started = time.monotonic()
    missed = stub.WaitForGeneration(
        pb.WaitForGenerationRequest(generation=made.generation + 100, wait_seconds=0.5)
    )
    assert not missed.reached and 0.4 < time.monotonic() - started < 5
    for request, field in (
        (pb.WaitForGenerationRequest(), "generation"),
        (pb.WaitForGenerationRequest(generation=1, wait_seconds=-1), "wait_seconds"),
        (pb.WaitForGenerationRequest(generation=1, wait_seconds=301), "wait_seconds"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.WaitForGeneration(request)
        err = error_of(info.value)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and field in err.fields


def test_the_topology_is_the_whole_tree_in_one_answer(daemon: RunningDaemon) -> None:
    from osd.v1 import volume_pb2, volume_pb2_grpc
    from tests.factories import GIB, make_pool, make_topology

    stub = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    cluster_id, nodes, drives = make_topology(
        daemon.store, zones=2, nodes_per_zone=2, drives_per_node=2, drive_bytes=100 * GIB
    )
    other, _, _ = make_topology(daemon.store, zones=1, cluster_name="other")
    pool = make_pool(daemon.store, cluster_id, "fast", drive_ids=drives[:2])
    volume_pb2_grpc.VolumeServiceStub(daemon.channel).CreateVolume(
        volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name="v", size="10G")
    )
    top = stub.GetClusterTopology(pb.GetClusterTopologyRequest(cluster_id=cluster_id))
    assert top.cluster.id == cluster_id and top.generation == stored_generation(daemon)
    # Nodes by zone, then name; each with its own drives, by device path.
    assert [(n.node.zone, n.node.name) for n in top.nodes] == [
        ("zone0", "n0-0"),
        ("zone0", "n0-1"),
        ("zone1", "n1-0"),
        ("zone1", "n1-1"),
    ]
    assert {n.node.id for n in top.nodes} == set(nodes)
    for entry in top.nodes:
        assert [d.device_path for d in entry.drives] == ["/dev/sdb", "/dev/sdc"]
        assert {d.node_id for d in entry.drives} == {entry.node.id}
        assert entry.node.capacity.total_bytes == sum(d.capacity.total_bytes for d in entry.drives)
    listed = [d.id for n in top.nodes for d in n.drives]
    assert sorted(listed) == sorted(drives)
    # The totals are the drives', and the volume's bytes are counted where they are.
    assert top.capacity.total_bytes == 8 * 100 * GIB
    used = sum(d.capacity.used_bytes for n in top.nodes for d in n.drives)
    assert top.capacity.used_bytes == used == 10 * GIB
    assert top.provisioned_bytes == 10 * GIB
    [fast] = top.pools
    assert (fast.id, fast.name, sorted(fast.drive_ids)) == (pool, "fast", sorted(drives[:2]))
    # Another cluster's objects are not in it.
    theirs = stub.GetClusterTopology(pb.GetClusterTopologyRequest(cluster_id=other))
    assert len(theirs.nodes) == 1 and not set(d.id for d in theirs.nodes[0].drives) & set(drives)
    missing = fails(stub.GetClusterTopology, pb.GetClusterTopologyRequest(cluster_id="a" * 32))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    bad = fails(stub.GetClusterTopology, pb.GetClusterTopologyRequest(cluster_id="nope"))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "cluster_id" in bad.fields


def test_status_gives_the_health_of_each_service(daemon: RunningDaemon) -> None:
    from datetime import timedelta

    from osd.store.models import DaemonRow, DriveRow, utcnow
    from tests.factories import make_topology

    stub = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    cluster_id, nodes, drives = make_topology(daemon.store, zones=2, drives_per_node=1)
    _, theirs, _ = make_topology(daemon.store, zones=1, cluster_name="other")
    long_ago = utcnow() - timedelta(minutes=5)
    with daemon.store.write() as s:
        for name, node_id in (("h:1:agent", nodes[0]), ("h:2:elsewhere", theirs[0])):
            s.add(
                DaemonRow(
                    id=name,
                    host="h",
                    pid=1,
                    address="10.0.0.9:9100",
                    version="0",
                    start_time=long_ago,
                    heartbeat_time=long_ago,
                    stop_time=None,
                    node_id=node_id,
                )
            )
        s.get(DriveRow, drives[1]).state = 5  # type: ignore[union-attr]  # FAILED
    st = stub.GetClusterStatus(pb.GetClusterStatusRequest(cluster_id=cluster_id))
    by_id = {h.name: h for h in st.services}
    mine = [h for h in st.services if h.kind == pb.SERVICE_KIND_DAEMON]
    assert [(h.up, h.state) for h in mine] == [(True, "DAEMON_STATE_SERVING")]
    agent = by_id["h:1:agent"]
    assert (agent.kind, agent.node_id, agent.up, agent.state) == (
        pb.SERVICE_KIND_NODE_AGENT,
        nodes[0],
        False,
        "DAEMON_STATE_GONE",
    )
    assert "h:2:elsewhere" not in by_id  # the agent of another cluster's node
    assert [(by_id[d].up, by_id[d].state, by_id[d].address) for d in drives] == [
        (True, "DRIVE_STATE_ONLINE", "/dev/sdb"),
        (False, "DRIVE_STATE_FAILED", "/dev/sdb"),
    ]
    assert st.services_down == 2
    missing = fails(stub.GetClusterStatus, pb.GetClusterStatusRequest(cluster_id="a" * 32))
    assert missing.code == grpc.StatusCode.NOT_FOUND


def test_a_daemon_that_stopped_cleanly_is_no_service(daemon: RunningDaemon) -> None:
    from osd.store.models import DaemonRow, utcnow
    from tests.factories import make_topology

    stub = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    cluster_id, _, _ = make_topology(daemon.store, zones=1)
    now = utcnow()
    with daemon.store.write() as s:
        s.add(
            DaemonRow(
                id="h:3:restarted",
                host="h",
                pid=3,
                address="",
                version="0",
                start_time=now,
                heartbeat_time=now,
                stop_time=now,
                node_id=None,
            )
        )
    st = stub.GetClusterStatus(pb.GetClusterStatusRequest(cluster_id=cluster_id))
    assert "h:3:restarted" not in {h.name for h in st.services}
    assert st.services_down == 0
