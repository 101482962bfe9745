"""The one way to write a change that runs in phases.

A change that touches storage cannot hold a transaction open across driver
calls, so it runs in three phases:

1. **record**: one write transaction records the intent (a row CREATING or
   DELETING, allocations PENDING or RELEASING) and reserves capacity. A crash
   after it leaves a state that recovery knows how to finish or undo.
2. **work**: the driver calls, with no transaction open. Each is a
   :class:`Step` with the call that undoes it.
3. **finish** in one write transaction, or, when a step fails, **roll back**:
   the steps done are undone (best effort: an undo that fails is logged and
   left to the operator), the rollback puts the books back, and the caller
   gets the error ``failed`` makes of the driver's.

:func:`record` is phase 1 and :func:`run` phases 2 and 3; recovery calls
:func:`run` alone for a change a crash left after phase 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from osd.engine.drivers import DriveFull, DriverError, NoAgent, Refused
from osd.errors import FailedPrecondition, OsdError, ResourceExhausted, Unavailable
from osd.store.db import Store
from osd.store.state import bump_generation

log = logging.getLogger("osd.engine")

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """One driver call of phase 2, and the call that undoes it (if any)."""

    what: str
    do: Callable[[], object]
    undo: Callable[[], object] | None = None


def record(store: Store, write: Callable[[Session, int], T]) -> T:
    """Phase 1: ``write`` in one write transaction, with the new generation."""
    with store.write() as s:
        return write(s, bump_generation(s))


def run(
    store: Store,
    steps: Iterable[Step],
    *,
    finish: Callable[[Session, int], T],
    failed: Callable[[Exception], BaseException],
    rollback: Callable[[], object] | None = None,
    catch: tuple[type[Exception], ...] = (DriverError,),
) -> T:
    """Phases 2 and 3: every step, then ``finish`` in one write transaction.

    When a step raises one of ``catch``, the steps done are undone (in the
    reverse order), ``rollback`` runs, and the error ``failed`` returns is
    raised (``failed`` may return the exception itself to re-raise it).
    """
    done: list[Step] = []
    try:
        for step in steps:
            step.do()
            done.append(step)
    except catch as exc:
        for step in reversed(done):
            if step.undo is not None:
                best_effort(f"undoing {step.what}", step.undo)
        if rollback is not None:
            rollback()
        error = failed(exc)
        if error is exc:
            raise
        raise error from exc
    return record(store, finish)


def best_effort(what: str, fn: Callable[..., object], *args: Any) -> bool:
    """Calls a driver undo step; logs and swallows its failure."""
    try:
        fn(*args)
    except DriverError as exc:
        log.warning("%s failed (left for the operator): %s", what, exc)
        return False
    return True


def refusal(what: str, exc: Exception, **metadata: str) -> OsdError | None:
    """The error for a driver failure that retrying cannot mend, or None:
    FAILED_PRECONDITION (NO_NODE_AGENT) when the work is for a node no agent
    of which is here, or with the reason of a host's policy (Refused);
    RESOURCE_EXHAUSTED (DRIVE_FULL) when a drive had no room left."""
    meta = {**metadata, "retryable": "false"}
    if isinstance(exc, NoAgent):
        return FailedPrecondition(f"{what}: {exc}", reason="NO_NODE_AGENT", metadata=meta)
    if isinstance(exc, Refused):
        return FailedPrecondition(f"{what}: {exc}", reason=exc.reason, metadata=meta)
    if isinstance(exc, DriveFull):
        return ResourceExhausted(f"{what}: {exc}", reason="DRIVE_FULL", metadata=meta)
    return None


def driver_failed(what: str, exc: Exception) -> OsdError:
    """The error a call answers when the storage driver failed and the change
    was rolled back (or, for deletes, left to finish on retry): a
    :func:`refusal`, else UNAVAILABLE (DRIVER_ERROR)."""
    refused = refusal(what, exc)
    if refused is not None:
        return refused
    retryable = exc.retryable if isinstance(exc, DriverError) else False
    return Unavailable(
        f"{what}: the storage driver failed: {exc}",
        reason="DRIVER_ERROR",
        metadata={"retryable": str(retryable).lower()},
    )


def failing(what: str) -> Callable[[Exception], BaseException]:
    """A ``failed`` for :func:`run`: UNAVAILABLE (DRIVER_ERROR) saying ``what``."""
    return lambda exc: driver_failed(what, exc)
