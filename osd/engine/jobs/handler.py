"""The contract of a job kind and the context its steps run in.

A job kind is a :class:`JobHandler` registered with the job engine by its
:class:`~osd.enums.JobKind`. Its life:

1. :meth:`JobHandler.begin` runs inside the write transaction that records
   the job: it validates, marks the objects the job acts on (a drive
   REPLACING, a node DRAINING, ``active_job_id``), fills the job's target and
   related objects, and returns the job's spec. Any error it raises leaves
   nothing written.
2. The runner calls :meth:`JobHandler.step` until it returns True. A step is
   one unit of work in phases: a write transaction that records intent (and
   the checkpoint), driver calls with no transaction open, and a write
   transaction that commits the result together with the next checkpoint.
   Between steps the runner honours pause, cancel and shutdown. A step must
   be safe to run again from the last committed checkpoint, which is how a
   restarted daemon resumes.
3. :meth:`JobHandler.finish` commits the final state (job DONE), or, on an
   error or a cancel, :meth:`JobHandler.undo` (driver work, no transaction)
   and :meth:`JobHandler.abort` (store, in the final transaction) put back
   what the contract says a failed or cancelled job leaves.

A kind's data are records (:mod:`osd.engine.jobs.records`), never store
rows: its ``request_type`` is what starting it takes, its ``spec_type`` what
:meth:`JobHandler.begin` resolves that to (kept in the job's ``spec``
column), and its ``checkpoint_type`` what its steps have done (kept in
``checkpoint``). Steps see them typed, as ``ctx.spec`` and ``ctx.checkpoint``."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from sqlalchemy.orm import Session

from osd.engine.drivers import StorageDriver
from osd.engine.jobs.models import JobResult
from osd.engine.jobs.records import Record
from osd.engine.topology.availability import Availability, AvailabilityListener
from osd.enums import JobKind, JobState, ObjectKind
from osd.store import jobs as repo
from osd.store.db import Store
from osd.store.models import JobRow, utcnow
from osd.store.state import bump_generation

RequestT = TypeVar("RequestT", bound=Record)
SpecT = TypeVar("SpecT", bound=Record)
CheckpointT = TypeVar("CheckpointT", bound=Record)


class JobLost(Exception):
    """The job is no longer this runner's (another daemon adopted it)."""


class Interrupted(Exception):
    """A step stopped midway because a cancel or a pause was asked: the runner
    honours it now, and a resumed job runs the step again from its last
    checkpoint (steps are idempotent)."""


@dataclass(frozen=True)
class NoCheckpoint(Record):
    """The checkpoint of a kind whose steps keep none."""


@dataclass
class AsStored(Record):
    """A spec or checkpoint kept as it is stored, unread: of a job whose kind no
    handler runs here, or whose stored data its kind cannot read."""

    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    @classmethod
    def from_json(cls, data: object) -> Self:
        return cls(copy.deepcopy(dict(data)) if isinstance(data, Mapping) else {})


@dataclass
class Progress:
    done_bytes: int = 0
    total_bytes: int = 0
    done_steps: int = 0
    total_steps: int = 0
    message: str = ""

    def percent(self) -> int:
        if self.total_steps > 0:
            return min(100, self.done_steps * 100 // self.total_steps)
        if self.total_bytes > 0:
            return min(100, self.done_bytes * 100 // self.total_bytes)
        return 0


@dataclass
class JobContext(Generic[SpecT, CheckpointT]):
    """One job as a handler's steps see it, and the way they commit."""

    store: Store
    driver: StorageDriver
    owner: str
    job_id: str
    kind: JobKind
    cluster_id: str
    target_id: str
    spec: SpecT
    checkpoint: CheckpointT
    progress: Progress = field(default_factory=Progress)
    availability: AvailabilityListener | None = None
    # What the job achieved; a kind sets it (in finish, abort or a step) when
    # it falls short of its goal or has partial work to report. Saved with the
    # job's final state.
    result: JobResult | None = None

    @classmethod
    def of(
        cls,
        store: Store,
        driver: StorageDriver,
        owner: str,
        row: JobRow,
        spec: SpecT,
        checkpoint: CheckpointT,
        availability: AvailabilityListener | None = None,
    ) -> JobContext[SpecT, CheckpointT]:
        """The context of the job ``row``, whose spec and checkpoint, read, are
        ``spec`` and ``checkpoint``."""
        return JobContext(
            store=store,
            driver=driver,
            owner=owner,
            availability=availability,
            job_id=row.id,
            kind=JobKind(row.kind),
            cluster_id=row.cluster_id,
            target_id=row.target_id,
            spec=spec,
            checkpoint=checkpoint,
            progress=Progress(
                row.progress_done_bytes,
                row.progress_total_bytes,
                row.progress_done_steps,
                row.progress_total_steps,
                row.progress_message,
            ),
        )

    @contextlib.contextmanager
    def write(self) -> Iterator[tuple[Session, int]]:
        """A write transaction that also saves the checkpoint and progress.

        Change ``checkpoint`` and ``progress`` inside the block: they are
        stored with the block's other changes, or restored when it fails.
        """
        saved = copy.deepcopy(self.checkpoint), dataclasses.replace(self.progress)
        try:
            with self.store.write() as s:
                generation = bump_generation(s)
                row = repo.get(s, self.job_id, for_update=True)
                if row is None or row.state != JobState.RUNNING or row.owner != self.owner:
                    raise JobLost(self.job_id)
                yield s, generation
                self.save(row, generation)
        except BaseException:
            self.checkpoint, self.progress = saved
            raise

    def notify(
        self, s: Session, volume_ids: Iterable[str | None], snapshot_ids: Iterable[str | None] = ()
    ) -> None:
        """Tells whoever keeps volume and snapshot state that their copies changed."""
        change = Availability(
            frozenset(v for v in volume_ids if v), frozenset(x for x in snapshot_ids if x)
        )
        if change and self.availability is not None:
            self.availability(s, change)

    def save(self, row: JobRow, generation: int) -> None:
        now = utcnow()
        row.checkpoint = self.checkpoint.to_json()
        row.progress_done_bytes = self.progress.done_bytes
        row.progress_total_bytes = self.progress.total_bytes
        row.progress_done_steps = self.progress.done_steps
        row.progress_total_steps = self.progress.total_steps
        row.progress_message = self.progress.message[:500]
        if self.result is not None:
            row.result = self.result.to_json()
        row.heartbeat_time = now
        row.update_time = now
        row.generation = generation


class JobHandler(Generic[RequestT, SpecT, CheckpointT]):
    """One job kind. Subclasses set the class attributes and implement the hooks."""

    kind: ClassVar[JobKind]
    target_kind: ClassVar[ObjectKind]
    pausable: ClassVar[bool] = True
    request_type: type[RequestT]
    spec_type: type[SpecT]
    checkpoint_type: type[CheckpointT]

    def request_of(self, request: Record | Mapping[str, Any]) -> RequestT:
        """``request`` as this kind's request: it, or the request its JSON form holds
        (RecordError when that does not fit)."""
        if isinstance(request, Mapping):
            return self.request_type.from_json(request)
        if not isinstance(request, self.request_type):
            raise TypeError(
                f"a {self.kind.name} job is started with a {self.request_type.__name__}, "
                f"not a {type(request).__name__}"
            )
        return request

    def context(
        self,
        store: Store,
        driver: StorageDriver,
        owner: str,
        row: JobRow,
        availability: AvailabilityListener | None = None,
    ) -> JobContext[SpecT, CheckpointT]:
        """The context of the job ``row`` (RecordError when its spec or checkpoint
        cannot be read)."""
        return JobContext.of(
            store,
            driver,
            owner,
            row,
            self.spec_type.from_json(row.spec),
            self.checkpoint_type.from_json(row.checkpoint),
            availability,
        )

    def existing(self, s: Session, request: RequestT) -> JobRow | None:
        """The unfinished job a start with ``request`` returns instead of starting one."""
        return None

    def begin(self, s: Session, job: JobRow, request: RequestT) -> SpecT:
        """Validates and records the start (see the module docstring); returns the
        job's spec, which the job engine stores."""
        raise NotImplementedError

    def cancellable(self, job: JobRow) -> bool:
        return True

    def step(self, ctx: JobContext[SpecT, CheckpointT]) -> bool:
        """Does the next unit of work; True when there is none left."""
        raise NotImplementedError

    def finish(self, ctx: JobContext[SpecT, CheckpointT], s: Session, generation: int) -> None:
        """Commits the final state of a job whose steps are all done."""

    def undo(self, ctx: JobContext[SpecT, CheckpointT]) -> None:
        """Undoes driver work of the unfinished step (no transaction open; best effort)."""

    def abort(self, ctx: JobContext[SpecT, CheckpointT], s: Session, generation: int) -> None:
        """Restores the objects a failed or cancelled job leaves (in the final transaction).

        The runner has already released every PENDING allocation the job reserved.
        """


AnyHandler = JobHandler[Any, Any, Any]
"""A handler of any kind, as the job engine and its runner hold them."""
