"""The store on both backends: schema, constraints, the generation counter."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from osd.store import migrate
from osd.store.db import Store
from osd.store.models import Base, NodeRow, StateRow
from osd.store.state import bump_generation, current_generation
from tests.conftest import Database
from tests.helpers import node_row


@pytest.fixture
def store(database: Database) -> Store:
    s = Store(database.url)
    yield s  # type: ignore[misc]
    s.close()


def test_schema_is_at_head_and_matches_the_models(store: Store) -> None:
    assert migrate.current_revision(store.engine) == migrate.head_revision(store.engine)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_pragmas(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        store.upgrade()
        with store.read() as s:
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        store.close()


def test_migrations_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        store.upgrade()
        migrate.downgrade(store.engine, "base")
        assert migrate.current_revision(store.engine) is None
        store.upgrade()
        with store.read() as s:
            assert current_generation(s) == 0
    finally:
        store.close()


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError), store.write() as s:
        s.add(node_row("0" * 32, "n"))
        s.flush()
    with store.read() as s:
        assert s.scalars(select(NodeRow)).all() == []


def test_generation_bumps_are_serialised(store: Store) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            with store.write() as s:
                value = bump_generation(s)
            with lock:
                seen.append(value)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(1, 61))
    with store.read() as s:
        assert s.scalars(select(StateRow.generation)).one() == 60


def test_a_failed_write_rolls_back_its_generation(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as s:
        bump_generation(s)
        raise RuntimeError("abandon")
    with store.read() as s:
        assert current_generation(s) == 0


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        Store("mysql://localhost/x")
