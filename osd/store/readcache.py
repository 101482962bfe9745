"""Objects read from the store, kept while the store's generation stands still.

Every write transaction bumps the store-wide generation (see
:mod:`osd.store.db`), in this daemon or any other over the same database, so
an object read at generation G is still what the store holds while the
generation is G. A read that hits costs one probe of the generation and no
transaction; one that misses reads the generation first, then the object, in
one transaction, and files the object under that generation. (On PostgreSQL
at READ COMMITTED the object may then be newer than G, never older, so a
reader at G never sees what preceded G.)

What is kept must not depend on who asks: a caller's access is checked on
the kept object, hit or miss.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

# About 8 KB a volume with its response: some 16 MB of volumes at most.
DEFAULT_ENTRIES = 2048


class ReadCache:
    """A bounded map of key -> (generation, object); the oldest entry goes
    first. Each entry weighs what ``weigh`` says (1 by default: a page of a
    hundred volumes may weigh a hundred), and the weights stay under
    ``max_weight``."""

    def __init__(
        self, max_weight: int = DEFAULT_ENTRIES, weigh: Callable[[Any], int] | None = None
    ) -> None:
        self._max = max_weight
        self._weigh = weigh or (lambda _value: 1)
        self._entries: dict[Hashable, tuple[int, Any, int]] = {}
        self._weight = 0
        self._lock = threading.Lock()
        # key -> the lock its one loader holds (see get_or_load)
        self._loading: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, generation: int | None) -> Any | None:
        """The object filed under ``key`` at ``generation``, or None."""
        if generation is None:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] != generation:
            return None
        return entry[1]

    def put(self, key: Hashable, generation: int, value: Any) -> None:
        weight = max(1, self._weigh(value))
        if weight > self._max:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                if old[0] > generation:
                    # A slower reader of an older generation must not displace a newer entry.
                    self._entries[key] = old
                    return
                self._weight -= old[2]
            self._entries[key] = (generation, value, weight)
            self._weight += weight
            while self._weight > self._max:
                _, _, dropped = self._entries.pop(next(iter(self._entries)))
                self._weight -= dropped

    def get_or_load(
        self,
        key: Hashable,
        probe: Callable[[], int | None],
        load: Callable[[], tuple[int, T]],
    ) -> tuple[int, T]:
        """The object under ``key`` with the generation it was read at: kept
        when ``probe()`` gives that generation, else ``load()`` -> (generation,
        object), kept for next time.

        Callers that miss the same key at once read it once: the first loads,
        the others wait for it and take what it read when that is of the
        generation they saw (after a change, a burst of reads of one object
        costs one read of the store, not one each)."""
        seen = probe()
        hit = self.get(key, seen)
        if hit is not None:
            return seen, hit  # type: ignore[return-value]
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            if seen is not None:
                # The loader before us may have read this generation, or a later one.
                hit = self.get(key, seen)
                if hit is None:
                    seen = probe()
                    hit = self.get(key, seen)
                if hit is not None:
                    return seen, hit  # type: ignore[return-value]
            try:
                generation, value = load()
                # Kept before the gate is let go: a caller that misses meanwhile
                # finds it instead of loading again.
                self.put(key, generation, value)
            finally:
                with self._lock:
                    if self._loading.get(key) is gate:
                        del self._loading[key]
            return generation, value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._weight = 0

    def __len__(self) -> int:
        return len(self._entries)
