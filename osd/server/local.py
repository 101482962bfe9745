"""The daemon's methods called from inside its own process, with no socket.

The REST gateway inside the daemon used to call the gRPC server over a
private Unix socket: a gRPC client and a gRPC server between two parts of one
process, serialising each message twice and costing more than most reads.
Now it calls the same handlers the server runs, as the interceptor wraps them
(authentication, authorization, audit, access log, metrics, deadline), with
a context that carries what the socket would have: the caller's metadata, the
deadline, and the peer of the private socket, so that the client certificate
the gateway verified is believed as it was over that socket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from osd.server.interceptors import ServerInterceptor

# What a call from inside names as its peer: the private socket's kind, so
# that it is trusted as a call over that socket is (see credentials_of).
LOCAL_PEER = "unix:in-process"

Metadata = Sequence[tuple[str, str | bytes]]


class LocalCallFailed(Exception):
    """A call that ended with a status other than OK."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailing: Metadata, initial: Metadata
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing = tuple(trailing)
        self.initial = tuple(initial)


class LocalContext:
    """The part of grpc.ServicerContext that osd's handlers use."""

    def __init__(self, metadata: Metadata, timeout: float | None) -> None:
        self._metadata = tuple(metadata)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.initial: Metadata = ()
        self.trailing: Metadata = ()
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return LOCAL_PEER

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def time_remaining(self) -> float:
        if self._deadline is None:
            return math.inf  # as far off as grpc's "none" (see osd.deadline)
        return max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        return self._deadline is None or time.monotonic() < self._deadline

    def send_initial_metadata(self, metadata: Metadata) -> None:
        self.initial = tuple(metadata)

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        self.trailing = tuple(metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise LocalCallFailed(code, details, self.trailing, self.initial)

    def abort_with_status(self, status: grpc.Status) -> None:
        raise LocalCallFailed(
            status.code, status.details, tuple(status.trailing_metadata or ()), self.initial
        )


class LocalCalls:
    """The handlers a gRPC server of this daemon serves, by full method path,
    called as that server would call them."""

    def __init__(
        self, interceptor: ServerInterceptor, exclude: frozenset[str] = frozenset()
    ) -> None:
        """``exclude``: methods not called here (a process that serves reads
        only passes changes to the first process instead)."""
        self._interceptor = interceptor
        self._exclude = exclude
        self._raw: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Part of what the generated ``add_*_to_server`` call; the methods
        come again, by name, through :meth:`add_registered_method_handlers`."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in handlers.items():
            path = f"/{service}/{name}"
            if path not in self._exclude:
                self._raw[path] = handler

    def unary(
        self, path: str, request: Any, metadata: Metadata, timeout: float | None
    ) -> tuple[Any, Metadata]:
        """The response to ``request`` and the initial metadata (the request
        id); raises LocalCallFailed."""
        raw = self._raw.get(path)
        if raw is None or raw.unary_unary is None:
            raise LocalCallFailed(grpc.StatusCode.UNIMPLEMENTED, f"no method {path}", (), ())
        handler = self._interceptor.intercept_service(
            lambda _details: raw, _Details(path, tuple(metadata))
        )
        if handler is None or handler.unary_unary is None:
            raise LocalCallFailed(grpc.StatusCode.UNIMPLEMENTED, f"no method {path}", (), ())
        context = LocalContext(metadata, timeout)
        response = handler.unary_unary(request, context)
        if context.code is not None and context.code != grpc.StatusCode.OK:
            raise LocalCallFailed(context.code, context.details, context.trailing, context.initial)
        return response, context.initial


def call_health(
    check: Callable[[Any, Any], Any], request: Any, timeout: float | None
) -> tuple[Any, grpc.StatusCode | None, str]:
    """A health Check called in process: the response, and the code and
    details it set when it did not answer OK."""
    context = LocalContext((), timeout)
    response = check(request, context)
    return response, context.code, context.details


class _Details(grpc.HandlerCallDetails):  # type: ignore[misc]
    def __init__(self, method: str, metadata: Metadata) -> None:
        self.method = method
        self.invocation_metadata = metadata
