"""The storage driver contract: small protocols combined into one.

The engine calls a driver only outside any database transaction (the
"exec" phase of a change). A driver call either does all of its work or
raises :class:`DriverError` having done none of it that the engine must
undo; every call is idempotent, so the engine can repeat one after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class DriverError(Exception):
    """A storage operation failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class DriveInfo:
    """What a driver finds at a device path on a node."""

    device_path: str
    size_bytes: int
    has_data: bool
    rotational: bool = False


@runtime_checkable
class DriveOps(Protocol):
    def probe_drive(self, node_address: str, device_path: str) -> DriveInfo:
        """Reads the device's size and whether it holds data."""
        ...

    def format_drive(self, node_address: str, device_path: str, drive_id: str) -> None:
        """Prepares the device for osd, destroying what it holds."""
        ...

    def release_drive(self, node_address: str, device_path: str, drive_id: str) -> None:
        """Forgets the device; its data is no longer osd's."""
        ...


@runtime_checkable
class ReplicaOps(Protocol):
    def create_replica(self, drive_id: str, replica_id: str, size_bytes: int) -> None:
        """Creates one copy (or fragment) of a volume on a drive."""
        ...

    def delete_replica(self, drive_id: str, replica_id: str) -> None:
        """Deletes a copy; deleting one that is not there is not an error."""
        ...

    def resize_replica(self, drive_id: str, replica_id: str, size_bytes: int) -> None: ...

    def copy_replica(
        self, source_drive_id: str, target_drive_id: str, replica_id: str, size_bytes: int
    ) -> None:
        """Copies a replica's data onto another drive (moves are copy + delete)."""
        ...

    def clone_replica(
        self,
        source_drive_id: str,
        source_replica_id: str,
        target_drive_id: str,
        target_replica_id: str,
        size_bytes: int,
    ) -> None:
        """Creates replica ``target_replica_id`` of ``size_bytes`` on a drive, filled
        with the data of another volume's replica (a full volume copy)."""
        ...


@runtime_checkable
class SnapshotOps(Protocol):
    def create_snapshot(self, drive_id: str, replica_id: str, snapshot_id: str) -> None: ...

    def delete_snapshot(self, drive_id: str, snapshot_id: str) -> None: ...

    def revert_replica(self, drive_id: str, replica_id: str, snapshot_id: str) -> None: ...


@runtime_checkable
class AttachmentOps(Protocol):
    def attach(self, node_address: str, volume_id: str, read_only: bool) -> None: ...

    def detach(self, node_address: str, volume_id: str) -> None: ...


@runtime_checkable
class StorageDriver(DriveOps, ReplicaOps, SnapshotOps, AttachmentOps, Protocol):
    """Everything the engine needs from storage."""

    name: str
