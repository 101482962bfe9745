"""The daemon process: health, reflection, request ids, graceful shutdown, settings."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from sqlalchemy import select

from osd import config as cfg
from osd.enums import VolumeState
from osd.store.db import Store
from osd.store.models import VolumeRow
from osd.v1 import cluster_pb2 as pb
from osd.v1 import cluster_pb2_grpc, volume_pb2, volume_pb2_grpc
from tests.conftest import Database, RunningDaemon, running_daemon
from tests.factories import make_topology
from tests.helpers import error_of
from tests.test_parity import FIVE


def test_health_overall_and_per_service(sqlite_daemon: RunningDaemon) -> None:
    stub = health_pb2_grpc.HealthStub(sqlite_daemon.channel)
    for service in ("", *sorted(FIVE)):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="osd.v1.Nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_every_service(sqlite_daemon: RunningDaemon) -> None:
    db = ProtoReflectionDescriptorDatabase(sqlite_daemon.channel)
    services = set(db.get_services())
    assert services >= FIVE | {"grpc.health.v1.Health"}
    # A generic client can build a request from reflection alone and call the RPC.
    pool = descriptor_pool.DescriptorPool(db)
    method = pool.FindServiceByName("osd.v1.ClusterService").methods_by_name["CreateCluster"]
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    call = sqlite_daemon.channel.unary_unary(
        "/osd.v1.ClusterService/CreateCluster",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    response = call(request_cls(name="from-reflection"), timeout=5)
    assert response.cluster.name == "from-reflection"


def test_request_id_is_echoed_or_generated(sqlite_daemon: RunningDaemon) -> None:
    stub = cluster_pb2_grpc.ClusterServiceStub(sqlite_daemon.channel)
    _, call = stub.ListClusters.with_call(
        pb.ListClustersRequest(), metadata=(("x-request-id", "req-123"),), timeout=5
    )
    assert ("x-request-id", "req-123") in call.initial_metadata()
    _, call = stub.ListClusters.with_call(pb.ListClustersRequest(), timeout=5)
    generated = dict(call.initial_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    with pytest.raises(grpc.RpcError) as info:
        stub.InspectCluster(
            pb.InspectClusterRequest(cluster_id=""),
            metadata=(("x-request-id", "req-err"),),
            timeout=5,
        )
    assert error_of(info.value).request_id == "req-err"


def test_unexpected_errors_are_internal_with_a_request_id(
    sqlite_daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(sqlite_daemon.daemon.engine.clusters, "inspect", boom)
    stub = cluster_pb2_grpc.ClusterServiceStub(sqlite_daemon.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.InspectCluster(pb.InspectClusterRequest(cluster_id="0" * 32), timeout=5)
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.INTERNAL
    assert "secret detail" not in err.message
    assert err.request_id and err.request_id in err.message


# -- settings -------------------------------------------------------------------


def test_settings_precedence_flags_env_file_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "osd.toml"
    conf.write_text(
        'grpc_listen = "127.0.0.1:1"\nworkers = 3\nlog_level = "debug"\ndriver = "fake"\n'
    )
    env = {"OSD_CONFIG": str(conf), "OSD_WORKERS": "5", "OSD_LOG_LEVEL": "warning"}
    s = cfg.load({"log_level": "error"}, env)
    assert s.grpc_listen == "127.0.0.1:1"  # file
    assert s.workers == 5  # env beats file
    assert s.log_level == "ERROR"  # flag beats env
    assert s.rest_listen == cfg.DEFAULT_REST_LISTEN  # default
    assert cfg.load({}, {}).grpc_listen == cfg.DEFAULT_GRPC_LISTEN


@pytest.mark.parametrize(
    ("flags", "env", "text", "needle"),
    [
        ({"workers": "0"}, {}, "", "--workers"),
        ({}, {"OSD_REST_ENABLED": "maybe"}, "", "OSD_REST_ENABLED"),
        ({}, {}, "nonsense = 1\n", "unknown settings nonsense"),
        ({}, {}, "workers = [\n", "osd.toml"),
        ({"log_level": "loud"}, {}, "", "--log-level"),
    ],
)
def test_bad_settings_name_their_source(
    tmp_path: Path, flags: dict[str, str], env: dict[str, str], text: str, needle: str
) -> None:
    conf = tmp_path / "osd.toml"
    conf.write_text(text)
    with pytest.raises(cfg.SettingsError, match=re.escape(needle)):
        cfg.load(flags, env, str(conf))


def test_serve_help_lists_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "osd.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for spec in cfg.SPECS:
        assert "--" + spec.name.replace("_", "-") in out
        assert "OSD_" + spec.name.upper() in out


# -- the process ------------------------------------------------------------------


@contextlib.contextmanager
def serving(tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``osd serve`` as a child process on an ephemeral port; killed if still running."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "osd.cli",
            "serve",
            "--grpc-listen",
            "127.0.0.1:0",
            "--rest-enabled",
            "false",
            "--data-dir",
            str(tmp_path),
            *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    drain: threading.Thread | None = None
    try:
        port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            match = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
            if not line and proc.poll() is not None:
                break
        assert port, "the daemon did not start"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)
        drain.start()
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if drain is not None:
            drain.join(timeout=5)
        proc.stderr.close()


def test_sigterm_lets_in_flight_calls_finish_and_closes_the_store(tmp_path: Path) -> None:
    with (
        serving(tmp_path, "--grace-seconds", "20") as (proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = cluster_pb2_grpc.ClusterServiceStub(channel)
        stub.CreateCluster(pb.CreateClusterRequest(name="before"), timeout=10)
        # Hold the SQLite write lock so the next create is in flight, waiting.
        blocker = sqlite3.connect(tmp_path / "osd.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        future = stub.CreateCluster.future(pb.CreateClusterRequest(name="inflight"), timeout=30)
        time.sleep(0.5)
        assert not future.done()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # New calls are refused once shutdown has begun ...
        with pytest.raises(grpc.RpcError):
            stub.ListClusters(pb.ListClustersRequest(), timeout=2)
        blocker.execute("ROLLBACK")
        blocker.close()
        # ... but the one in flight completes.
        assert future.result().cluster.name == "inflight"
        assert proc.wait(timeout=30) == 0
    conn = sqlite3.connect(tmp_path / "osd.db")
    names = sorted(r[0] for r in conn.execute("SELECT name FROM clusters"))
    conn.close()
    assert names == ["before", "inflight"]


def test_sigterm_exits_within_the_grace_and_cut_off_calls_commit_nothing(
    tmp_path: Path,
) -> None:
    grace = 1.0
    with (
        serving(tmp_path, "--grace-seconds", str(grace)) as (proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = cluster_pb2_grpc.ClusterServiceStub(channel)
        stub.CreateCluster(pb.CreateClusterRequest(name="before"), timeout=10)
        # Hold the SQLite write lock: these creates stay in flight past the grace.
        blocker = sqlite3.connect(tmp_path / "osd.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        futures = [
            stub.CreateCluster.future(pb.CreateClusterRequest(name=f"cut-{i}"), timeout=60)
            for i in range(5)
        ]
        time.sleep(0.5)
        assert not any(f.done() for f in futures)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        took = time.monotonic() - signalled
        blocker.execute("ROLLBACK")
        blocker.close()
        # Every caller is told its call did not complete ...
        for future in futures:
            with pytest.raises(grpc.RpcError) as info:
                future.result(timeout=10)
            assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    # ... and none of them committed; the process left within the grace and a second.
    conn = sqlite3.connect(tmp_path / "osd.db")
    names = sorted(r[0] for r in conn.execute("SELECT name FROM clusters"))
    conn.close()
    assert names == ["before"]
    assert took < grace + 1.0, f"took {took:.2f}s to exit"


def test_a_call_cut_off_at_the_grace_rolls_back_when_it_ends(database: Database) -> None:
    with running_daemon(database) as d:
        cluster_id, _nodes, _drives = make_topology(d.store)
        stub = volume_pb2_grpc.VolumeServiceStub(d.channel)
        d.driver.block("create_replica")
        future = stub.CreateVolume.future(
            volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name="v", size="1G"),
            timeout=60,
        )
        try:
            assert d.driver.wait_blocked("create_replica")
            started = time.monotonic()
            d.daemon.stop(grace=0.5)
            took = time.monotonic() - started
            with pytest.raises(grpc.RpcError) as info:
                future.result(timeout=10)
            assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        finally:
            # The driver call ends after the daemon stopped: its commit is refused.
            d.driver.unblock("create_replica")
        time.sleep(1.0)
    assert took < 0.5 + 1.0, f"stop took {took:.2f}s"
    store = Store(database.url)
    try:
        with store.read() as s:
            [(volume_id, state)] = s.execute(
                select(VolumeRow.id, VolumeRow.state).where(VolumeRow.name == "v")
            ).all()
    finally:
        store.close()
    # Only the intent is recorded: the cut-off call committed nothing after it.
    assert state == VolumeState.CREATING
    # The next start finishes the recorded change, as after a crash, and the
    # caller's retry (the answer to UNAVAILABLE or CANCELLED) learns the outcome.
    with running_daemon(database) as d:
        stub = volume_pb2_grpc.VolumeServiceStub(d.channel)
        again = stub.CreateVolume(
            volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name="v", size="1G"), timeout=30
        )
        assert not again.created and again.volume.id == volume_id
        assert again.volume.state == volume_pb2.VOLUME_STATE_UP


def test_sigint_stops_the_daemon(tmp_path: Path) -> None:
    with serving(tmp_path) as (proc, _port):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_a_taken_port_is_a_clear_error(sqlite_daemon: RunningDaemon, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "osd.cli",
            "serve",
            "--grpc-listen",
            sqlite_daemon.target,
            "--rest-enabled",
            "false",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"cannot listen on {sqlite_daemon.target}" in proc.stderr


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "osd.cli", "db"]
    behind = subprocess.run(
        [*base, "current", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert behind.returncode == 1 and "current none" in behind.stdout
    up = subprocess.run(
        [*base, "upgrade", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "store at revision" in up.stdout
    now = subprocess.run(
        [*base, "current", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert now.returncode == 0


def test_cli_against_a_live_daemon(sqlite_daemon: RunningDaemon) -> None:
    base = [sys.executable, "-m", "osd.cli"]
    endpoint = ["--endpoint", sqlite_daemon.target]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)

    health = run("health", *endpoint)
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
    created = run(
        "cluster", "create", "cli-made", "--label", "env=dev", "--block", "false", *endpoint
    )
    assert created.returncode == 0, created.stderr
    cluster_id = json.loads(created.stdout)["cluster"]["id"]
    listed = json.loads(run("cluster", "list", *endpoint).stdout)
    assert [c["name"] for c in listed["clusters"]] == ["cli-made"]
    updated = run("cluster", "update", cluster_id, "--file", "false", *endpoint)
    assert json.loads(updated.stdout)["cluster"].get("file", False) is False
    bad = run("cluster", "inspect", "no such name!", *endpoint)
    # A failed call exits with its status's class (osd.client.EXIT_CODES).
    assert bad.returncode == 3 and "INVALID_ARGUMENT" in bad.stderr
    assert run("cluster", "delete", cluster_id, *endpoint).returncode == 0
    down = run("health", "--endpoint", "127.0.0.1:1", "--timeout", "2")
    assert down.returncode == 1
