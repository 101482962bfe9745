"""The store: one database, reached through short units of work.

SQLite (WAL, foreign keys on) in a data directory is the embedded default; a
PostgreSQL URL (``postgresql+psycopg://...``) is the production store that
every daemon of a cluster shares.

Writes are serialised: every write transaction first bumps the store-wide
generation (see :func:`osd.store.state.bump_generation`), which takes a row
lock on PostgreSQL and the write lock on SQLite (``BEGIN IMMEDIATE``), so a
check made inside a write transaction still holds when it commits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from osd.errors import Unavailable
from osd.store import state

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'osd.db'}"


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite would defer it).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Store:
    """Owns the database engines and hands out units of work."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                # Owner-only: the store holds every secret the daemon keeps.
                # SQLite gives its -wal and -shm files the database's mode.
                Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                Path(database).touch(mode=0o600, exist_ok=True)
            self._write_engine = _sqlite_engine(url, immediate=True)
            self._read_engine = _sqlite_engine(url, immediate=False)
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                url = parsed.set(drivername="postgresql+psycopg").render_as_string(
                    hide_password=False
                )
            self._write_engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self._read_engine = self._write_engine
        else:
            raise ValueError(f"unsupported database URL {parsed!r}: use sqlite or postgresql")
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)
        self._page_key: bytes | None = None
        self._closed = False

    @property
    def engine(self) -> Engine:
        return self._write_engine

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error,
        and rolled back when the store was closed meanwhile (the daemon stopped
        and its caller was told the call did not complete)."""
        if self._closed:
            raise Unavailable("the daemon is stopping; retry")
        with self._guard(), self._writer() as session, session.begin():
            yield session
            if self._closed:
                raise Unavailable("the daemon stopped before this change committed; retry")

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction for reading; objects stay readable after it ends."""
        with self._guard(), self._reader() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            if exc.connection_invalidated or "locked" in str(exc.orig) or _is_connect_error(exc):
                log.warning("store unavailable: %s", exc.orig)
                raise Unavailable(f"the store is unavailable: {exc.orig}") from exc
            raise

    @property
    def page_key(self) -> bytes:
        """The key that signs page tokens, read from the store once."""
        if self._page_key is None:
            with self.read() as s:
                key = state.stored_page_key(s)
            if key is None:  # a migration makes it; only a hand-made store lacks one
                with self.write() as s:
                    key = state.page_key(s)
            self._page_key = key
        return self._page_key

    def upgrade(self) -> None:
        """Applies every pending migration."""
        from osd.store.migrate import upgrade

        upgrade(self._write_engine)

    def close(self) -> None:
        """Refuses every later commit and closes the connections not in use."""
        self._closed = True
        self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            self._read_engine.dispose()


def _is_connect_error(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "connection" in text and ("refused" in text or "closed" in text or "failed" in text)
