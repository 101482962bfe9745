"""A daemon process killed in the middle of a volume create, on both stores.

``osd serve`` runs as a child process on a slow fake driver whose state file
outlives it. It is sent SIGKILL while a replicated create is between its
driver calls; a daemon started again on the same store and storage must
settle the create (finish it or undo it, never leave it CREATING) with the
books balanced.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from osd.enums import VolumeState
from osd.store import allocations
from osd.store.db import Store
from osd.store.models import AllocationRow, VolumeRow
from osd.v1 import volume_pb2 as pb
from osd.v1 import volume_pb2_grpc
from tests.conftest import Database
from tests.factories import make_topology
from tests.test_daemon import serving


def _volume(store: Store) -> VolumeRow | None:
    with store.read() as s:
        return s.scalars(select(VolumeRow)).one_or_none()


def test_sigkill_mid_create_then_restart_settles_the_volume(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(database.url)
    try:
        cluster_id, _nodes, _drives = make_topology(store)
        state_file = tmp_path / "storage.json"
        monkeypatch.setenv("OSD_FAKE_DRIVER_STATE", str(state_file))
        monkeypatch.setenv("OSD_FAKE_DRIVER_DELAY", "0.5")
        db_flag = ("--database-url", database.url)

        with (
            serving(tmp_path, *db_flag) as (proc, port),
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = volume_pb2_grpc.VolumeServiceStub(channel)
            future = stub.CreateVolume.future(
                pb.CreateVolumeRequest(
                    cluster_id=cluster_id,
                    name="v",
                    size="4G",
                    durability=pb.Durability(type=pb.DURABILITY_TYPE_REPLICATE, replicas=3),
                ),
                timeout=60,
            )
            deadline = time.monotonic() + 30
            while (row := _volume(store)) is None:
                assert time.monotonic() < deadline, "the create never recorded its intent"
                time.sleep(0.02)
            time.sleep(0.8)  # at least one replica made, not all three
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            with pytest.raises(grpc.RpcError):
                future.result()

        left = _volume(store)
        assert left is not None and left.state == VolumeState.CREATING, (
            "the kill was meant to land mid-create"
        )
        with store.read() as s:
            assert set(s.scalars(select(AllocationRow.state))) == {1}  # PENDING
            assert allocations.check(s) == []

        monkeypatch.setenv("OSD_FAKE_DRIVER_DELAY", "0")
        with (
            serving(tmp_path, *db_flag) as (_proc, port),
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = volume_pb2_grpc.VolumeServiceStub(channel)
            got = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=row.id), timeout=10)
            assert got.volume.state == pb.VOLUME_STATE_UP
            assert len(got.allocations) == 3
            assert {a.state for a in got.allocations} == {2}  # ACTIVE
            assert len({a.zone for a in got.allocations}) == 3

        with store.read() as s:
            assert allocations.check(s) == []
        check = subprocess.run(
            [sys.executable, "-m", "osd.cli", "db", "check", *db_flag, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        store.close()
