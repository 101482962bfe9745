"""NodeService drives over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from osd.config import Settings
from osd.daemon import Daemon
from osd.engine.drivers.base import DriverError
from osd.engine.drivers.fake import TIB, FakeDriver
from osd.engine.engine import Engine
from osd.engine.topology.availability import Availability
from osd.enums import AllocationState, DriveState, JobKind, NodeState, ObjectKind
from osd.store.db import Store
from osd.store.models import AllocationRow, DriveRow, NodeRow, PoolDriveRow
from osd.v1 import common_pb2, node_pb2_grpc, pool_pb2, pool_pb2_grpc
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as pb
from tests.conftest import Database, RunningDaemon
from tests.factories import (
    GIB,
    make_allocation,
    make_cluster,
    make_drive,
    make_job_row,
    make_node,
    make_snapshot,
    make_topology,
    make_volume,
    make_volume_row,
)
from tests.test_jobs import assert_books, job_count, wait_job
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
def stub(daemon: RunningDaemon) -> node_pb2_grpc.NodeServiceStub:
    return node_pb2_grpc.NodeServiceStub(daemon.channel)


@pytest.fixture
def node(stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon) -> pb.Node:
    return add_node(stub, new_cluster(daemon), "n1", management_addresses=["n1.mgmt"])


def add_drive(
    stub: node_pb2_grpc.NodeServiceStub, node_id: str, path: str = "/dev/sdb", **kw: Any
) -> pb.Drive:
    return stub.CreateDrive(pb.CreateDriveRequest(node_id=node_id, device_path=path, **kw)).drive


def ops(driver: FakeDriver) -> list[str]:
    return [op for op, _ in driver.calls]


# -- create -------------------------------------------------------------------


def test_create_probes_formats_and_brings_the_drive_online(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    daemon.driver.add_device("n1.mgmt", "/dev/sdb", 500 * GIB)
    resp = stub.CreateDrive(
        pb.CreateDriveRequest(
            node_id=node.id,
            device_path="/dev/sdb",
            labels={"media": "ssd"},
            description="bay 3 - front",
        )
    )
    d = resp.drive
    assert resp.created and resp.generation == d.generation == generation_of(daemon)
    assert (d.node_id, d.cluster_id, d.device_path) == (node.id, node.cluster_id, "/dev/sdb")
    assert d.state == pb.DRIVE_STATE_ONLINE
    assert d.capacity == common_pb2.Capacity(
        total_bytes=500 * GIB, used_bytes=0, free_bytes=500 * GIB
    )
    assert (d.description, dict(d.labels), d.journal, d.ssd) == (
        "bay 3 - front",
        {"media": "ssd"},
        False,
        True,
    )
    assert d.allocation_count == 0 and list(d.pool_ids) == []
    assert ops(daemon.driver) == ["probe_drive", "format_drive"]
    assert daemon.driver.state.devices[("n1.mgmt", "/dev/sdb")].drive_id == d.id
    n = stub.InspectNode(pb.InspectNodeRequest(node_id=node.id)).node
    assert n.drive_count == 1 and n.capacity.total_bytes == 500 * GIB


def test_create_is_idempotent_by_device_within_the_node(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    first = stub.CreateDrive(
        pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdb", labels={"a": "1"})
    )
    calls = len(daemon.driver.calls)
    again = stub.CreateDrive(
        pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdb", labels={"a": "1"})
    )
    assert not again.created and again.drive == first.drive
    assert again.generation == first.generation == generation_of(daemon)
    assert len(daemon.driver.calls) == calls  # the driver is not asked again

    err = fails(
        stub.CreateDrive,
        pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdb", journal=True),
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "DRIVE_EXISTS"
    assert err.metadata == {"device_path": "/dev/sdb", "drive_id": first.drive.id}
    assert count(daemon, DriveRow) == 1 and len(daemon.driver.calls) == calls


def test_a_device_with_data_needs_confirmation(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    daemon.driver.add_device("n1.mgmt", "/dev/sdc", TIB, has_data=True)
    before = generation_of(daemon)
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdc"))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "CONFIRMATION_REQUIRED"
    assert "yes_i_really_mean_it" in err.message
    assert count(daemon, DriveRow) == 0 and generation_of(daemon) == before
    assert ops(daemon.driver) == ["probe_drive"]
    assert daemon.driver.state.devices[("n1.mgmt", "/dev/sdc")].has_data

    d = add_drive(stub, node.id, "/dev/sdc", yes_i_really_mean_it=True)
    assert d.state == pb.DRIVE_STATE_ONLINE
    assert not daemon.driver.state.devices[("n1.mgmt", "/dev/sdc")].has_data


@pytest.mark.parametrize("state", [NodeState.OFFLINE, NodeState.MAINTENANCE, NodeState.DRAINING])
def test_a_node_that_is_not_online_takes_no_drive(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, state: NodeState
) -> None:
    cluster = make_cluster(daemon.store)
    node_id = make_node(daemon.store, cluster, "n1", state=state)
    before = generation_of(daemon)
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(node_id=node_id, device_path="/dev/sdb"))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "NODE_NOT_ONLINE"
    assert err.metadata == {"node_id": node_id, "state": state.name}
    assert count(daemon, DriveRow) == 0 and generation_of(daemon) == before
    assert daemon.driver.calls == []


def test_a_node_set_offline_over_the_api_takes_no_drive(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    stub.SetNodeState(pb.SetNodeStateRequest(node_id=node.id, state=pb.NODE_STATE_OFFLINE))
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdb"))
    assert err.reason == "NODE_NOT_ONLINE"
    assert count(daemon, DriveRow) == 0


@pytest.mark.parametrize(
    ("changes", "field", "why"),
    [
        ({"node_id": ""}, "node_id", "is required"),
        ({"node_id": "n1"}, "node_id", "not an id"),
        ({"device_path": ""}, "device_path", "is required"),
        ({"device_path": "sdb"}, "device_path", "absolute path"),
        ({"device_path": "/dev/"}, "device_path", "absolute path"),
        ({"device_path": "/dev/../etc/passwd"}, "device_path", "absolute path"),
        ({"device_path": "/dev/sd b"}, "device_path", "absolute path"),
        ({"device_path": "/etc/passwd"}, "device_path", "a device under /dev"),
        ({"device_path": "/devices/sdb"}, "device_path", "a device under /dev"),
        ({"device_path": "/dev/" + "x" * 251}, "device_path", "at most 255"),
        ({"description": "bad!"}, "description", "at most 30"),
        ({"description": "x" * 31}, "description", "at most 30"),
        ({"description": "tab\there"}, "description", "at most 30"),
        ({"labels": {"-k": "v"}}, "labels['-k']", "key must be"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(
    stub: node_pb2_grpc.NodeServiceStub,
    daemon: RunningDaemon,
    node: pb.Node,
    changes: dict[str, Any],
    field: str,
    why: str,
) -> None:
    request: dict[str, Any] = {"node_id": node.id, "device_path": "/dev/sdb"}
    request.update(changes)
    before = generation_of(daemon)
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(**request))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert why in err.fields[field], err.fields
    assert count(daemon, DriveRow) == 0 and generation_of(daemon) == before
    assert daemon.driver.calls == []


def test_description_rule_accepts_its_alphabet(
    stub: node_pb2_grpc.NodeServiceStub, node: pb.Node
) -> None:
    text = "Az09_- " + "x" * 23
    assert (
        add_drive(stub, node.id, "/dev/disk/by-id/nvme-X_1.2:3", description=text).description
        == text
    )


def test_create_on_an_unknown_node(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon
) -> None:
    missing = uuid.uuid4().hex
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(node_id=missing, device_path="/dev/sdb"))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.metadata == {"kind": "node", "field": "node_id", "id": missing}
    assert daemon.driver.calls == []


def test_format_failure_leaves_no_drive_and_balanced_books(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    daemon.driver.fail("format_drive")
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdb"))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.reason == "DRIVER_ERROR"
    assert err.metadata == {"operation": "format_drive", "retryable": "false"}
    assert "injected failure" in err.message
    assert count(daemon, DriveRow) == 0
    assert books_balanced(daemon)
    assert ops(daemon.driver) == ["probe_drive", "format_drive"]
    # Nothing is left to trip a retry.
    d = add_drive(stub, node.id, "/dev/sdb")
    assert d.state == pb.DRIVE_STATE_ONLINE and count(daemon, DriveRow) == 1


def test_an_unexpected_format_error_also_rolls_back(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    daemon.driver.fail("format_drive", error=RuntimeError("driver bug"))
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdb"))
    assert err.code == grpc.StatusCode.INTERNAL
    assert count(daemon, DriveRow) == 0 and books_balanced(daemon)


def test_probe_failures(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    daemon.driver.fail("probe_drive", error=DriverError("node unreachable", retryable=True))
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdb"))
    assert err.code == grpc.StatusCode.UNAVAILABLE and err.reason == "DRIVER_ERROR"

    daemon.driver.fail("probe_drive", error=DriverError("no such device"))
    err = fails(stub.CreateDrive, pb.CreateDriveRequest(node_id=node.id, device_path="/dev/sdx"))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.metadata == {"kind": "device", "field": "device_path", "id": "/dev/sdx"}
    assert "device_path" in err.fields
    assert count(daemon, DriveRow) == 0 and "format_drive" not in ops(daemon.driver)


def test_a_drive_of_a_whole_member_node_joins_its_pools(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    pool = pools.CreatePool(
        pool_pb2.CreatePoolRequest(cluster_id=node.cluster_id, name="p", node_ids=[node.id])
    ).pool
    d = add_drive(stub, node.id)
    j = add_drive(stub, node.id, "/dev/nvme0n1", journal=True)
    assert list(d.pool_ids) == [pool.id]
    assert list(j.pool_ids) == []  # journal drives hold no data
    assert list(pools.InspectPool(pool_pb2.InspectPoolRequest(pool_id=pool.id)).pool.drive_ids) == [
        d.id
    ]


# -- recovery -----------------------------------------------------------------


@contextlib.contextmanager
def daemon_with(database: Database, driver: FakeDriver) -> Iterator[Daemon]:
    """A daemon over ``database`` with a driver prepared by the test (faults set)."""
    settings = Settings(
        grpc_listen="127.0.0.1:0", rest_enabled=False, database_url=database.url, workers=4
    )
    d = Daemon(settings, engine=Engine(Store(database.url), driver))
    d.start()
    try:
        yield d
    finally:
        d.stop(grace=1)


def _left_adding(database: Database) -> tuple[Store, str, str]:
    store = Store(database.url)
    store.upgrade()
    cluster = make_cluster(store)
    node_id = make_node(store, cluster, "n1")
    drive_id = make_drive(store, node_id, "/dev/sdb", state=DriveState.ADDING)
    return store, node_id, drive_id


def test_a_restart_finishes_a_drive_left_adding(database: Database) -> None:
    store, _node_id, drive_id = _left_adding(database)
    driver = FakeDriver()
    driver.add_device("n1.mgmt", "/dev/sdb", TIB)  # probed before the crash
    with daemon_with(database, driver) as d, d.engine.store.read() as s:
        row = s.get_one(DriveRow, drive_id)
        assert row.state == DriveState.ONLINE
    assert ops(driver) == ["format_drive"]
    assert driver.state.devices[("n1.mgmt", "/dev/sdb")].drive_id == drive_id
    store.close()


def test_a_restart_deletes_a_drive_left_adding_that_cannot_be_prepared(database: Database) -> None:
    store, _node_id, drive_id = _left_adding(database)
    driver = FakeDriver()
    driver.fail("format_drive", error=DriverError("device gone"))
    with daemon_with(database, driver) as d, d.engine.store.read() as s:
        assert s.get(DriveRow, drive_id) is None
    assert ops(driver) == ["format_drive", "release_drive"]
    store.close()


def test_a_restart_leaves_a_drive_whose_add_job_is_unfinished(database: Database) -> None:
    store, _node_id, drive_id = _left_adding(database)
    with store.read() as s:
        cluster = s.get_one(DriveRow, drive_id).cluster_id
    make_job_row(
        store, cluster, drive_id, kind=int(JobKind.DRIVE_ADD), target_kind=int(ObjectKind.DRIVE)
    )
    driver = FakeDriver()
    with daemon_with(database, driver) as d, d.engine.store.read() as s:
        assert s.get_one(DriveRow, drive_id).state == DriveState.ADDING
    assert driver.calls == []
    store.close()


# -- inspect and list ---------------------------------------------------------


def test_inspect_shows_capacity_allocations_and_pools(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    daemon.driver.add_device("n1.mgmt", "/dev/sdb", 100 * GIB)
    d = add_drive(stub, node.id)
    v2 = make_volume_row(daemon.store, node.cluster_id, "v2")
    v1 = make_volume_row(daemon.store, node.cluster_id, "v1")
    snap = make_snapshot(daemon.store, node.cluster_id, v1, "s1")
    make_allocation(daemon.store, d.id, volume_id=v2, nbytes=2 * GIB, index=1)
    make_allocation(daemon.store, d.id, volume_id=v1, nbytes=3 * GIB)
    make_allocation(daemon.store, d.id, snapshot_id=snap, nbytes=GIB, state=AllocationState.PENDING)
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    pool = pools.CreatePool(
        pool_pb2.CreatePoolRequest(cluster_id=node.cluster_id, name="p", drive_ids=[d.id])
    ).pool

    resp = stub.InspectDrive(pb.InspectDriveRequest(drive_id=d.id))
    assert resp.drive.capacity == common_pb2.Capacity(
        total_bytes=100 * GIB, used_bytes=6 * GIB, free_bytes=94 * GIB
    )
    assert resp.drive.allocation_count == 3 and list(resp.drive.pool_ids) == [pool.id]
    owners = [a.volume_id or a.snapshot_id for a in resp.allocations]
    assert owners == sorted(owners) and set(owners) == {v1, v2, snap}
    assert sum(a.bytes for a in resp.allocations) == resp.drive.capacity.used_bytes
    for a in resp.allocations:
        assert (a.drive_id, a.node_id, a.zone) == (d.id, node.id, "z1")
    by_owner = {a.volume_id or a.snapshot_id: a for a in resp.allocations}
    assert by_owner[snap].state == common_pb2.ALLOCATION_STATE_PENDING
    assert by_owner[v2].index == 1 and by_owner[v1].state == common_pb2.ALLOCATION_STATE_ACTIVE


@pytest.mark.parametrize(
    ("drive_id", "code"),
    [("", grpc.StatusCode.INVALID_ARGUMENT), (uuid.uuid4().hex, grpc.StatusCode.NOT_FOUND)],
)
def test_inspect_bad_ids(
    stub: node_pb2_grpc.NodeServiceStub, drive_id: str, code: grpc.StatusCode
) -> None:
    err = fails(stub.InspectDrive, pb.InspectDriveRequest(drive_id=drive_id))
    assert err.code == code and "drive_id" in err.fields


def test_list_pages_in_node_then_device_order_and_filters(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon
) -> None:
    cluster = new_cluster(daemon)
    other_cluster = new_cluster(daemon, "c2")
    a = add_node(stub, cluster, "a")
    b = add_node(stub, cluster, "b")
    x = add_node(stub, other_cluster, "x")
    drives: dict[str, pb.Drive] = {}
    for n in (a, b, x):
        for path in ("/dev/sdd", "/dev/sdb", "/dev/sdc"):
            label = {"slot": "even"} if path == "/dev/sdc" else {}
            drives[f"{n.name}{path[-1]}"] = add_drive(stub, n.id, path, labels=label)
    expected = [d.id for d in sorted(drives.values(), key=lambda d: (d.node_id, d.device_path))]
    seen: list[str] = []
    token = ""
    while True:
        resp = stub.ListDrives(pb.ListDrivesRequest(page_size=4, page_token=token))
        seen += [d.id for d in resp.drives]
        token = resp.next_page_token
        if not token:
            break
    assert seen == expected

    def ids(**kw: Any) -> set[str]:
        return {d.id for d in stub.ListDrives(pb.ListDrivesRequest(**kw)).drives}

    assert ids(node_id=a.id) == {drives["ab"].id, drives["ac"].id, drives["ad"].id}
    assert ids(cluster_id=other_cluster) == {drives[f"x{c}"].id for c in "bcd"}
    assert ids(labels={"slot": "even"}) == {drives[f"{n}c"].id for n in "abx"}
    stub.EjectDrive(pb.EjectDriveRequest(drive_id=drives["bd"].id, yes_i_really_mean_it=True))
    assert ids(states=[pb.DRIVE_STATE_EJECTED]) == {drives["bd"].id}
    assert len(ids(states=[pb.DRIVE_STATE_ONLINE])) == 8
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    pool = pools.CreatePool(
        pool_pb2.CreatePoolRequest(
            cluster_id=cluster, name="p", node_ids=[a.id], drive_ids=[drives["bb"].id]
        )
    ).pool
    assert ids(pool_id=pool.id) == {
        drives["ab"].id,
        drives["ac"].id,
        drives["ad"].id,
        drives["bb"].id,
    }
    assert ids(pool_id=pool.id, labels={"slot": "even"}) == {drives["ac"].id}
    assert ids(pool_id=uuid.uuid4().hex) == set()
    # By device path or description, with search semantics.
    assert ids(name_regex="sd[cd]$", node_id=a.id) == {drives["ac"].id, drives["ad"].id}
    stub.UpdateDrive(
        pb.UpdateDriveRequest(
            drive_id=drives["xb"].id, description="rack 7 nvme", update_mask=mask("description")
        )
    )
    assert ids(name_regex="nvme") == {drives["xb"].id}
    assert ids(name_regex="^/dev/sdb$", cluster_id=other_cluster) == {drives["xb"].id}
    assert ids(name_regex="nothing-like-this") == set()


@pytest.mark.parametrize(
    ("request_kw", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "nope"}, "page_token"),
        ({"node_id": "x"}, "node_id"),
        ({"cluster_id": "x"}, "cluster_id"),
        ({"pool_id": "x"}, "pool_id"),
        ({"states": [0]}, "states"),
        ({"states": [pb.DRIVE_STATE_ONLINE, 42]}, "states"),
        ({"labels": {"": "v"}}, "labels['']"),
        ({"name_regex": "("}, "name_regex"),
    ],
)
def test_list_bad_input(
    stub: node_pb2_grpc.NodeServiceStub, request_kw: dict[str, Any], field: str
) -> None:
    err = fails(stub.ListDrives, pb.ListDrivesRequest(**request_kw))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.fields


# -- update -------------------------------------------------------------------


def test_update_description_and_labels(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d = add_drive(stub, node.id, labels={"a": "1"}, description="old")
    resp = stub.UpdateDrive(
        pb.UpdateDriveRequest(
            drive_id=d.id, description="new one", labels={"b": "2"}, update_mask=mask("description")
        )
    )
    assert (resp.drive.description, dict(resp.drive.labels)) == ("new one", {"a": "1"})
    assert resp.generation == resp.drive.generation == generation_of(daemon)
    resp = stub.UpdateDrive(
        pb.UpdateDriveRequest(drive_id=d.id, labels={"b": "2"}, update_mask=mask("labels"))
    )
    assert dict(resp.drive.labels) == {"b": "2"}
    resp = stub.UpdateDriveLabels(
        pb.UpdateDriveLabelsRequest(
            drive_id=d.id, operation=common_pb2.LABEL_OPERATION_UPDATE, labels={"c": "3"}
        )
    )
    assert dict(resp.drive.labels) == {"b": "2", "c": "3"}
    resp = stub.UpdateDriveLabels(
        pb.UpdateDriveLabelsRequest(
            drive_id=d.id, operation=common_pb2.LABEL_OPERATION_DELETE, labels={"b": ""}
        )
    )
    assert dict(resp.drive.labels) == {"c": "3"}
    resp = stub.UpdateDriveLabels(
        pb.UpdateDriveLabelsRequest(
            drive_id=d.id, operation=common_pb2.LABEL_OPERATION_SET, labels={"z": "9"}
        )
    )
    assert dict(resp.drive.labels) == {"z": "9"}


def test_update_refuses_bad_input_and_changes_nothing(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d = add_drive(stub, node.id, description="keep")
    before = generation_of(daemon)
    cases: list[tuple[Any, Any, grpc.StatusCode, str]] = [
        (
            stub.UpdateDrive,
            pb.UpdateDriveRequest(
                drive_id=d.id, description="no/slash", update_mask=mask("description")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "description",
        ),
        (
            stub.UpdateDrive,
            pb.UpdateDriveRequest(drive_id=d.id, description="x", update_mask=mask("journal")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "update_mask",
        ),
        (
            stub.UpdateDrive,
            pb.UpdateDriveRequest(drive_id=d.id, description="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "update_mask",
        ),
        (
            stub.UpdateDrive,
            pb.UpdateDriveRequest(
                drive_id=uuid.uuid4().hex, description="x", update_mask=mask("description")
            ),
            grpc.StatusCode.NOT_FOUND,
            "drive_id",
        ),
        (
            stub.UpdateDrive,
            pb.UpdateDriveRequest(
                drive_id=d.id,
                description="x",
                update_mask=mask("description"),
                expected_generation=d.generation + 1,
            ),
            grpc.StatusCode.ABORTED,
            "",
        ),
        (
            stub.UpdateDriveLabels,
            pb.UpdateDriveLabelsRequest(drive_id=d.id, labels={"a": "b"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "operation",
        ),
        (
            stub.UpdateDriveLabels,
            pb.UpdateDriveLabelsRequest(
                drive_id=d.id,
                operation=common_pb2.LABEL_OPERATION_SET,
                labels={f"k{i}": "v" for i in range(65)},
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "labels",
        ),
        (
            stub.UpdateDriveLabels,
            pb.UpdateDriveLabelsRequest(
                drive_id=d.id,
                operation=common_pb2.LABEL_OPERATION_SET,
                expected_generation=d.generation + 1,
            ),
            grpc.StatusCode.ABORTED,
            "",
        ),
    ]
    for call, request, code, field in cases:
        err = fails(call, request)
        assert err.code == code, request
        if field:
            assert field in err.fields
        else:
            assert err.reason == "GENERATION_MISMATCH"
    assert generation_of(daemon) == before
    assert stub.InspectDrive(pb.InspectDriveRequest(drive_id=d.id)).drive == d


# -- eject, forget, delete ----------------------------------------------------


def _drive_with_data(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> tuple[pb.Drive, str, str]:
    d = add_drive(stub, node.id)
    vol = make_volume_row(daemon.store, node.cluster_id, "v")
    snap = make_snapshot(daemon.store, node.cluster_id, vol, "s")
    make_allocation(daemon.store, d.id, volume_id=vol, nbytes=4 * GIB)
    make_allocation(daemon.store, d.id, snapshot_id=snap, nbytes=GIB)
    return d, vol, snap


def _allocation_states(daemon: RunningDaemon, drive_id: str) -> list[int]:
    with daemon.store.read() as s:
        return sorted(
            s.scalars(select(AllocationRow.state).where(AllocationRow.drive_id == drive_id))
        )


def test_hard_eject_needs_confirmation_and_makes_allocations_unavailable(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d, vol, snap = _drive_with_data(stub, daemon, node)
    before = generation_of(daemon)
    err = fails(stub.EjectDrive, pb.EjectDriveRequest(drive_id=d.id))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "CONFIRMATION_REQUIRED"
    assert generation_of(daemon) == before
    assert _allocation_states(daemon, d.id) == [AllocationState.ACTIVE] * 2

    seen: list[Availability] = []
    daemon.daemon.engine.on_availability_change(lambda _s, change: seen.append(change))
    resp = stub.EjectDrive(pb.EjectDriveRequest(drive_id=d.id, yes_i_really_mean_it=True))
    assert resp.drive.state == pb.DRIVE_STATE_EJECTED and not resp.HasField("job")
    assert resp.generation == resp.drive.generation == before + 1
    assert resp.drive.capacity.used_bytes == 5 * GIB  # still recorded
    assert _allocation_states(daemon, d.id) == [AllocationState.UNAVAILABLE] * 2
    assert seen == [Availability(frozenset({vol}), frozenset({snap}))]
    assert books_balanced(daemon)

    again = stub.EjectDrive(pb.EjectDriveRequest(drive_id=d.id))
    assert again.drive == resp.drive and again.generation == generation_of(daemon) == before + 1


def test_soft_eject_over_the_wire_moves_data_off_then_ejects(daemon: RunningDaemon) -> None:
    """EjectDrive(soft) starts a DRIVE_EVACUATE job; the drive ends EJECTED and empty."""
    cluster_id, _nodes, drives = make_topology(daemon.store)
    vol = make_volume(
        daemon.store, cluster_id, [drives[0], drives[2], drives[4]], GIB, driver=daemon.driver
    )
    stub = node_pb2_grpc.NodeServiceStub(daemon.channel)
    daemon.driver.block("copy_replica")
    resp = stub.EjectDrive(pb.EjectDriveRequest(drive_id=drives[0], soft=True))
    assert resp.HasField("job") and resp.job.kind == jpb.JOB_KIND_DRIVE_EVACUATE
    assert resp.drive.state == pb.DRIVE_STATE_SOFT_EJECTING
    assert resp.drive.active_job_id == resp.job.id
    assert resp.generation >= resp.drive.generation
    # Again while it runs: the same job, nothing new.
    again = stub.EjectDrive(pb.EjectDriveRequest(drive_id=drives[0], soft=True))
    assert again.job.id == resp.job.id
    daemon.driver.unblock("copy_replica")
    job = wait_job(daemon, resp.job.id)
    assert job.state == jpb.JOB_STATE_DONE
    after = stub.InspectDrive(pb.InspectDriveRequest(drive_id=drives[0]))
    assert after.drive.state == pb.DRIVE_STATE_EJECTED and list(after.allocations) == []
    with daemon.store.read() as s:
        zones = sorted(
            z
            for (z,) in s.execute(
                select(NodeRow.zone)
                .join(AllocationRow, AllocationRow.node_id == NodeRow.id)
                .where(AllocationRow.volume_id == vol)
            )
        )
    assert zones == ["zone0", "zone1", "zone2"]
    assert_books(daemon.store)


def test_soft_eject_of_a_drive_that_is_not_online(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d = add_drive(stub, node.id)
    stub.EjectDrive(pb.EjectDriveRequest(drive_id=d.id, yes_i_really_mean_it=True))
    err = fails(stub.EjectDrive, pb.EjectDriveRequest(drive_id=d.id, soft=True))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "DRIVE_NOT_ONLINE"
    assert job_count(daemon.store) == 0


def test_drain_node_over_the_wire(daemon: RunningDaemon) -> None:
    """DrainNode: DRAINING while its job moves the copies, then MAINTENANCE and empty."""
    cluster_id, nodes, drives = make_topology(daemon.store, nodes_per_zone=2)
    make_volume(
        daemon.store, cluster_id, [drives[0], drives[4], drives[8]], GIB, driver=daemon.driver
    )
    stub = node_pb2_grpc.NodeServiceStub(daemon.channel)
    daemon.driver.block("copy_replica")
    resp = stub.DrainNode(pb.DrainNodeRequest(node_id=nodes[0]))
    assert resp.job.kind == jpb.JOB_KIND_NODE_DRAIN
    assert resp.node.state == pb.NODE_STATE_DRAINING
    daemon.driver.unblock("copy_replica")
    assert wait_job(daemon, resp.job.id).state == jpb.JOB_STATE_DONE
    node = stub.InspectNode(pb.InspectNodeRequest(node_id=nodes[0])).node
    assert node.state == pb.NODE_STATE_MAINTENANCE
    assert node.capacity.used_bytes == 0
    assert_books(daemon.store)
    err = fails(stub.DrainNode, pb.DrainNodeRequest(node_id=nodes[0]))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "NODE_NOT_ONLINE"


def test_eject_and_delete_refuse_a_drive_with_an_unfinished_job(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d = add_drive(stub, node.id)
    job = make_job_row(
        daemon.store,
        node.cluster_id,
        d.id,
        kind=int(JobKind.DRIVE_REPLACE),
        target_kind=int(ObjectKind.DRIVE),
    )
    for call, request in (
        (stub.EjectDrive, pb.EjectDriveRequest(drive_id=d.id, yes_i_really_mean_it=True)),
        (stub.DeleteDrive, pb.DeleteDriveRequest(drive_id=d.id)),
    ):
        err = fails(call, request)
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert err.reason == "JOB_IN_PROGRESS" and err.metadata == {"job_id": job}
    assert (
        stub.InspectDrive(pb.InspectDriveRequest(drive_id=d.id)).drive.state
        == pb.DRIVE_STATE_ONLINE
    )


def test_forget_releases_the_allocations_of_an_ejected_drive(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d, vol, snap = _drive_with_data(stub, daemon, node)
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    pool = pools.CreatePool(
        pool_pb2.CreatePoolRequest(cluster_id=node.cluster_id, name="p", drive_ids=[d.id])
    ).pool
    before = generation_of(daemon)
    # Only an ejected or failed drive, and only with confirmation.
    err = fails(stub.ForgetDrive, pb.ForgetDriveRequest(drive_id=d.id, yes_i_really_mean_it=True))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "DRIVE_NOT_EJECTED" and err.metadata == {"state": "ONLINE"}
    stub.EjectDrive(pb.EjectDriveRequest(drive_id=d.id, yes_i_really_mean_it=True))
    err = fails(stub.ForgetDrive, pb.ForgetDriveRequest(drive_id=d.id))
    assert err.reason == "CONFIRMATION_REQUIRED"
    assert generation_of(daemon) == before + 1  # only the eject changed anything
    assert count(daemon, DriveRow) == 1

    resp = stub.ForgetDrive(pb.ForgetDriveRequest(drive_id=d.id, yes_i_really_mean_it=True))
    assert list(resp.volume_ids) == [vol] and list(resp.snapshot_ids) == [snap]
    assert resp.generation == generation_of(daemon)
    assert count(daemon, DriveRow) == 0 and count(daemon, AllocationRow) == 0
    assert count(daemon, PoolDriveRow) == 0
    assert (
        list(pools.InspectPool(pool_pb2.InspectPoolRequest(pool_id=pool.id)).pool.drive_ids) == []
    )
    assert books_balanced(daemon)
    assert ops(daemon.driver)[-1] == "release_drive"
    err = fails(stub.ForgetDrive, pb.ForgetDriveRequest(drive_id=d.id, yes_i_really_mean_it=True))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_forget_a_failed_drive(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    failed = make_drive(daemon.store, node.id, "/dev/sdf", state=DriveState.FAILED)
    resp = stub.ForgetDrive(pb.ForgetDriveRequest(drive_id=failed, yes_i_really_mean_it=True))
    assert list(resp.volume_ids) == [] and count(daemon, DriveRow) == 0


def test_delete_only_an_empty_drive(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d, _vol, _snap = _drive_with_data(stub, daemon, node)
    empty = add_drive(stub, node.id, "/dev/sdc")
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    pools.CreatePool(
        pool_pb2.CreatePoolRequest(cluster_id=node.cluster_id, name="p", drive_ids=[empty.id, d.id])
    )
    before = generation_of(daemon)
    err = fails(stub.DeleteDrive, pb.DeleteDriveRequest(drive_id=d.id))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "DRIVE_IN_USE" and err.metadata == {"allocations": "2"}
    assert count(daemon, DriveRow) == 2 and generation_of(daemon) == before

    resp = stub.DeleteDrive(pb.DeleteDriveRequest(drive_id=empty.id))
    assert resp.generation == before + 1
    assert count(daemon, DriveRow) == 1 and count(daemon, PoolDriveRow) == 1
    assert daemon.driver.state.devices[("n1.mgmt", "/dev/sdc")].drive_id is None
    # The device can be added again, as a new drive.
    again = add_drive(stub, node.id, "/dev/sdc")
    assert again.id != empty.id
    err = fails(stub.DeleteDrive, pb.DeleteDriveRequest(drive_id=empty.id))
    assert err.code == grpc.StatusCode.NOT_FOUND and "drive_id" in err.fields


def test_a_release_failure_does_not_undo_the_delete(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d = add_drive(stub, node.id)
    daemon.driver.fail("release_drive")
    stub.DeleteDrive(pb.DeleteDriveRequest(drive_id=d.id))
    assert count(daemon, DriveRow) == 0


def test_a_node_is_deleted_once_its_drives_are(
    stub: node_pb2_grpc.NodeServiceStub, daemon: RunningDaemon, node: pb.Node
) -> None:
    d = add_drive(stub, node.id)
    err = fails(stub.DeleteNode, pb.DeleteNodeRequest(node_id=node.id))
    assert err.reason == "NODE_NOT_EMPTY" and err.metadata == {"drives": "1"}
    stub.DeleteDrive(pb.DeleteDriveRequest(drive_id=d.id))
    stub.DeleteNode(pb.DeleteNodeRequest(node_id=node.id))
    assert stub.ListNodes(pb.ListNodesRequest()).nodes == []


@pytest.mark.parametrize("rpc", ["EjectDrive", "ForgetDrive", "DeleteDrive"])
def test_out_of_service_calls_with_bad_ids(stub: node_pb2_grpc.NodeServiceStub, rpc: str) -> None:
    request_cls = {
        "EjectDrive": pb.EjectDriveRequest,
        "ForgetDrive": pb.ForgetDriveRequest,
        "DeleteDrive": pb.DeleteDriveRequest,
    }[rpc]
    call = getattr(stub, rpc)
    err = fails(call, request_cls(drive_id="bad"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "drive_id" in err.fields
    err = fails(call, request_cls(drive_id=uuid.uuid4().hex))
    assert err.code == grpc.StatusCode.NOT_FOUND and "drive_id" in err.fields
