"""Domain errors.

Every error the engine raises is one of these classes. Each carries the gRPC
status code it maps to, a machine-readable ``reason`` (sent as
google.rpc.ErrorInfo) and, for bad input, the fields that are wrong (sent as
google.rpc.BadRequest). The server turns them into a status in exactly one
place (osd.server.interceptors); nothing else builds a status by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One wrong field of a request: its path and what is wrong with it."""

    field: str
    description: str


class OsdError(Exception):
    """Base of every domain error."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.violations = violations


class InvalidArgument(OsdError):
    """The request is malformed; ``violations`` names each wrong field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """An error about one field, with a message that names it."""
        return cls(f"{field}: {description}", violations=(FieldViolation(field, description),))

    @classmethod
    def fields(cls, violations: list[FieldViolation]) -> InvalidArgument:
        """An error about several fields at once."""
        text = "; ".join(f"{v.field}: {v.description}" for v in violations)
        return cls(text, violations=tuple(violations))


class NotFound(OsdError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"

    @classmethod
    def object(cls, kind: str, field: str, value: str) -> NotFound:
        """``kind`` (e.g. "cluster") named by request ``field`` does not exist."""
        return cls(
            f"{kind} {value!r} not found",
            metadata={"kind": kind, "field": field, "id": value},
            violations=(FieldViolation(field, f"{kind} {value!r} not found"),),
        )


class AlreadyExists(OsdError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(OsdError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(OsdError):
    """A concurrent change won: the client should re-read and retry."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class PermissionDenied(OsdError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(OsdError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(OsdError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class OutOfRange(OsdError):
    """A position past what is kept (a watch resumed from too long ago)."""

    code = grpc.StatusCode.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class Unimplemented(OsdError):
    """An RPC of the contract whose capability has not been built yet."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"

    @classmethod
    def capability(cls, method: str, capability: str) -> Unimplemented:
        return cls(
            f"{method} is not implemented yet: it needs the {capability} capability",
            reason="CAPABILITY_PENDING",
            metadata={"method": method, "capability": capability},
        )


class Unavailable(OsdError):
    """The store or a driver cannot be reached right now; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"
