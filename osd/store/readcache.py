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

DEFAULT_ENTRIES = 8192


class ReadCache:
    """A bounded map of key -> (generation, object); the oldest entry goes first."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self._max = max_entries
        self._entries: dict[Hashable, tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, generation: int | None) -> Any | None:
        """The object filed under ``key`` at ``generation``, or None."""
        if generation is None:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] != generation:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, key: Hashable, generation: int, value: Any) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None and old[0] > generation:
                # A slower reader of an older generation must not displace a newer entry.
                self._entries[key] = old
                return
            self._entries[key] = (generation, value)
            while len(self._entries) > self._max:
                del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def cached(
    cache: ReadCache,
    key: Hashable,
    probe: Callable[[], int | None],
    load: Callable[[], tuple[int, T]],
) -> T:
    """The object under ``key``: kept when ``probe()`` gives the generation it
    was read at, else ``load()`` -> (generation, object), kept for next time."""
    hit = cache.get(key, probe())
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    generation, value = load()
    cache.put(key, generation, value)
    return value
