"""Finished jobs are pruned once they ended longer than job_retention_days
ago; unfinished jobs never are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from osd.client import CallError, Client
from tests.auth_helpers import World, token
from tests.test_cli_call import _copy_job


def test_finished_jobs_are_pruned_by_age_and_unfinished_ones_never(w: World) -> None:
    jobs = w.daemon.daemon.engine.jobs
    done = _copy_job(w, "kept-a-while")
    admin = token(w.keys, roles=["admin"])
    with Client(w.daemon.target, token=admin) as client:
        assert client.wait_job(done, timeout=60).state == 4  # DONE
        w.daemon.driver.block("clone_replica")
        try:
            running = _copy_job(w, "still-running")
            assert w.daemon.driver.wait_blocked("clone_replica")
            assert jobs.prune() == 0  # nothing ended 30 days ago
            in_31_days = datetime.now(UTC) + timedelta(days=31)
            assert jobs.prune(now=in_31_days) == 1
            with pytest.raises(CallError) as info:
                client.call("JobService.InspectJob", {"job_id": done})
            assert info.value.code == grpc.StatusCode.NOT_FOUND
            left = client.call("JobService.ListJobs", {}).jobs  # type: ignore[attr-defined]
            assert [j.id for j in left] == [running]
        finally:
            w.daemon.driver.unblock("clone_replica")
        assert client.wait_job(running, timeout=60).state == 4
