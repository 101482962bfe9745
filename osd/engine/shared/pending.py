"""Waiting for an operation already in progress (the CSI rule for creates).

An idempotent create that finds the same create still in progress does not
answer OK for something not yet usable: it waits for the first call's
outcome, up to its own deadline, and answers ABORTED (OPERATION_PENDING) when
the deadline comes first, so the caller retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from osd import deadline
from osd.errors import Aborted

T = TypeVar("T")

# How long a call with no deadline waits before answering OPERATION_PENDING.
NO_DEADLINE_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.05


def wait_for(check: Callable[[], T | None], kind: str, object_id: str) -> T:
    """``check()``'s first value that is not None, polled until the current
    call's deadline; ABORTED (OPERATION_PENDING) naming the object after it."""
    until = time.monotonic() + deadline.remaining(NO_DEADLINE_WAIT_SECONDS)
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() + POLL_SECONDS >= until:
            raise Aborted(
                f"{kind} {object_id} is still being created by another call; retry",
                reason="OPERATION_PENDING",
                metadata={"kind": kind, "id": object_id},
            )
        time.sleep(POLL_SECONDS)


def create_settled(
    create: Callable[[], T], settled: Callable[[T], bool], kind: str, id_of: Callable[[T], str]
) -> T:
    """An idempotent create's answer: ``create()``'s, once ``settled`` holds of
    it. While the object it finds is still being created by another call, the
    create is asked again until that call ended (a rolled-back object is then
    created anew), up to the current call's deadline."""
    first = create()
    if settled(first):
        return first

    def again() -> T | None:
        result = create()
        return result if settled(result) else None

    return wait_for(again, kind, id_of(first))
