"""The gateway inside the daemon, and standalone as `osd gateway`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.server import GatewayServer
from osd.config import Settings
from osd.daemon import Daemon
from osd.engine.drivers.fake import FakeDriver
from osd.engine.engine import Engine
from osd.store.db import Store
from tests.conftest import Database
from tests.gateway.conftest import RestDaemon

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _daemon(database: Database, **settings: object) -> Daemon:
    base = {
        "grpc_listen": "127.0.0.1:0",
        "rest_listen": "127.0.0.1:0",
        "database_url": database.url,
        "workers": 4,
        "grace_seconds": 1,
    }
    return Daemon(
        Settings(**{**base, **settings}),  # type: ignore[arg-type]
        engine=Engine(Store(database.url), FakeDriver()),
    )


def test_the_daemon_serves_rest_on_its_own_port(rest_daemon: RestDaemon) -> None:
    daemon = rest_daemon.daemon
    assert daemon.rest_port not in (0, daemon.grpc_port)
    assert rest_daemon.http.get("/healthz").status_code == 200
    daemon.stop(grace=0)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{rest_daemon.base_url}/healthz", timeout=2)


def test_rest_can_be_disabled(database: Database) -> None:
    daemon = _daemon(database, rest_enabled=False)
    daemon.start()
    try:
        assert daemon.rest_port == 0
    finally:
        daemon.stop(grace=0)


def test_a_taken_rest_port_fails_the_start(database: Database) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        daemon = _daemon(database, rest_listen=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            daemon.start()
        daemon.stop(grace=0)


def test_a_gateway_server_can_stop_and_start_on_the_same_port() -> None:
    first = GatewayServer("127.0.0.1:0", "127.0.0.1:1")
    first.start()
    port = first.port
    first.stop()
    again = GatewayServer(f"127.0.0.1:{port}", "127.0.0.1:1")
    again.start()
    try:
        response = httpx.get(f"{again.url}/v1/openapi.json", timeout=5)
        assert response.status_code == 200
    finally:
        again.stop()


def _wait_until_healthy(proc: subprocess.Popen[bytes], port: int) -> None:
    """Waits for `osd gateway` on ``port`` to answer /healthz 200."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "osd gateway did not come up"
        time.sleep(0.1)


def test_osd_gateway_runs_standalone_and_stops_on_sigterm(rest_daemon: RestDaemon) -> None:
    created = rest_daemon.http.post("/v1/clusters", json={"name": "remote"}).json()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "osd.cli",
            "gateway",
            "--grpc-endpoint",
            rest_daemon.grpc_target,
            "--rest-listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until_healthy(proc, port)
        response = httpx.get(f"http://127.0.0.1:{port}/v1/clusters/{created['cluster']['id']}")
        assert response.status_code == 200
        assert response.json()["cluster"]["name"] == "remote"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()


def test_osd_gateway_refuses_a_bad_address() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "osd.cli", "gateway", "--rest-listen", "nowhere"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"'nowhere' is not HOST:PORT" in result.stderr


def _gateway_argv(endpoint: str, listen: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "osd.cli",
        "gateway",
        "--grpc-endpoint",
        endpoint,
        "--rest-listen",
        listen,
        "--log-level",
        "warning",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OSD_INSECURE", None)
    return env


def _serves(argv: list[str], port: int) -> httpx.Response:
    """Starts `osd gateway`, waits for it, and returns its answer to an
    anonymous GET /v1/clusters; stops it with SIGTERM."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_until_healthy(proc, port)
        return httpx.get(f"http://127.0.0.1:{port}/v1/clusters", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_osd_gateway_will_not_open_a_daemon_without_auth_to_the_network(
    rest_daemon: RestDaemon,
) -> None:
    port = _free_port()
    argv = _gateway_argv(rest_daemon.grpc_target, f"0.0.0.0:{port}")
    refused = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert b"answers calls without credentials" in refused.stderr
    assert b"--insecure" in refused.stderr
    # On loopback, or when told --insecure, it serves.
    assert _serves(_gateway_argv(rest_daemon.grpc_target, f"127.0.0.1:{port}"), port).is_success
    assert _serves([*argv, "--insecure"], port).is_success


def test_osd_gateway_will_not_open_a_daemon_it_cannot_ask() -> None:
    argv = _gateway_argv(f"127.0.0.1:{_free_port()}", f"0.0.0.0:{_free_port()}")
    refused = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert b"cannot tell whether the daemon" in refused.stderr


def test_osd_gateway_fronts_a_daemon_with_auth_on_any_address(
    database: Database, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    daemon = _daemon(database, rest_enabled=False, auth_secret_file=str(secret))
    daemon.start()
    try:
        port = _free_port()
        answer = _serves(_gateway_argv(f"127.0.0.1:{daemon.grpc_port}", f"0.0.0.0:{port}"), port)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    finally:
        daemon.stop(grace=0)
