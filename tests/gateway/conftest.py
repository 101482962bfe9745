"""Gateway fixtures: a daemon serving REST on an ephemeral port, and a fake service.

``rest_daemon`` is built as tests/conftest.py builds ``daemon`` (fake driver,
the shared ``database`` fixture, so every test that uses it runs on SQLite and
on PostgreSQL), with the gateway enabled on port 0. ``shapes`` is a
GatewayServer in front of tests/gateway/shapes.py's fake, for the forms and
error codes the osd contract and daemon cannot show yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest

from gateway.server import GatewayServer
from osd.config import Settings
from osd.daemon import Daemon
from osd.engine.drivers.fake import FakeDriver
from osd.engine.engine import Engine
from osd.store.db import Store
from tests.conftest import Database
from tests.gateway import shapes as shapes_proto


@dataclass
class RestDaemon:
    daemon: Daemon
    database: Database
    http: httpx.Client
    channel: grpc.Channel

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.daemon.grpc_port}"

    @property
    def store(self) -> Store:
        return self.daemon.engine.store


@pytest.fixture
def rest_daemon(database: Database) -> Iterator[RestDaemon]:
    """A daemon with the REST gateway on an ephemeral loopback port."""
    settings = Settings(
        grpc_listen="127.0.0.1:0",
        rest_listen="127.0.0.1:0",
        rest_enabled=True,
        database_url=database.url,
        workers=8,
        grace_seconds=2,
    )
    d = Daemon(settings, engine=Engine(Store(database.url), FakeDriver()))
    d.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{d.grpc_port}")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{d.rest_port}", timeout=10) as client:
            yield RestDaemon(d, database, client, channel)
    finally:
        channel.close()
        d.stop(grace=1)


@pytest.fixture
def http(rest_daemon: RestDaemon) -> httpx.Client:
    return rest_daemon.http


@dataclass
class ShapesGateway:
    fake: shapes_proto.FakeShapeServer
    gateway: GatewayServer
    http: httpx.Client


@pytest.fixture(scope="module")
def shapes() -> Iterator[ShapesGateway]:
    """A gateway for gwtest.v1.ShapeService in front of its fake (no store)."""
    fake = shapes_proto.FakeShapeServer()
    fake.start()
    gateway = GatewayServer(
        "127.0.0.1:0", fake.target, services=[shapes_proto.service()], max_body_bytes=4096
    )
    gateway.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            yield ShapesGateway(fake, gateway, client)
    finally:
        gateway.stop()
        fake.stop()
