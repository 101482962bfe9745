"""The engine: the one object servicers call."""

from __future__ import annotations

from osd.engine.clusters import ClusterEngine
from osd.engine.drivers import StorageDriver
from osd.store.db import Store


class Engine:
    """Domain operations over one store and one storage driver."""

    def __init__(self, store: Store, driver: StorageDriver) -> None:
        self.store = store
        self.driver = driver
        self.clusters = ClusterEngine(store)

    def close(self) -> None:
        self.store.close()
