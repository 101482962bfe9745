"""Tracing (osd.tracing), through the real wire: a gRPC call is a server span,
a REST request a span of its route over the call it makes, and the SQL they
run are spans under them, in the same trace. Spans go to an in-memory
exporter handed to the daemon, or, from ``osd serve`` with several
processes, over OTLP to a receiver the test runs. Off, OpenTelemetry is not
even imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from osd.config import Settings
from osd.tracing import MISSING_EXTRA, REQUEST_ID_ATTRIBUTE, setup
from osd.v1 import cluster_pb2, cluster_pb2_grpc
from tests.conftest import Database, RunningDaemon, running_daemon
from tests.test_daemon import serving
from tests.test_processes import _channels, _children, _serving_both, _wait_for

ROOT = Path(__file__).resolve().parent.parent
INSPECT = "osd.v1.ClusterService/InspectCluster"
CREATE = "osd.v1.ClusterService/CreateCluster"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(database: Database, exporter: InMemorySpanExporter) -> Iterator[RunningDaemon]:
    """A daemon, REST on, whose spans go to ``exporter``."""
    tracing = setup(Settings(), exporter=exporter)
    with running_daemon(
        database, tracing=tracing, rest_enabled=True, rest_listen="127.0.0.1:0"
    ) as d:
        yield d


def _spans(
    d: RunningDaemon,
    exporter: InMemorySpanExporter,
    until: Callable[[list[ReadableSpan]], bool],
) -> list[ReadableSpan]:
    """The spans exported once ``until`` holds of them (a REST request's span
    ends just after its response is sent)."""
    deadline = time.monotonic() + 10
    while True:
        assert d.daemon.tracing.flush()
        spans = list(exporter.get_finished_spans())
        if until(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _children_of(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s
        for s in spans
        if s.parent is not None
        and s.parent.span_id == parent.context.span_id
        and s.context is not None
        and s.context.trace_id == parent.context.trace_id
    ]


def _statements(spans: list[ReadableSpan]) -> list[str]:
    return [str((s.attributes or {}).get("db.statement", "")) for s in spans]


def test_a_grpc_call_is_a_server_span_with_its_sql_under_it(
    traced: RunningDaemon, exporter: InMemorySpanExporter
) -> None:
    stub = cluster_pb2_grpc.ClusterServiceStub(traced.channel)
    created, call = stub.CreateCluster.with_call(
        cluster_pb2.CreateClusterRequest(name="east"), timeout=10
    )
    request_id = dict(call.initial_metadata())["x-request-id"]
    stub.InspectCluster(
        cluster_pb2.InspectClusterRequest(cluster_id=created.cluster.id), timeout=10
    )
    with pytest.raises(grpc.RpcError) as missing:
        stub.InspectCluster(cluster_pb2.InspectClusterRequest(cluster_id="0" * 32), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    spans = _spans(traced, exporter, lambda s: len(_named(s, INSPECT)) == 2)
    (create,) = _named(spans, CREATE)
    assert create.kind == SpanKind.SERVER
    attributes = dict(create.attributes or {})
    assert attributes[REQUEST_ID_ATTRIBUTE] == request_id
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["rpc.method"] == "CreateCluster"
    assert create.status.status_code == StatusCode.UNSET
    sql = _children_of(spans, create)
    assert sql and all(s.kind == SpanKind.CLIENT for s in sql)
    assert any(stmt.startswith("INSERT INTO clusters") for stmt in _statements(sql))
    assert {dict(s.attributes or {}).get("db.system") for s in sql} == {
        "sqlite" if traced.database.backend == "sqlite" else "postgresql"
    }
    # A NOT_FOUND is the caller's to handle: its code, and no error status.
    found, not_found = sorted(
        _named(spans, INSPECT), key=lambda s: dict(s.attributes or {})["rpc.grpc.status_code"]
    )
    assert dict(found.attributes or {})["rpc.grpc.status_code"] == 0
    assert dict(not_found.attributes or {})["rpc.grpc.status_code"] == 5
    assert not_found.status.status_code == StatusCode.UNSET
    # Health checks are left out.
    assert not [s for s in spans if "grpc.health" in s.name]


def test_a_callers_trace_context_is_continued(
    traced: RunningDaemon, exporter: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    cluster_pb2_grpc.ClusterServiceStub(traced.channel).ListClusters(
        cluster_pb2.ListClustersRequest(),
        metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
        timeout=10,
    )
    spans = _spans(
        traced, exporter, lambda s: bool(_named(s, "osd.v1.ClusterService/ListClusters"))
    )
    (listed,) = _named(spans, "osd.v1.ClusterService/ListClusters")
    assert listed.context is not None and listed.parent is not None
    assert f"{listed.context.trace_id:032x}" == trace_id
    assert f"{listed.parent.span_id:016x}" == parent_id


def test_a_rest_request_is_a_span_of_its_route_over_the_call_and_its_sql(
    traced: RunningDaemon, exporter: InMemorySpanExporter
) -> None:
    base = f"http://127.0.0.1:{traced.daemon.rest_port}"
    request = urllib.request.Request(
        f"{base}/v1/clusters",
        data=json.dumps({"name": "west"}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        request_id = reply.headers["x-request-id"]
        cluster_id = json.loads(reply.read())["cluster"]["id"]
    with urllib.request.urlopen(f"{base}/v1/clusters/{cluster_id}", timeout=10) as reply:
        assert reply.status == 200

    def both(spans: list[ReadableSpan]) -> bool:
        return bool(_named(spans, "POST /v1/clusters")) and bool(
            _named(spans, "GET /v1/clusters/{cluster_id}")
        )

    spans = _spans(traced, exporter, both)
    (post,) = _named(spans, "POST /v1/clusters")
    assert post.kind == SpanKind.SERVER
    attributes = dict(post.attributes or {})
    assert attributes["http.route"] == "/v1/clusters"
    assert tuple(attributes["http.response.header.x_request_id"]) == (request_id,)
    # The call the gateway made in process, under the request's span ...
    (call,) = _children_of(spans, post)
    assert call.name == CREATE
    assert call.kind == SpanKind.INTERNAL
    assert dict(call.attributes or {})[REQUEST_ID_ATTRIBUTE] == request_id
    # ... and its statements under the call's, all in the request's trace.
    sql = _children_of(spans, call)
    assert any(stmt.startswith("INSERT INTO clusters") for stmt in _statements(sql))
    (get,) = _named(spans, "GET /v1/clusters/{cluster_id}")
    assert [s.name for s in _children_of(spans, get)] == [INSPECT]


def test_background_work_makes_no_spans(database: Database, exporter: InMemorySpanExporter) -> None:
    """Start-up (migrations, recovery, registration), heartbeats and the
    jobs' threads run SQL outside any call: none of it is traced."""
    tracing = setup(Settings(), exporter=exporter)
    with running_daemon(database, tracing=tracing):
        time.sleep(0.2)
        assert tracing.flush()
    assert exporter.get_finished_spans() == ()


def test_a_sample_ratio_of_zero_traces_nothing(
    database: Database, exporter: InMemorySpanExporter
) -> None:
    tracing = setup(Settings(tracing="otlp", tracing_sample_ratio=0), exporter=exporter)
    with running_daemon(database, tracing=tracing) as d:
        cluster_pb2_grpc.ClusterServiceStub(d.channel).CreateCluster(
            cluster_pb2.CreateClusterRequest(name="unseen"), timeout=10
        )
        assert tracing.flush()
    assert exporter.get_finished_spans() == ()


OFF_SCRIPT = textwrap.dedent(
    """
    import json, sys, urllib.request
    import grpc
    from osd.config import Settings
    from osd.daemon import Daemon
    from osd.v1 import cluster_pb2, cluster_pb2_grpc

    daemon = Daemon(Settings(
        grpc_listen="127.0.0.1:0", rest_listen="127.0.0.1:0", data_dir=sys.argv[1],
        processes=1, grace_seconds=1,
    ))
    daemon.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.grpc_port}") as channel:
            cluster_pb2_grpc.ClusterServiceStub(channel).CreateCluster(
                cluster_pb2.CreateClusterRequest(name="east"), timeout=10)
        url = f"http://127.0.0.1:{daemon.rest_port}/v1/clusters"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert len(json.loads(reply.read())["clusters"]) == 1
    finally:
        daemon.stop()
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
    """
)


def test_off_the_daemon_imports_no_opentelemetry(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_on_without_the_otel_extra_the_daemon_does_not_start(tmp_path: Path) -> None:
    # None in sys.modules makes each import of the package fail, as when it
    # is not installed.
    script = (
        "import sys; sys.modules['opentelemetry'] = None; "
        "from osd.cli import main; sys.exit(main())"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "serve",
            "--tracing",
            "console",
            "--grpc-listen",
            "127.0.0.1:0",
            "--rest-enabled",
            "false",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert MISSING_EXTRA in done.stderr
    assert "serving gRPC" not in done.stderr


@pytest.mark.parametrize(
    ("flag", "value", "error"),
    [
        ("--tracing", "jaeger", "is not off, otlp or console"),
        ("--tracing-sample-ratio", "1.5", "is not a ratio from 0 to 1"),
    ],
)
def test_a_bad_tracing_setting_is_named(flag: str, value: str, error: str) -> None:
    from osd.config import SettingsError, load

    with pytest.raises(SettingsError, match=f"^{flag}: .*{error}"):
        load({flag.lstrip("-").replace("-", "_"): value}, environ={})


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC trace receiver: what a collector is to the daemon."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (span name, the pid of the process that made it)
        self.spans: list[tuple[str, int]] = []

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for resource_spans in request.resource_spans:
                pid = next(
                    a.value.int_value
                    for a in resource_spans.resource.attributes
                    if a.key == "process.pid"
                )
                for scope_spans in resource_spans.scope_spans:
                    self.spans += [(s.name, pid) for s in scope_spans.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


def test_every_serving_process_exports_its_own_spans_over_otlp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = _Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s
    try:
        with serving(
            tmp_path,
            "--processes",
            "2",
            "--tracing",
            "otlp",
            "--tracing-endpoint",
            f"http://127.0.0.1:{port}",
            "--tracing-service-name",
            "osd-test",
        ) as (proc, grpc_port):
            _wait_for("the second process", lambda: len(_children(proc.pid)) == 1)
            _serving_both(grpc_port)
            channels = _channels(grpc_port)
            try:
                created = cluster_pb2_grpc.ClusterServiceStub(channels[0]).CreateCluster(
                    cluster_pb2.CreateClusterRequest(name="east"), timeout=10
                )
                for channel in channels:
                    cluster_pb2_grpc.ClusterServiceStub(channel).InspectCluster(
                        cluster_pb2.InspectClusterRequest(cluster_id=created.cluster.id),
                        timeout=10,
                    )
            finally:
                for channel in channels:
                    channel.close()
            pids = {proc.pid, *_children(proc.pid)}

            def inspected_by_both() -> bool:
                with receiver.lock:
                    return {pid for name, pid in receiver.spans if name == INSPECT} == pids

            _wait_for("spans of both processes", inspected_by_both)
    finally:
        server.stop(0)


def test_tracing_settings_come_from_the_environment_too() -> None:
    from osd.config import load

    settings = load(
        {},
        environ={
            "OSD_TRACING": "OTLP",
            "OSD_TRACING_ENDPOINT": "http://collector:4317",
            "OSD_TRACING_SERVICE_NAME": "osd-east",
            "OSD_TRACING_SAMPLE_RATIO": "0.25",
        },
    )
    assert (
        settings.tracing,
        settings.tracing_endpoint,
        settings.tracing_service_name,
        settings.tracing_sample_ratio,
    ) == ("otlp", "http://collector:4317", "osd-east", 0.25)
    assert Settings().tracing == "off"
