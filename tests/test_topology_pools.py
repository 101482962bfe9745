"""PoolService over the wire, on SQLite and PostgreSQL, and a 3-zone cluster built over gRPC."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from sqlalchemy import delete

from osd.enums import JobKind, ObjectKind
from osd.store import pools as pool_repo
from osd.store.models import (
    PoolDriveRow,
    PoolNodeRow,
    PoolRow,
    SnapshotRow,
    TemplateRow,
    VolumeRow,
)
from osd.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc, pool_pb2_grpc
from osd.v1 import pool_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import (
    GIB,
    make_allocation,
    make_drive,
    make_job_row,
    make_snapshot,
    make_template_row,
    make_topology,
    make_volume_row,
    place_volume_in_pool,
)
from tests.test_topology_nodes import (
    add_node,
    books_balanced,
    count,
    fails,
    generation_of,
    mask,
    new_cluster,
)


@pytest.fixture
def stub(daemon: RunningDaemon) -> pool_pb2_grpc.PoolServiceStub:
    return pool_pb2_grpc.PoolServiceStub(daemon.channel)


@pytest.fixture
def topo(daemon: RunningDaemon) -> tuple[str, list[str], list[str]]:
    """3 zones, one node each, two 100 GiB drives per node."""
    return make_topology(daemon.store)


def create(stub: pool_pb2_grpc.PoolServiceStub, cluster_id: str, name: str, **kw: Any) -> pb.Pool:
    return stub.CreatePool(pb.CreatePoolRequest(cluster_id=cluster_id, name=name, **kw)).pool


def inspect(stub: pool_pb2_grpc.PoolServiceStub, pool_id: str) -> pb.Pool:
    return stub.InspectPool(pb.InspectPoolRequest(pool_id=pool_id)).pool


# -- create -------------------------------------------------------------------


def test_create_from_drives_and_whole_nodes(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, drives = topo
    resp = stub.CreatePool(
        pb.CreatePoolRequest(
            cluster_id=cluster,
            name="fast",
            drive_ids=[drives[4]],
            node_ids=[nodes[0]],
            labels={"media": "nvme"},
        )
    )
    p = resp.pool
    assert resp.created and resp.generation == p.generation == generation_of(daemon)
    assert (p.cluster_id, p.name, dict(p.labels)) == (cluster, "fast", {"media": "nvme"})
    assert set(p.drive_ids) == {drives[0], drives[1], drives[4]}
    assert list(p.node_ids) == [nodes[0]]
    assert p.capacity == common_pb2.Capacity(
        total_bytes=300 * GIB, used_bytes=0, free_bytes=300 * GIB
    )
    assert p.volume_count == 0 and p.active_job_id == ""
    with daemon.store.read() as s:
        assert pool_repo.effective_drive_ids(s, p.id) == {drives[0], drives[1], drives[4]}
        assert pool_repo.member_drive_ids(s, p.id) == {drives[4]}


def test_a_pool_may_start_empty(stub: pool_pb2_grpc.PoolServiceStub, daemon: RunningDaemon) -> None:
    p = create(stub, new_cluster(daemon), "empty")
    assert list(p.drive_ids) == [] and p.capacity.total_bytes == 0


def test_create_is_idempotent_by_name_within_the_cluster(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, drives = topo
    first = stub.CreatePool(
        pb.CreatePoolRequest(
            cluster_id=cluster, name="p", drive_ids=[drives[2], drives[4]], node_ids=[nodes[0]]
        )
    )
    again = stub.CreatePool(
        pb.CreatePoolRequest(
            cluster_id=cluster, name="p", drive_ids=[drives[4], drives[2]], node_ids=[nodes[0]]
        )
    )
    assert not again.created and again.pool == first.pool
    assert again.generation == first.generation == generation_of(daemon)
    for other in (
        {"drive_ids": [drives[2]], "node_ids": [nodes[0]]},
        {"drive_ids": [drives[2], drives[4]]},
        {"drive_ids": [drives[2], drives[4]], "node_ids": [nodes[0]], "labels": {"a": "b"}},
    ):
        err = fails(stub.CreatePool, pb.CreatePoolRequest(cluster_id=cluster, name="p", **other))
        assert err.code == grpc.StatusCode.ALREADY_EXISTS
        assert err.reason == "POOL_EXISTS" and err.metadata["pool_id"] == first.pool.id
    assert count(daemon, PoolRow) == 1


@pytest.mark.parametrize(
    ("changes", "field", "why"),
    [
        ({"cluster_id": ""}, "cluster_id", "is required"),
        ({"name": ""}, "name", "is required"),
        ({"name": "no spaces"}, "name", "may contain only"),
        ({"name": "list"}, "name", "reserved"),
        ({"labels": {"k": "v" * 254}}, "labels['k']", "longer than"),
        ({"drive_ids": ["nope"]}, "drive_ids[0]", "not an id"),
        ({"node_ids": [""]}, "node_ids[0]", "is required"),
        ({"drive_ids": ["DRIVE0", "DRIVE0"]}, "drive_ids[1]", "given twice"),
        ({"node_ids": ["NODE0", "NODE0"]}, "node_ids[1]", "given twice"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
    changes: dict[str, Any],
    field: str,
    why: str,
) -> None:
    cluster, nodes, drives = topo
    ids = {"DRIVE0": drives[0], "NODE0": nodes[0]}
    request: dict[str, Any] = {"cluster_id": cluster, "name": "p"}
    for key, value in changes.items():
        request[key] = [ids.get(x, x) for x in value] if isinstance(value, list) else value
    before = generation_of(daemon)
    err = fails(stub.CreatePool, pb.CreatePoolRequest(**request))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert why in err.fields[field], err.fields
    assert count(daemon, PoolRow) == 0 and count(daemon, PoolDriveRow) == 0
    assert generation_of(daemon) == before


def test_a_pool_names_only_drives_and_nodes_of_its_cluster(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, _nodes, drives = topo
    _other, other_nodes, other_drives = make_topology(
        daemon.store, zones=1, drives_per_node=1, cluster_name="c2"
    )
    before = generation_of(daemon)
    err = fails(
        stub.CreatePool,
        pb.CreatePoolRequest(
            cluster_id=cluster,
            name="p",
            drive_ids=[drives[0], other_drives[0]],
            node_ids=[other_nodes[0]],
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.fields) == {"drive_ids[1]", "node_ids[0]"}
    assert other_drives[0] in err.fields["drive_ids[1]"]
    assert cluster in err.fields["drive_ids[1]"]
    assert other_nodes[0] in err.fields["node_ids[0]"]
    assert count(daemon, PoolRow) == 0 and generation_of(daemon) == before


def test_a_journal_drive_holds_no_pool_data(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, _drives = topo
    journal = make_drive(daemon.store, nodes[0], "/dev/nvme0n1", journal=True)
    err = fails(
        stub.CreatePool, pb.CreatePoolRequest(cluster_id=cluster, name="p", drive_ids=[journal])
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "journal" in err.fields["drive_ids[0]"]
    # A whole node brings its data drives only.
    p = create(stub, cluster, "p", node_ids=[nodes[0]])
    assert journal not in p.drive_ids and len(p.drive_ids) == 2
    assert p.capacity.total_bytes == 200 * GIB


def test_create_with_unknown_references(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, _nodes, drives = topo
    missing = uuid.uuid4().hex
    cases = [
        (pb.CreatePoolRequest(cluster_id=missing, name="p"), "cluster_id", "cluster"),
        (
            pb.CreatePoolRequest(cluster_id=cluster, name="p", drive_ids=[drives[0], missing]),
            "drive_ids[1]",
            "drive",
        ),
        (
            pb.CreatePoolRequest(cluster_id=cluster, name="p", node_ids=[missing]),
            "node_ids[0]",
            "node",
        ),
    ]
    for request, field, kind in cases:
        err = fails(stub.CreatePool, request)
        assert err.code == grpc.StatusCode.NOT_FOUND
        assert err.metadata == {"kind": kind, "field": field, "id": missing}
        assert field in err.fields
    assert count(daemon, PoolRow) == 0


# -- inspect and list ---------------------------------------------------------


def test_inspect_shows_usage_and_member_drives(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, drives = topo
    p = create(stub, cluster, "p", node_ids=[nodes[2], nodes[0]])
    vol = make_volume_row(daemon.store, cluster, "v")
    place_volume_in_pool(daemon.store, vol, p.id)
    make_allocation(daemon.store, drives[1], volume_id=vol, nbytes=5 * GIB)
    make_allocation(daemon.store, drives[2], volume_id=vol, nbytes=7 * GIB, index=1)  # not a member
    resp = stub.InspectPool(pb.InspectPoolRequest(pool_id=p.id))
    assert resp.pool.capacity == common_pb2.Capacity(
        total_bytes=400 * GIB, used_bytes=5 * GIB, free_bytes=395 * GIB
    )
    assert resp.pool.volume_count == 1
    assert list(resp.pool.node_ids) == sorted([nodes[0], nodes[2]])
    keys = [(d.node_id, d.device_path) for d in resp.drives]
    assert keys == sorted(keys) and len(keys) == 4
    assert [d.id for d in resp.drives] == list(resp.pool.drive_ids)
    assert all(p.id in d.pool_ids for d in resp.drives)
    for bad, code in (
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        (uuid.uuid4().hex, grpc.StatusCode.NOT_FOUND),
    ):
        err = fails(stub.InspectPool, pb.InspectPoolRequest(pool_id=bad))
        assert err.code == code and "pool_id" in err.fields


def test_list_pages_in_cluster_then_name_order_with_filters(
    stub: pool_pb2_grpc.PoolServiceStub, daemon: RunningDaemon
) -> None:
    a, b = new_cluster(daemon, "a"), new_cluster(daemon, "b")
    for c in (a, b):
        for i in reversed(range(5)):
            create(stub, c, f"{'gold' if i % 2 else 'iron'}-{i}", labels={"i": str(i % 2)})
    expected = [
        (c, n)
        for c in sorted((a, b))
        for n in sorted(f"{'gold' if i % 2 else 'iron'}-{i}" for i in range(5))
    ]
    seen: list[tuple[str, str]] = []
    token = ""
    while True:
        resp = stub.ListPools(pb.ListPoolsRequest(page_size=3, page_token=token))
        seen += [(p.cluster_id, p.name) for p in resp.pools]
        token = resp.next_page_token
        if not token:
            break
    assert seen == expected

    def names(**kw: Any) -> list[str]:
        return [p.name for p in stub.ListPools(pb.ListPoolsRequest(**kw)).pools]

    assert names(cluster_id=a) == [n for _, n in expected[:5]]
    assert names(cluster_id=a, name_regex="^gold") == ["gold-1", "gold-3"]
    assert names(cluster_id=b, labels={"i": "0"}) == ["iron-0", "iron-2", "iron-4"]
    for kw, field in (
        ({"page_size": 5000}, "page_size"),
        ({"page_token": "x"}, "page_token"),
        ({"cluster_id": "x"}, "cluster_id"),
        ({"labels": {"": ""}}, "labels['']"),
        ({"name_regex": "["}, "name_regex"),
    ):
        err = fails(stub.ListPools, pb.ListPoolsRequest(**kw))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and field in err.fields


# -- update -------------------------------------------------------------------


def test_update_renames_and_relabels(
    stub: pool_pb2_grpc.PoolServiceStub, daemon: RunningDaemon
) -> None:
    cluster = new_cluster(daemon)
    p = create(stub, cluster, "p", labels={"a": "1"})
    create(stub, cluster, "taken")
    resp = stub.UpdatePool(
        pb.UpdatePoolRequest(pool_id=p.id, name="p2", labels={"x": "y"}, update_mask=mask("name"))
    )
    assert (resp.pool.name, dict(resp.pool.labels)) == ("p2", {"a": "1"})
    assert resp.generation == resp.pool.generation == generation_of(daemon)
    before = generation_of(daemon)
    cases: list[tuple[pb.UpdatePoolRequest, grpc.StatusCode, str]] = [
        (
            pb.UpdatePoolRequest(pool_id=p.id, name="taken", update_mask=mask("name")),
            grpc.StatusCode.ALREADY_EXISTS,
            "POOL_EXISTS",
        ),
        (
            pb.UpdatePoolRequest(pool_id=p.id, name="bad name", update_mask=mask("name")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "name",
        ),
        (
            pb.UpdatePoolRequest(pool_id=p.id, name="x", update_mask=mask("drive_ids")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "update_mask",
        ),
        (
            pb.UpdatePoolRequest(pool_id=p.id, labels={"a b": "c"}, update_mask=mask("labels")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "labels['a b']",
        ),
        (
            pb.UpdatePoolRequest(pool_id=uuid.uuid4().hex, name="x", update_mask=mask("name")),
            grpc.StatusCode.NOT_FOUND,
            "pool_id",
        ),
        (
            pb.UpdatePoolRequest(
                pool_id=p.id, name="x", update_mask=mask("name"), expected_generation=p.generation
            ),
            grpc.StatusCode.ABORTED,
            "GENERATION_MISMATCH",
        ),
    ]
    for request, code, what in cases:
        err = fails(stub.UpdatePool, request)
        assert err.code == code, request
        assert what == err.reason or what in err.fields
    assert generation_of(daemon) == before
    assert inspect(stub, p.id).name == "p2"
    resp = stub.UpdatePool(
        pb.UpdatePoolRequest(pool_id=p.id, labels={}, update_mask=mask("labels"))
    )
    assert dict(resp.pool.labels) == {}


# -- members ------------------------------------------------------------------


def test_add_members(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, drives = topo
    p = create(stub, cluster, "p", drive_ids=[drives[0]])
    resp = stub.AddPoolMembers(
        pb.AddPoolMembersRequest(
            pool_id=p.id, drive_ids=[drives[2], drives[2]], node_ids=[nodes[2]]
        )
    )
    assert set(resp.pool.drive_ids) == {drives[0], drives[2], drives[4], drives[5]}
    assert list(resp.pool.node_ids) == [nodes[2]]
    assert resp.generation == resp.pool.generation == generation_of(daemon)
    # Members already present stay as they are, and nothing changes.
    before = generation_of(daemon)
    same = stub.AddPoolMembers(
        pb.AddPoolMembersRequest(
            pool_id=p.id, drive_ids=[drives[0], drives[4]], node_ids=[nodes[2]]
        )
    )
    assert same.pool == resp.pool and same.generation == before == generation_of(daemon)
    with daemon.store.read() as s:
        assert pool_repo.member_drive_ids(s, p.id) == {drives[0], drives[2]}
    # A drive added to a whole member node later joins the pool.
    later = make_drive(daemon.store, nodes[2], "/dev/sdz")
    assert later in inspect(stub, p.id).drive_ids


def test_add_members_refuses_bad_input_and_changes_nothing(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, drives = topo
    _other, other_nodes, other_drives = make_topology(
        daemon.store, zones=1, drives_per_node=1, cluster_name="c2"
    )
    journal = make_drive(daemon.store, nodes[1], "/dev/nvme0n1", journal=True)
    p = create(stub, cluster, "p", drive_ids=[drives[0]])
    before = generation_of(daemon)
    missing = uuid.uuid4().hex
    cases: list[tuple[pb.AddPoolMembersRequest, grpc.StatusCode, set[str]]] = [
        (
            pb.AddPoolMembersRequest(pool_id=p.id),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"drive_ids", "node_ids"},
        ),
        (
            pb.AddPoolMembersRequest(pool_id="", drive_ids=[drives[1]]),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"pool_id"},
        ),
        (
            pb.AddPoolMembersRequest(pool_id=p.id, drive_ids=["x"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"drive_ids[0]"},
        ),
        (
            pb.AddPoolMembersRequest(pool_id=p.id, drive_ids=[drives[1], other_drives[0]]),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"drive_ids[1]"},
        ),
        (
            pb.AddPoolMembersRequest(pool_id=p.id, node_ids=[other_nodes[0]]),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"node_ids[0]"},
        ),
        (
            pb.AddPoolMembersRequest(pool_id=p.id, drive_ids=[journal]),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"drive_ids[0]"},
        ),
        (
            pb.AddPoolMembersRequest(pool_id=p.id, drive_ids=[missing]),
            grpc.StatusCode.NOT_FOUND,
            {"drive_ids[0]"},
        ),
        (
            pb.AddPoolMembersRequest(pool_id=p.id, node_ids=[nodes[0], missing]),
            grpc.StatusCode.NOT_FOUND,
            {"node_ids[1]"},
        ),
        (
            pb.AddPoolMembersRequest(pool_id=missing, drive_ids=[drives[1]]),
            grpc.StatusCode.NOT_FOUND,
            {"pool_id"},
        ),
        (
            pb.AddPoolMembersRequest(
                pool_id=p.id, drive_ids=[drives[1]], expected_generation=p.generation + 1
            ),
            grpc.StatusCode.ABORTED,
            set(),
        ),
    ]
    for request, code, fields in cases:
        err = fails(stub.AddPoolMembers, request)
        assert err.code == code, request
        assert set(err.fields) == fields, (request, err.fields)
    assert generation_of(daemon) == before
    assert list(inspect(stub, p.id).drive_ids) == [drives[0]]


def test_remove_members(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, drives = topo
    p = create(stub, cluster, "p", node_ids=[nodes[0], nodes[1]], drive_ids=[drives[4], drives[1]])
    # Removing a whole node removes its membership and its drives added alone.
    resp = stub.RemovePoolMembers(pb.RemovePoolMembersRequest(pool_id=p.id, node_ids=[nodes[0]]))
    assert set(resp.pool.drive_ids) == {drives[2], drives[3], drives[4]}
    assert list(resp.pool.node_ids) == [nodes[1]]
    # Removing one drive of a whole member node removes that drive only.
    resp = stub.RemovePoolMembers(pb.RemovePoolMembersRequest(pool_id=p.id, drive_ids=[drives[2]]))
    assert set(resp.pool.drive_ids) == {drives[3], drives[4]}
    assert list(resp.pool.node_ids) == []
    # Entries that are not members are ignored; nothing changes.
    before = generation_of(daemon)
    same = stub.RemovePoolMembers(
        pb.RemovePoolMembersRequest(pool_id=p.id, drive_ids=[drives[0]], node_ids=[nodes[0]])
    )
    assert same.generation == before == generation_of(daemon)
    assert set(same.pool.drive_ids) == {drives[3], drives[4]}
    with daemon.store.read() as s:
        assert pool_repo.effective_drive_ids(s, p.id) == {drives[3], drives[4]}
    # Removing a node that is not a whole member still takes out its drives added alone.
    resp = stub.RemovePoolMembers(pb.RemovePoolMembersRequest(pool_id=p.id, node_ids=[nodes[2]]))
    assert list(resp.pool.drive_ids) == [drives[3]]


def test_a_drive_holding_data_placed_through_the_pool_cannot_leave_it(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, drives = topo
    p = create(stub, cluster, "p", node_ids=[nodes[0]])
    other_pool = create(stub, cluster, "q", drive_ids=[drives[1]])
    placed = make_volume_row(daemon.store, cluster, "placed")
    place_volume_in_pool(daemon.store, placed, other_pool.id, tail_pool_id=p.id)
    make_allocation(daemon.store, drives[0], volume_id=placed)
    before = generation_of(daemon)
    for request in (
        pb.RemovePoolMembersRequest(pool_id=p.id, node_ids=[nodes[0]]),
        pb.RemovePoolMembersRequest(pool_id=p.id, drive_ids=[drives[0]]),
    ):
        err = fails(stub.RemovePoolMembers, request)
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert err.reason == "POOL_MEMBER_IN_USE"
        assert err.metadata == {"drive_id": drives[0], "allocations": "1"}
    assert generation_of(daemon) == before
    assert list(inspect(stub, p.id).node_ids) == [nodes[0]]
    # Data of volumes not placed through the pool does not hold a drive in it.
    loose = make_volume_row(daemon.store, cluster, "loose")
    make_allocation(daemon.store, drives[1], volume_id=loose)
    resp = stub.RemovePoolMembers(pb.RemovePoolMembersRequest(pool_id=p.id, drive_ids=[drives[1]]))
    assert set(resp.pool.drive_ids) == {drives[0]}
    # The snapshot of a placed volume holds its drive too.
    snap = make_snapshot(daemon.store, cluster, placed, "s")
    make_allocation(daemon.store, drives[1], snapshot_id=snap)
    err = fails(
        stub.RemovePoolMembers,
        pb.RemovePoolMembersRequest(pool_id=other_pool.id, drive_ids=[drives[1]]),
    )
    assert err.reason == "POOL_MEMBER_IN_USE" and err.metadata["drive_id"] == drives[1]
    assert books_balanced(daemon)


def test_remove_members_bad_input(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, _nodes, drives = topo
    p = create(stub, cluster, "p", drive_ids=[drives[0]])
    missing = uuid.uuid4().hex
    for request, code, fields in (
        (
            pb.RemovePoolMembersRequest(pool_id=p.id),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"drive_ids", "node_ids"},
        ),
        (
            pb.RemovePoolMembersRequest(pool_id=p.id, drive_ids=[missing]),
            grpc.StatusCode.NOT_FOUND,
            {"drive_ids[0]"},
        ),
        (
            pb.RemovePoolMembersRequest(pool_id=p.id, node_ids=["bad"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"node_ids[0]"},
        ),
        (
            pb.RemovePoolMembersRequest(pool_id=missing, drive_ids=[drives[0]]),
            grpc.StatusCode.NOT_FOUND,
            {"pool_id"},
        ),
        (
            pb.RemovePoolMembersRequest(pool_id=p.id, drive_ids=[drives[0]], expected_generation=1),
            grpc.StatusCode.ABORTED,
            set(),
        ),
    ):
        err = fails(stub.RemovePoolMembers, request)
        assert err.code == code, request
        assert set(err.fields) == fields
    assert list(inspect(stub, p.id).drive_ids) == [drives[0]]


# -- delete -------------------------------------------------------------------


def test_delete_an_unused_pool_keeps_its_drives(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, drives = topo
    p = create(stub, cluster, "p", node_ids=[nodes[0]], drive_ids=[drives[5]])
    resp = stub.DeletePool(pb.DeletePoolRequest(pool_id=p.id))
    assert resp.generation == generation_of(daemon)
    assert count(daemon, PoolRow) == count(daemon, PoolDriveRow) == count(daemon, PoolNodeRow) == 0
    nodes_stub = node_pb2_grpc.NodeServiceStub(daemon.channel)
    assert len(nodes_stub.ListDrives(node_pb2.ListDrivesRequest()).drives) == 6
    err = fails(stub.DeletePool, pb.DeletePoolRequest(pool_id=p.id))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_delete_refuses_a_pool_in_use(
    stub: pool_pb2_grpc.PoolServiceStub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
) -> None:
    cluster, nodes, _drives = topo
    p = create(stub, cluster, "p", node_ids=[nodes[0]])
    v1 = make_volume_row(daemon.store, cluster, "v1")
    v2 = make_volume_row(daemon.store, cluster, "v2")
    place_volume_in_pool(daemon.store, v1, p.id)
    place_volume_in_pool(daemon.store, v2, None, tail_pool_id=p.id)
    make_snapshot(daemon.store, cluster, v1, "s1")
    template = make_template_row(daemon.store, cluster, "t", {"pool_id": p.id})
    make_template_row(daemon.store, cluster, "unrelated", {"pool_id": ""})
    before = generation_of(daemon)
    err = fails(stub.DeletePool, pb.DeletePoolRequest(pool_id=p.id))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "POOL_IN_USE"
    assert err.metadata == {"volumes": "2", "snapshots": "1", "templates": "1"}
    assert "2 volumes" in err.message and "1 templates" in err.message
    assert count(daemon, PoolRow) == 1 and generation_of(daemon) == before
    assert inspect(stub, p.id).volume_count == 2

    # Only the template left.
    with daemon.store.write() as s:
        s.execute(delete(SnapshotRow))
        s.execute(delete(VolumeRow))
    err = fails(stub.DeletePool, pb.DeletePoolRequest(pool_id=p.id))
    assert err.metadata == {"volumes": "0", "snapshots": "0", "templates": "1"}
    with daemon.store.write() as s:
        s.execute(delete(TemplateRow).where(TemplateRow.id == template))
    stub.DeletePool(pb.DeletePoolRequest(pool_id=p.id))
    assert count(daemon, PoolRow) == 0


def test_delete_refuses_a_pool_being_rebalanced(
    stub: pool_pb2_grpc.PoolServiceStub, daemon: RunningDaemon
) -> None:
    cluster = new_cluster(daemon)
    p = create(stub, cluster, "p")
    job = make_job_row(
        daemon.store,
        cluster,
        p.id,
        kind=int(JobKind.POOL_REBALANCE),
        target_kind=int(ObjectKind.POOL),
    )
    err = fails(stub.DeletePool, pb.DeletePoolRequest(pool_id=p.id))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "JOB_IN_PROGRESS" and err.metadata == {"job_id": job}
    assert count(daemon, PoolRow) == 1


# -- a 3-zone cluster over the API --------------------------------------------


def test_a_three_zone_cluster_built_over_grpc(daemon: RunningDaemon) -> None:
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    nodes = node_pb2_grpc.NodeServiceStub(daemon.channel)
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    cluster = clusters.CreateCluster(cluster_pb2.CreateClusterRequest(name="east")).cluster

    node_ids: list[str] = []
    drive_ids: list[str] = []
    for z in range(3):
        for n in range(2):
            name = f"z{z}-n{n}"
            node = add_node(
                nodes,
                cluster.id,
                name,
                zone=f"zone-{z}",
                management_addresses=[f"10.0.{z}.{n + 1}"],
                storage_addresses=[f"10.1.{z}.{n + 1}"],
                labels={"rack": f"r{z}"},
            )
            node_ids.append(node.id)
            for d, path in enumerate(("/dev/sdb", "/dev/sdc")):
                daemon.driver.add_device(f"10.0.{z}.{n + 1}", path, (d + 1) * 100 * GIB)
                drive = nodes.CreateDrive(
                    node_pb2.CreateDriveRequest(node_id=node.id, device_path=path)
                ).drive
                assert drive.state == node_pb2.DRIVE_STATE_ONLINE
                drive_ids.append(drive.id)
            nodes.CreateDrive(
                node_pb2.CreateDriveRequest(
                    node_id=node.id, device_path="/dev/nvme0n1", journal=True
                )
            )

    everything = pools.CreatePool(
        pb.CreatePoolRequest(cluster_id=cluster.id, name="all", node_ids=node_ids)
    ).pool
    big = pools.CreatePool(
        pb.CreatePoolRequest(cluster_id=cluster.id, name="big", drive_ids=drive_ids[1::2])
    ).pool
    assert len(everything.drive_ids) == 12
    assert everything.capacity.total_bytes == 6 * 300 * GIB
    assert big.capacity.total_bytes == 6 * 200 * GIB

    status = clusters.GetClusterStatus(cluster_pb2.GetClusterStatusRequest(cluster_id=cluster.id))
    assert (status.node_count, status.drive_count, status.pool_count) == (6, 18, 2)
    assert status.capacity.total_bytes == 6 * 300 * GIB  # journal drives are not counted

    zones = nodes.ListNodes(node_pb2.ListNodesRequest(cluster_id=cluster.id, zone="zone-1")).nodes
    assert [n.name for n in zones] == ["z1-n0", "z1-n1"]
    for n in nodes.ListNodes(node_pb2.ListNodesRequest(cluster_id=cluster.id)).nodes:
        assert n.drive_count == 3 and n.capacity.total_bytes == 300 * GIB
    in_big = nodes.ListDrives(node_pb2.ListDrivesRequest(pool_id=big.id)).drives
    assert {d.id for d in in_big} == set(drive_ids[1::2])
    assert all(set(d.pool_ids) == {everything.id, big.id} for d in in_big)
    assert books_balanced(daemon)
