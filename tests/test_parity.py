"""Every RPC of the contract is either implemented or explicitly pending."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from osd.contract import contract
from osd.server import registry as services
from osd.store.models import ClusterRow
from osd.v1 import cluster_pb2, cluster_pb2_grpc
from tests.conftest import Database, running_daemon, store_on
from tests.helpers import error_of

FIVE = {
    "osd.v1.ClusterService",
    "osd.v1.NodeService",
    "osd.v1.VolumeService",
    "osd.v1.Service",
    "osd.v1.DatastoreService",
}


def test_the_contract_has_the_five_services() -> None:
    names = {e.full_name for e in contract()}
    assert names >= FIVE


def test_every_rpc_is_implemented_or_pending() -> None:
    for entry in contract():
        implemented = services.implemented_methods(entry)
        pending = entry.full_name in services.PENDING
        for method in entry.descriptor.methods:
            assert method.name in implemented or pending, method.full_name
        if pending:
            assert implemented != {m.name for m in entry.descriptor.methods}, (
                f"{entry.full_name} is fully implemented: remove it from PENDING"
            )


def test_pending_lists_only_services_of_the_contract() -> None:
    names = {e.full_name for e in contract()}
    assert set(services.PENDING) <= names
    assert set(services.IMPLEMENTED) <= names


def test_cluster_service_is_complete() -> None:
    [entry] = [e for e in contract() if e.full_name == "osd.v1.ClusterService"]
    assert "osd.v1.ClusterService" not in services.PENDING
    assert services.implemented_methods(entry) == {m.name for m in entry.descriptor.methods}


def test_every_rpc_of_the_contract_is_implemented_now() -> None:
    assert services.PENDING == {}
    for entry in contract():
        assert services.implemented_methods(entry) == {m.name for m in entry.descriptor.methods}


def test_a_pending_rpc_answers_unimplemented_naming_its_capability(
    sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mechanism that serves RPCs whose capability has not landed, over the wire:
    a ClusterService made pending answers UNIMPLEMENTED naming the capability."""
    monkeypatch.delitem(services.IMPLEMENTED, "osd.v1.ClusterService")
    monkeypatch.setitem(services.PENDING, "osd.v1.ClusterService", "cluster management")
    sqlite_database.reset()
    with running_daemon(sqlite_database) as d:
        stub = cluster_pb2_grpc.ClusterServiceStub(d.channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateCluster(cluster_pb2.CreateClusterRequest(name="x"), timeout=5)
        err = error_of(info.value)
        assert err.code == grpc.StatusCode.UNIMPLEMENTED
        assert "cluster management" in err.message and "CreateCluster" in err.message
        assert err.reason == "CAPABILITY_PENDING"
        assert err.metadata["capability"] == "cluster management"
    with store_on(sqlite_database) as store, store.read() as s:
        assert s.scalars(select(ClusterRow)).all() == []


def test_an_rpc_neither_implemented_nor_pending_stops_the_daemon_from_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(services.IMPLEMENTED, "osd.v1.ClusterService")
    [entry] = [e for e in contract() if e.full_name == "osd.v1.ClusterService"]
    with pytest.raises(RuntimeError, match="neither implemented nor listed as pending"):
        services.build_servicer(entry, engine=None)  # type: ignore[arg-type]
