"""Helpers for reading gRPC errors in tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from osd.store.models import NodeRow, utcnow


@dataclass
class ErrorView:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    request_id: str = ""


def error_of(err: grpc.RpcError) -> ErrorView:
    """The code, message and google.rpc details of a failed call."""
    assert isinstance(err, grpc.Call)
    view = ErrorView(err.code(), err.details() or "")
    status = rpc_status.from_call(err)
    if status is None:
        return view
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            view.reason = info.reason
            view.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            view.fields = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            req = error_details_pb2.RequestInfo()
            detail.Unpack(req)
            view.request_id = req.request_id
    return view


def node_row(cluster_id: str, name: str, zone: str = "z1") -> NodeRow:
    """A node record, for tests that need one in the store without the node API."""
    now = utcnow()
    return NodeRow(
        id=uuid.uuid4().hex,
        cluster_id=cluster_id,
        name=name,
        zone=zone,
        management_addresses=["10.0.0.1"],
        storage_addresses=["10.0.1.1"],
        labels={},
        state=1,
        coordinator_role=1,
        domain_state=1,
        create_time=now,
        update_time=now,
        generation=1,
    )
