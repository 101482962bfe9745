"""Refusals every context shares: unfinished jobs and missing confirmations."""

from __future__ import annotations

from sqlalchemy.orm import Session

from osd.errors import FailedPrecondition
from osd.store import nodes as node_repo


def job_in_progress(kind: str, object_id: str, job_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{kind} {object_id} is the target of unfinished job {job_id}",
        reason="JOB_IN_PROGRESS",
        metadata={"job_id": job_id},
    )


def confirmation_required(what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{what}; set yes_i_really_mean_it to confirm",
        reason="CONFIRMATION_REQUIRED",
    )


def check_no_job(s: Session, kind: str, object_id: str, active_job_id: str | None) -> None:
    job_id = node_repo.unfinished_job_id(s, object_id, active_job_id)
    if job_id:
        raise job_in_progress(kind, object_id, job_id)
