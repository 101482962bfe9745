"""The one place where domain errors become gRPC statuses.

Statuses are bounded whatever the client sent. A message is printable ASCII:
any other character a client sent is escaped (see printable_ascii). Every
limit counts UTF-8 bytes, not characters: a message keeps at most MESSAGE_MAX, a metadata value
METADATA_MAX (a list of ten ids fits), a reason or a field name VALUE_MAX, a
field description DESCRIPTION_MAX, and all the details together stay under
DETAILS_MAX (field violations past that are counted, not listed).
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from osd.errors import OsdError

DOMAIN = "osd.dev"

MESSAGE_MAX = 800
VALUE_MAX = 200
METADATA_MAX = 1000
DESCRIPTION_MAX = 400
# The whole status travels base64-encoded in the grpc-status-details-bin
# trailer (4/3 of its size), next to grpc-message, which percent-encodes every
# byte that is not printable ASCII (3 bytes each); gRPC clients refuse
# trailers past 8 KiB, so the status stays at 3 KiB: 4 KiB encoded, and a
# message of MESSAGE_MAX bytes adds 2.4 KiB at worst.
DETAILS_MAX = 3 * 1024


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (never inside a
    character), saying how many bytes were cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    return f"{kept}... ({len(data) - len(kept.encode())} more bytes)"


def printable_ascii(text: str) -> str:
    """``text`` with every character outside printable ASCII escaped (\\xe9,
    \\u0301, \\U0001f600, \\n), and "%" as \\x25. A message quotes what
    clients sent; escaped, it shows exactly what arrived, cannot steer an
    operator's terminal, and travels in grpc-message as it is: gRPC
    percent-encodes anything else there, and some clients do not decode it."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return "".join(c if " " <= c <= "~" and c != "%" else _escape(c) for c in text)


def _escape(c: str) -> str:
    return "\\x25" if c == "%" else c.encode("unicode_escape").decode("ascii")


def to_status(error: OsdError, request_id: str = "") -> grpc.Status:
    """A status with google.rpc details: ErrorInfo, BadRequest, RequestInfo."""
    message = clip(printable_ascii(error.message), MESSAGE_MAX)
    status = status_pb2.Status(code=error.code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(reason=clip(error.reason, VALUE_MAX), domain=DOMAIN)
    for key, value in list(error.metadata.items())[:32]:
        info.metadata[clip(key, 64)] = clip(value, METADATA_MAX)
        if info.ByteSize() > DETAILS_MAX // 2:
            del info.metadata[clip(key, 64)]
            break
    status.details.add().Pack(info)
    request_info = error_details_pb2.RequestInfo(request_id=request_id)
    if error.violations:
        budget = DETAILS_MAX - status.ByteSize() - request_info.ByteSize() - 16
        status.details.add().Pack(_bad_request(error, budget))
    if request_id:
        status.details.add().Pack(request_info)
    return rpc_status.to_status(status)


def _bad_request(error: OsdError, budget: int) -> error_details_pb2.BadRequest:
    """The field violations that fit in ``budget`` bytes; the rest are counted."""
    bad = error_details_pb2.BadRequest()
    reserve = 120  # room for the "and N more" entry
    for i, violation in enumerate(error.violations):
        entry = error_details_pb2.BadRequest.FieldViolation(
            field=clip(violation.field, VALUE_MAX),
            description=clip(violation.description, DESCRIPTION_MAX),
        )
        if bad.ByteSize() + entry.ByteSize() + 8 > budget - reserve:
            left = len(error.violations) - i
            bad.field_violations.add(
                field="", description=f"and {left} more violations, not listed"
            )
            break
        bad.field_violations.append(entry)
    return bad


def internal_status(request_id: str) -> grpc.Status:
    status = status_pb2.Status(
        code=grpc.StatusCode.INTERNAL.value[0],
        message=f"internal error; the server log has the details under request id {request_id}",
    )
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN))
    status.details.add().Pack(error_details_pb2.RequestInfo(request_id=request_id))
    return rpc_status.to_status(status)
