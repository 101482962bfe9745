"""How the plugin answers: a CSI status code and a message, from its own
checks or from what the daemon answered.

The CSI specification names the code of each failure; the daemon's codes
mostly agree, and where they do not this module translates: a volume that
does not fit (INSUFFICIENT_CAPACITY, PLACEMENT_IMPOSSIBLE) is
RESOURCE_EXHAUSTED, an operation still pending is ABORTED, a size the
daemon refuses is OUT_OF_RANGE, and a page token it does not know is
ABORTED.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc

from osd.client import CallError, error_of

log = logging.getLogger("osd.csi")

F = TypeVar("F", bound=Callable[..., Any])

# The daemon's reasons that CSI answers with another code.
_BY_REASON = {
    "INSUFFICIENT_CAPACITY": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "PLACEMENT_IMPOSSIBLE": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DRIVE_FULL": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "OPERATION_PENDING": grpc.StatusCode.ABORTED,
    "JOB_IN_PROGRESS": grpc.StatusCode.ABORTED,
}
# Codes passed on as they are; anything else is INTERNAL.
_PASSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}


class CsiError(Exception):
    """A failure answered with ``code`` and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, why: str) -> CsiError:
    return CsiError(grpc.StatusCode.INVALID_ARGUMENT, f"{field} {why}")


def not_found(what: str, ident: str) -> CsiError:
    return CsiError(grpc.StatusCode.NOT_FOUND, f"{what} {ident} does not exist")


def from_daemon(err: CallError | grpc.RpcError) -> CsiError:
    """The CSI answer to what the daemon answered."""
    call = err if isinstance(err, CallError) else error_of(err)
    code = _BY_REASON.get(call.reason, call.code)
    if code == grpc.StatusCode.INVALID_ARGUMENT and set(call.fields) & {"size_bytes", "size"}:
        code = grpc.StatusCode.OUT_OF_RANGE
    if code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in call.fields:
        code = grpc.StatusCode.ABORTED
    if code not in _PASSED:
        code = grpc.StatusCode.INTERNAL
    message = call.message + (f" ({call.reason})" if call.reason else "")
    return CsiError(code, message)


def answers(method: F) -> F:
    """Makes a servicer method answer a CsiError, or a failed call to the
    daemon, with its status; anything else is logged and INTERNAL."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except CsiError as exc:
            _abort(context, exc.code, exc.message)
        except (CallError, grpc.RpcError) as exc:
            mapped = from_daemon(exc)
            _abort(context, mapped.code, mapped.message)
        except Exception:
            log.exception("%s failed", method.__name__)
            _abort(context, grpc.StatusCode.INTERNAL, f"{method.__name__} failed; see the log")

    return wrapper  # type: ignore[return-value]


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises
