"""Server interceptors: request ids, access logs, and the error mapping.

A gRPC server interceptor only sees the handler, not the call: a try around
``continuation()`` would catch nothing the servicer raises. So the
interceptor wraps the handler's behaviour itself, and its request
deserializer: bytes that do not parse as the request message (invalid UTF-8
in a string field, a truncated message) reach the behaviour as an
:class:`_Undecodable`, which answers INVALID_ARGUMENT naming the method
instead of grpc's INTERNAL.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from osd import deadline
from osd.errors import InvalidArgument, OsdError
from osd.server.errors import internal_status, to_status

log = logging.getLogger("osd.access")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id when it is well formed, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID_RE.fullmatch(value):
            return value
    return uuid.uuid4().hex


class _Call:
    """Bookkeeping for one call: its id, its start, and how it ended."""

    def __init__(self, method: str, context: grpc.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.request_id = request_id_of(context)
        self.start = time.perf_counter()
        context.send_initial_metadata(((REQUEST_ID_HEADER, self.request_id),))

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, OsdError):
            log.info(
                "%s %s %s: %s (%.1f ms)",
                self.request_id,
                self.method,
                exc.code.name,
                exc.message,
                self._ms(),
            )
            self.context.abort_with_status(to_status(exc, self.request_id))
        log.error(
            "%s %s INTERNAL (%.1f ms)", self.request_id, self.method, self._ms(), exc_info=exc
        )
        self.context.abort_with_status(internal_status(self.request_id))

    def done(self) -> None:
        log.debug("%s %s OK (%.1f ms)", self.request_id, self.method, self._ms())

    def _ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000


class _Undecodable:
    """A request whose bytes did not parse, and why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def error(self, method: str) -> InvalidArgument:
        return InvalidArgument(
            f"{method}: the request does not parse: {self.why[:200]}",
            reason="MALFORMED_REQUEST",
            metadata={"method": method},
        )


def _lenient(
    deserialize: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:
            return _Undecodable(str(exc) or type(exc).__name__)

    return parse


def _wrap_unary(behaviour: Callable[..., Any], method: str) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(method, context)
        token = deadline.start(context.time_remaining())
        try:
            if isinstance(request, _Undecodable):
                raise request.error(method)
            response = behaviour(request, context)
        except Exception as exc:
            call.fail(exc)
            raise  # unreachable: fail() aborts the call
        finally:
            deadline.end(token)
        call.done()
        return response

    return handle


def _wrap_stream(behaviour: Callable[..., Iterator[Any]], method: str) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _Call(method, context)
        try:
            if isinstance(request, _Undecodable):
                raise request.error(method)
            yield from behaviour(request, context)
        except Exception as exc:
            call.fail(exc)
            raise
        call.done()

    return handle


class ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Gives every call a request id and an access-log line, and maps errors."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith("/grpc."):
            return handler  # health and reflection speak for themselves
        parse = _lenient(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=_wrap_unary(handler.unary_unary, method), request_deserializer=parse
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=_wrap_stream(handler.unary_stream, method), request_deserializer=parse
            )
        return handler
