"""The store on both backends: schema, constraints, the generation counter."""

from __future__ import annotations

import threading
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Integer, cast, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from osd.enums import AttachMode, DriveState, NodeState
from osd.store import migrate
from osd.store.db import Store
from osd.store.models import (
    AllocationRow,
    AttachmentRow,
    Base,
    DriveRow,
    FlushMoveRow,
    JobRow,
    NodeRow,
    SnapshotRow,
    StateRow,
    VolumeRow,
    utcnow,
)
from osd.store.state import bump_generation, current_generation
from osd.store.types import IntEnumType
from tests.conftest import Database
from tests.factories import (
    make_allocation,
    make_cluster,
    make_job_row,
    make_snapshot,
    make_topology,
    make_volume_row,
)
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


# -- enum columns --------------------------------------------------------------

ENUM_COLUMNS: list[tuple[type[Base], str, type[IntEnum]]] = [
    (mapper.class_, column.key, column.type.enum)
    for mapper in Base.registry.mappers
    for column in mapper.columns
    if isinstance(column.type, IntEnumType)
]


def one_row_of_each(store: Store) -> dict[type[Base], Any]:
    """The primary key of one row of every table that has an enum column."""
    cluster_id, nodes, drives = make_topology(store, zones=1, drives_per_node=1)
    volume_id = make_volume_row(store, cluster_id, "v")
    snapshot_id = make_snapshot(store, cluster_id, volume_id, "s")
    allocation_id = make_allocation(store, drives[0], volume_id=volume_id)
    job_id = make_job_row(store, cluster_id, nodes[0])
    with store.write() as s:
        bump_generation(s)
        s.add(
            AttachmentRow(
                volume_id=volume_id,
                node_id=nodes[0],
                mode=AttachMode.READ_WRITE,
                device_path="/dev/osd0",
                attach_time=utcnow(),
                generation=1,
            )
        )
        s.add(
            FlushMoveRow(
                volume_id=volume_id,
                node_id=nodes[0],
                target_node_id=nodes[0],
                mode=AttachMode.READ_WRITE,
                move_time=utcnow(),
                generation=1,
            )
        )
    return {
        NodeRow: nodes[0],
        DriveRow: drives[0],
        VolumeRow: volume_id,
        SnapshotRow: snapshot_id,
        AllocationRow: allocation_id,
        AttachmentRow: (volume_id, nodes[0]),
        FlushMoveRow: (volume_id, nodes[0]),
        JobRow: job_id,
    }


def test_every_enum_column_round_trips_every_member(store: Store) -> None:
    keys = one_row_of_each(store)
    assert {model for model, _, _ in ENUM_COLUMNS} == set(keys)
    for model, column, enum in ENUM_COLUMNS:
        attr = getattr(model, column)
        for number, member in enumerate(enum):
            # Members and plain numbers both bind; what loads is the member.
            value = member if number % 2 else int(member)
            with store.write() as s:
                setattr(s.get_one(model, keys[model]), column, value)
            with store.read() as s:
                row = s.get_one(model, keys[model])
                assert getattr(row, column) is member, (model.__name__, column)
                # The database holds the number, and a filter by number finds the row.
                raw = s.scalars(
                    select(cast(attr, Integer)).where(attr == int(member)).limit(1)
                ).one()
                assert type(raw) is int and raw == member.value


def test_an_enum_column_refuses_what_is_not_a_member(store: Store) -> None:
    cluster_id, _, _ = make_topology(store, zones=1, drives_per_node=0)
    row = node_row(cluster_id, "n")
    row.state = 9  # type: ignore[assignment]
    with (
        pytest.raises(StatementError, match=r"9 given is not a NodeState \(one of ONLINE=1, "),
        store.write() as s,
    ):
        s.add(row)
        s.flush()
    with store.read() as s, pytest.raises(StatementError, match="0 given is not a NodeState"):
        s.scalars(select(NodeRow).where(NodeRow.state == 0)).all()
    for wrong in (DriveState.ONLINE, "1", 1.0, True):
        row = node_row(cluster_id, "n")
        row.state = wrong  # type: ignore[assignment]
        with pytest.raises(StatementError, match="where a NodeState"), store.write() as s:
            s.add(row)
            s.flush()
    with store.read() as s:
        assert s.scalars(select(NodeRow).where(NodeRow.name == "n")).all() == []


def test_a_stored_number_that_is_no_member_fails_loudly(store: Store) -> None:
    _, nodes, _ = make_topology(store, zones=1, drives_per_node=0)
    with store.write() as s:
        s.execute(text("UPDATE nodes SET state = 9 WHERE id = :id"), {"id": nodes[0]})
    with (
        store.read() as s,
        pytest.raises(ValueError, match="9 in the database is not a NodeState"),
    ):
        s.get(NodeRow, nodes[0])
    with store.write() as s:
        s.execute(
            text("UPDATE nodes SET state = :state WHERE id = :id"),
            {"state": int(NodeState.OFFLINE), "id": nodes[0]},
        )
    with store.read() as s:
        assert s.get_one(NodeRow, nodes[0]).state is NodeState.OFFLINE


def test_every_change_moves_the_generation_but_the_audit_trails(store: Store) -> None:
    """A write that changes rows without bumping the generation itself bumps
    it as it commits (kept reads rely on that); one that changes nothing, or
    only the audit trail, leaves it, and one that bumps is not bumped twice."""
    cluster_id = make_cluster(store)
    before = store.generation()
    assert before is not None
    with store.write() as s:
        s.execute(
            text("UPDATE clusters SET labels = :labels WHERE id = :id"),
            {"labels": '{"a": "b"}', "id": cluster_id},
        )
    assert store.generation() == before + 1
    with store.write() as s:
        s.execute(text("UPDATE clusters SET name = 'x' WHERE id = 'none'"))
    assert store.generation() == before + 1
    with store.write() as s:
        s.execute(
            text(
                "INSERT INTO audit_records (id, time, subject, roles, via, issuer, method, "
                "code, request_id, count) VALUES ('a1', :t, 's', '[]', 'none', '', 'm', 0, "
                "'r', 1)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
    assert store.generation() == before + 1
    with store.write() as s:
        bumped = bump_generation(s)
        s.execute(text("UPDATE clusters SET name = 'y' WHERE id = :id"), {"id": cluster_id})
    assert bumped == before + 2 and store.generation() == before + 2
    with store.read() as s:
        assert current_generation(s) == before + 2


def test_the_generation_probe_reads_what_another_store_committed(database: Database) -> None:
    first, second = Store(database.url), Store(database.url)
    try:
        seen = second.generation()
        assert seen is not None
        with first.write() as s:
            bump_generation(s)
        assert second.generation() == seen + 1
        first.close()
        assert first.generation() is None  # closed: the caller reads in a transaction
    finally:
        first.close()
        second.close()


def test_the_read_cache_keeps_entries_of_their_generation_within_its_weight() -> None:
    from osd.store.readcache import ReadCache

    cache = ReadCache(10, weigh=len)
    cache.put("a", 5, [1, 2, 3, 4])
    cache.put("b", 5, [1, 2, 3, 4])
    assert cache.get("a", 5) == [1, 2, 3, 4]
    assert cache.get("a", 6) is None  # the store moved on: not what it holds now
    cache.put("c", 5, [1, 2, 3])  # 11 > 10: the oldest goes
    assert cache.get("a", 5) is None and cache.get("b", 5) and cache.get("c", 5)
    cache.put("b", 4, [9])  # an older read does not displace a newer one
    assert cache.get("b", 5) == [1, 2, 3, 4]
    cache.put("d", 5, list(range(11)))  # heavier than the whole cache: not kept
    assert cache.get("d", 5) is None and len(cache) == 2
