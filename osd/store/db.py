"""The store: one database, reached through short units of work.

SQLite (WAL, foreign keys on) in a data directory is the embedded default; a
PostgreSQL URL (``postgresql+psycopg://...``) is the production store that
every daemon of a cluster shares.

Writes are serialised: every write transaction first bumps the store-wide
generation (see :func:`osd.store.state.bump_generation`), which takes a row
lock on PostgreSQL and the write lock on SQLite (``BEGIN IMMEDIATE``), so a
check made inside a write transaction still holds when it commits.

A write transaction that changed a row without bumping the generation (a
job's progress, say) bumps it as it commits, so the generation moves on every
change but the audit trail's: :class:`~osd.store.readcache.ReadCache` relies
on that. :meth:`Store.generation` reads it on a connection each thread keeps,
outside any transaction, for the price of one indexed read.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from osd.errors import Unavailable
from osd.store import events, readgen, state
from osd.store.readcache import ReadCache

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Tables whose changes leave the generation alone: the audit trail is written
# on refused calls too, daemons beat, node work and events are bookkeeping
# of changes that bump it themselves, and no read that is kept depends on
# them.
UNVERSIONED_TABLES = frozenset({"audit_records", "audit_targets", "daemons", "node_work", "events"})
# The objects in the pages kept, all together (some 40 MB at most).
PAGE_CACHE_ITEMS = 5000
GENERATION_SQL = "SELECT generation FROM osd_state WHERE id = 1"


class _WriteWatch(threading.local):
    """What the write transaction running on this thread has done so far."""

    armed = False
    changed = False
    bumped = False


def _changed_table(statement: str) -> str | None:
    """The table an INSERT, UPDATE or DELETE statement changes; None for others."""
    words = statement.split(None, 3)
    if len(words) < 3:
        return None
    verb = words[0].upper()
    if verb == "UPDATE":
        name = words[1]
    elif verb in ("INSERT", "DELETE"):
        name = words[2]
    else:
        return None
    return name.strip('"').split("(", 1)[0]


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'osd.db'}"


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> Engine:
    # A pool as large as the threads that may read at once: a connection
    # opened and closed per call costs more than the read.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=pool_size,
        max_overflow=pool_size,
    )

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

    def __init__(
        self, url: str, *, pool_size: int = 10, statement_timeout_seconds: float = 0.0
    ) -> None:
        """``statement_timeout_seconds``: PostgreSQL cancels a statement that
        runs longer (0: no limit); the call answers UNAVAILABLE. Connections
        are checked before use, so a restarted server is reconnected to."""
        self.url = url
        # The daemon that writes through this store (DaemonRow.id): a change in
        # phases records it as the change's owner. Set by the engine.
        self.owner = ""
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                # Owner-only: the store holds every secret the daemon keeps.
                # SQLite gives its -wal and -shm files the database's mode.
                Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                Path(database).touch(mode=0o600, exist_ok=True)
            self._write_engine = _sqlite_engine(url, immediate=True, pool_size=pool_size)
            self._read_engine = _sqlite_engine(url, immediate=False, pool_size=pool_size)
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                url = parsed.set(drivername="postgresql+psycopg").render_as_string(
                    hide_password=False
                )
            options = {}
            if statement_timeout_seconds > 0:
                timeout_ms = max(1, int(statement_timeout_seconds * 1000))
                options["options"] = f"-c statement_timeout={timeout_ms}"
            self._write_engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                connect_args=options,
            )
            self._read_engine = self._write_engine
        else:
            raise ValueError(f"unsupported database URL {parsed!r}: use sqlite or postgresql")
        self._watch = _WriteWatch()
        # SQLite makes a writer that finds the write lock taken sleep and try
        # again (1 ms, then longer, up to 100 ms), however soon the lock is let
        # go, so threads that wrote at once waited far longer than the writes
        # took. The writers of a process queue here instead, each woken as the
        # last commits, and one at a time meets SQLite's wait (for another
        # process). Re-entrant: a write inside a write is no worse than before.
        self._write_turn = threading.RLock() if self.dialect == "sqlite" else None
        event.listen(self._write_engine, "after_cursor_execute", self._note_statement)
        self._probes = threading.local()
        self._probe_connections: list[Any] = []
        self._probe_lock = threading.Lock()
        # Single objects, and pages of lists (each up to a thousand objects).
        self.cache = ReadCache()
        self.page_cache = ReadCache(
            PAGE_CACHE_ITEMS, weigh=lambda page: len(getattr(page, "items", ()))
        )
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        events.install(self._writer)
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)
        self._page_key: bytes | None = None
        self._closed = False

    @property
    def engine(self) -> Engine:
        return self._write_engine

    @property
    def engines(self) -> tuple[Engine, ...]:
        """Every engine statements run on: SQLite's writer and reader, or
        PostgreSQL's one."""
        if self._read_engine is self._write_engine:
            return (self._write_engine,)
        return (self._write_engine, self._read_engine)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error,
        and rolled back when the store was closed meanwhile (the daemon stopped
        and its caller was told the call did not complete)."""
        if self._closed:
            raise Unavailable("the daemon is stopping; retry")
        turn = self._write_turn
        if turn is not None and not turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise Unavailable("the store is unavailable: busy with other changes; retry")
        watch = self._watch
        # A write inside a write commits on its own, so it bumps on its own;
        # the outer one's record resumes after it.
        outer = (watch.armed, watch.changed, watch.bumped)
        watch.armed, watch.changed, watch.bumped = True, False, False
        try:
            with self._guard(), self._writer() as session, session.begin():
                yield session
                if self._closed:
                    raise Unavailable("the daemon stopped before this change committed; retry")
                if watch.changed and not watch.bumped:
                    state.bump_generation(session)
        finally:
            watch.armed, watch.changed, watch.bumped = outer
            if turn is not None:
                turn.release()

    def _note_statement(
        self,
        _conn: Any,
        cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        watch = self._watch
        if not watch.armed or (watch.changed and watch.bumped):
            return
        table = _changed_table(statement)
        if table is None or table in UNVERSIONED_TABLES:
            return
        if table == "osd_state":
            # The bump returns the new value; SQLite counts the rows of such a
            # statement only once they are read, which is after this.
            returning = "RETURNING" in statement.upper()
            if "generation" in statement and (returning or cursor.rowcount != 0):
                watch.bumped = True
        elif cursor.rowcount != 0:
            watch.changed = True

    def generation(self) -> int | None:
        """The store's generation as last committed, read on a connection this
        thread keeps; None when it cannot be read (the caller then reads in a
        transaction, which reports what is wrong)."""
        if self._closed:
            return None
        conn = getattr(self._probes, "conn", None)
        try:
            if conn is None:
                conn = self._probe_connect()
                self._probes.conn = conn
            cur = conn.cursor()
            cur.execute(GENERATION_SQL)
            row = cur.fetchone()
            cur.close()
        except Exception as exc:
            log.debug("generation probe failed: %s", exc)
            self._probes.conn = None
            self._close_probe(conn)
            return None
        return None if row is None else int(row[0])

    def _probe_connect(self) -> Any:
        url = self._read_engine.url
        if self.dialect == "sqlite":
            conn: Any = sqlite3.connect(
                url.database or ":memory:",
                timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            import psycopg

            conn = psycopg.connect(
                url.set(drivername="postgresql").render_as_string(hide_password=False),
                autocommit=True,
            )
        with self._probe_lock:
            if self._closed:
                conn.close()
                raise Unavailable("the store is closed")
            self._probe_connections.append(conn)
        return conn

    def _close_probe(self, conn: Any) -> None:
        if conn is None:
            return
        with self._probe_lock:
            if conn in self._probe_connections:
                self._probe_connections.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    def kept(self, key: Hashable, read: Callable[[Session, int], T], *, page: bool = False) -> T:
        """What ``read(session, generation)`` gives, kept while the store's
        generation stands still (see osd.store.readcache): pages of lists
        (``page``) apart from single objects. The generation is read first,
        in the same transaction: on PostgreSQL a later read may see a later
        change, so what is kept is never older than its generation.

        What ``read`` gives must not depend on the caller: check access on it."""

        def load() -> tuple[int, T]:
            with self._read() as s:
                generation = state.current_generation(s)
                return generation, read(s, generation)

        cache = self.page_cache if page else self.cache
        generation, value = cache.get_or_load(key, self.generation, load)
        readgen.kept(generation)
        return value

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction for reading; objects stay readable after it ends.
        A call that records what it reads (osd.store.readgen) notes the
        generation before the first."""
        readgen.before_read(self.generation)
        with self._read() as session:
            yield session

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        with self._guard(), self._reader() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            cancelled = "statement timeout" in str(exc.orig)
            if (
                exc.connection_invalidated
                or "locked" in str(exc.orig)
                or cancelled
                or _is_connect_error(exc)
            ):
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
        with self._probe_lock:
            probes, self._probe_connections = self._probe_connections, []
        for conn in probes:
            with contextlib.suppress(Exception):
                conn.close()
        self.cache.clear()
        self.page_cache.clear()
        self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            self._read_engine.dispose()


def _is_connect_error(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "connection" in text and ("refused" in text or "closed" in text or "failed" in text)
