"""A rebalance previewed (Service.GetPoolRebalancePlan), then committed by
starting it, on SQLite and PostgreSQL: the preview changes nothing, and the
job makes the moves it listed."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from osd.store.models import AllocationRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import service_pb2 as spb
from tests.conftest import RunningDaemon
from tests.factories import GIB, make_pool, make_topology, make_volume
from tests.helpers import error_of
from tests.test_jobs import assert_books, service_stub, wait_job
from tests.volume_helpers import generation


def plan(d: RunningDaemon, pool_id: str) -> spb.GetPoolRebalancePlanResponse:
    return service_stub(d).GetPoolRebalancePlan(
        spb.GetPoolRebalancePlanRequest(pool_id=pool_id), timeout=10
    )


def where(d: RunningDaemon) -> dict[str, str]:
    """allocation id -> drive id."""
    with d.store.read() as s:
        return {a.id: a.drive_id for a in s.scalars(select(AllocationRow))}


def test_a_preview_lists_the_moves_the_rebalance_then_makes(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    for _ in range(6):
        make_volume(
            daemon.store,
            cluster_id,
            [drives[0], drives[2], drives[4]],
            5 * GIB,
            pool_id=pool,
            driver=daemon.driver,
        )
    placed = where(daemon)
    before_generation = generation(daemon)

    preview = plan(daemon, pool)
    assert preview.complete and preview.missing_copies == 0
    assert len(preview.moves) == 9
    assert preview.moved_bytes == 9 * 5 * GIB
    assert preview.spread_percent_before == pytest.approx(30.0)
    assert preview.spread_percent_after == 0.0
    assert [d.drive_id for d in preview.drives] == sorted(drives)
    by_drive = {d.drive_id: d for d in preview.drives}
    assert [by_drive[d].used_bytes_before for d in drives] == [30 * GIB, 0] * 3
    assert [by_drive[d].used_bytes_after for d in drives] == [15 * GIB] * 6
    for m in preview.moves:
        assert placed[m.allocation_id] == m.source_drive_id
        assert m.bytes == 5 * GIB and m.target_drive_id != m.source_drive_id
    # A preview changes nothing.
    assert where(daemon) == placed
    assert generation(daemon) == before_generation
    assert plan(daemon, pool).moves == preview.moves

    # Committed: the job makes exactly the moves listed.
    started = service_stub(daemon).StartPoolRebalance(
        spb.StartPoolRebalanceRequest(pool_id=pool), timeout=10
    )
    assert wait_job(daemon, started.job.id).state == jpb.JOB_STATE_DONE
    after = where(daemon)
    moved = {a: d for a, d in after.items() if placed[a] != d}
    assert moved == {m.allocation_id: m.target_drive_id for m in preview.moves}
    assert_books(daemon.store)
    done = plan(daemon, pool)
    assert list(done.moves) == [] and done.complete
    assert done.spread_percent_before == done.spread_percent_after == 0.0


def test_a_preview_of_no_pool_is_refused(daemon: RunningDaemon) -> None:
    stub = service_stub(daemon)
    for pool_id, code in (
        ("nope", grpc.StatusCode.INVALID_ARGUMENT),
        ("a" * 32, grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.GetPoolRebalancePlan(spb.GetPoolRebalancePlanRequest(pool_id=pool_id), timeout=10)
        err = error_of(info.value)
        assert err.code == code
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert list(err.fields) == ["pool_id"]
