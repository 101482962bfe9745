"""A driver that keeps its state in memory, so osd runs with no hardware.

It behaves like storage: it remembers devices, replicas, snapshots and
attachments, refuses what real storage would refuse, and can be told to fail
a chosen operation, which is how tests inject faults at an exact point.

Options for tests of slow or interrupted work (each also read from the
environment when the argument is not given, so a daemon run as a child
process can be configured):

* ``delay_seconds`` (``OSD_FAKE_DRIVER_DELAY``): every operation sleeps this
  long first, so a job is slow enough to be paused or killed midway.
* ``state_file`` (``OSD_FAKE_DRIVER_STATE``): a SQLite file the state is
  loaded from, and into which each change writes the entries it changed (not
  the whole state), so the "storage" survives a restart of the daemon
  process, kill -9 included. Daemons given the same file share one
  "storage": each call first reloads what another wrote since. A file in
  the JSON form of earlier versions is converted in place. Without it the
  state lives in memory only.
* ``copying_snapshots`` (``OSD_FAKE_DRIVER_COPYING_SNAPSHOTS=1``): its
  drives share no blocks, so every snapshot is a full copy, taken as a
  SNAPSHOT_COPY job, as on a filesystem without reflink.
* :meth:`FakeDriver.block` / :meth:`FakeDriver.unblock`: calls of an
  operation wait until it is unblocked, so a test can hold a job at an exact
  point without timing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osd.engine.drivers.base import CopyRef, DriveInfo, DriverError, Mount, Refused

TIB = 1 << 40
DELAY_ENV = "OSD_FAKE_DRIVER_DELAY"
STATE_ENV = "OSD_FAKE_DRIVER_STATE"
COPYING_SNAPSHOTS_ENV = "OSD_FAKE_DRIVER_COPYING_SNAPSHOTS"
CALLS_KEPT = 10_000


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


class _Tracked(dict[Any, Any]):
    """A dict that remembers which keys changed since :meth:`take_dirty`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dirty: set[Any] = set()

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.dirty.add(key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self.dirty.add(key)

    def pop(self, key: Any, *default: Any) -> Any:
        self.dirty.add(key)
        return super().pop(key, *default)

    def take_dirty(self) -> set[Any]:
        dirty, self.dirty = self.dirty, set()
        return dirty


@dataclass
class FakeState:
    devices: dict[tuple[str, str], FakeDevice] = field(default_factory=_Tracked)
    replicas: dict[tuple[str, str], int] = field(default_factory=_Tracked)
    snapshots: dict[tuple[str, str], str] = field(default_factory=_Tracked)
    attachments: dict[tuple[str, str], bool] = field(default_factory=_Tracked)
    # (node address, snapshot id) -> the drive whose copy the device reads.
    snapshot_attachments: dict[tuple[str, str], str] = field(default_factory=_Tracked)

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": [[*k, asdict(v)] for k, v in self.devices.items()],
            "replicas": [[*k, v] for k, v in self.replicas.items()],
            "snapshots": [[*k, v] for k, v in self.snapshots.items()],
            "attachments": [[*k, v] for k, v in self.attachments.items()],
            "snapshot_attachments": [[*k, v] for k, v in self.snapshot_attachments.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FakeState:
        return cls(
            devices=_Tracked({(a, b): FakeDevice(**dev) for a, b, dev in data.get("devices", [])}),
            replicas=_Tracked({(a, b): int(v) for a, b, v in data.get("replicas", [])}),
            snapshots=_Tracked({(a, b): str(v) for a, b, v in data.get("snapshots", [])}),
            attachments=_Tracked({(a, b): bool(v) for a, b, v in data.get("attachments", [])}),
            snapshot_attachments=_Tracked(
                {(a, b): str(v) for a, b, v in data.get("snapshot_attachments", [])}
            ),
        )


# Each table (a FakeState field, keyed by a pair, in columns a and b) and its
# value columns.
_TABLES = {
    "devices": ("size_bytes", "has_data", "drive_id"),
    "replicas": ("value",),
    "snapshots": ("value",),
    "attachments": ("value",),
    "snapshot_attachments": ("value",),
}


class _StateFile:
    """The fake driver's state in a SQLite file: loaded whole, written entry
    by entry."""

    def __init__(self, path: Path) -> None:
        self.path = path
        legacy: FakeState | None = None
        if path.exists() and path.read_bytes()[:1] in (b"{", b"["):
            legacy = FakeState.from_json(json.loads(path.read_text()))
            path.unlink()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        for name, values in _TABLES.items():
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (a TEXT NOT NULL, b TEXT NOT NULL, "
                f"{', '.join(values)}, PRIMARY KEY (a, b))"
            )
        if legacy is not None:
            self.write(legacy, everything=True)
        self._version = self._data_version()

    def _data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        """Whether another connection (another daemon's fake driver on the same
        file) committed since this one last looked."""
        version = self._data_version()
        seen, self._version = self._version, version
        return version != seen

    def load(self) -> FakeState:
        state = FakeState()
        for a, b, size, has_data, drive_id in self.db.execute("SELECT * FROM devices"):
            state.devices[(a, b)] = FakeDevice(int(size), bool(has_data), drive_id)
        for a, b, v in self.db.execute("SELECT * FROM replicas"):
            state.replicas[(a, b)] = int(v)
        for a, b, v in self.db.execute("SELECT * FROM snapshots"):
            state.snapshots[(a, b)] = str(v)
        for a, b, v in self.db.execute("SELECT * FROM attachments"):
            state.attachments[(a, b)] = bool(v)
        for a, b, v in self.db.execute("SELECT * FROM snapshot_attachments"):
            state.snapshot_attachments[(a, b)] = str(v)
        for table in _TABLES:
            getattr(state, table).take_dirty()
        return state

    def write(self, state: FakeState, *, everything: bool = False) -> None:
        """Writes the entries changed since the last write, in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for name, values in _TABLES.items():
                table = getattr(state, name)
                keys = set(table) if everything else table.take_dirty()
                for key in keys:
                    value = table.get(key)
                    if value is None:
                        self.db.execute(f"DELETE FROM {name} WHERE a = ? AND b = ?", key)
                        continue
                    row = (
                        (value.size_bytes, value.has_data, value.drive_id)
                        if isinstance(value, FakeDevice)
                        else (value,)
                    )
                    marks = ", ".join("?" * (2 + len(values)))
                    self.db.execute(f"INSERT OR REPLACE INTO {name} VALUES ({marks})", (*key, *row))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise


class FakeDriver:
    """The in-memory driver. Thread-safe: the daemon calls it from many threads."""

    name = "fake"

    def __init__(
        self,
        default_device_size: int = TIB,
        *,
        delay_seconds: float | None = None,
        state_file: str | Path | None = None,
        copying_snapshots: bool | None = None,
    ) -> None:
        self.default_device_size = default_device_size
        if copying_snapshots is None:
            copying_snapshots = os.environ.get(COPYING_SNAPSHOTS_ENV, "") not in ("", "0")
        self.copying_snapshots = copying_snapshots
        if delay_seconds is None:
            delay_seconds = float(os.environ.get(DELAY_ENV) or 0)
        if state_file is None:
            state_file = os.environ.get(STATE_ENV) or None
        self.delay_seconds = delay_seconds
        self.state_file = Path(state_file) if state_file else None
        self._file = _StateFile(self.state_file) if self.state_file is not None else None
        self.state = self._file.load() if self._file is not None else FakeState()
        # The operations called, newest last: the last CALLS_KEPT to
        # 2 * CALLS_KEPT of them, so that a long-running daemon's log is bounded.
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._gates: dict[str, threading.Event] = {}
        self._waiting: dict[str, int] = {}
        self._gate_lock = threading.Condition()

    # -- test controls ---------------------------------------------------

    def add_device(
        self, node_address: str, device_path: str, size_bytes: int, *, has_data: bool = False
    ) -> None:
        """Puts a device of ``size_bytes`` at ``device_path`` on a node."""
        with self._lock:
            self.state.devices[(node_address, device_path)] = FakeDevice(size_bytes, has_data)
            self._save()

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

    def block(self, op: str) -> None:
        """Makes calls of ``op`` wait (before doing anything) until :meth:`unblock`."""
        with self._gate_lock:
            self._gates.setdefault(op, threading.Event()).clear()

    def unblock(self, op: str) -> None:
        with self._gate_lock:
            gate = self._gates.pop(op, None)
        if gate is not None:
            gate.set()

    def wait_blocked(self, op: str, timeout: float = 30.0, count: int = 1) -> bool:
        """Waits until ``count`` calls of ``op`` are held by :meth:`block`; False
        on timeout."""
        with self._gate_lock:
            return self._gate_lock.wait_for(lambda: self._waiting.get(op, 0) >= count, timeout)

    def _pass(self, op: str) -> None:
        """The delay and the gate, taken outside the state lock."""
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        with self._gate_lock:
            gate = self._gates.get(op)
            if gate is None:
                return
            self._waiting[op] = self._waiting.get(op, 0) + 1
            self._gate_lock.notify_all()
        gate.wait()
        with self._gate_lock:
            self._waiting[op] -= 1

    def _save(self) -> None:
        if self._file is not None:
            self._file.write(self.state)
            return
        for name in _TABLES:
            getattr(self.state, name).take_dirty()

    def _enter(self, op: str, **args: Any) -> None:
        if self._file is not None and self._file.changed():
            # Another daemon sharing the file changed the "storage".
            self.state = self._file.load()
        self.calls.append((op, args))
        if len(self.calls) > 2 * CALLS_KEPT:
            del self.calls[:-CALLS_KEPT]
        for fault in self._faults:
            if fault.op == op and fault.remaining > 0 and (fault.when is None or fault.when(args)):
                fault.remaining -= 1
                raise fault.error

    # -- DriveOps --------------------------------------------------------

    def probe_drive(self, node_address: str, device_path: str) -> DriveInfo:
        self._pass("probe_drive")
        with self._lock:
            self._enter("probe_drive", node_address=node_address, device_path=device_path)
            dev = self.state.devices.get((node_address, device_path))
            if dev is None:
                dev = FakeDevice(self.default_device_size)
                self.state.devices[(node_address, device_path)] = dev
                self._save()
            return DriveInfo(device_path, dev.size_bytes, dev.has_data)

    def format_drive(self, node_address: str, device_path: str, drive_id: str) -> int | None:
        self._pass("format_drive")
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
                raise Refused(
                    f"{device_path} on {node_address} belongs to {dev.drive_id}",
                    reason="DEVICE_IN_USE",
                )
            dev.drive_id = drive_id
            dev.has_data = False
            self.state.devices[(node_address, device_path)] = dev  # changed: to be saved
            self._save()
            return None

    def release_drive(self, node_address: str, device_path: str, drive_id: str) -> None:
        self._pass("release_drive")
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
                self.state.devices[(node_address, device_path)] = dev  # changed: to be saved
                self._save()

    # -- ReplicaOps ------------------------------------------------------

    def create_replica(
        self, drive_id: str, replica_id: str, size_bytes: int, thick: bool = False
    ) -> None:
        self._pass("create_replica")
        with self._lock:
            self._enter(
                "create_replica", drive_id=drive_id, replica_id=replica_id, size_bytes=size_bytes
            )
            have = self.state.replicas.get((drive_id, replica_id))
            if have is not None and have != size_bytes:
                raise DriverError(f"replica {replica_id} exists on {drive_id} with another size")
            self.state.replicas[(drive_id, replica_id)] = size_bytes
            self._save()

    def delete_replica(self, drive_id: str, replica_id: str) -> None:
        self._pass("delete_replica")
        with self._lock:
            self._enter("delete_replica", drive_id=drive_id, replica_id=replica_id)
            self.state.replicas.pop((drive_id, replica_id), None)
            self._save()

    def purge_replica(self, drive_id: str, replica_id: str) -> None:
        self._pass("purge_replica")
        with self._lock:
            self._enter("purge_replica", drive_id=drive_id, replica_id=replica_id)
            self.state.replicas.pop((drive_id, replica_id), None)
            for snapshot_id in self._snapshots_of(drive_id, replica_id):
                del self.state.snapshots[(drive_id, snapshot_id)]
            self._save()

    def resize_replica(self, drive_id: str, replica_id: str, size_bytes: int) -> None:
        self._pass("resize_replica")
        with self._lock:
            self._enter(
                "resize_replica", drive_id=drive_id, replica_id=replica_id, size_bytes=size_bytes
            )
            if (drive_id, replica_id) not in self.state.replicas:
                raise DriverError(f"no replica {replica_id} on {drive_id}")
            self.state.replicas[(drive_id, replica_id)] = size_bytes
            self._save()

    def copy_replica(
        self, source_drive_id: str, target_drive_id: str, replica_id: str, size_bytes: int
    ) -> None:
        self._pass("copy_replica")
        with self._lock:
            self._enter(
                "copy_replica",
                source_drive_id=source_drive_id,
                target_drive_id=target_drive_id,
                replica_id=replica_id,
                size_bytes=size_bytes,
            )
            has_data = (source_drive_id, replica_id) in self.state.replicas
            snaps = self._snapshots_of(source_drive_id, replica_id)
            if not has_data and not snaps:
                raise DriverError(f"no replica {replica_id} on {source_drive_id}")
            self._check_free(target_drive_id, snaps, replica_id)
            if has_data:
                self.state.replicas[(target_drive_id, replica_id)] = size_bytes
            for snapshot_id in snaps:
                self.state.snapshots[(target_drive_id, snapshot_id)] = replica_id
            self._save()

    def clone_replica(
        self,
        source_drive_id: str,
        source_replica_id: str,
        target_drive_id: str,
        target_replica_id: str,
        size_bytes: int,
    ) -> None:
        self._pass("clone_replica")
        with self._lock:
            self._enter(
                "clone_replica",
                source_drive_id=source_drive_id,
                source_replica_id=source_replica_id,
                target_drive_id=target_drive_id,
                target_replica_id=target_replica_id,
                size_bytes=size_bytes,
            )
            if (source_drive_id, source_replica_id) not in self.state.replicas:
                raise DriverError(f"no replica {source_replica_id} on {source_drive_id}")
            have = self.state.replicas.get((target_drive_id, target_replica_id))
            if have is not None and have != size_bytes:
                raise DriverError(
                    f"replica {target_replica_id} exists on {target_drive_id} with another size"
                )
            self.state.replicas[(target_drive_id, target_replica_id)] = size_bytes
            self._save()

    # -- SnapshotOps -----------------------------------------------------

    def shares_blocks(self, drive_id: str) -> bool:
        return not self.copying_snapshots

    def create_snapshot(
        self,
        drive_id: str,
        replica_id: str,
        snapshot_id: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._pass("create_snapshot")
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
            self._save()
            copied = self.state.replicas[(drive_id, replica_id)]
        if progress is not None and self.copying_snapshots:
            progress(copied)

    def clone_snapshot(
        self,
        sources: Sequence[CopyRef],
        snapshot_id: str,
        target_drive_id: str,
        target_replica_id: str,
        size_bytes: int,
    ) -> None:
        self._pass("clone_snapshot")
        with self._lock:
            self._enter(
                "clone_snapshot",
                sources=list(sources),
                snapshot_id=snapshot_id,
                target_drive_id=target_drive_id,
                target_replica_id=target_replica_id,
                size_bytes=size_bytes,
            )
            if not any((drive_id, snapshot_id) in self.state.snapshots for drive_id, _ in sources):
                raise DriverError(f"no copy named holds snapshot {snapshot_id}")
            have = self.state.replicas.get((target_drive_id, target_replica_id))
            if have is not None and have != size_bytes:
                raise DriverError(
                    f"replica {target_replica_id} exists on {target_drive_id} with another size"
                )
            self.state.replicas[(target_drive_id, target_replica_id)] = size_bytes
            self._save()

    def delete_snapshot(self, drive_id: str, snapshot_id: str) -> None:
        self._pass("delete_snapshot")
        with self._lock:
            self._enter("delete_snapshot", drive_id=drive_id, snapshot_id=snapshot_id)
            self.state.snapshots.pop((drive_id, snapshot_id), None)
            self._save()

    def revert_replica(self, drive_id: str, replica_id: str, snapshot_id: str) -> None:
        self._pass("revert_replica")
        with self._lock:
            self._enter(
                "revert_replica",
                drive_id=drive_id,
                replica_id=replica_id,
                snapshot_id=snapshot_id,
            )
            if self.state.snapshots.get((drive_id, snapshot_id)) != replica_id:
                raise DriverError(f"snapshot {snapshot_id} is not of {replica_id} on {drive_id}")

    def copy_snapshots(
        self,
        source_drive_id: str,
        source_replica_id: str,
        target_drive_id: str,
        target_replica_id: str,
    ) -> None:
        self._pass("copy_snapshots")
        with self._lock:
            self._enter(
                "copy_snapshots",
                source_drive_id=source_drive_id,
                source_replica_id=source_replica_id,
                target_drive_id=target_drive_id,
                target_replica_id=target_replica_id,
            )
            snaps = self._snapshots_of(source_drive_id, source_replica_id)
            self._check_free(target_drive_id, snaps, target_replica_id)
            for snapshot_id in snaps:
                self.state.snapshots[(target_drive_id, snapshot_id)] = target_replica_id
            self._save()

    def _snapshots_of(self, drive_id: str, replica_id: str) -> list[str]:
        """The ids of the snapshots of ``replica_id`` on a drive."""
        return sorted(
            snapshot_id
            for (drive, snapshot_id), of in self.state.snapshots.items()
            if drive == drive_id and of == replica_id
        )

    def _check_free(self, drive_id: str, snapshot_ids: list[str], replica_id: str) -> None:
        """Refuses (before any change) to put snapshots on a drive where one of
        those ids is a snapshot of another replica."""
        for snapshot_id in snapshot_ids:
            have = self.state.snapshots.get((drive_id, snapshot_id))
            if have is not None and have != replica_id:
                raise DriverError(
                    f"snapshot {snapshot_id} exists on {drive_id} as a snapshot of {have}"
                )

    # -- AttachmentOps ---------------------------------------------------

    def attach(
        self,
        node_address: str,
        volume_id: str,
        read_only: bool,
        copies: Sequence[CopyRef] = (),
        mount: Mount | None = None,
    ) -> str:
        self._pass("attach")
        with self._lock:
            self._enter(
                "attach",
                node_address=node_address,
                volume_id=volume_id,
                read_only=read_only,
                mount=mount,
            )
            self.state.attachments[(node_address, volume_id)] = read_only
            self._save()
        return f"/dev/osd/{volume_id}"

    def detach(self, node_address: str, volume_id: str) -> None:
        self._pass("detach")
        with self._lock:
            self._enter("detach", node_address=node_address, volume_id=volume_id)
            self.state.attachments.pop((node_address, volume_id), None)
            self._save()

    def attach_snapshot(
        self, node_address: str, snapshot_id: str, copies: Sequence[CopyRef]
    ) -> str:
        self._pass("attach_snapshot")
        with self._lock:
            self._enter(
                "attach_snapshot",
                node_address=node_address,
                snapshot_id=snapshot_id,
                copies=list(copies),
            )
            held = [d for d, _ in copies if (d, snapshot_id) in self.state.snapshots]
            if not held:
                raise DriverError(f"no copy named holds snapshot {snapshot_id}")
            self.state.snapshot_attachments[(node_address, snapshot_id)] = held[0]
            self._save()
        return f"/dev/osd/snapshots/{snapshot_id}"

    def detach_snapshot(self, node_address: str, snapshot_id: str) -> None:
        self._pass("detach_snapshot")
        with self._lock:
            self._enter("detach_snapshot", node_address=node_address, snapshot_id=snapshot_id)
            self.state.snapshot_attachments.pop((node_address, snapshot_id), None)
            self._save()
