"""Tracing on: OpenTelemetry's SDK and instrumentations, set up for osd.

Imported only by :func:`osd.tracing.setup` when tracing is on; importing it
needs the ``otel`` extra. Nothing is set globally: the provider is handed to
each instrumentation, so that two daemons in one process (tests) trace apart.

The spans:

- a gRPC call: a server span named after its method
  (``osd.v1.ClusterService/InspectCluster``), with ``rpc.grpc.status_code``,
  the request id (``osd.request_id``), and an error status for the codes that
  are the server's fault (INTERNAL, UNAVAILABLE, ...). Health checks make none.
- a REST request: a server span named after its route (``GET
  /v1/clusters/{cluster_id}``), the request id in
  ``http.response.header.x_request_id``; the call it makes in process is an
  internal span under it, named and marked as a gRPC call's is.
- an SQL statement run within either: a client span under the call's. The
  statements of background work (jobs, repair, heartbeats) make none.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import Engine

from osd import __version__
from osd.config import Settings
from osd.tracing import REQUEST_ID_ATTRIBUTE, ASGIApp, RouteName, Tracing

# The codes that make a server span an error (OpenTelemetry's conventions for
# gRPC servers): the others are the caller's to handle.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
HEALTH_PREFIX = "/grpc.health."
INSTRUMENTATION = "osd"


def _exporter(settings: Settings) -> SpanExporter:
    if settings.tracing == "console":
        return ConsoleSpanExporter(
            out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
    return OTLPSpanExporter(endpoint=settings.tracing_endpoint or None)


class _InCallsOnly:
    """The part of a tracer that the SQLAlchemy instrumentation uses, making
    spans only under a span being recorded: a statement of a traced call is
    traced, one of a background thread (a heartbeat, a job) is not."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        if not trace.get_current_span().is_recording():
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, *args, **kwargs)


class OtelTracing(Tracing):
    """A tracer provider of this process's own, exporting in batches."""

    on = True

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        resource = Resource.create(
            {
                "service.name": settings.tracing_service_name,
                "service.version": __version__,
                # Which of the daemon's serving processes made the span.
                "process.pid": os.getpid(),
            }
        )
        self.provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)),
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter if exporter is not None else _exporter(settings))
        )
        self._tracer = self.provider.get_tracer(INSTRUMENTATION, __version__)
        # The instrumentations' own metrics are not kept.
        self._meters = metrics.NoOpMeterProvider()

    @property
    def annotate(self) -> Any:
        return self._annotate

    def _annotate(self, method: str, request_id: str, code: grpc.StatusCode) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.update_name(method.lstrip("/"))
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))

    def server_interceptors(self) -> list[grpc.ServerInterceptor]:
        return [
            server_interceptor(  # type: ignore[no-untyped-call]
                tracer_provider=self.provider,
                filter_=lambda details: not details.method.startswith(HEALTH_PREFIX),
            )
        ]

    def wrap_asgi(self, app: ASGIApp, route_name: RouteName | None = None) -> ASGIApp:
        def details(scope: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
            method = str(scope.get("method", "HTTP"))
            name = route_name(method, str(scope.get("path", ""))) if route_name else None
            if name is None:
                return method, {}
            return name, {"http.route": name.partition(" ")[2]}

        return OpenTelemetryMiddleware(
            app,
            default_span_details=details,
            tracer_provider=self.provider,
            meter_provider=self._meters,
            http_capture_headers_server_response=["x-request-id"],
            # No spans of their own for each message sent and received.
            exclude_spans=["receive", "send"],
        )

    def instrument(self, engines: Iterable[Engine]) -> None:
        tracer = _InCallsOnly(self.provider.get_tracer("osd.store", __version__))
        usage = self._meters.get_meter(INSTRUMENTATION).create_up_down_counter(
            "db.client.connections.usage"
        )
        for engine in engines:
            EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call]

    @contextlib.contextmanager
    def local_call(self, method: str) -> Iterator[None]:
        service, _, name = method.lstrip("/").partition("/")
        with self._tracer.start_as_current_span(
            method.lstrip("/"),
            kind=SpanKind.INTERNAL,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            # The interceptor marks the span as the call ends (see annotate).
            record_exception=False,
            set_status_on_exception=False,
        ):
            yield

    def flush(self, timeout_seconds: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_seconds * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()
