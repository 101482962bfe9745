"""The storage driver contract: small protocols combined into one.

The engine calls a driver only outside any database transaction (the
"exec" phase of a change). A driver call either does all of its work or
raises :class:`DriverError` having done none of it that the engine must
undo; every call is idempotent, so the engine can repeat one after a crash.

A replica (a copy, or fragment, of a volume, named by its allocation id)
has snapshots on its drive, named by their snapshot ids. They outlive the
replica's own data: deleting a volume's replicas keeps its snapshots, which
its snapshot chain then holds. Data that moves never leaves its snapshots
behind: a copy carries its snapshots (:meth:`ReplicaOps.copy_replica`), a
copy rebuilt from another copy is given that copy's snapshots
(:meth:`SnapshotOps.copy_snapshots`), and what a move leaves on the drive
it left is deleted with its snapshots (:meth:`ReplicaOps.purge_replica`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class DriverError(Exception):
    """A storage operation failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class DriveFull(DriverError):
    """A drive has no room left for the work (ENOSPC): not retryable until
    room is made."""


class Refused(DriverError):
    """The host's policy refuses the work as asked (``reason`` says which
    rule): asking again the same way cannot succeed."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NoAgent(DriverError):
    """The work is for a node (or a drive of a node) this daemon does not act
    for: no agent of that node is here."""


# A copy of a volume where the driver can find it: (drive id, replica id).
CopyRef = tuple[str, str]


@dataclass(frozen=True)
class Mount:
    """A FILE volume's filesystem on an attachment: made on the device when
    the device has none, and mounted at ``path`` (when given) with
    ``options``."""

    filesystem: str  # "ext4" or "xfs"
    path: str = ""
    options: tuple[str, ...] = ()


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

    def format_drive(self, node_address: str, device_path: str, drive_id: str) -> int | None:
        """Prepares the device for osd, destroying what it holds. Answers the
        bytes usable on it once prepared (a filesystem's own room taken off),
        or None when that is the size the probe found."""
        ...

    def release_drive(self, node_address: str, device_path: str, drive_id: str) -> None:
        """Forgets the device; its data is no longer osd's."""
        ...


@runtime_checkable
class ReplicaOps(Protocol):
    def create_replica(
        self, drive_id: str, replica_id: str, size_bytes: int, thick: bool = False
    ) -> None:
        """Creates one copy (or fragment) of a volume on a drive; ``thick``
        (THICK provisioning) takes its space on the drive now, not as data is
        written."""
        ...

    def delete_replica(self, drive_id: str, replica_id: str) -> None:
        """Deletes a copy's data, keeping its snapshots on the drive (a deleted
        or frozen volume's snapshot chain holds them); deleting one that is not
        there is not an error."""
        ...

    def purge_replica(self, drive_id: str, replica_id: str) -> None:
        """Deletes a copy and every snapshot of it on a drive: what a move leaves
        on the drive the copy left (or, rolled back, on its target). Deleting
        what is not there is not an error."""
        ...

    def resize_replica(self, drive_id: str, replica_id: str, size_bytes: int) -> None: ...

    def copy_replica(
        self, source_drive_id: str, target_drive_id: str, replica_id: str, size_bytes: int
    ) -> None:
        """Copies a replica onto another drive with every snapshot of it there, as
        snapshots of the same replica: a move (copy, then purge of the source)
        leaves every snapshot usable where the copy now is. A replica whose data
        was deleted but whose snapshots remain (the chain of a deleted or frozen
        volume) is copied as its snapshots alone. Raises when the source drive
        holds neither the replica nor a snapshot of it."""
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
    def shares_blocks(self, drive_id: str) -> bool:
        """Whether a snapshot on the drive shares its copy's blocks, and so is
        taken at once. Where it does not, a snapshot is a full copy: the engine
        takes it as a SNAPSHOT_COPY job. A drive not on this host answers True
        (the snapshot call itself says why it cannot be taken here)."""
        ...

    def create_snapshot(
        self,
        drive_id: str,
        replica_id: str,
        snapshot_id: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Snapshots a replica on its drive. A full copy calls ``progress``
        with the bytes copied so far, now and then."""
        ...

    def delete_snapshot(self, drive_id: str, snapshot_id: str) -> None: ...

    def revert_replica(self, drive_id: str, replica_id: str, snapshot_id: str) -> None:
        """Rolls a replica back to its snapshot on the same drive."""
        ...

    def clone_snapshot(
        self,
        sources: Sequence[CopyRef],
        snapshot_id: str,
        target_drive_id: str,
        target_replica_id: str,
        size_bytes: int,
    ) -> None:
        """Creates replica ``target_replica_id`` of ``size_bytes`` on a drive,
        filled with a snapshot's data: a volume cloned from a snapshot.
        ``sources`` are the copies that hold the snapshot, best first (the
        target's drive first, where a clone can share blocks). Raises when
        none of them holds it."""
        ...

    def copy_snapshots(
        self,
        source_drive_id: str,
        source_replica_id: str,
        target_drive_id: str,
        target_replica_id: str,
    ) -> None:
        """Gives replica ``target_replica_id`` on the target drive every snapshot
        that replica ``source_replica_id`` has on the source drive (same ids,
        their data from the source): a copy rebuilt from another copy carries
        that copy's snapshots. The target replica need not exist (a snapshot
        chain whose volume is gone is its snapshots alone); a source with no
        snapshot copies nothing."""
        ...


@runtime_checkable
class AttachmentOps(Protocol):
    def attach(
        self,
        node_address: str,
        volume_id: str,
        read_only: bool,
        copies: Sequence[CopyRef] = (),
        mount: Mount | None = None,
    ) -> str:
        """Makes a volume usable on a node and answers its device path there.
        ``copies`` are the volume's live copies, those on the node first; a
        driver that serves one copy uses the first it holds. ``mount`` is a
        FILE volume's filesystem and where to mount it. Attaching again in
        the same mode answers the same device. Detach unmounts first."""
        ...

    def detach(self, node_address: str, volume_id: str) -> None: ...


@runtime_checkable
class SnapshotAttachmentOps(Protocol):
    def attach_snapshot(
        self, node_address: str, snapshot_id: str, copies: Sequence[CopyRef]
    ) -> str:
        """Makes a snapshot readable on a node, read-only, and answers its
        device path there. ``copies`` are the live copies that hold the
        snapshot, those on the node first. Attaching again answers the same
        device."""
        ...

    def detach_snapshot(self, node_address: str, snapshot_id: str) -> None:
        """Takes a snapshot's device off a node; one that is not there is not
        an error."""
        ...


@runtime_checkable
class StorageDriver(
    DriveOps, ReplicaOps, SnapshotOps, AttachmentOps, SnapshotAttachmentOps, Protocol
):
    """Everything the engine needs from storage."""

    name: str
