"""Allocation accounting on both stores: used bytes always equal the sum of allocations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from osd.enums import AllocationState
from osd.errors import FailedPrecondition
from osd.store import allocations
from osd.store.db import Store
from osd.store.models import (
    AllocationRow,
    ClusterRow,
    DriveRow,
    VolumeRow,
    utcnow,
)
from tests.conftest import Database
from tests.helpers import node_row


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    s = Store(database.url)
    yield s
    s.close()


def _topology(store: Store) -> tuple[str, str, list[str], str]:
    """A cluster, a node with two 10 KiB drives, and a volume row."""
    now = utcnow()
    cid = uuid.uuid4().hex
    with store.write() as s:
        s.add(
            ClusterRow(
                id=cid,
                name="c",
                labels={},
                block=True,
                file=True,
                create_time=now,
                update_time=now,
                generation=1,
            )
        )
        node = node_row(cid, "n1")
        s.add(node)
        s.flush()
        drives = []
        for path in ("/dev/a", "/dev/b"):
            d = DriveRow(
                id=uuid.uuid4().hex,
                cluster_id=cid,
                node_id=node.id,
                device_path=path,
                description="",
                labels={},
                journal=False,
                state=2,
                total_bytes=10240,
                used_bytes=0,
                model="",
                serial="",
                ssd=False,
                create_time=now,
                update_time=now,
                generation=1,
            )
            s.add(d)
            drives.append(d.id)
        s.flush()
        vol = VolumeRow(
            id=uuid.uuid4().hex,
            cluster_id=cid,
            name="v",
            kind=1,
            size_bytes=4096,
            durability_type=1,
            replicas=0,
            data_fragments=0,
            redundancy_fragments=0,
            placement={},
            provisioning=2,
            snapshot_factor=0.0,
            qos_iops_limit=0,
            qos_bandwidth_limit_bytes=0,
            labels={},
            source_kind=0,
            multi_attach=False,
            state=2,
            stored_bytes=0,
            create_time=now,
            update_time=now,
            generation=1,
        )
        s.add(vol)
    return cid, node.id, drives, vol.id


def _used(store: Store, drive_id: str) -> int:
    with store.read() as s:
        return s.scalars(select(DriveRow.used_bytes).where(DriveRow.id == drive_id)).one()


def test_reserve_resize_move_release_keep_the_books(store: Store) -> None:
    _, node_id, (a, b), vol = _topology(store)
    with store.write() as s:
        alloc = allocations.reserve(
            s,
            drive_id=a,
            node_id=node_id,
            nbytes=4096,
            index=0,
            state=AllocationState.PENDING,
            volume_id=vol,
        )
    assert _used(store, a) == 4096
    with store.write() as s:
        row = s.get_one(AllocationRow, alloc.id)
        allocations.resize(s, row, 8192)
    assert _used(store, a) == 8192
    with store.write() as s:
        row = s.get_one(AllocationRow, alloc.id)
        allocations.move(s, row, drive_id=b, node_id=node_id)
    assert (_used(store, a), _used(store, b)) == (0, 8192)
    with store.read() as s:
        assert allocations.check(s) == []
    with store.write() as s:
        allocations.release(s, s.get_one(AllocationRow, alloc.id))
    assert _used(store, b) == 0
    with store.read() as s:
        assert allocations.check(s) == []


def test_a_full_drive_refuses_and_nothing_changes(store: Store) -> None:
    _, node_id, (a, _b), vol = _topology(store)
    with store.write() as s:
        allocations.reserve(
            s, drive_id=a, node_id=node_id, nbytes=8192, index=0, state=2, volume_id=vol
        )
    with pytest.raises(FailedPrecondition) as info, store.write() as s:
        allocations.reserve(
            s, drive_id=a, node_id=node_id, nbytes=4096, index=1, state=2, volume_id=vol
        )
    assert info.value.reason == "INSUFFICIENT_CAPACITY"
    assert _used(store, a) == 8192
    with store.read() as s:
        assert allocations.check(s) == []


def test_an_allocation_has_exactly_one_owner(store: Store) -> None:
    _, node_id, (a, _b), vol = _topology(store)
    with pytest.raises(ValueError), store.write() as s:
        allocations.reserve(s, drive_id=a, node_id=node_id, nbytes=1, index=0, state=2)
    with pytest.raises(ValueError), store.write() as s:
        allocations.reserve(
            s,
            drive_id=a,
            node_id=node_id,
            nbytes=1,
            index=0,
            state=2,
            volume_id=vol,
            snapshot_id=vol,
        )


def test_check_finds_books_that_do_not_balance(store: Store) -> None:
    _, node_id, (a, b), vol = _topology(store)
    with store.write() as s:
        allocations.reserve(
            s, drive_id=a, node_id=node_id, nbytes=1024, index=0, state=2, volume_id=vol
        )
        s.execute(update(DriveRow).where(DriveRow.id == b).values(used_bytes=512))
    with store.read() as s:
        found = allocations.check(s)
    assert [(d.drive_id, d.used_bytes, d.allocated_bytes) for d in found] == [(b, 512, 0)]
