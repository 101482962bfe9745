"""AuditService, and what the interceptor reads of a call for its record."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from osd.engine.access.audit import AuditLog, AuditQuery, AuditRecord
from osd.engine.engine import Engine
from osd.server import convert
from osd.v1 import audit_pb2 as pb
from osd.v1 import audit_pb2_grpc

_DEPTH = 3


def named_ids(message: Any, depth: int = _DEPTH) -> Iterator[str]:
    """The values of the id fields ("id", "*_id", "*_ids") of ``message`` and
    of the messages in it, ``depth`` levels down, lazily: a reader that has
    enough stops the walk of a large request."""
    if not isinstance(message, Message) or depth <= 0:
        return
    for field, value in message.ListFields():
        name = field.name
        if field.type == FieldDescriptor.TYPE_STRING and (
            name == "id" or name.endswith(("_id", "_ids"))
        ):
            yield from (value if field.is_repeated else [value])
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
            for item in value if field.is_repeated else [value]:
                yield from named_ids(item, depth - 1)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _timestamp(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def record_to_proto(r: AuditRecord) -> pb.AuditRecord:
    return pb.AuditRecord(
        id=r.id,
        time=convert.timestamp(r.time),
        subject=r.subject,
        roles=list(r.roles),
        via=r.via,
        issuer=r.issuer,
        method=r.method,
        target_ids=list(r.target_ids),
        code=r.code,
        request_id=r.request_id,
        count=r.count,
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._audit: AuditLog = engine.audit

    def ListAuditRecords(
        self, request: pb.ListAuditRecordsRequest, context: grpc.ServicerContext
    ) -> pb.ListAuditRecordsResponse:
        page = self._audit.list(
            AuditQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                subject=request.subject,
                method=request.method,
                target_id=request.target_id,
                codes=tuple(int(c) for c in request.codes),
                since=_timestamp(request, "since"),
                until=_timestamp(request, "until"),
            )
        )
        return pb.ListAuditRecordsResponse(
            records=[record_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )
