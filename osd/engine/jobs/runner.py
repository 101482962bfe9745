"""The job runner: works the jobs of the store in the background.

It claims PENDING jobs, at most ``max_jobs`` at once, and runs each in a
thread of its own, step by step (see :mod:`osd.engine.jobs.handler`).
Between steps it honours cancel (roll back, then CANCELLED), pause (PAUSED;
resumable) and shutdown (the job is left for the next daemon, which resumes
it from its checkpoint).

Which daemon runs a job is its ``owner`` (``host:pid:run``), kept alive by a
heartbeat. A RUNNING job is orphaned when its owner is gone: a process of
this host that no longer exists, an earlier engine of this process (one
engine per daemon process), no owner at all (a daemon that stopped cleanly),
or, for daemons on other hosts sharing a PostgreSQL store, a heartbeat older
than ``stale_seconds``. The runner adopts orphans when it starts and
whenever it beats, and resumes them (``restart_count`` goes up); a job that
keeps failing to settle is failed after :data:`MAX_RESTARTS` adoptions, with
its reservations released, so no job stays RUNNING forever and no capacity
leaks. A cancel that a crash interrupted (a PENDING or PAUSED job with
cancel requested) is finished when the runner starts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc

from osd.engine.drivers import DriverError, StorageDriver
from osd.engine.jobs.handler import AnyHandler, AsStored, Interrupted, JobContext, JobLost
from osd.engine.jobs.models import JobError
from osd.engine.jobs.records import RecordError
from osd.engine.topology.availability import AvailabilityListener
from osd.enums import JobKind, JobState
from osd.errors import OsdError
from osd.store import allocations
from osd.store import jobs as repo
from osd.store.db import Store
from osd.store.models import JobRow, utcnow
from osd.store.state import bump_generation

log = logging.getLogger(__name__)

MAX_RESTARTS = 5


def error_of(exc: BaseException) -> JobError:
    """How a job that failed with ``exc`` reports it."""
    if isinstance(exc, OsdError):
        return JobError(exc.code.value[0], exc.reason, exc.message)
    if isinstance(exc, DriverError):
        return JobError(
            grpc.StatusCode.UNAVAILABLE.value[0], "DRIVER_ERROR", f"storage driver: {exc}"
        )
    return JobError(
        grpc.StatusCode.INTERNAL.value[0], "INTERNAL", "internal error; the daemon log has details"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class OpenJob:
    """A job's context and the handler that runs it. The handler is None when no
    handler runs the job's kind in this daemon, or when the kind cannot read the
    job's stored spec or checkpoint (``why`` says which); the context then holds
    them as stored."""

    handler: AnyHandler | None
    ctx: JobContext[Any, Any]
    why: str = ""


class JobRunner:
    """Runs the jobs of one store with the handlers of their kinds."""

    def __init__(
        self,
        store: Store,
        driver: StorageDriver,
        handlers: Mapping[JobKind, AnyHandler],
        *,
        max_jobs: int,
        heartbeat_seconds: float,
        stale_seconds: float,
        poll_seconds: float,
        availability: AvailabilityListener | None,
        owner: str = "",
    ) -> None:
        self._store = store
        self._driver = driver
        self._handlers = handlers
        self.max_jobs = max_jobs
        self._heartbeat_seconds = heartbeat_seconds
        self._stale = timedelta(seconds=stale_seconds)
        self._poll_seconds = poll_seconds
        self._availability = availability
        self._host = socket.gethostname()
        self.owner = owner or f"{self._host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None

    def wake(self) -> None:
        """Makes the dispatcher look for PENDING jobs now."""
        self._wake.set()

    def run(self) -> None:
        """Adopts the jobs a gone daemon left, then starts the dispatcher thread."""
        self._stopping.clear()
        self._adopt(starting=True)
        self._dispatcher = threading.Thread(target=self._loop, name="osd-jobs", daemon=True)
        self._dispatcher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the runner; running jobs stop at their next safe point."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._dispatcher is not None:
            self._dispatcher.join(timeout)
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def running(self) -> tuple[str, ...]:
        """Ids of the jobs this runner works on now."""
        with self._lock:
            return tuple(sorted(self._threads))

    def _loop(self) -> None:
        last_beat = time.monotonic()
        # The generation at which no job was waiting: until it moves (every
        # change bumps it, a new job's or a cancelled one's included) none is.
        idle_at: int | None = None
        while not self._stopping.is_set():
            try:
                while self._free_slots() > 0 and not self._stopping.is_set():
                    generation = self._store.generation()
                    if generation is not None and generation == idle_at:
                        break
                    job_id = self._claim_next()
                    if job_id is None:
                        idle_at = generation
                        break
                    self._launch(job_id)
                if time.monotonic() - last_beat >= self._heartbeat_seconds:
                    last_beat = time.monotonic()
                    self._beat()
                    self._adopt()
            except Exception:
                log.exception("job runner: a pass failed; retrying")
            self._wake.wait(self._poll_seconds)
            self._wake.clear()

    def _free_slots(self) -> int:
        with self._lock:
            return self.max_jobs - len(self._threads)

    def _claim_next(self) -> str | None:
        with self._store.read() as s:
            if repo.next_pending(s) is None:
                return None
        with self._store.write() as s:
            generation = bump_generation(s)
            row = repo.next_pending(s)
            if row is None:
                return None
            now = utcnow()
            row.state = JobState.RUNNING
            row.owner = self.owner
            row.heartbeat_time = now
            row.start_time = row.start_time or now
            row.update_time = now
            row.generation = generation
            return row.id

    def _beat(self) -> None:
        with self._lock:
            ids = list(self._threads)
        if ids:
            with self._store.write() as s:
                repo.heartbeat(s, ids, self.owner, utcnow())

    def _orphaned(self, row: JobRow, now: datetime, starting: bool) -> bool:
        """Whether the job's runner is gone: none, this one (without a thread
        for it), stale, or a process of this host that ended. At start, another
        runner of this very process is an earlier run of this daemon, and gone
        too; afterwards it is a peer sharing the process."""
        with self._lock:
            if row.id in self._threads:
                return False
        if row.owner is None or row.heartbeat_time is None or row.owner == self.owner:
            return True
        if now - row.heartbeat_time > self._stale:
            return True
        host, _, rest = row.owner.partition(":")
        pid, _, _run = rest.partition(":")
        if host != self._host or not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            return starting
        return not _alive(int(pid))

    def _adopt(self, *, starting: bool = False) -> None:
        """Claims the RUNNING jobs whose daemon is gone and resumes them; finishes
        the cancels a gone daemon had started (at start, or once they are stale,
        so as not to race a CancelJob call that is finishing one)."""
        with self._store.read() as s:
            now = utcnow()
            candidates = [
                r.id
                for r in repo.in_state(s, [JobState.RUNNING])
                if self._orphaned(r, now, starting)
            ]
            cancels = [
                r.id
                for r in repo.in_state(s, [JobState.PENDING, JobState.PAUSED])
                if r.cancel_requested and (starting or now - r.update_time > self._stale)
            ]
        for job_id in candidates:
            with self._store.write() as s:
                row = repo.get(s, job_id, for_update=True)
                if (
                    row is None
                    or row.state != JobState.RUNNING
                    or not self._orphaned(row, utcnow(), starting)
                ):
                    continue
                generation = bump_generation(s)
                log.warning("resuming job %s left by %s", job_id, row.owner)
                row.owner = self.owner
                row.heartbeat_time = utcnow()
                row.restart_count += 1
                row.update_time = row.heartbeat_time
                row.generation = generation
            self._launch(job_id)
        for job_id in cancels:
            with self._store.read() as s:
                row = repo.get(s, job_id)
                if row is None or not row.cancel_requested or row.state == JobState.RUNNING:
                    continue
                opened = self.open(row)
            try:
                self.rollback(opened.handler, opened.ctx, JobState.CANCELLED, None, running=False)
            except JobLost:
                log.info("job %s: its cancel was finished elsewhere", job_id)

    def open(self, row: JobRow) -> OpenJob:
        """The job ``row`` as its handler runs it (see :class:`OpenJob`)."""
        kind = JobKind(row.kind)
        handler = self._handlers.get(kind)
        if handler is None:
            why = f"no handler runs {kind.name} jobs in this daemon"
        else:
            try:
                ctx = handler.context(
                    self._store, self._driver, self.owner, row, self._availability
                )
                return OpenJob(handler, ctx)
            except RecordError as exc:
                log.error("job %s: its stored data cannot be read: %s", row.id, exc)
                why = f"its stored data cannot be read: {exc}"
        stored = JobContext.of(
            self._store,
            self._driver,
            self.owner,
            row,
            AsStored.from_json(row.spec),
            AsStored.from_json(row.checkpoint),
            self._availability,
        )
        return OpenJob(None, stored, why)

    def _launch(self, job_id: str) -> None:
        thread = threading.Thread(
            target=self._execute, args=(job_id,), name=f"osd-job-{job_id[:8]}", daemon=True
        )
        with self._lock:
            self._threads[job_id] = thread
        thread.start()

    def _execute(self, job_id: str) -> None:
        try:
            with self._store.read() as s:
                row = repo.get(s, job_id)
                if row is None:
                    return
                opened = self.open(row)
                restarts = row.restart_count
            handler, ctx = opened.handler, opened.ctx
            if handler is None or restarts > MAX_RESTARTS:
                why = (
                    opened.why
                    if handler is None
                    else f"the job was resumed {restarts} times without settling"
                )
                log.error("job %s: %s; failing it", job_id, why)
                error = JobError(grpc.StatusCode.INTERNAL.value[0], "JOB_ABANDONED", why)
                self.rollback(None, ctx, JobState.FAILED, error, running=True)
                return
            self._drive(handler, ctx)
        except JobLost:
            log.warning("job %s was taken over by another daemon", job_id)
        except Exception:
            log.exception("job %s: the runner failed; it will be resumed", job_id)
        finally:
            with self._lock:
                self._threads.pop(job_id, None)
            self._wake.set()

    def _drive(self, handler: AnyHandler, ctx: JobContext[Any, Any]) -> None:
        while True:
            if self._stopping.is_set():
                self._abandon(ctx)
                return
            with self._store.read() as s:
                row = repo.get(s, ctx.job_id)
                if row is None or row.state != JobState.RUNNING or row.owner != self.owner:
                    raise JobLost(ctx.job_id)
                cancel, pause = row.cancel_requested, row.pause_requested
            if cancel:
                self.rollback(handler, ctx, JobState.CANCELLED, None, running=True)
                return
            if pause and self._pause(ctx):
                return
            try:
                done = handler.step(ctx)
                if done and not self._cancel_requested(ctx.job_id):
                    self._complete(handler, ctx)
                    return
            except JobLost:
                raise
            except Interrupted:
                continue  # the cancel or pause is honoured at the loop's top
            except Exception as exc:
                error = error_of(exc)
                if error.reason == "INTERNAL":
                    log.exception("job %s failed", ctx.job_id)
                else:
                    log.warning("job %s failed: %s (%s)", ctx.job_id, error.message, error.reason)
                self.rollback(handler, ctx, JobState.FAILED, error, running=True)
                return

    def _cancel_requested(self, job_id: str) -> bool:
        with self._store.read() as s:
            row = repo.get(s, job_id)
            return row is not None and row.cancel_requested

    def _complete(self, handler: AnyHandler, ctx: JobContext[Any, Any]) -> None:
        with self._store.write() as s:
            generation = bump_generation(s)
            row = self._mine(s, ctx.job_id)
            handler.finish(ctx, s, generation)
            repo.clear_marks(s, ctx.job_id)
            if ctx.result is not None and not ctx.result.complete:
                # DONE short of its goal: the progress stays what was done, and
                # the message says what was not (the result has the counts).
                ctx.progress.message = ctx.result.summary or f"done: {ctx.result.reason}"
            else:
                if ctx.progress.total_steps:
                    ctx.progress.done_steps = ctx.progress.total_steps
                ctx.progress.message = "done"
            ctx.save(row, generation)
            self._close(row, JobState.DONE, None)

    def _mine(self, s: Any, job_id: str) -> JobRow:
        row = repo.get(s, job_id, for_update=True)
        if row is None or row.state != JobState.RUNNING or row.owner != self.owner:
            raise JobLost(job_id)
        return row

    def _pause(self, ctx: JobContext[Any, Any]) -> bool:
        with self._store.write() as s:
            generation = bump_generation(s)
            row = self._mine(s, ctx.job_id)
            if row.cancel_requested or not row.pause_requested:
                return False
            ctx.progress.message = "paused"
            ctx.save(row, generation)
            row.state = JobState.PAUSED
            row.pause_requested = False
            row.owner = None
            row.heartbeat_time = None
            return True

    def _abandon(self, ctx: JobContext[Any, Any]) -> None:
        """Leaves a RUNNING job for the next daemon (this one is stopping)."""
        with self._store.write() as s:
            row = self._mine(s, ctx.job_id)
            row.owner = None
            row.heartbeat_time = None

    def rollback(
        self,
        handler: AnyHandler | None,
        ctx: JobContext[Any, Any],
        state: JobState,
        error: JobError | None,
        *,
        running: bool,
    ) -> None:
        """Undoes the job's partial work and ends it in ``state``.

        ``running``: the job is RUNNING and this runner's; otherwise it must be
        PENDING or PAUSED with cancel_requested (a cancel done in the call).
        """

        def expected(row: JobRow | None) -> JobRow:
            if row is None:
                raise JobLost(ctx.job_id)
            if running:
                ok = row.state == JobState.RUNNING and row.owner == self.owner
            else:
                ok = row.state in (JobState.PENDING, JobState.PAUSED) and row.cancel_requested
            if not ok:
                raise JobLost(ctx.job_id)
            return row

        if handler is not None:
            try:
                handler.undo(ctx)
            except Exception:
                log.exception("job %s: undoing driver work failed; continuing", ctx.job_id)
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = expected(repo.get(s, ctx.job_id, for_update=True))
                for alloc in repo.pending_allocations(s, ctx.job_id):
                    allocations.release(s, alloc)
                if handler is not None:
                    handler.abort(ctx, s, generation)
                repo.clear_marks(s, ctx.job_id)
                ctx.progress.message = "cancelled" if state == JobState.CANCELLED else "failed"
                ctx.save(row, generation)
                self._close(row, state, error)
            return
        except JobLost:
            raise
        except Exception:
            if handler is None:
                raise
            log.exception("job %s: rolling back failed; releasing its reservations", ctx.job_id)
        # The kind's own rollback failed: release what the job reserved and fail it.
        with self._store.write() as s:
            generation = bump_generation(s)
            row = expected(repo.get(s, ctx.job_id, for_update=True))
            for alloc in repo.pending_allocations(s, ctx.job_id):
                allocations.release(s, alloc)
            repo.clear_marks(s, ctx.job_id)
            ctx.save(row, generation)
            self._close(
                row,
                JobState.FAILED,
                error
                or JobError(
                    grpc.StatusCode.INTERNAL.value[0], "ROLLBACK_FAILED", "rolling back failed"
                ),
            )

    @staticmethod
    def _close(row: JobRow, state: JobState, error: JobError | None) -> None:
        row.state = state
        row.end_time = utcnow()
        row.owner = None
        row.heartbeat_time = None
        row.cancel_requested = False
        row.pause_requested = False
        if error is not None:
            row.error_code = error.code
            row.error_reason = error.reason[:100]
            row.error_message = error.message[:2000]
