"""NodeService nodes over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import func, select

from osd.engine.topology.availability import Availability
from osd.enums import AllocationState, DriveState, JobState, NodeState
from osd.store import allocations
from osd.store.models import (
    AllocationRow,
    AttachmentRow,
    DriveRow,
    JobRow,
    NodeRow,
    StateRow,
    utcnow,
)
from osd.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, node_pb2_grpc
from osd.v1 import node_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import (
    GIB,
    make_allocation,
    make_drive,
    make_job_row,
    make_node,
    make_volume_row,
)
from tests.helpers import ErrorView, error_of

# -- helpers shared by the topology tests ----------------------------------------


def fails(call: Callable[[Any], Any], request: Any) -> ErrorView:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return error_of(info.value)


def generation_of(daemon: RunningDaemon) -> int:
    with daemon.store.read() as s:
        return s.scalars(select(StateRow.generation)).one()


def count(daemon: RunningDaemon, model: Any) -> int:
    with daemon.store.read() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def books_balanced(daemon: RunningDaemon) -> bool:
    with daemon.store.read() as s:
        return allocations.check(s) == []


def new_cluster(daemon: RunningDaemon, name: str = "c1") -> str:
    stub = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    return stub.CreateCluster(cluster_pb2.CreateClusterRequest(name=name)).cluster.id


def add_node(
    stub: node_pb2_grpc.NodeServiceStub, cluster_id: str, name: str, zone: str = "z1", **kw: Any
) -> pb.Node:
    kw.setdefault("management_addresses", [f"{name}.mgmt"])
    return stub.CreateNode(
        pb.CreateNodeRequest(cluster_id=cluster_id, name=name, zone=zone, **kw)
    ).node


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def allocation_states(daemon: RunningDaemon, node_id: str) -> dict[str, int]:
    with daemon.store.read() as s:
        rows = s.scalars(select(AllocationRow).where(AllocationRow.node_id == node_id))
        return {r.drive_id: r.state for r in rows}


@pytest.fixture
def stub(daemon: RunningDaemon) -> node_pb2_grpc.NodeServiceStub:
    return node_pb2_grpc.NodeServiceStub(daemon.channel)


@pytest.fixture
def cluster(daemon: RunningDaemon) -> str:
    return new_cluster(daemon)


# -- create -------------------------------------------------------------------


def test_create_stores_an_online_ready_node(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    before = generation_of(daemon)
    resp = stub.CreateNode(
        pb.CreateNodeRequest(
            cluster_id=cluster,
            name="n1",
            zone="rack-1",
            management_addresses=["10.0.0.1", "n1.example.com:7000"],
            labels={"tier": "ssd"},
        )
    )
    n = resp.node
    assert resp.created and resp.generation == before + 1 == n.generation
    assert (n.cluster_id, n.name, n.zone) == (cluster, "n1", "rack-1")
    assert list(n.management_addresses) == ["10.0.0.1", "n1.example.com:7000"]
    assert list(n.storage_addresses) == ["10.0.0.1", "n1.example.com:7000"]  # the default
    assert dict(n.labels) == {"tier": "ssd"}
    assert n.state == pb.NODE_STATE_ONLINE
    assert n.coordinator_role == pb.COORDINATOR_ROLE_NONE
    assert n.domain_state == pb.DOMAIN_STATE_READY
    assert n.drive_count == 0 and n.capacity.total_bytes == 0 and n.active_job_id == ""
    with daemon.store.read() as s:
        row = s.get_one(NodeRow, n.id)
        assert (row.name, row.zone, row.storage_addresses) == (
            "n1",
            "rack-1",
            ["10.0.0.1", "n1.example.com:7000"],
        )


def test_create_is_idempotent_by_name_within_the_cluster(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    first = stub.CreateNode(
        pb.CreateNodeRequest(
            cluster_id=cluster,
            name="n1",
            zone="z1",
            management_addresses=["a.mgmt"],
            storage_addresses=["a.data"],
        )
    )
    again = stub.CreateNode(
        pb.CreateNodeRequest(
            cluster_id=cluster,
            name="n1",
            zone="z1",
            management_addresses=["a.mgmt"],
            storage_addresses=["a.data"],
        )
    )
    assert not again.created and again.node == first.node
    assert again.generation == first.generation == generation_of(daemon)

    err = fails(
        stub.CreateNode,
        pb.CreateNodeRequest(
            cluster_id=cluster, name="n1", zone="z2", management_addresses=["a.mgmt"]
        ),
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "NODE_EXISTS"
    assert err.metadata["node_id"] == first.node.id
    assert count(daemon, NodeRow) == 1

    # The same name in another cluster is another node.
    other = new_cluster(daemon, "c2")
    assert add_node(stub, other, "n1", management_addresses=["a.mgmt"]).cluster_id == other


def test_concurrent_creates_of_one_name_make_one_node(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    results: list[pb.CreateNodeResponse] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(
                stub.CreateNode(
                    pb.CreateNodeRequest(
                        cluster_id=cluster, name="race", zone="z", management_addresses=["r"]
                    )
                )
            )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.created for r in results) == 1
    assert len({r.node.id for r in results}) == 1
    assert count(daemon, NodeRow) == 1


@pytest.mark.parametrize(
    ("changes", "field", "why"),
    [
        ({"cluster_id": ""}, "cluster_id", "is required"),
        ({"cluster_id": "nope"}, "cluster_id", "not an id"),
        ({"name": ""}, "name", "is required"),
        ({"name": "has space"}, "name", "may contain only"),
        ({"name": "status"}, "name", "reserved"),
        ({"zone": ""}, "zone", "is required"),
        ({"zone": "rack/1"}, "zone", "may contain only"),
        ({"zone": "z" * 201}, "zone", "at most 200"),
        ({"management_addresses": []}, "management_addresses", "at least one"),
        ({"management_addresses": [""]}, "management_addresses[0]", "is empty"),
        ({"management_addresses": ["ok", "bad host"]}, "management_addresses[1]", "host name"),
        ({"management_addresses": ["300.1.2.3"]}, "management_addresses[0]", "host name"),
        ({"management_addresses": ["h:0"]}, "management_addresses[0]", "port"),
        ({"management_addresses": ["h:99999"]}, "management_addresses[0]", "port"),
        ({"management_addresses": ["h:"]}, "management_addresses[0]", "empty port"),
        ({"management_addresses": ["[::1"]}, "management_addresses[0]", "host name"),
        ({"management_addresses": ["[nope]:80"]}, "management_addresses[0]", "IPv6"),
        ({"management_addresses": ["a" * 254]}, "management_addresses[0]", "at most 253"),
        ({"management_addresses": ["a.b", "A.B"]}, "management_addresses[1]", "twice"),
        ({"storage_addresses": ["-bad"]}, "storage_addresses[0]", "host name"),
        ({"labels": {"bad key": "v"}}, "labels['bad key']", "key must be"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels", "at most 64"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(
    stub: node_pb2_grpc.NodeServiceStub,
    daemon: RunningDaemon,
    cluster: str,
    changes: dict[str, Any],
    field: str,
    why: str,
) -> None:
    request: dict[str, Any] = {
        "cluster_id": cluster,
        "name": "n1",
        "zone": "z1",
        "management_addresses": ["n1.mgmt"],
    }
    request.update(changes)
    before = generation_of(daemon)
    err = fails(stub.CreateNode, pb.CreateNodeRequest(**request))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert why in err.fields[field], err.fields
    assert count(daemon, NodeRow) == 0
    assert generation_of(daemon) == before


def test_create_reports_every_bad_field_at_once(stub: node_pb2_grpc.NodeServiceStub) -> None:
    err = fails(stub.CreateNode, pb.CreateNodeRequest(name="bad name", zone=""))
    assert {"cluster_id", "name", "zone", "management_addresses"} <= set(err.fields)


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "10.0.0.1:9000", "[fe80::1]:7000", "::1", "host-1.example.com:22", "N_1"],
)
def test_create_accepts_host_names_and_ip_addresses(
    stub: node_pb2_grpc.NodeServiceStub, cluster: str, address: str
) -> None:
    assert list(
        add_node(stub, cluster, "n", management_addresses=[address]).management_addresses
    ) == [address]


def test_create_in_an_unknown_cluster(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon
) -> None:
    missing = uuid.uuid4().hex
    err = fails(
        stub.CreateNode,
        pb.CreateNodeRequest(cluster_id=missing, name="n", zone="z", management_addresses=["a"]),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.metadata == {"kind": "cluster", "field": "cluster_id", "id": missing}
    assert count(daemon, NodeRow) == 0


def test_a_management_address_belongs_to_one_node_of_a_cluster(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n1 = add_node(stub, cluster, "n1", management_addresses=["10.0.0.1", "Host.A"])
    before = generation_of(daemon)
    err = fails(
        stub.CreateNode,
        pb.CreateNodeRequest(
            cluster_id=cluster, name="n2", zone="z1", management_addresses=["host.a"]
        ),
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "NODE_ADDRESS_EXISTS"
    assert err.metadata == {"address": "host.a", "node_id": n1.id}
    assert count(daemon, NodeRow) == 1 and generation_of(daemon) == before
    # Another cluster may reuse it.
    other = new_cluster(daemon, "c2")
    add_node(stub, other, "n2", management_addresses=["10.0.0.1"])


# -- inspect ------------------------------------------------------------------


def test_inspect_shows_drives_and_capacity_over_data_drives(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1")
    sdc = make_drive(daemon.store, n.id, "/dev/sdc", 100 * GIB)
    sdb = make_drive(daemon.store, n.id, "/dev/sdb", 50 * GIB)
    make_drive(daemon.store, n.id, "/dev/nvme0n1", 10 * GIB, journal=True)
    vol = make_volume_row(daemon.store, cluster, "v1")
    make_allocation(daemon.store, sdc, volume_id=vol, nbytes=3 * GIB)

    resp = stub.InspectNode(pb.InspectNodeRequest(node_id=n.id))
    assert resp.node.drive_count == 3
    assert resp.node.capacity == common_pb2.Capacity(
        total_bytes=150 * GIB, used_bytes=3 * GIB, free_bytes=147 * GIB
    )
    assert [d.device_path for d in resp.drives] == ["/dev/nvme0n1", "/dev/sdb", "/dev/sdc"]
    by_path = {d.device_path: d for d in resp.drives}
    assert by_path["/dev/sdc"].capacity.used_bytes == 3 * GIB
    assert by_path["/dev/sdc"].allocation_count == 1
    assert by_path["/dev/sdb"].id == sdb and by_path["/dev/nvme0n1"].journal


@pytest.mark.parametrize(
    ("node_id", "code"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("x" * 32, grpc.StatusCode.INVALID_ARGUMENT),
        (uuid.uuid4().hex, grpc.StatusCode.NOT_FOUND),
    ],
)
def test_inspect_bad_ids(
    stub: node_pb2_grpc.NodeServiceStub, node_id: str, code: grpc.StatusCode
) -> None:
    err = fails(stub.InspectNode, pb.InspectNodeRequest(node_id=node_id))
    assert err.code == code
    assert "node_id" in err.fields


# -- list ---------------------------------------------------------------------


def test_list_pages_in_cluster_then_name_order(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    other = new_cluster(daemon, "c2")
    for c in (cluster, other):
        for i in reversed(range(7)):
            add_node(stub, c, f"n{i}", management_addresses=[f"{c[:6]}-{i}"])
    expected = [(c, f"n{i}") for c in sorted((cluster, other)) for i in range(7)]
    seen: list[tuple[str, str]] = []
    token = ""
    while True:
        resp = stub.ListNodes(pb.ListNodesRequest(page_size=4, page_token=token))
        assert len(resp.nodes) <= 4
        seen += [(n.cluster_id, n.name) for n in resp.nodes]
        token = resp.next_page_token
        if not token:
            break
    assert seen == expected
    only = stub.ListNodes(pb.ListNodesRequest(cluster_id=other, page_size=100))
    assert [n.name for n in only.nodes] == [f"n{i}" for i in range(7)]
    assert only.next_page_token == ""


def test_list_filters(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    for i in range(6):
        add_node(
            stub,
            cluster,
            f"{'db' if i % 2 else 'web'}-{i}",
            zone=f"z{i % 3}",
            labels={"rack": "r1" if i < 3 else "r2"},
        )
    make_node(daemon.store, cluster, "db-m", "z1", state=NodeState.MAINTENANCE)

    def names(**kw: Any) -> list[str]:
        return [n.name for n in stub.ListNodes(pb.ListNodesRequest(**kw)).nodes]

    assert names(name_regex="^db") == ["db-1", "db-3", "db-5", "db-m"]
    assert names(zone="z1") == ["db-1", "db-m", "web-4"]
    assert names(labels={"rack": "r2"}) == ["db-3", "db-5", "web-4"]
    assert names(states=[pb.NODE_STATE_MAINTENANCE]) == ["db-m"]
    assert len(names(states=[pb.NODE_STATE_ONLINE, pb.NODE_STATE_MAINTENANCE])) == 7
    assert names(name_regex="db", labels={"rack": "r1"}, zone="z1") == ["db-1"]
    assert names(cluster_id=uuid.uuid4().hex) == []
    # Filters hold across pages.
    first = stub.ListNodes(pb.ListNodesRequest(name_regex="^db", page_size=2))
    rest = stub.ListNodes(
        pb.ListNodesRequest(name_regex="^db", page_size=2, page_token=first.next_page_token)
    )
    assert [n.name for n in [*first.nodes, *rest.nodes]] == ["db-1", "db-3", "db-5", "db-m"]
    assert rest.next_page_token == ""


@pytest.mark.parametrize(
    ("request_kw", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"page_token": "eyJrIjoiY2x1c3RlciIsImEiOnsibmFtZSI6IngifX0"}, "page_token"),
        ({"cluster_id": "not-an-id"}, "cluster_id"),
        ({"states": [0]}, "states"),
        ({"states": [9]}, "states"),
        ({"zone": "bad zone"}, "zone"),
        ({"labels": {"bad key": "v"}}, "labels['bad key']"),
        ({"name_regex": "("}, "name_regex"),
    ],
)
def test_list_bad_input(
    stub: node_pb2_grpc.NodeServiceStub, request_kw: dict[str, Any], field: str
) -> None:
    err = fails(stub.ListNodes, pb.ListNodesRequest(**request_kw))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.fields


# -- update -------------------------------------------------------------------


def test_update_changes_only_masked_fields(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1", labels={"a": "1"})
    resp = stub.UpdateNode(
        pb.UpdateNodeRequest(
            node_id=n.id,
            name="n1b",
            zone="ignored",
            management_addresses=["10.1.1.1"],
            storage_addresses=["10.2.2.2", "10.2.2.3"],
            labels={"b": "2"},
            update_mask=mask("name", "management_addresses", "storage_addresses", "labels"),
        )
    )
    u = resp.node
    assert (u.name, u.zone, dict(u.labels)) == ("n1b", "z1", {"b": "2"})
    assert list(u.management_addresses) == ["10.1.1.1"]
    assert list(u.storage_addresses) == ["10.2.2.2", "10.2.2.3"]
    assert u.generation == resp.generation == generation_of(daemon)
    assert u.create_time == n.create_time
    # Emptied storage addresses fall back to the management addresses.
    u = stub.UpdateNode(
        pb.UpdateNodeRequest(node_id=n.id, update_mask=mask("storage_addresses"))
    ).node
    assert list(u.storage_addresses) == ["10.1.1.1"]


def test_update_conflicts_and_bad_input_change_nothing(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    a = add_node(stub, cluster, "a", management_addresses=["a.mgmt"])
    add_node(stub, cluster, "b", management_addresses=["b.mgmt"])
    before = generation_of(daemon)
    cases: list[tuple[pb.UpdateNodeRequest, grpc.StatusCode, str, str]] = [
        (
            pb.UpdateNodeRequest(node_id=a.id, name="b", update_mask=mask("name")),
            grpc.StatusCode.ALREADY_EXISTS,
            "NODE_EXISTS",
            "",
        ),
        (
            pb.UpdateNodeRequest(
                node_id=a.id,
                management_addresses=["B.mgmt"],
                update_mask=mask("management_addresses"),
            ),
            grpc.StatusCode.ALREADY_EXISTS,
            "NODE_ADDRESS_EXISTS",
            "",
        ),
        (
            pb.UpdateNodeRequest(node_id=a.id, update_mask=mask("management_addresses")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            "management_addresses",
        ),
        (
            pb.UpdateNodeRequest(node_id=a.id, zone="bad zone", update_mask=mask("zone")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            "zone",
        ),
        (
            pb.UpdateNodeRequest(node_id=a.id, name="x", update_mask=mask("state")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            "update_mask",
        ),
        (
            pb.UpdateNodeRequest(node_id=a.id, name="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            "update_mask",
        ),
        (
            pb.UpdateNodeRequest(node_id=uuid.uuid4().hex, name="x", update_mask=mask("name")),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
            "node_id",
        ),
        (
            pb.UpdateNodeRequest(
                node_id=a.id,
                name="x",
                update_mask=mask("name"),
                expected_generation=a.generation + 100,
            ),
            grpc.StatusCode.ABORTED,
            "GENERATION_MISMATCH",
            "",
        ),
    ]
    for request, code, reason, field in cases:
        err = fails(stub.UpdateNode, request)
        assert err.code == code, request
        if reason:
            assert err.reason == reason
        if field:
            assert field in err.fields
    assert generation_of(daemon) == before
    assert stub.InspectNode(pb.InspectNodeRequest(node_id=a.id)).node == a
    # A matching expected generation applies.
    ok = stub.UpdateNode(
        pb.UpdateNodeRequest(
            node_id=a.id, name="a2", update_mask=mask("name"), expected_generation=a.generation
        )
    )
    assert ok.node.name == "a2"


def test_zone_of_a_node_with_allocations_cannot_change(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1")
    drive = make_drive(daemon.store, n.id)
    # No allocations yet: the zone may change.
    n = stub.UpdateNode(
        pb.UpdateNodeRequest(node_id=n.id, zone="z2", update_mask=mask("zone"))
    ).node
    assert n.zone == "z2"
    make_allocation(daemon.store, drive, volume_id=make_volume_row(daemon.store, cluster, "v"))
    err = fails(
        stub.UpdateNode, pb.UpdateNodeRequest(node_id=n.id, zone="z3", update_mask=mask("zone"))
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "NODE_HAS_ALLOCATIONS"
    assert err.metadata == {"allocations": "1"}
    assert stub.InspectNode(pb.InspectNodeRequest(node_id=n.id)).node.zone == "z2"
    # Setting the zone it already has is not a change.
    same = stub.UpdateNode(
        pb.UpdateNodeRequest(
            node_id=n.id, zone="z2", labels={"k": "v"}, update_mask=mask("zone", "labels")
        )
    )
    assert same.node.zone == "z2" and dict(same.node.labels) == {"k": "v"}


# -- labels -------------------------------------------------------------------


def test_label_changes_set_update_delete(stub: node_pb2_grpc.NodeServiceStub, cluster: str) -> None:
    n = add_node(stub, cluster, "n1", labels={"a": "1", "b": "2"})

    def change(op: int, labels: dict[str, str]) -> dict[str, str]:
        resp = stub.UpdateNodeLabels(
            pb.UpdateNodeLabelsRequest(node_id=n.id, operation=op, labels=labels)
        )
        return dict(resp.node.labels)

    assert change(common_pb2.LABEL_OPERATION_UPDATE, {"b": "3", "c": "4"}) == {
        "a": "1",
        "b": "3",
        "c": "4",
    }
    assert change(common_pb2.LABEL_OPERATION_DELETE, {"a": "ignored", "zz": ""}) == {
        "b": "3",
        "c": "4",
    }
    assert change(common_pb2.LABEL_OPERATION_SET, {"only": "x"}) == {"only": "x"}
    assert change(common_pb2.LABEL_OPERATION_SET, {}) == {}


def test_label_changes_refuse_bad_input_and_change_nothing(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1", labels={f"k{i}": "v" for i in range(60)})
    before = generation_of(daemon)
    cases: list[tuple[pb.UpdateNodeLabelsRequest, grpc.StatusCode, str]] = [
        (
            pb.UpdateNodeLabelsRequest(node_id=n.id, labels={"a": "1"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "operation",
        ),
        (
            pb.UpdateNodeLabelsRequest(node_id=n.id, operation=7, labels={"a": "1"}),  # type: ignore[arg-type]
            grpc.StatusCode.INVALID_ARGUMENT,
            "operation",
        ),
        (
            pb.UpdateNodeLabelsRequest(
                node_id=n.id,
                operation=common_pb2.LABEL_OPERATION_UPDATE,
                labels={f"new{i}": "v" for i in range(5)},
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "labels",
        ),
        (
            pb.UpdateNodeLabelsRequest(
                node_id=n.id, operation=common_pb2.LABEL_OPERATION_UPDATE, labels={"bad key": "v"}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "labels['bad key']",
        ),
        (
            pb.UpdateNodeLabelsRequest(
                node_id=uuid.uuid4().hex, operation=common_pb2.LABEL_OPERATION_SET
            ),
            grpc.StatusCode.NOT_FOUND,
            "node_id",
        ),
        (
            pb.UpdateNodeLabelsRequest(node_id="", operation=common_pb2.LABEL_OPERATION_SET),
            grpc.StatusCode.INVALID_ARGUMENT,
            "node_id",
        ),
    ]
    for request, code, field in cases:
        err = fails(stub.UpdateNodeLabels, request)
        assert err.code == code, request
        assert field in err.fields, err.fields
    err = fails(
        stub.UpdateNodeLabels,
        pb.UpdateNodeLabelsRequest(
            node_id=n.id,
            operation=common_pb2.LABEL_OPERATION_SET,
            expected_generation=n.generation + 1,
        ),
    )
    assert err.code == grpc.StatusCode.ABORTED and err.reason == "GENERATION_MISMATCH"
    assert generation_of(daemon) == before
    assert len(stub.InspectNode(pb.InspectNodeRequest(node_id=n.id)).node.labels) == 60


# -- states -------------------------------------------------------------------


def test_offline_makes_allocations_unavailable_and_online_brings_them_back(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1")
    ok_drive = make_drive(daemon.store, n.id, "/dev/sdb")
    ejected = make_drive(daemon.store, n.id, "/dev/sdc")
    vol = make_volume_row(daemon.store, cluster, "v")
    make_allocation(daemon.store, ok_drive, volume_id=vol)
    make_allocation(daemon.store, ejected, volume_id=vol, index=1)
    pending_drive = make_drive(daemon.store, n.id, "/dev/sdd")
    make_allocation(
        daemon.store, pending_drive, volume_id=vol, index=2, state=AllocationState.PENDING
    )
    seen: list[Availability] = []
    daemon.daemon.engine.on_availability_change(lambda _s, change: seen.append(change))

    resp = stub.SetNodeState(pb.SetNodeStateRequest(node_id=n.id, state=pb.NODE_STATE_OFFLINE))
    assert resp.node.state == pb.NODE_STATE_OFFLINE
    assert allocation_states(daemon, n.id) == {
        ok_drive: AllocationState.UNAVAILABLE,
        ejected: AllocationState.UNAVAILABLE,
        pending_drive: AllocationState.PENDING,  # left to the change in progress
    }
    assert seen == [Availability(frozenset({vol}), frozenset())]

    with daemon.store.write() as s:  # the drive is ejected while the node is down
        s.get_one(DriveRow, ejected).state = int(DriveState.EJECTED)
    resp = stub.SetNodeState(pb.SetNodeStateRequest(node_id=n.id, state=pb.NODE_STATE_ONLINE))
    assert resp.node.state == pb.NODE_STATE_ONLINE
    assert allocation_states(daemon, n.id) == {
        ok_drive: AllocationState.ACTIVE,
        ejected: AllocationState.UNAVAILABLE,
        pending_drive: AllocationState.PENDING,
    }
    assert len(seen) == 2
    assert books_balanced(daemon)


def test_one_primary_coordinator_per_cluster(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    a = add_node(stub, cluster, "a")
    b = add_node(stub, cluster, "b")
    other = add_node(stub, new_cluster(daemon, "c2"), "x")
    for node in (a, other):
        stub.SetNodeState(
            pb.SetNodeStateRequest(node_id=node.id, coordinator_role=pb.COORDINATOR_ROLE_PRIMARY)
        )
    resp = stub.SetNodeState(
        pb.SetNodeStateRequest(node_id=b.id, coordinator_role=pb.COORDINATOR_ROLE_PRIMARY)
    )
    roles = {n.name: n.coordinator_role for n in stub.ListNodes(pb.ListNodesRequest()).nodes}
    assert roles == {
        "a": pb.COORDINATOR_ROLE_SECONDARY,
        "b": pb.COORDINATOR_ROLE_PRIMARY,
        "x": pb.COORDINATOR_ROLE_PRIMARY,  # another cluster keeps its own primary
    }
    demoted = stub.InspectNode(pb.InspectNodeRequest(node_id=a.id)).node
    assert demoted.generation == resp.generation


def test_domain_state_and_no_op_changes(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1")
    resp = stub.SetNodeState(
        pb.SetNodeStateRequest(node_id=n.id, domain_state=pb.DOMAIN_STATE_FLUSH)
    )
    assert resp.node.domain_state == pb.DOMAIN_STATE_FLUSH
    assert resp.node.state == pb.NODE_STATE_ONLINE  # unset fields keep their value
    before = generation_of(daemon)
    same = stub.SetNodeState(
        pb.SetNodeStateRequest(
            node_id=n.id, state=pb.NODE_STATE_ONLINE, domain_state=pb.DOMAIN_STATE_FLUSH
        )
    )
    assert same.generation == before == generation_of(daemon)
    assert same.node == resp.node


@pytest.mark.parametrize(
    ("request_kw", "fields"),
    [
        ({}, {"state", "coordinator_role", "domain_state"}),
        ({"state": pb.NODE_STATE_MAINTENANCE}, {"state"}),
        ({"state": pb.NODE_STATE_DRAINING}, {"state"}),
        ({"state": pb.NODE_STATE_UNSPECIFIED}, {"state"}),
        ({"coordinator_role": pb.COORDINATOR_ROLE_UNSPECIFIED}, {"coordinator_role"}),
        ({"coordinator_role": 9}, {"coordinator_role"}),
        ({"domain_state": pb.DOMAIN_STATE_UNSPECIFIED}, {"domain_state"}),
    ],
)
def test_set_state_bad_input(
    stub: node_pb2_grpc.NodeServiceStub,
    daemon: RunningDaemon,
    cluster: str,
    request_kw: dict[str, Any],
    fields: set[str],
) -> None:
    n = add_node(stub, cluster, "n1")
    before = generation_of(daemon)
    err = fails(stub.SetNodeState, pb.SetNodeStateRequest(node_id=n.id, **request_kw))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.fields) == fields
    assert generation_of(daemon) == before


@pytest.mark.parametrize("state", [NodeState.MAINTENANCE, NodeState.DRAINING])
def test_state_of_a_node_in_maintenance_or_draining_is_not_set_here(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str, state: NodeState
) -> None:
    node_id = make_node(daemon.store, cluster, "n1", state=state)
    before = generation_of(daemon)
    for target in (pb.NODE_STATE_ONLINE, pb.NODE_STATE_OFFLINE):
        err = fails(stub.SetNodeState, pb.SetNodeStateRequest(node_id=node_id, state=target))
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert err.reason == "NODE_STATE_CONFLICT"
        assert err.metadata == {"state": state.name}
    assert generation_of(daemon) == before
    # The roles still change.
    resp = stub.SetNodeState(
        pb.SetNodeStateRequest(node_id=node_id, domain_state=pb.DOMAIN_STATE_FLUSH)
    )
    assert resp.node.state == int(state) and resp.node.domain_state == pb.DOMAIN_STATE_FLUSH


def test_set_state_unknown_node_and_generation(
    stub: node_pb2_grpc.NodeServiceStub, cluster: str
) -> None:
    err = fails(
        stub.SetNodeState,
        pb.SetNodeStateRequest(node_id=uuid.uuid4().hex, state=pb.NODE_STATE_OFFLINE),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND and "node_id" in err.fields
    n = add_node(stub, cluster, "n1")
    err = fails(
        stub.SetNodeState,
        pb.SetNodeStateRequest(
            node_id=n.id, state=pb.NODE_STATE_OFFLINE, expected_generation=n.generation + 5
        ),
    )
    assert err.code == grpc.StatusCode.ABORTED and err.reason == "GENERATION_MISMATCH"
    assert stub.InspectNode(pb.InspectNodeRequest(node_id=n.id)).node.state == pb.NODE_STATE_ONLINE


# -- delete -------------------------------------------------------------------


def test_delete_an_empty_node(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1")
    resp = stub.DeleteNode(pb.DeleteNodeRequest(node_id=n.id))
    assert resp.generation == generation_of(daemon)
    assert count(daemon, NodeRow) == 0
    err = fails(stub.DeleteNode, pb.DeleteNodeRequest(node_id=n.id))
    assert err.code == grpc.StatusCode.NOT_FOUND


def _attach(daemon: RunningDaemon, volume_id: str, node_id: str) -> None:
    with daemon.store.write() as s:
        s.add(
            AttachmentRow(
                volume_id=volume_id,
                node_id=node_id,
                mode=1,
                device_path="/dev/osd0",
                attach_time=utcnow(),
                generation=1,
            )
        )


def test_delete_refuses_a_node_that_is_not_empty(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1")
    drive = make_drive(daemon.store, n.id)
    make_drive(daemon.store, n.id, "/dev/sdc")
    vol = make_volume_row(daemon.store, cluster, "v")
    make_allocation(daemon.store, drive, volume_id=vol)
    _attach(daemon, vol, n.id)
    before = generation_of(daemon)
    err = fails(stub.DeleteNode, pb.DeleteNodeRequest(node_id=n.id))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "NODE_NOT_EMPTY"
    assert err.metadata == {"drives": "2", "allocations": "1", "attachments": "1"}
    assert "2 drives" in err.message and "1 attachments" in err.message
    assert count(daemon, NodeRow) == 1 and generation_of(daemon) == before


def test_delete_refuses_a_node_with_attachments_only(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1")
    _attach(daemon, make_volume_row(daemon.store, cluster, "v"), n.id)
    err = fails(stub.DeleteNode, pb.DeleteNodeRequest(node_id=n.id))
    assert err.reason == "NODE_NOT_EMPTY" and err.metadata == {"attachments": "1"}


def test_delete_refuses_a_node_with_an_unfinished_job(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, cluster: str
) -> None:
    n = add_node(stub, cluster, "n1")
    job = make_job_row(daemon.store, cluster, n.id)
    err = fails(stub.DeleteNode, pb.DeleteNodeRequest(node_id=n.id))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "JOB_IN_PROGRESS" and err.metadata == {"job_id": job}
    assert count(daemon, NodeRow) == 1
    # A finished job no longer holds the node.
    with daemon.store.write() as s:
        s.get_one(JobRow, job).state = int(JobState.DONE)
    stub.DeleteNode(pb.DeleteNodeRequest(node_id=n.id))
    assert count(daemon, NodeRow) == 0
