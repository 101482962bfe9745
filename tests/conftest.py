"""Shared fixtures: a real store (SQLite and PostgreSQL) and a daemon on an ephemeral port.

PostgreSQL: the tests use the server named by OSD_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test). Each run creates a database of
its own there and drops it afterwards. When the server cannot be reached the
PostgreSQL tests are skipped with the reason, except under CI (CI=true), where
that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL

from osd.config import Settings
from osd.daemon import Daemon
from osd.engine.drivers.fake import FakeDriver
from osd.engine.engine import Engine
from osd.store.db import Store
from osd.store.models import Base
from tests.scratch_devices import clean_up, require_loop_devices

if TYPE_CHECKING:
    from osd.tracing import Tracing
    from tests import auth_helpers

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgres"]


def _pg_admin_url() -> URL:
    url = make_url(os.environ.get("OSD_TEST_POSTGRES_URL", DEFAULT_PG))
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


@dataclass
class Database:
    """A migrated database that the tests of one backend share."""

    backend: str
    url: str

    def reset(self) -> None:
        """Empties every table but the schema's own, and restarts the generation."""
        engine = create_engine(self.url)
        try:
            with engine.begin() as conn:
                for table in reversed(Base.metadata.sorted_tables):
                    if table.name != "osd_state":
                        conn.execute(table.delete())
                conn.execute(text("UPDATE osd_state SET generation = 0, events_pruned_through = 0"))
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def sqlite_database() -> Iterator[Database]:
    with tempfile.TemporaryDirectory(prefix="osd-test-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'osd.db'}"
        store = Store(url)
        store.upgrade()
        store.close()
        yield Database("sqlite", url)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Database]:
    admin_url = _pg_admin_url()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"osd_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        reason = f"PostgreSQL at {admin_url.render_as_string()} is not reachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must not skip the PostgreSQL tests)")
        pytest.skip(reason)
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        store = Store(url)
        store.upgrade()
        store.close()
        yield Database("postgres", url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Database:
    """Each test that uses it runs once per store backend, on an empty store."""
    db: Database = request.getfixturevalue(f"{request.param}_database")
    db.reset()
    return db


@dataclass
class RunningDaemon:
    daemon: Daemon
    driver: FakeDriver
    channel: grpc.Channel
    database: Database

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.daemon.grpc_port}"

    @property
    def store(self) -> Store:
        return self.daemon.engine.store


@contextlib.contextmanager
def running_daemon(
    database: Database, *, tracing: Tracing | None = None, **settings: Any
) -> Iterator[RunningDaemon]:
    """A daemon on an ephemeral loopback port, with the fake driver and a real
    store; ``tracing``, when given, is the daemon's (see osd.tracing.setup)."""
    driver = FakeDriver()
    config = Settings(
        **{
            "grpc_listen": "127.0.0.1:0",
            "rest_enabled": False,
            "database_url": database.url,
            "workers": 8,
            "grace_seconds": 2,
            **settings,
        }
    )
    d = Daemon(config, engine=Engine(Store(database.url), driver), tracing=tracing)
    d.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{d.grpc_port}")
    try:
        yield RunningDaemon(d, driver, channel, database)
    finally:
        channel.close()
        d.stop(grace=1)


@pytest.fixture
def daemon(database: Database) -> Iterator[RunningDaemon]:
    """A daemon per store backend (the test runs once on each)."""
    with running_daemon(database) as d:
        yield d


@pytest.fixture
def sqlite_daemon(sqlite_database: Database) -> Iterator[RunningDaemon]:
    """A daemon on SQLite only, for behaviour of the transport that no store changes."""
    sqlite_database.reset()
    with running_daemon(sqlite_database) as d:
        yield d


@contextlib.contextmanager
def store_on(database: Database) -> Iterator[Store]:
    """A store on ``database`` for reading what a test left, closed afterwards."""
    store = Store(database.url)
    try:
        yield store
    finally:
        store.close()


# -- authentication (tests/auth_helpers.py) ------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> auth_helpers.Keys:
    """A token secret file and an RSA and an EC key pair."""
    from tests import auth_helpers

    return auth_helpers.make_keys(tmp_path)


@pytest.fixture
def w(database: Database, keys: auth_helpers.Keys, tmp_path: Path) -> Iterator[auth_helpers.World]:
    """A daemon with auth on (three issuers, a custom role), REST on, and a topology."""
    from tests import auth_helpers

    with auth_helpers.auth_world(database, keys, tmp_path) as world:
        yield world


@pytest.fixture(params=["grpc", "rest"])
def wire(request: pytest.FixtureRequest) -> auth_helpers.Wire:
    """Each test that takes it runs over gRPC and again through the REST gateway."""
    from tests import auth_helpers

    return auth_helpers.wire_of(request.param)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder for scratch image files and a local driver's data directory:
    loop devices and mounts under it are cleaned up after the test. Needs
    root and loop devices (skipped without them, a failure under CI)."""
    require_loop_devices()
    folder = tmp_path / "scratch"
    folder.mkdir()
    try:
        yield folder
    finally:
        clean_up(folder)
