"""Every RPC of the contract is either implemented or explicitly pending."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory

from osd.server import services
from tests.conftest import RunningDaemon
from tests.helpers import error_of

FIVE = {
    "osd.v1.ClusterService",
    "osd.v1.NodeService",
    "osd.v1.VolumeService",
    "osd.v1.Service",
    "osd.v1.DatastoreService",
}


def test_the_contract_has_the_five_services() -> None:
    names = {e.full_name for e in services.contract()}
    assert names >= FIVE


def test_every_rpc_is_implemented_or_pending() -> None:
    for entry in services.contract():
        implemented = services.implemented_methods(entry)
        pending = entry.full_name in services.PENDING
        for method in entry.descriptor.methods:
            assert method.name in implemented or pending, method.full_name
        if pending:
            assert implemented != {m.name for m in entry.descriptor.methods}, (
                f"{entry.full_name} is fully implemented: remove it from PENDING"
            )


def test_pending_lists_only_services_of_the_contract() -> None:
    names = {e.full_name for e in services.contract()}
    assert set(services.PENDING) <= names
    assert set(services.IMPLEMENTED) <= names


def test_cluster_service_is_complete() -> None:
    [entry] = [e for e in services.contract() if e.full_name == "osd.v1.ClusterService"]
    assert "osd.v1.ClusterService" not in services.PENDING
    assert services.implemented_methods(entry) == {m.name for m in entry.descriptor.methods}


def _pending_calls() -> list[tuple[str, str, str]]:
    out = []
    for entry in services.contract():
        capability = services.PENDING.get(entry.full_name)
        if capability is None:
            continue
        implemented = services.implemented_methods(entry)
        for method in entry.descriptor.methods:
            if method.name not in implemented:
                out.append((entry.full_name, method.name, capability))
    return out


def test_pending_rpcs_answer_unimplemented_naming_the_capability(
    sqlite_daemon: RunningDaemon,
) -> None:
    pool = descriptor_pool.Default()
    calls = _pending_calls()
    assert calls
    for service, method, capability in calls:
        descriptor = pool.FindServiceByName(service).methods_by_name[method]
        request_cls = message_factory.GetMessageClass(descriptor.input_type)
        response_cls = message_factory.GetMessageClass(descriptor.output_type)
        call = sqlite_daemon.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            call(request_cls(), timeout=5)
        err = error_of(info.value)
        assert err.code == grpc.StatusCode.UNIMPLEMENTED, (service, method)
        assert capability in err.message and method in err.message
        assert err.reason == "CAPABILITY_PENDING"
