"""The deadline of the call being served, for work that waits on another.

A leaf module: the gRPC interceptor sets the deadline of each call, and the
engine reads how long it may still wait (an idempotent create that finds the
same create still in progress waits for its outcome, but not past the
caller's deadline).
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

# Seconds the waiting stops before the caller's deadline, so the answer
# reaches the caller in time.
MARGIN_SECONDS = 0.25
# grpcio reports a call without a deadline as one about 2**63 ns away; a
# deadline further off than this is no deadline.
FOREVER_SECONDS = 1e8

_deadline: ContextVar[float | None] = ContextVar("osd_call_deadline", default=None)


def start(seconds_left: float | None) -> Token[float | None]:
    """Sets the current call's deadline, ``seconds_left`` from now (None, or
    further off than FOREVER_SECONDS: none)."""
    at = None
    if seconds_left is not None and seconds_left <= FOREVER_SECONDS:
        at = time.monotonic() + seconds_left
    return _deadline.set(at)


def end(token: Token[float | None]) -> None:
    _deadline.reset(token)


def remaining(default: float) -> float:
    """Seconds the current call may still wait: to its deadline less the margin,
    or ``default`` when it has none."""
    at = _deadline.get()
    if at is None:
        return default
    return at - time.monotonic() - MARGIN_SECONDS
