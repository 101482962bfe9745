"""Tracing: OpenTelemetry spans of gRPC calls, REST requests and SQL statements.

Off unless the setting ``tracing`` is ``otlp`` or ``console``. Off, nothing
here imports OpenTelemetry, and each part of the daemon gets what it had
before: no interceptor more, the ASGI app unwrapped, no listener on the
store's engines. On, it needs the ``otel`` extra (``pip install
'osd[otel]'``); without it the daemon refuses to start, saying so.

Each process sets up its own tracer provider (the daemon's other serving
processes are interpreters of their own, which build their own
:class:`~osd.daemon.Daemon`), exporting in batches from a thread of its own.
What tracing on adds lives in :mod:`osd._otel`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from osd.config import Settings, SettingsError

if TYPE_CHECKING:
    import grpc
    from sqlalchemy import Engine

MISSING_EXTRA = "tracing needs the otel extra: pip install 'osd[otel]'"
# The attribute of a call's span that holds the request id its access line logs.
REQUEST_ID_ATTRIBUTE = "osd.request_id"

# What an ASGI app is, loosely: tracing wraps the gateway's without knowing it.
ASGIApp = Any
# The name of a REST request's span from its method and path ("GET
# /v1/clusters/{cluster_id}"), or None when no route serves it.
RouteName = Callable[[str, str], str | None]


class Tracing:
    """What tracing adds to each part of a daemon's process. This base is
    tracing off: it adds nothing, and costs nothing."""

    on = False

    @property
    def annotate(self) -> Callable[[str, str, grpc.StatusCode], None] | None:
        """What the server interceptor calls as a call ends, with its method,
        request id and code, to mark the call's span; None when off."""
        return None

    def server_interceptors(self) -> list[grpc.ServerInterceptor]:
        """Interceptors to put first on the gRPC server: a span per call."""
        return []

    def wrap_asgi(self, app: ASGIApp, route_name: RouteName | None = None) -> ASGIApp:
        """``app``, wrapped to make a span per HTTP request (named after its
        route by ``route_name``)."""
        return app

    def instrument(self, engines: Iterable[Engine]) -> None:
        """Makes each SQL statement run on ``engines`` in a traced call a span
        of its own, a child of the call's."""

    def local_call(self, method: str) -> contextlib.AbstractContextManager[None]:
        """A span around a call the daemon's REST gateway makes in process,
        where no gRPC server makes one (``method``: /package.Service/Method)."""
        return contextlib.nullcontext()

    def flush(self, timeout_seconds: float = 10.0) -> bool:
        """Exports the spans ended so far; whether all were, in time."""
        return True

    def shutdown(self) -> None:
        """Exports what is left and stops exporting."""


def setup(settings: Settings, *, exporter: Any = None) -> Tracing:
    """This process's tracing, as ``settings`` ask. ``exporter`` (a
    ``SpanExporter``, say a test's in-memory one) takes the place of the one
    ``tracing`` names, and turns tracing on. SettingsError when tracing is on
    and the otel extra is not installed."""
    if settings.tracing == "off" and exporter is None:
        return Tracing()
    try:
        from osd import _otel
    except ImportError as exc:
        raise SettingsError(f"tracing = {settings.tracing}: {MISSING_EXTRA} ({exc})") from None
    return _otel.OtelTracing(settings, exporter)
