"""The domain view of a job: its state, progress, error and the objects it acts on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from osd.enums import JobKind, JobState, ObjectKind


@dataclass(frozen=True)
class ObjectRef:
    kind: ObjectKind
    id: str


@dataclass(frozen=True)
class JobProgress:
    percent: int = 0
    done_bytes: int = 0
    total_bytes: int = 0
    done_steps: int = 0
    total_steps: int = 0
    message: str = ""


@dataclass(frozen=True)
class JobError:
    """Why a job FAILED, as an RPC would have answered: a gRPC code number,
    the ErrorInfo reason and a message."""

    code: int
    reason: str
    message: str


@dataclass(frozen=True)
class JobResult:
    """What a final job achieved (the proto's JobResult)."""

    complete: bool
    reason: str = ""
    summary: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "reason": self.reason,
            "summary": self.summary,
            "counts": dict(self.counts),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobResult:
        counts = data.get("counts") or {}
        return cls(
            complete=bool(data.get("complete", False)),
            reason=str(data.get("reason", "")),
            summary=str(data.get("summary", "")),
            counts={str(k): int(v) for k, v in counts.items()},
        )


@dataclass(frozen=True)
class Job:
    id: str
    kind: JobKind
    cluster_id: str
    target: ObjectRef
    related: list[ObjectRef]
    state: JobState
    cancel_requested: bool
    pausable: bool
    cancellable: bool
    progress: JobProgress
    error: JobError | None
    restart_count: int
    create_time: datetime
    start_time: datetime | None
    update_time: datetime
    end_time: datetime | None
    generation: int
    result: JobResult | None = None


@dataclass(frozen=True)
class JobQuery:
    page_size: int = 0
    page_token: str = ""
    kinds: tuple[int, ...] = ()
    states: tuple[int, ...] = ()
    target_kind: int = 0
    target_id: str = ""
    cluster_id: str = ""


@dataclass(frozen=True)
class Started:
    """The result of starting a job: the job, whether it is new (False when an
    unfinished job of the same kind and target was returned), the generation."""

    job: Job
    started: bool
    generation: int
