"""A driver that keeps its state in memory, so osd runs with no hardware.

It behaves like storage: it remembers devices, replicas, snapshots and
attachments, refuses what real storage would refuse, and can be told to fail
a chosen operation, which is how tests inject faults at an exact point.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from osd.engine.drivers.base import DriveInfo, DriverError

TIB = 1 << 40


@dataclass
class FakeDevice:
    size_bytes: int
    has_data: bool = False
    drive_id: str | None = None


@dataclass
class _Fault:
    op: str
    remaining: int
    error: Exception
    when: Callable[[dict[str, Any]], bool] | None = None


@dataclass
class FakeState:
    devices: dict[tuple[str, str], FakeDevice] = field(default_factory=dict)
    replicas: dict[tuple[str, str], int] = field(default_factory=dict)
    snapshots: dict[tuple[str, str], str] = field(default_factory=dict)
    attachments: dict[tuple[str, str], bool] = field(default_factory=dict)


class FakeDriver:
    """The in-memory driver. Thread-safe: the daemon calls it from many threads."""

    name = "fake"

    def __init__(self, default_device_size: int = TIB) -> None:
        self.default_device_size = default_device_size
        self.state = FakeState()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()

    # -- test controls ---------------------------------------------------

    def add_device(
        self, node_address: str, device_path: str, size_bytes: int, *, has_data: bool = False
    ) -> None:
        """Puts a device of ``size_bytes`` at ``device_path`` on a node."""
        with self._lock:
            self.state.devices[(node_address, device_path)] = FakeDevice(size_bytes, has_data)

    def fail(
        self,
        op: str,
        *,
        times: int = 1,
        error: Exception | None = None,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Makes the next ``times`` calls of ``op`` (matching ``when``) raise ``error``."""
        with self._lock:
            self._faults.append(
                _Fault(op, times, error or DriverError(f"injected failure in {op}"), when)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _enter(self, op: str, **args: Any) -> None:
        self.calls.append((op, args))
        for fault in self._faults:
            if fault.op == op and fault.remaining > 0 and (fault.when is None or fault.when(args)):
                fault.remaining -= 1
                raise fault.error

    # -- DriveOps --------------------------------------------------------

    def probe_drive(self, node_address: str, device_path: str) -> DriveInfo:
        with self._lock:
            self._enter("probe_drive", node_address=node_address, device_path=device_path)
            dev = self.state.devices.get((node_address, device_path))
            if dev is None:
                dev = FakeDevice(self.default_device_size)
                self.state.devices[(node_address, device_path)] = dev
            return DriveInfo(device_path, dev.size_bytes, dev.has_data)

    def format_drive(self, node_address: str, device_path: str, drive_id: str) -> None:
        with self._lock:
            self._enter(
                "format_drive",
                node_address=node_address,
                device_path=device_path,
                drive_id=drive_id,
            )
            dev = self.state.devices.get((node_address, device_path))
            if dev is None:
                raise DriverError(f"no device at {device_path} on {node_address}")
            if dev.drive_id not in (None, drive_id):
                raise DriverError(f"{device_path} on {node_address} belongs to {dev.drive_id}")
            dev.drive_id = drive_id
            dev.has_data = False

    def release_drive(self, node_address: str, device_path: str, drive_id: str) -> None:
        with self._lock:
            self._enter(
                "release_drive",
                node_address=node_address,
                device_path=device_path,
                drive_id=drive_id,
            )
            dev = self.state.devices.get((node_address, device_path))
            if dev is not None and dev.drive_id == drive_id:
                dev.drive_id = None

    # -- ReplicaOps ------------------------------------------------------

    def create_replica(self, drive_id: str, replica_id: str, size_bytes: int) -> None:
        with self._lock:
            self._enter(
                "create_replica", drive_id=drive_id, replica_id=replica_id, size_bytes=size_bytes
            )
            have = self.state.replicas.get((drive_id, replica_id))
            if have is not None and have != size_bytes:
                raise DriverError(f"replica {replica_id} exists on {drive_id} with another size")
            self.state.replicas[(drive_id, replica_id)] = size_bytes

    def delete_replica(self, drive_id: str, replica_id: str) -> None:
        with self._lock:
            self._enter("delete_replica", drive_id=drive_id, replica_id=replica_id)
            self.state.replicas.pop((drive_id, replica_id), None)

    def resize_replica(self, drive_id: str, replica_id: str, size_bytes: int) -> None:
        with self._lock:
            self._enter(
                "resize_replica", drive_id=drive_id, replica_id=replica_id, size_bytes=size_bytes
            )
            if (drive_id, replica_id) not in self.state.replicas:
                raise DriverError(f"no replica {replica_id} on {drive_id}")
            self.state.replicas[(drive_id, replica_id)] = size_bytes

    def copy_replica(
        self, source_drive_id: str, target_drive_id: str, replica_id: str, size_bytes: int
    ) -> None:
        with self._lock:
            self._enter(
                "copy_replica",
                source_drive_id=source_drive_id,
                target_drive_id=target_drive_id,
                replica_id=replica_id,
                size_bytes=size_bytes,
            )
            if (source_drive_id, replica_id) not in self.state.replicas:
                raise DriverError(f"no replica {replica_id} on {source_drive_id}")
            self.state.replicas[(target_drive_id, replica_id)] = size_bytes

    # -- SnapshotOps -----------------------------------------------------

    def create_snapshot(self, drive_id: str, replica_id: str, snapshot_id: str) -> None:
        with self._lock:
            self._enter(
                "create_snapshot",
                drive_id=drive_id,
                replica_id=replica_id,
                snapshot_id=snapshot_id,
            )
            if (drive_id, replica_id) not in self.state.replicas:
                raise DriverError(f"no replica {replica_id} on {drive_id}")
            self.state.snapshots[(drive_id, snapshot_id)] = replica_id

    def delete_snapshot(self, drive_id: str, snapshot_id: str) -> None:
        with self._lock:
            self._enter("delete_snapshot", drive_id=drive_id, snapshot_id=snapshot_id)
            self.state.snapshots.pop((drive_id, snapshot_id), None)

    def revert_replica(self, drive_id: str, replica_id: str, snapshot_id: str) -> None:
        with self._lock:
            self._enter(
                "revert_replica",
                drive_id=drive_id,
                replica_id=replica_id,
                snapshot_id=snapshot_id,
            )
            if self.state.snapshots.get((drive_id, snapshot_id)) != replica_id:
                raise DriverError(f"snapshot {snapshot_id} is not of {replica_id} on {drive_id}")

    # -- AttachmentOps ---------------------------------------------------

    def attach(self, node_address: str, volume_id: str, read_only: bool) -> None:
        with self._lock:
            self._enter(
                "attach", node_address=node_address, volume_id=volume_id, read_only=read_only
            )
            self.state.attachments[(node_address, volume_id)] = read_only

    def detach(self, node_address: str, volume_id: str) -> None:
        with self._lock:
            self._enter("detach", node_address=node_address, volume_id=volume_id)
            self.state.attachments.pop((node_address, volume_id), None)
