"""The deadline of the call being served, for work that waits on another.

A leaf module: the gRPC interceptor sets the deadline of each call, and the
engine reads how long it may still wait (an idempotent create that finds the
same create still in progress waits for its outcome, but not past the
caller's deadline).
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

# The waiting stops before the caller's deadline by a fifth of the time the
# call had, within these bounds, so the answer reaches the caller in time even
# when the last check was slow.
MARGIN_SHARE = 0.2
MARGIN_MIN_SECONDS = 0.25
MARGIN_MAX_SECONDS = 2.0
# grpcio reports a call without a deadline as one about 2**63 ns away; a
# deadline further off than this is no deadline.
FOREVER_SECONDS = 1e8

# (when the waiting must stop, by time.monotonic()), or None: no deadline.
_deadline: ContextVar[float | None] = ContextVar("osd_call_deadline", default=None)


def margin(seconds_left: float) -> float:
    """How long before a deadline ``seconds_left`` away the waiting stops."""
    return min(MARGIN_MAX_SECONDS, max(MARGIN_MIN_SECONDS, seconds_left * MARGIN_SHARE))


def start(seconds_left: float | None) -> Token[float | None]:
    """Sets the current call's deadline, ``seconds_left`` from now (None, or
    further off than FOREVER_SECONDS: none)."""
    stop = None
    if seconds_left is not None and seconds_left <= FOREVER_SECONDS:
        stop = time.monotonic() + seconds_left - margin(seconds_left)
    return _deadline.set(stop)


def end(token: Token[float | None]) -> None:
    _deadline.reset(token)


def remaining(default: float) -> float:
    """Seconds the current call may still wait: to its deadline less the margin,
    or ``default`` when it has none."""
    stop = _deadline.get()
    if stop is None:
        return default
    return stop - time.monotonic()
