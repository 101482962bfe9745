"""The store generation a read's answer reflects.

A read answers with the store's generation, such that every change up to it
is in the answer (StorPool's generation on every reply): a client that made
a change at generation G and reads an answer at G or later knows its change
is in it, and a client that read at G can wait for G elsewhere
(WaitForGeneration) before it reads through another daemon.

While a call records (:func:`recording`), the store notes each read it
makes:

* a kept read (:meth:`osd.store.db.Store.kept`) notes the generation the kept
  object was read at, which the store still stands at when it is handed back;
* any other read notes the generation probed before its transaction opens,
  once per call: that read and every later one sees at least that.

The answer reflects the lowest generation noted: each of its parts holds
every change up to its own, so all hold every change up to the lowest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar


class Reading:
    """The generations one call's reads noted."""

    __slots__ = ("_lowest", "_unknown", "probed")

    def __init__(self) -> None:
        self._lowest: int | None = None
        # A read whose generation could not be probed: the answer's is unknown.
        self._unknown = False
        # Whether a read outside the kept objects probed the generation: once
        # is enough, as later reads see at least what it saw.
        self.probed = False

    @property
    def generation(self) -> int | None:
        """The answer's generation; None when nothing was read from the store
        or a read's generation is unknown."""
        return None if self._unknown else self._lowest

    def note(self, generation: int | None) -> None:
        if generation is None:
            self._unknown = True
        elif self._lowest is None or generation < self._lowest:
            self._lowest = generation


_current: ContextVar[Reading | None] = ContextVar("osd_reading", default=None)


@contextlib.contextmanager
def recording() -> Iterator[Reading]:
    """Notes what the reads made inside it see (see :attr:`Reading.generation`)."""
    reading = Reading()
    token = _current.set(reading)
    try:
        yield reading
    finally:
        _current.reset(token)


def kept(generation: int | None) -> None:
    """A kept object read at ``generation`` was handed back."""
    reading = _current.get()
    if reading is not None:
        reading.note(generation)


def before_read(probe: Callable[[], int | None]) -> None:
    """A read transaction is about to open: the first of the call probes the
    generation, which the read will see at least."""
    reading = _current.get()
    if reading is None or reading.probed:
        return
    reading.probed = True
    reading.note(probe())
