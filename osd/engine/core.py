"""The engine: the one object servicers call."""

from __future__ import annotations

import logging
from collections.abc import Callable

from osd.engine.clusters import ClusterEngine
from osd.engine.drivers import StorageDriver
from osd.store.db import Store

log = logging.getLogger(__name__)


class Engine:
    """Domain operations over one store and one storage driver.

    Each capability is a sub-engine attribute (``clusters``, ...). A
    sub-engine whose changes run in phases registers a recovery step with
    :meth:`on_start`; :meth:`start` runs them all before the daemon serves, so
    work a crash left pending is finished or undone first.
    """

    def __init__(self, store: Store, driver: StorageDriver) -> None:
        self.store = store
        self.driver = driver
        self._on_start: list[tuple[str, Callable[[], None]]] = []
        self._on_close: list[tuple[str, Callable[[], None]]] = []
        self.clusters = ClusterEngine(store)

    def on_start(self, name: str, step: Callable[[], None]) -> None:
        """Runs ``step`` (recovery, starting workers) when the engine starts, in order."""
        self._on_start.append((name, step))

    def on_close(self, name: str, step: Callable[[], None]) -> None:
        """Runs ``step`` (stopping workers) when the engine closes, in reverse order."""
        self._on_close.append((name, step))

    def start(self) -> None:
        for name, step in self._on_start:
            log.info("starting: %s", name)
            step()

    def close(self) -> None:
        for name, step in reversed(self._on_close):
            try:
                step()
            except Exception:
                log.exception("closing %s failed", name)
        self.store.close()
