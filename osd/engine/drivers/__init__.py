"""Storage drivers: the engine's only way to touch storage."""

from osd.engine.drivers.base import (
    AttachmentOps,
    DriveInfo,
    DriveOps,
    DriverError,
    ReplicaOps,
    SnapshotOps,
    StorageDriver,
)

__all__ = [
    "AttachmentOps",
    "DriveInfo",
    "DriveOps",
    "DriverError",
    "ReplicaOps",
    "SnapshotOps",
    "StorageDriver",
]


def load(name: str) -> StorageDriver:
    """The driver called ``name`` in settings."""
    if name == "fake":
        from osd.engine.drivers.fake import FakeDriver

        return FakeDriver()
    raise ValueError(f"unknown storage driver {name!r}; known drivers: fake")
