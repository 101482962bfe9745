"""Persistent jobs: start, inspect, list, cancel, pause and resume them.

Every long operation is a row in ``jobs``; each kind is a handler (see
:mod:`osd.engine.jobs.handler`) registered here, and
:class:`~osd.engine.job_runner.JobRunner` works the jobs in the background.
At most ``max_jobs`` jobs are active (PENDING or RUNNING) in the store; one
more answers RESOURCE_EXHAUSTED (TOO_MANY_JOBS).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from osd.engine.drivers import StorageDriver
from osd.engine.jobs.handler import AnyHandler, JobLost, Progress
from osd.engine.jobs.kinds.drive_evacuate import DriveEvacuateSpec
from osd.engine.jobs.kinds.node_drain import NodeDrainSpec
from osd.engine.jobs.models import (
    Job,
    JobError,
    JobProgress,
    JobQuery,
    JobResult,
    ObjectRef,
    Started,
)
from osd.engine.jobs.records import Record
from osd.engine.jobs.runner import MAX_RESTARTS, JobRunner
from osd.engine.shared import paging
from osd.engine.shared import validation as v
from osd.engine.shared.models import Changed, Page
from osd.engine.topology.availability import AvailabilityListener
from osd.engine.volumes.access import Visibility
from osd.enums import JobKind, JobState, ObjectKind
from osd.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from osd.store import jobs as repo
from osd.store.db import Store
from osd.store.models import JobRow, utcnow
from osd.store.state import bump_generation, current_generation

__all__ = ["MAX_RESTARTS", "JobEngine"]

log = logging.getLogger(__name__)


class JobEngine:
    """Jobs over one store and one driver; ``run`` starts the runner, ``stop`` stops it."""

    def __init__(
        self,
        store: Store,
        driver: StorageDriver,
        *,
        max_jobs: int = 4,
        heartbeat_seconds: float = 5.0,
        stale_seconds: float = 60.0,
        poll_seconds: float = 0.5,
        availability: AvailabilityListener | None = None,
        retention_days: float = 30.0,
        owner: str = "",
    ) -> None:
        self._store = store
        self.max_jobs = max_jobs
        self.retention = timedelta(days=retention_days)
        self._handlers: dict[JobKind, AnyHandler] = {}
        self._runner = JobRunner(
            store,
            driver,
            self._handlers,
            max_jobs=max_jobs,
            heartbeat_seconds=heartbeat_seconds,
            stale_seconds=stale_seconds,
            poll_seconds=poll_seconds,
            availability=availability,
            owner=owner,
        )

    # -- kinds ------------------------------------------------------------------------

    def register(self, handler: AnyHandler) -> None:
        """Makes ``handler`` run the jobs of its kind (register before the engine starts)."""
        self._handlers[handler.kind] = handler

    def _handler(self, kind: JobKind) -> AnyHandler:
        handler = self._handlers.get(kind)
        if handler is None:
            raise RuntimeError(f"no handler is registered for job kind {kind.name}")
        return handler

    # -- the API ----------------------------------------------------------------------

    def start(self, kind: JobKind, request: Record | Mapping[str, Any]) -> Started:
        """Records a job of ``kind`` and wakes the runner.

        ``request`` is the kind's request record (e.g. a ``DriveEvacuateSpec``
        for DRIVE_EVACUATE, a ``NodeDrainSpec`` for NODE_DRAIN; see the kind's
        ``request_type``), or its JSON form. An unfinished job of the same kind
        and target is returned instead (``started`` False). Raises the kind's
        validation errors, and ResourceExhausted (TOO_MANY_JOBS) when
        ``max_jobs`` jobs are PENDING or RUNNING.
        """
        handler = self._handler(kind)
        typed = handler.request_of(request)
        with self._store.write() as s:
            existing = handler.existing(s, typed)
            if existing is not None:
                return Started(self.to_domain(existing), False, current_generation(s))
            generation = bump_generation(s)
            result = Started(self.record(s, kind, typed, generation), True, generation)
        self._runner.wake()
        return result

    def record(self, s: Session, kind: JobKind, request: Record, generation: int) -> Job:
        """Records a job of ``kind`` in the caller's write transaction (which has
        bumped the generation to ``generation``), so that the change that starts
        it and the job commit together or not at all; call :meth:`wake` once the
        transaction has committed. Raises what :meth:`start` raises (no look-up
        of an unfinished job of the same target: that is the caller's).
        """
        handler = self._handler(kind)
        typed = handler.request_of(request)
        now = utcnow()
        job = JobRow(
            id=uuid.uuid4().hex,
            cluster_id="",
            kind=kind,
            target_kind=handler.target_kind,
            target_id="",
            related=[],
            state=JobState.PENDING,
            cancel_requested=False,
            pause_requested=False,
            spec={},
            checkpoint={},
            progress_done_bytes=0,
            progress_total_bytes=0,
            progress_done_steps=0,
            progress_total_steps=0,
            progress_message="waiting to start",
            error_code=0,
            error_reason="",
            error_message="",
            result=None,
            restart_count=0,
            owner=None,
            heartbeat_time=None,
            create_time=now,
            start_time=None,
            update_time=now,
            end_time=None,
            generation=generation,
        )
        job.spec = handler.begin(s, job, typed).to_json()
        self._check_room(repo.count_active(s))
        repo.add(s, job)
        return self.to_domain(job)

    def wake(self) -> None:
        """Makes the runner look for PENDING jobs now (after :meth:`record`)."""
        self._runner.wake()

    def evacuate_drive(self, drive_id: str) -> Started:
        """Soft-ejects a drive: a DRIVE_EVACUATE job (see NodeService.EjectDrive)."""
        return self.start(JobKind.DRIVE_EVACUATE, DriveEvacuateSpec(drive_id))

    def drain_node(self, node_id: str) -> Started:
        """Drains a node: a NODE_DRAIN job (see NodeService.DrainNode)."""
        return self.start(JobKind.NODE_DRAIN, NodeDrainSpec(node_id))

    def _check_room(self, active: int) -> None:
        if active >= self.max_jobs:
            raise ResourceExhausted(
                f"{active} jobs are active over the store, the most max_jobs allows; retry later",
                reason="TOO_MANY_JOBS",
                metadata={"max_jobs": str(self.max_jobs)},
            )

    def inspect(self, job_id: str) -> Job:
        v.check_id(job_id, "job_id")
        with self._store.read() as s:
            seen = Visibility(s)
            row = self._get(s, job_id)
            if not _visible(row, seen):
                raise NotFound.object("job", "job_id", job_id)
            return _redacted(self.to_domain(row), seen)

    def latest(self, kind: JobKind, target_id: str) -> Job | None:
        """The newest job of ``kind`` on ``target_id``."""
        with self._store.read() as s:
            row = repo.latest(s, kind, target_id)
            return None if row is None else self.to_domain(row)

    def list(self, query: JobQuery) -> Page[Job]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "job", query)
        after = self._decode_after(pages, query.page_token)
        kinds = self._enum_values(query.kinds, JobKind, "kinds")
        states = self._enum_values(query.states, JobState, "states")
        if query.target_kind:
            self._enum_values((query.target_kind,), ObjectKind, "target_kind")
        if query.target_id:
            v.check_id(query.target_id, "target_id")
        if query.cluster_id:
            v.check_id(query.cluster_id, "cluster_id")
        with self._store.read() as s:
            seen = Visibility(s)
            rows, token = pages.take(
                repo.scan(
                    s,
                    after=after,
                    batch=size + 1,
                    kinds=kinds,
                    states=states,
                    target_kind=query.target_kind,
                    target_id=query.target_id,
                    cluster_id=query.cluster_id,
                ),
                size,
                lambda row: _visible(row, seen),
                lambda r: {"t": r.create_time.isoformat(), "id": r.id},
            )
            return Page([_redacted(self.to_domain(r), seen) for r in rows], token)

    @staticmethod
    def _enum_values(values: tuple[int, ...], enum: type[Any], field: str) -> tuple[int, ...]:
        known = {int(m) for m in enum}
        bad = [x for x in values if x not in known]
        if bad:
            raise InvalidArgument.field(field, f"{bad[0]} is not a known value")
        return tuple(sorted(set(values)))

    @staticmethod
    def _decode_after(pages: paging.Pager, token: str) -> tuple[datetime, str] | None:
        after = pages.after(token)
        if after is None:
            return None
        t, i = after.get("t"), after.get("id")
        if not isinstance(t, str) or not isinstance(i, str):
            raise InvalidArgument.field("page_token", "is not a page token of a job list")
        try:
            return datetime.fromisoformat(t), i
        except ValueError:
            raise InvalidArgument.field("page_token", "is not a page token of a job list") from None

    def cancel(self, job_id: str) -> Changed[Job]:
        v.check_id(job_id, "job_id")
        with self._store.write() as s:
            row = self._get(s, job_id, for_update=True)
            state = JobState(row.state)
            if state == JobState.CANCELLED or (state == JobState.RUNNING and row.cancel_requested):
                return Changed(self.to_domain(row), current_generation(s))
            if state in (JobState.DONE, JobState.FAILED):
                raise self._finished(row)
            handler = self._handlers.get(JobKind(row.kind))
            if handler is not None and not handler.cancellable(row):
                raise FailedPrecondition(
                    f"job {job_id} cannot be cancelled now",
                    reason="JOB_NOT_CANCELLABLE",
                    metadata={"job_id": job_id},
                )
            generation = bump_generation(s)
            row.cancel_requested = True
            row.update_time = utcnow()
            row.generation = generation
            if state == JobState.RUNNING:
                return Changed(self.to_domain(row), generation)
            opened = self._runner.open(row)
        # PENDING or PAUSED: nothing runs it, so it is rolled back here and now
        # (unless a daemon that starts finishes it first).
        with contextlib.suppress(JobLost):
            self._runner.rollback(
                opened.handler, opened.ctx, JobState.CANCELLED, None, running=False
            )
        with self._store.read() as s:
            row = self._get(s, job_id)
            return Changed(self.to_domain(row), row.generation)

    def pause(self, job_id: str) -> Changed[Job]:
        v.check_id(job_id, "job_id")
        with self._store.write() as s:
            row = self._get(s, job_id, for_update=True)
            state = JobState(row.state)
            if state.final:
                raise self._finished(row)
            handler = self._handlers.get(JobKind(row.kind))
            if handler is None or not handler.pausable:
                raise FailedPrecondition(
                    f"a {JobKind(row.kind).name} job cannot be paused",
                    reason="JOB_NOT_PAUSABLE",
                    metadata={"job_id": job_id},
                )
            if state == JobState.PAUSED or (state == JobState.RUNNING and row.pause_requested):
                return Changed(self.to_domain(row), current_generation(s))
            generation = bump_generation(s)
            if state == JobState.PENDING:
                row.state = JobState.PAUSED
            else:
                row.pause_requested = True
            row.update_time = utcnow()
            row.generation = generation
            return Changed(self.to_domain(row), generation)

    def resume(self, job_id: str) -> Changed[Job]:
        v.check_id(job_id, "job_id")
        with self._store.write() as s:
            row = self._get(s, job_id, for_update=True)
            state = JobState(row.state)
            if state.final:
                raise self._finished(row)
            if state != JobState.PAUSED and not row.pause_requested:
                return Changed(self.to_domain(row), current_generation(s))
            if state == JobState.PAUSED:
                self._check_room(repo.count_active(s))
            generation = bump_generation(s)
            row.state = JobState.PENDING if state == JobState.PAUSED else state
            row.pause_requested = False
            row.update_time = utcnow()
            row.generation = generation
            result = Changed(self.to_domain(row), generation)
        self._runner.wake()
        return result

    @staticmethod
    def _finished(row: JobRow) -> FailedPrecondition:
        return FailedPrecondition(
            f"job {row.id} has finished ({JobState(row.state).name})",
            reason="JOB_FINISHED",
            metadata={"job_id": row.id, "state": JobState(row.state).name},
        )

    @staticmethod
    def _get(s: Any, job_id: str, *, for_update: bool = False) -> JobRow:
        row = repo.get(s, job_id, for_update=for_update)
        if row is None:
            raise NotFound.object("job", "job_id", job_id)
        return row

    def to_domain(self, row: JobRow) -> Job:
        state = JobState(row.state)
        kind = JobKind(row.kind)
        handler = self._handlers.get(kind)
        progress = Progress(
            row.progress_done_bytes,
            row.progress_total_bytes,
            row.progress_done_steps,
            row.progress_total_steps,
            row.progress_message,
        )
        result = JobResult.from_json(row.result) if row.result is not None else None
        whole = state == JobState.DONE and (result is None or result.complete)
        return Job(
            id=row.id,
            kind=kind,
            cluster_id=row.cluster_id,
            target=ObjectRef(ObjectKind(row.target_kind), row.target_id),
            related=[ObjectRef(ObjectKind(r["kind"]), str(r["id"])) for r in row.related],
            state=state,
            cancel_requested=row.cancel_requested and state == JobState.RUNNING,
            pausable=handler is not None and handler.pausable and not state.final,
            cancellable=not state.final and (handler is None or handler.cancellable(row)),
            progress=JobProgress(
                percent=100 if whole else progress.percent(),
                done_bytes=progress.done_bytes,
                total_bytes=progress.total_bytes,
                done_steps=progress.done_steps,
                total_steps=progress.total_steps,
                message=progress.message,
            ),
            error=(
                JobError(row.error_code, row.error_reason, row.error_message)
                if row.error_code
                else None
            ),
            restart_count=row.restart_count,
            create_time=row.create_time,
            start_time=row.start_time,
            update_time=row.update_time,
            end_time=row.end_time,
            generation=row.generation,
            result=result,
        )

    # -- the runner -------------------------------------------------------------------

    def prune(self, now: datetime | None = None) -> int:
        """Deletes the jobs that ended longer than the retention ago; returns
        how many. A job still PENDING, RUNNING or PAUSED is never deleted."""
        before = (now or datetime.now(UTC)) - self.retention
        with self._store.write() as s:
            gone = repo.prune_finished(s, before)
        if gone:
            log.info("pruned %d finished job(s) that ended before %s", gone, before.isoformat())
        return gone

    def run(self) -> None:
        """Resumes what a gone daemon left, then works jobs in the background."""
        self._runner.run()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the runner; running jobs stop at their next safe point."""
        self._runner.stop(timeout)

    def running(self) -> tuple[str, ...]:
        """Ids of the jobs this daemon works on now."""
        return self._runner.running()


def _shown(ref_kind: int, ref_id: str, seen: Visibility) -> bool:
    if ref_kind == ObjectKind.VOLUME:
        return seen.volume(ref_id)
    if ref_kind == ObjectKind.SNAPSHOT:
        return seen.snapshot(ref_id)
    return True


def _visible(row: JobRow, seen: Visibility) -> bool:
    """A job on a volume or snapshot is seen only by who may read it, as a
    missing one is: its id would tell that the object exists."""
    return seen.all or _shown(row.target_kind, row.target_id, seen)


def _redacted(job: Job, seen: Visibility) -> Job:
    """The job without the related volumes and snapshots the caller may not
    read (a drive's evacuation names every volume it moves)."""
    if seen.all:
        return job
    related = [r for r in job.related if _shown(r.kind, r.id, seen)]
    return job if len(related) == len(job.related) else dataclasses.replace(job, related=related)
