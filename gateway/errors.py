"""gRPC status codes as HTTP statuses, and the JSON error body.

The one table, :data:`HTTP_STATUS`:

=====================  ====  ===============================================
gRPC code              HTTP  why
=====================  ====  ===============================================
OK                     200   (202 when the call started a job, see jobs.py)
CANCELLED              499   the client went away
UNKNOWN                500
INVALID_ARGUMENT       400
DEADLINE_EXCEEDED      504
NOT_FOUND              404
ALREADY_EXISTS         409
PERMISSION_DENIED      403
RESOURCE_EXHAUSTED     429   e.g. too many jobs; retry later
FAILED_PRECONDITION    409   object in use / not empty, as Heketi and Trove
ABORTED                409   a concurrent change won (expected_generation)
OUT_OF_RANGE           400
UNIMPLEMENTED          501   e.g. an RPC whose capability is pending
INTERNAL               500
UNAVAILABLE            503   the daemon or its store cannot be reached
DATA_LOSS              500
UNAUTHENTICATED        401
=====================  ====  ===============================================

Every error answers the same body, whether the daemon or the gateway refused
the request::

    {"code": 5, "status": "NOT_FOUND", "message": "cluster '...' not found",
     "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", ...}]}

``code`` is the gRPC code number and ``status`` its name; ``details`` are the
google.rpc messages of the status (ErrorInfo, BadRequest, RequestInfo) in
proto3 JSON with their ``@type``. Requests the gateway itself refuses carry an
ErrorInfo whose reason says why (see :class:`Reason`), a BadRequest naming the
field or parameter when there is one, and a RequestInfo.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "osd.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status of a gRPC code (500 for a code the table does not know)."""
    return HTTP_STATUS.get(code, 500)


def challenge(status: int, credentials: str | None) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750): a Bearer challenge,
    saying ``invalid_token`` when the request carried credentials."""
    if status != 401:
        return {}
    if credentials:
        return {"www-authenticate": 'Bearer realm="osd", error="invalid_token"'}
    return {"www-authenticate": 'Bearer realm="osd"'}


class Reason(StrEnum):
    """ErrorInfo reasons of the requests the gateway refuses itself."""

    NO_ROUTE = "NO_ROUTE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    MALFORMED_JSON = "MALFORMED_JSON"
    INVALID_FIELD = "INVALID_FIELD"
    INVALID_QUERY = "INVALID_QUERY"
    INVALID_PATH = "INVALID_PATH"
    BODY_NOT_ALLOWED = "BODY_NOT_ALLOWED"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    NOT_SUPPORTED = "NOT_SUPPORTED_OVER_REST"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"
    # The daemon's reason for a credential it cannot read, given by the
    # gateway to one that gRPC metadata cannot even carry.
    CREDENTIALS_MALFORMED = "CREDENTIALS_MALFORMED"


@dataclass(frozen=True)
class Violation:
    """One wrong field or parameter of a request."""

    field: str
    description: str


class GatewayError(Exception):
    """A request the gateway answers itself, without (or instead of) the daemon's answer."""

    def __init__(
        self,
        http_status: int,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: Reason,
        violations: Sequence[Violation] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.reason = reason
        self.violations = tuple(violations)
        self.headers = dict(headers or {})

    @classmethod
    def bad_request(cls, reason: Reason, field: str, description: str) -> GatewayError:
        """A 400 about one field or parameter; the message names it."""
        message = f"{field}: {description}" if field else description
        violations = (Violation(field, description),) if field else ()
        return cls(
            400, grpc.StatusCode.INVALID_ARGUMENT, message, reason=reason, violations=violations
        )

    def body(self, request_id: str) -> dict[str, Any]:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        if self.violations:
            bad = error_details_pb2.BadRequest()
            for v in self.violations:
                bad.field_violations.add(field=v.field, description=v.description)
            status.details.add().Pack(bad)
        return status_body(status, request_id)


def status_body(status: status_pb2.Status, request_id: str) -> dict[str, Any]:
    """The JSON error body of a google.rpc.Status; adds a RequestInfo when it has none."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    details = [_detail(d) for d in status.details]
    has_info = any(d.Is(error_details_pb2.RequestInfo.DESCRIPTOR) for d in status.details)
    if request_id and not has_info:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.RequestInfo(request_id=request_id))
        details.append(_detail(info))
    return {"code": status.code, "status": code.name, "message": status.message, "details": details}


def _detail(detail: any_pb2.Any) -> dict[str, Any]:
    try:
        out: dict[str, Any] = json_format.MessageToDict(detail, preserving_proto_field_name=True)
    except (TypeError, json_format.Error):
        # A detail type this gateway does not know: keep its bytes.
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}
    return out


def rpc_error(
    code: grpc.StatusCode, message: str, trailing: Sequence[tuple[str, str | bytes]] | None
) -> tuple[int, status_pb2.Status]:
    """The HTTP status and the google.rpc.Status of a failed call.

    The status comes from the ``grpc-status-details-bin`` trailer when the daemon
    sent one, else from the code and message alone.
    """
    for key, value in trailing or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:  # a garbled trailer: fall back to code and message
                break
            if status.code == code.value[0]:
                return http_status(code), status
            break
    return http_status(code), status_pb2.Status(code=code.value[0], message=message or "")
