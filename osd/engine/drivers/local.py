"""The local driver: volumes as files on this host's drives, attached as loop devices.

A drive is a filesystem osd mounts, or a directory on one:

* a block device, or an image file (set up on a loop device first), which
  :meth:`LocalDriver.format_drive` formats (xfs with reflink by default, or
  btrfs) and mounts under ``<data_dir>/local-driver/drives/<drive_id>``;
* a directory on a filesystem that is already mounted, used as it is.

Each copy (replica, named by its allocation id) of a volume is one file,
``replicas/<replica_id>`` under the drive, exactly the volume's size and
sparse. A snapshot of a copy is ``snapshots/<replica_id>/<snapshot_id>``: a
reflink (``FICLONE``) where the filesystem shares blocks, and a full copy
elsewhere. Data that moves between drives is copied hole by hole and
checked against the source before the copy takes its final name, so a
half-copied file never counts as data.

An attachment is a loop device over the volume's primary copy: the first
copy the engine names that is on a drive of this host. Writes reach that copy
alone; the other copies are brought into line by the copy jobs, not live.

The driver acts for this host only. A call for a node that is not this host,
or for a drive that is not mounted here, raises :class:`NoAgent`, which the
engine answers FAILED_PRECONDITION. "This host" is any name or address of the
machine (its host name, its fully qualified name, loopback, the addresses of
its interfaces) and the node name given in settings.

What the driver set up (drives and their mounts, attachments and their loop
devices) is kept in ``state.json`` beside the mounts, written whole and
atomically, so a restarted daemon mounts its drives again and finds the loop
devices it made; :meth:`LocalDriver.restore_attachments` then makes the
devices match the attachments the store records.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from osd.engine.drivers.base import (
    CopyRef,
    DriveFull,
    DriveInfo,
    DriverError,
    Mount,
    NoAgent,
    Refused,
)

log = logging.getLogger(__name__)

FICLONE = 0x40049409
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
_FIEMAP_HEAD = struct.Struct("=QQIIII")  # start, length, flags, mapped, count, reserved
_FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2 reserved, flags, 3
_FIEMAP_BATCH = 512
BLKGETSIZE64 = 0x80081272
CHUNK = 4 << 20
FILESYSTEMS = ("xfs", "btrfs")
MARKER = ".osd-drive"


@dataclass
class _Drive:
    device_path: str
    root: str
    kind: str  # "block", "image" or "directory"
    filesystem: str = ""
    loop_device: str = ""  # the loop device an image drive is mounted from


@dataclass
class _Attachment:
    node_address: str
    device: str
    file: str
    read_only: bool
    # The volume's other copies ([drive id, replica id]), brought into line
    # with the attached one when a writer detaches.
    copies: list[list[str]] = field(default_factory=list)
    # A FILE volume's filesystem, and where it is mounted ("" for nowhere).
    filesystem: str = ""
    mount_path: str = ""
    mount_options: list[str] = field(default_factory=list)


def run_command(*argv: str, what: str, retryable: bool = False) -> str:
    """Runs a host command (at most ten minutes); DriverError says ``what``
    failed, with the command's last line of output."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError as exc:
        raise DriverError(f"{what}: {argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise DriverError(f"{what}: {argv[0]} took too long", retryable=True) from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise DriverError(
            f"{what}: {argv[0]} failed: {message[-1] if message else done.returncode}",
            retryable=retryable,
        )
    return done.stdout


def _host_names() -> set[str]:
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}
    try:
        out = subprocess.run(
            ["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        fields = line.split()
        for i, word in enumerate(fields[:-1]):
            if word in ("inet", "inet6"):
                names.add(fields[i + 1].split("/")[0])
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            names.add(str(info[4][0]))
    except OSError:
        pass
    return {n.lower() for n in names if n}


def mount_table() -> dict[str, tuple[str, str]]:
    """Mount point -> (source, filesystem type), from this process's mount table."""
    out: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            fstype, source = right.split()[:2]
            out[point] = (source, fstype)
    return out


def _mounted_from(point: str) -> str | None:
    """What is mounted at ``point`` (its source), if anything."""
    found = mount_table().get(point)
    return found[0] if found else None


def loop_devices() -> dict[str, tuple[str, bool]]:
    """Every loop device in use: device -> (backing file, read-only)."""
    found: dict[str, tuple[str, bool]] = {}
    for block in Path("/sys/block").glob("loop*"):
        try:
            backing = (block / "loop" / "backing_file").read_text().strip()
            read_only = (block / "ro").read_text().strip() == "1"
        except OSError:
            continue
        found[f"/dev/{block.name}"] = (backing.removesuffix(" (deleted)"), read_only)
    return found


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(what: str, exc: OSError) -> DriverError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DriveFull(f"{what}: the drive is full ({exc.strerror})")
    if exc.errno == errno.ENOENT:
        return DriverError(f"{what}: {exc.filename or 'a file'} is missing")
    return DriverError(f"{what}: {exc.strerror or exc}", retryable=exc.errno in (errno.EAGAIN,))


def _segments(fd: int, size: int) -> Iterable[tuple[int, int]]:
    """The (offset, length) ranges of a file that hold data, holes skipped."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size) - start
        offset = end


def _digest(
    fd: int,
    segments: Sequence[tuple[int, int]],
    copy_to: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """A checksum (SHA-256) of a file's bytes in ``segments``, offsets
    included, read CHUNK by CHUNK; with ``copy_to``, each chunk is also
    written there at its offset, so a copy reads its source once.
    ``progress`` is told the bytes read so far after each chunk."""
    h = hashlib.sha256()
    seen = 0
    for start, length in segments:
        done = 0
        while done < length:
            chunk = os.pread(fd, min(CHUNK, length - done), start + done)
            if not chunk:
                break
            written = 0
            while copy_to is not None and written < len(chunk):
                written += os.pwrite(copy_to, chunk[written:], start + done + written)
            h.update(struct.pack("<Q", start + done))
            h.update(chunk)
            done += len(chunk)
            seen += len(chunk)
            if progress is not None:
                progress(seen)
    return h.digest()


def reflinks(folder: Path) -> bool:
    """Whether the filesystem holding ``folder`` shares blocks between files
    (FICLONE works): found by cloning a small file there."""
    probe = folder / f".reflink-probe-{os.getpid()}"
    clone = probe.with_name(probe.name + ".clone")
    try:
        probe.write_bytes(b"osd")
        src = os.open(probe, os.O_RDONLY)
        try:
            dst = os.open(clone, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                fcntl.ioctl(dst, FICLONE, src)
                return True
            except OSError:
                return False
            finally:
                os.close(dst)
        finally:
            os.close(src)
    finally:
        probe.unlink(missing_ok=True)
        clone.unlink(missing_ok=True)


def unshared_bytes(path: Path) -> int:
    """The bytes of a file's extents that no other file shares: what
    deleting it would free. A filesystem that cannot tell (no FIEMAP) counts
    every allocated byte."""
    fd = os.open(path, os.O_RDONLY)
    try:
        total, start, flags = 0, 0, FIEMAP_FLAG_SYNC
        while True:
            request = bytearray(_FIEMAP_HEAD.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
            _FIEMAP_HEAD.pack_into(
                request, 0, start, (1 << 64) - 1 - start, flags, 0, _FIEMAP_BATCH, 0
            )
            try:
                fcntl.ioctl(fd, FS_IOC_FIEMAP, request, True)
            except OSError:
                return os.fstat(fd).st_blocks * 512
            flags = 0
            mapped = _FIEMAP_HEAD.unpack_from(request, 0)[3]
            if mapped == 0:
                return total
            last = False
            for i in range(mapped):
                logical, _phys, length, _r1, _r2, ext_flags, *_ = _FIEMAP_EXTENT.unpack_from(
                    request, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size
                )
                if not ext_flags & FIEMAP_EXTENT_SHARED:
                    total += length
                start = logical + length
                last = bool(ext_flags & FIEMAP_EXTENT_LAST)
            if last:
                return total
    finally:
        os.close(fd)


def copy_file(
    source: Path,
    target: Path,
    size: int | None = None,
    *,
    keep_allocation: bool = False,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Copies ``source`` to ``target`` through ``target.part``: a reflink where
    both share a filesystem that can, or the data ranges one by one, checked
    against the source before the copy takes its name. ``size`` truncates or
    extends the copy; ``keep_allocation``: a source allocated in full (a
    THICK copy that moves) makes a copy allocated in full. ``progress`` is
    told the bytes copied so far as a full copy goes."""
    part = target.with_name(target.name + ".part")
    src = os.open(source, os.O_RDONLY)
    try:
        length = os.fstat(src).st_size
        dst = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                fcntl.ioctl(dst, FICLONE, src)
                cloned = True
            except OSError:
                cloned = False
            if not cloned:
                os.ftruncate(dst, length)
                segments = list(_segments(src, length))
                expected = _digest(src, segments, copy_to=dst, progress=progress)
                os.fsync(dst)
                if _digest(dst, segments) != expected:
                    raise DriverError(f"the copy of {source.name} does not match its source")
                if keep_allocation and length and os.fstat(src).st_blocks * 512 >= length:
                    # A copy allocated in full (THICK) stays so where it moves.
                    os.posix_fallocate(dst, 0, size if size is not None else length)
            if size is not None and size != length:
                os.ftruncate(dst, size)
            os.fsync(dst)
        finally:
            os.close(dst)
        os.replace(part, target)
        _fsync_dir(target.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        os.close(src)


def _union(*lists: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges covered by any of the (offset, length) lists, merged."""
    spans = sorted((start, start + length) for ranges in lists for start, length in ranges)
    out: list[tuple[int, int]] = []
    for start, end in spans:
        if out and start <= out[-1][0] + out[-1][1]:
            last_start, last_length = out[-1]
            out[-1] = (last_start, max(last_start + last_length, end) - last_start)
        else:
            out.append((start, end - start))
    return out


def sync_file(source: Path, target: Path) -> None:
    """Makes an existing copy hold ``source``'s bytes, in place: the data
    ranges of the source written over it, and zeros where the source has a
    hole and the copy has data, so a copy allocated in full (THICK) stays so
    and no second file's room is needed. Checked against the source after.
    Used for a copy that is stale anyway (the other copies of a volume that
    was written through one); one interrupted is made again by the retry."""
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_RDWR)
        try:
            length = os.fstat(src).st_size
            if os.fstat(dst).st_size != length:
                os.ftruncate(dst, length)
            # Where either holds data: the source's bytes (zeros where it has
            # a hole) over the copy's.
            ranges = _union(list(_segments(src, length)), list(_segments(dst, length)))
            expected = _digest(src, ranges, copy_to=dst)
            os.fsync(dst)
            if _digest(dst, ranges) != expected:
                raise DriverError(f"{target.name} does not match {source.name} after the copy")
        finally:
            os.close(dst)
    finally:
        os.close(src)


@dataclass
class _SnapshotAttachment:
    node_address: str
    device: str
    file: str


class LocalDriver:
    """Volumes as files on this host's drives; see the module docstring."""

    name = "local"
    # Image files and directories are drives too, not only devices under /dev.
    takes_files = True

    def __init__(
        self,
        data_dir: Path,
        *,
        node_name: str = "",
        filesystem: str = "xfs",
        mount_roots: Sequence[str] = (),
    ) -> None:
        if filesystem not in FILESYSTEMS:
            raise ValueError(f"local filesystem {filesystem!r} is not one of xfs, btrfs")
        self.home = data_dir / "local-driver"
        self.home.mkdir(parents=True, exist_ok=True)
        self.home = self.home.resolve()
        self.filesystem = filesystem
        # Where volumes may be mounted (settings' local_mount_roots): nowhere
        # unless given.
        self.mount_roots = tuple(os.path.realpath(r) for r in mount_roots)
        self.here = _host_names() | ({node_name.lower()} if node_name else set())
        self._lock = threading.RLock()
        self._drives: dict[str, _Drive] = {}
        self._attachments: dict[str, _Attachment] = {}
        # Snapshots attached read-only, by snapshot id.
        self._snapshot_attachments: dict[str, _SnapshotAttachment] = {}
        # Whether each drive's filesystem shares blocks (found once per run).
        self._shares: dict[str, bool] = {}
        self._load()
        self._mount_all()

    # -- state -----------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.home / "state.json"

    def _load(self) -> None:
        if not self._state_file.exists():
            return
        data = json.loads(self._state_file.read_text())
        self._drives = {k: _Drive(**v) for k, v in data.get("drives", {}).items()}
        self._attachments = {k: _Attachment(**v) for k, v in data.get("attachments", {}).items()}
        self._snapshot_attachments = {
            k: _SnapshotAttachment(**v) for k, v in data.get("snapshot_attachments", {}).items()
        }

    def _save(self) -> None:
        data = {
            "drives": {k: asdict(v) for k, v in self._drives.items()},
            "attachments": {k: asdict(v) for k, v in self._attachments.items()},
            "snapshot_attachments": {k: asdict(v) for k, v in self._snapshot_attachments.items()},
        }
        part = self._state_file.with_suffix(".part")
        with open(part, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, self._state_file)
        _fsync_dir(self.home)

    def _mount_all(self) -> None:
        """Mounts again every drive this driver formatted (after a reboot, or a
        mount someone removed); a drive that cannot be mounted is logged and
        its calls fail until it can."""
        for drive_id, drive in self._drives.items():
            try:
                self._mount(drive_id, drive)
            except DriverError as exc:
                log.error("local drive %s (%s): %s", drive_id, drive.device_path, exc)
                continue
            self._sweep(Path(drive.root))

    @staticmethod
    def _sweep(root: Path) -> None:
        """Removes the half-written files (``*.part``) a killed daemon left: a
        copy, clone or snapshot takes its name only once whole, so these are
        never data."""
        for leftover in [*root.glob("replicas/*.part"), *root.glob("snapshots/*/*.part")]:
            log.warning("removing %s, left half-written by a daemon that stopped", leftover)
            leftover.unlink(missing_ok=True)

    # -- where things are --------------------------------------------------------

    def _require_here(self, node_address: str) -> None:
        if node_address.lower() not in self.here:
            raise NoAgent(
                f"node {node_address} has no agent here: this daemon drives the storage "
                f"of {socket.gethostname()} only"
            )

    def _root(self, drive_id: str) -> Path:
        drive = self._drives.get(drive_id)
        if drive is None:
            raise NoAgent(
                f"drive {drive_id} is not a drive of this host; its node has no agent here"
            )
        root = Path(drive.root)
        if drive.kind != "directory" and _mounted_from(drive.root) is None:
            self._mount(drive_id, drive)
        if not (root / MARKER).exists():
            raise DriverError(
                f"drive {drive_id} ({drive.device_path}) is not there: {root} is not osd's drive",
                retryable=True,
            )
        return root

    def _replica(self, drive_id: str, replica_id: str) -> Path:
        return self._root(drive_id) / "replicas" / replica_id

    def _replica_path(self, drive_id: str, replica_id: str) -> Path | None:
        """Where a copy is, without touching the drive; None off this host."""
        drive = self._drives.get(drive_id)
        return Path(drive.root) / "replicas" / replica_id if drive is not None else None

    def _snapshot_dir(self, drive_id: str, replica_id: str) -> Path:
        return self._root(drive_id) / "snapshots" / replica_id

    # -- drives ------------------------------------------------------------------

    def probe_drive(self, node_address: str, device_path: str) -> DriveInfo:
        self._require_here(node_address)
        path = Path(device_path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DriverError(f"{device_path}: {exc.strerror}") from exc
        with self._lock:
            ours = any(d.device_path == device_path for d in self._drives.values())
        if stat.S_ISDIR(st.st_mode):
            vfs = os.statvfs(path)
            entries = {e for e in os.listdir(path) if e not in (MARKER, "replicas", "snapshots")}
            return DriveInfo(device_path, vfs.f_blocks * vfs.f_frsize, bool(entries) and not ours)
        if stat.S_ISBLK(st.st_mode):
            fd = os.open(path, os.O_RDONLY)
            try:
                size = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0]
            finally:
                os.close(fd)
            rotational = _rotational(st.st_rdev)
        elif stat.S_ISREG(st.st_mode):
            size, rotational = st.st_size, False
            if st.st_blocks and not ours:
                # A file that holds anything at all is someone's data; only a
                # new (sparse, empty) image is taken without confirmation.
                return DriveInfo(device_path, size, True, rotational)
        else:
            raise DriverError(
                f"{device_path} is neither a block device, an image file nor a directory"
            )
        return DriveInfo(device_path, size, not ours and _has_signature(device_path), rotational)

    def format_drive(self, node_address: str, device_path: str, drive_id: str) -> int | None:
        self._require_here(node_address)
        with self._lock:
            for other_id, other in self._drives.items():
                if other.device_path == device_path and other_id != drive_id:
                    raise Refused(
                        f"{device_path} belongs to drive {other_id}", reason="DEVICE_IN_USE"
                    )
            drive = self._drives.get(drive_id)
            if drive is not None:
                self._mount(drive_id, drive)
                return self._usable(drive)
            path = Path(device_path)
            try:
                st = os.stat(path)
            except OSError as exc:
                raise DriverError(f"{device_path}: {exc.strerror}") from exc
            if stat.S_ISDIR(st.st_mode):
                drive = _Drive(device_path, str(path.resolve()), "directory")
            else:
                kind = "block" if stat.S_ISBLK(st.st_mode) else "image"
                drive = _Drive(
                    device_path, str(self.home / "drives" / drive_id), kind, self.filesystem
                )
                device = device_path
                if kind == "image":
                    drive.loop_device = device = _loop_for(device_path)
                mounted = _mounted_from(drive.root)
                if mounted is None:
                    make_filesystem(self.filesystem, device, drive_id)
            self._drives[drive_id] = drive
            self._mount(drive_id, drive)
            self._save()
            return self._usable(drive)

    @staticmethod
    def _usable(drive: _Drive) -> int:
        """What the drive holds for copies: its filesystem's size, or, for a
        directory on a filesystem shared with other data, the room free
        there now and what osd's copies already take."""
        vfs = os.statvfs(drive.root)
        if drive.kind != "directory":
            return vfs.f_blocks * vfs.f_frsize
        held = sum(
            f.stat().st_blocks * 512 for f in Path(drive.root).glob("replicas/*") if f.is_file()
        )
        return vfs.f_bavail * vfs.f_frsize + held

    def _mount(self, drive_id: str, drive: _Drive) -> None:
        root = Path(drive.root)
        if drive.kind != "directory" and _mounted_from(drive.root) is None:
            device = drive.device_path
            if drive.kind == "image":
                device = _loop_for(drive.device_path)
                if device != drive.loop_device:
                    drive.loop_device = device
                    self._save()
            root.mkdir(parents=True, exist_ok=True)
            run_command(
                "mount", device, str(root), what=f"mounting drive {drive_id}", retryable=True
            )
        marker = root / MARKER
        if marker.exists():
            owner = marker.read_text().strip()
            if owner != drive_id:
                raise Refused(
                    f"{drive.device_path} belongs to drive {owner}", reason="DEVICE_IN_USE"
                )
        else:
            (root / "replicas").mkdir(parents=True, exist_ok=True)
            (root / "snapshots").mkdir(exist_ok=True)
            marker.write_text(drive_id + "\n")
            _fsync_dir(root)

    def release_drive(self, node_address: str, device_path: str, drive_id: str) -> None:
        self._require_here(node_address)
        with self._lock:
            drive = self._drives.get(drive_id)
            if drive is None:
                return
            root = Path(drive.root)
            if drive.kind == "directory":
                (root / MARKER).unlink(missing_ok=True)
            else:
                if _mounted_from(drive.root) is not None:
                    run_command(
                        "umount", drive.root, what=f"unmounting drive {drive_id}", retryable=True
                    )
                if drive.kind == "image":
                    for device, (backing, _ro) in loop_devices().items():
                        if backing == str(Path(device_path).resolve()):
                            run_command(
                                "losetup", "-d", device, what="releasing the image's loop device"
                            )
                with contextlib.suppress(OSError):
                    root.rmdir()
            del self._drives[drive_id]
            self._save()

    def measure(
        self, copies: Sequence[CopyRef], snapshots: Sequence[tuple[CopyRef, str]]
    ) -> tuple[dict[CopyRef, int], dict[str, int]]:
        """Bytes measured on this host's drives: what each copy's file holds
        (its allocated blocks), and what each snapshot holds that nothing else
        shares (what deleting it would free). Copies and snapshots off this
        host, or missing, are left out."""
        held: dict[CopyRef, int] = {}
        unique: dict[str, int] = {}
        with self._lock:
            paths = {ref: self._replica_path(*ref) for ref in copies if ref[0] in self._drives}
            snaps = {
                snapshot_id: Path(self._drives[ref[0]].root) / "snapshots" / ref[1] / snapshot_id
                for ref, snapshot_id in snapshots
                if ref[0] in self._drives
            }
        for ref, path in paths.items():
            try:
                if path is not None:
                    held[ref] = path.stat().st_blocks * 512
            except OSError:
                continue
        for snapshot_id, path in snaps.items():
            try:
                unique[snapshot_id] = unshared_bytes(path)
            except OSError:
                continue
        return held, unique

    def drive_usage(self, drive_id: str) -> tuple[int, int]:
        """The filesystem's real (size, free) bytes under a drive."""
        with self._lock:
            vfs = os.statvfs(self._root(drive_id))
        return vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize

    # -- replicas --------------------------------------------------------------

    def create_replica(
        self, drive_id: str, replica_id: str, size_bytes: int, thick: bool = False
    ) -> None:
        with self._lock:
            path = self._replica(drive_id, replica_id)
        if path.exists():
            if path.stat().st_size != size_bytes:
                raise DriverError(f"replica {replica_id} exists on {drive_id} with another size")
            return
        part = path.with_name(path.name + ".part")
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, size_bytes)
                if thick and size_bytes:
                    os.posix_fallocate(fd, 0, size_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(part, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise _storage_error(f"creating replica {replica_id}", exc) from exc

    def delete_replica(self, drive_id: str, replica_id: str) -> None:
        with self._lock:
            path = self._replica(drive_id, replica_id)
            self._require_unattached(path)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".part").unlink(missing_ok=True)

    def purge_replica(self, drive_id: str, replica_id: str) -> None:
        self.delete_replica(drive_id, replica_id)
        shutil.rmtree(self._snapshot_dir(drive_id, replica_id), ignore_errors=True)

    def resize_replica(self, drive_id: str, replica_id: str, size_bytes: int) -> None:
        with self._lock:
            path = self._replica(drive_id, replica_id)
            mounted = [
                a for a in self._attachments.values() if a.file == str(path) and a.mount_path
            ]
            if mounted and path.exists() and size_bytes < path.stat().st_size:
                raise DriverError(
                    f"replica {replica_id} holds a filesystem mounted at "
                    f"{mounted[0].mount_path}, which cannot shrink"
                )
            try:
                os.truncate(path, size_bytes)
            except OSError as exc:
                raise _storage_error(f"resizing replica {replica_id}", exc) from exc
            for a in self._attachments.values():
                if a.file == str(path):
                    run_command("losetup", "-c", a.device, what="refreshing the loop device's size")
                    if a.mount_path and not a.read_only:
                        try:
                            _grow_filesystem(a)
                        except DriverError as exc:
                            # The volume has grown; its filesystem grows when
                            # next mounted, offline if it must.
                            log.warning("volume at %s: %s", a.mount_path, exc)

    def copy_replica(
        self, source_drive_id: str, target_drive_id: str, replica_id: str, size_bytes: int
    ) -> None:
        with self._lock:
            source = self._replica(source_drive_id, replica_id)
            target = self._replica(target_drive_id, replica_id)
            snaps = self._snapshot_dir(source_drive_id, replica_id)
        has_snaps = snaps.is_dir() and any(snaps.iterdir())
        if not source.exists() and not has_snaps:
            raise DriverError(f"drive {source_drive_id} holds no replica {replica_id}")
        if source.exists() and not (target.exists() and target.stat().st_size == size_bytes):
            self._copy(
                source, target, size_bytes, f"copying replica {replica_id}", keep_allocation=True
            )
        self.copy_snapshots(source_drive_id, replica_id, target_drive_id, replica_id)

    def clone_replica(
        self,
        source_drive_id: str,
        source_replica_id: str,
        target_drive_id: str,
        target_replica_id: str,
        size_bytes: int,
    ) -> None:
        with self._lock:
            source = self._replica(source_drive_id, source_replica_id)
            target = self._replica(target_drive_id, target_replica_id)
        if not source.exists():
            raise DriverError(f"drive {source_drive_id} holds no replica {source_replica_id}")
        if target.exists():
            if target.stat().st_size != size_bytes:
                raise DriverError(
                    f"replica {target_replica_id} exists on {target_drive_id} with another size"
                )
            return
        self._copy(source, target, size_bytes, f"cloning replica {source_replica_id}")

    @staticmethod
    def _copy(
        source: Path,
        target: Path,
        size: int | None,
        what: str,
        *,
        keep_allocation: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        try:
            copy_file(source, target, size, keep_allocation=keep_allocation, progress=progress)
        except OSError as exc:
            raise _storage_error(what, exc) from exc

    def _require_unattached(self, path: Path) -> None:
        for volume_id, a in self._attachments.items():
            if a.file == str(path):
                raise DriverError(
                    f"replica {path.name} is attached as {a.device} (volume {volume_id})",
                    retryable=True,
                )

    # -- snapshots ---------------------------------------------------------------

    def shares_blocks(self, drive_id: str) -> bool:
        with self._lock:
            known = self._shares.get(drive_id)
            if known is not None:
                return known
            if drive_id not in self._drives:
                return True
            root = self._root(drive_id)
        shares = reflinks(root)
        with self._lock:
            self._shares[drive_id] = shares
        return shares

    def create_snapshot(
        self,
        drive_id: str,
        replica_id: str,
        snapshot_id: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        with self._lock:
            source = self._replica(drive_id, replica_id)
            folder = self._snapshot_dir(drive_id, replica_id)
        target = folder / snapshot_id
        if target.exists():
            return
        with self._lock:
            for a in self._attachments.values():
                if not a.read_only and [drive_id, replica_id] in a.copies:
                    # Writes reach the attached copy only: it is what the
                    # volume holds now.
                    source = Path(a.file)
        if not source.exists():
            raise DriverError(f"drive {drive_id} holds no replica {replica_id}")
        folder.mkdir(parents=True, exist_ok=True)
        self._copy(source, target, None, f"snapshotting replica {replica_id}", progress=progress)

    def delete_snapshot(self, drive_id: str, snapshot_id: str) -> None:
        with self._lock:
            root = self._root(drive_id)
        for path in (root / "snapshots").glob(f"*/{snapshot_id}"):
            path.unlink(missing_ok=True)

    def revert_replica(self, drive_id: str, replica_id: str, snapshot_id: str) -> None:
        with self._lock:
            path = self._replica(drive_id, replica_id)
            snapshot = self._snapshot_dir(drive_id, replica_id) / snapshot_id
            self._require_unattached(path)
        if not snapshot.exists():
            raise DriverError(f"drive {drive_id} holds no snapshot {snapshot_id} of {replica_id}")
        self._copy(snapshot, path, None, f"reverting replica {replica_id}")

    def clone_snapshot(
        self,
        sources: Sequence[CopyRef],
        snapshot_id: str,
        target_drive_id: str,
        target_replica_id: str,
        size_bytes: int,
    ) -> None:
        with self._lock:
            target = self._replica(target_drive_id, target_replica_id)
            found = [
                self._snapshot_dir(drive_id, replica_id) / snapshot_id
                for drive_id, replica_id in sources
                if drive_id in self._drives
            ]
        if target.exists():
            if target.stat().st_size != size_bytes:
                raise DriverError(
                    f"replica {target_replica_id} exists on {target_drive_id} with another size"
                )
            return
        for snapshot in found:
            if snapshot.exists():
                self._copy(snapshot, target, size_bytes, f"cloning snapshot {snapshot_id}")
                return
        raise DriverError(f"no copy on this host holds snapshot {snapshot_id}")

    def copy_snapshots(
        self,
        source_drive_id: str,
        source_replica_id: str,
        target_drive_id: str,
        target_replica_id: str,
    ) -> None:
        with self._lock:
            source = self._snapshot_dir(source_drive_id, source_replica_id)
            target = self._snapshot_dir(target_drive_id, target_replica_id)
        if not source.is_dir():
            return
        for snap in sorted(source.iterdir()):
            if snap.name.endswith(".part") or (target / snap.name).exists():
                continue
            target.mkdir(parents=True, exist_ok=True)
            self._copy(snap, target / snap.name, None, f"copying snapshot {snap.name}")

    # -- attachments -------------------------------------------------------------

    def attach(
        self,
        node_address: str,
        volume_id: str,
        read_only: bool,
        copies: Sequence[CopyRef] = (),
        mount: Mount | None = None,
    ) -> str:
        self._require_here(node_address)
        mount_path = mount.path if mount is not None else ""
        if mount_path:
            self._require_mount_root(mount_path)
        options = list(mount.options) if mount is not None else []
        with self._lock:
            path = self._primary(volume_id, copies)
            have = self._attachments.get(volume_id)
            if have is not None:
                same = (
                    loop_devices().get(have.device) == (have.file, read_only)
                    and have.file == str(path)
                    and (have.mount_path, have.mount_options) == (mount_path, options)
                )
                if same and (not mount_path or _mounted_from(mount_path) == have.device):
                    return have.device
                # Another mode, copy or mount: set up again.
                self._release(volume_id, have)
            if mount is not None and not _has_signature(str(path)):
                make_filesystem(mount.filesystem, str(path), volume_id)
            argv = ["losetup", "--find", "--show"] + (["--read-only"] if read_only else [])
            device = run_command(*argv, str(path), what=f"attaching volume {volume_id}").strip()
            others = [[d, r] for d, r in copies if str(self._replica_path(d, r)) != str(path)]
            record = _Attachment(
                node_address,
                device,
                str(path),
                read_only,
                others,
                mount.filesystem if mount is not None else "",
                mount_path,
                options,
            )
            self._attachments[volume_id] = record
            self._save()
            if mount_path:
                try:
                    _mount_volume(record)
                except DriverError:
                    self._release(volume_id, record)
                    raise
            return device

    def _require_mount_root(self, path: str) -> None:
        """A volume is mounted only below one of the allowed roots (symbolic
        links followed): a caller with role user must not mount over /etc."""
        real = _resolve(path)
        if not any(real.startswith(root.rstrip("/") + "/") for root in self.mount_roots):
            raise Refused(
                f"{path} is not below an allowed mount root ("
                + (", ".join(self.mount_roots) or "none")
                + "; setting local_mount_roots)",
                reason="MOUNT_PATH_NOT_ALLOWED",
            )

    def _release(self, volume_id: str, have: _Attachment) -> None:
        """Unmounts and removes an attachment's loop device; a writer's other
        copies then take its bytes. A failure leaves the record, so the
        detach is repeated."""
        if have.mount_path and _mounted_from(have.mount_path) == have.device:
            run_command(
                "umount", have.mount_path, what=f"unmounting volume {volume_id}", retryable=True
            )
        found = loop_devices().get(have.device)
        if found is not None and found[0] == have.file:
            run_command("losetup", "-d", have.device, what=f"detaching volume {volume_id}")
        if not have.read_only:
            # Written through one copy: the others take its bytes now.
            for drive_id, replica_id in have.copies:
                if drive_id not in self._drives:
                    continue
                what = f"bringing copy {replica_id} of volume {volume_id} into line"
                other = self._replica(drive_id, replica_id)
                try:
                    if other.exists():
                        sync_file(Path(have.file), other)
                    else:
                        copy_file(Path(have.file), other)
                except OSError as exc:
                    raise _storage_error(what, exc) from exc
        del self._attachments[volume_id]
        self._save()

    def _primary(self, volume_id: str, copies: Sequence[CopyRef]) -> Path:
        missing: list[str] = []
        for drive_id, replica_id in copies:
            if drive_id not in self._drives:
                continue
            path = self._replica(drive_id, replica_id)
            if path.exists():
                return path
            missing.append(replica_id)
        if missing:
            raise DriverError(f"volume {volume_id}'s copy {missing[0]} is missing on its drive")
        raise NoAgent(f"volume {volume_id} has no copy on a drive of this host")

    def detach(self, node_address: str, volume_id: str) -> None:
        self._require_here(node_address)
        with self._lock:
            have = self._attachments.get(volume_id)
            if have is not None:
                self._release(volume_id, have)

    def attach_snapshot(
        self, node_address: str, snapshot_id: str, copies: Sequence[CopyRef]
    ) -> str:
        """A read-only loop device over the snapshot's file on the first copy
        of this host that holds it."""
        self._require_here(node_address)
        with self._lock:
            have = self._snapshot_attachments.get(snapshot_id)
            if have is not None:
                if loop_devices().get(have.device) == (have.file, True):
                    return have.device
                self._release_snapshot(snapshot_id, have)
            path = self._snapshot_file(snapshot_id, copies)
            device = run_command(
                "losetup",
                "--find",
                "--show",
                "--read-only",
                str(path),
                what=f"attaching snapshot {snapshot_id}",
            ).strip()
            self._snapshot_attachments[snapshot_id] = _SnapshotAttachment(
                node_address, device, str(path)
            )
            self._save()
            return device

    def _snapshot_file(self, snapshot_id: str, copies: Sequence[CopyRef]) -> Path:
        here = False
        for drive_id, replica_id in copies:
            if drive_id not in self._drives:
                continue
            here = True
            path = self._snapshot_dir(drive_id, replica_id) / snapshot_id
            if path.exists():
                return path
        if here:
            raise DriverError(f"snapshot {snapshot_id} is missing on this host's drives")
        raise NoAgent(f"snapshot {snapshot_id} has no copy on a drive of this host")

    def _release_snapshot(self, snapshot_id: str, have: _SnapshotAttachment) -> None:
        found = loop_devices().get(have.device)
        if found is not None and found[0] == have.file:
            run_command("losetup", "-d", have.device, what=f"detaching snapshot {snapshot_id}")
        del self._snapshot_attachments[snapshot_id]
        self._save()

    def detach_snapshot(self, node_address: str, snapshot_id: str) -> None:
        self._require_here(node_address)
        with self._lock:
            have = self._snapshot_attachments.get(snapshot_id)
            if have is not None:
                self._release_snapshot(snapshot_id, have)

    def restore_snapshot_attachments(
        self, wanted: Sequence[tuple[str, str, Sequence[CopyRef]]]
    ) -> dict[str, str]:
        """Makes the snapshots' loop devices match the snapshot attachments the
        store records, ``(node_address, snapshot_id, copies)`` each: a missing
        device is set up again, one no longer recorded is removed. Answers
        each restored snapshot's device."""
        out: dict[str, str] = {}
        with self._lock:
            keep: set[str] = set()
            for node_address, snapshot_id, copies in wanted:
                if node_address.lower() not in self.here:
                    continue
                keep.add(snapshot_id)
                try:
                    out[snapshot_id] = self.attach_snapshot(node_address, snapshot_id, copies)
                except DriverError as exc:
                    log.error("restoring the attachment of snapshot %s: %s", snapshot_id, exc)
            for snapshot_id in sorted(set(self._snapshot_attachments) - keep):
                have = self._snapshot_attachments[snapshot_id]
                self.detach_snapshot(have.node_address, snapshot_id)
        return out

    def device_of(self, volume_id: str) -> str | None:
        with self._lock:
            have = self._attachments.get(volume_id)
            return have.device if have is not None else None

    def restore_attachments(
        self, wanted: Sequence[tuple[str, str, bool, Sequence[CopyRef], Mount | None]]
    ) -> dict[str, str]:
        """Makes the loop devices match the attachments the store records,
        ``(node_address, volume_id, read_only, copies, mount)`` each, after a restart:
        a device that is missing is set up again, and one this driver made for
        an attachment no longer recorded is removed. Answers each restored
        volume's device."""
        out: dict[str, str] = {}
        with self._lock:
            keep: set[str] = set()
            for node_address, volume_id, read_only, copies, mount in wanted:
                if node_address.lower() not in self.here:
                    continue
                keep.add(volume_id)
                try:
                    out[volume_id] = self.attach(node_address, volume_id, read_only, copies, mount)
                except DriverError as exc:
                    log.error("restoring the attachment of volume %s: %s", volume_id, exc)
            for volume_id in sorted(set(self._attachments) - keep):
                self.detach(self._attachments[volume_id].node_address, volume_id)
            roots = tuple(str(Path(d.root) / "replicas") + "/" for d in self._drives.values())
            known = {a.device for a in self._attachments.values()}
            for device, (backing, _ro) in loop_devices().items():
                if backing.startswith(roots) and device not in known:
                    log.warning("removing orphan loop device %s over %s", device, backing)
                    run_command("losetup", "-d", device, what="removing an orphan loop device")
        return out


def _rotational(rdev: int) -> bool:
    try:
        sys_path = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/queue/rotational")
        return sys_path.read_text().strip() == "1"
    except OSError:
        return False


def _has_signature(device_path: str) -> bool:
    """Whether a device or image holds a filesystem, RAID member or partition table."""
    try:
        done = subprocess.run(
            ["blkid", "-p", "-o", "export", device_path],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DriverError("probing a device needs blkid (util-linux)") from exc
    if done.returncode == 2:  # nothing found
        return False
    if done.returncode != 0:
        raise DriverError(f"probing {device_path}: {done.stderr.strip()}")
    return True


def _loop_for(image: str) -> str:
    """The loop device over an image file, set up when there is none."""
    resolved = str(Path(image).resolve())
    for device, (backing, _ro) in loop_devices().items():
        if backing == resolved:
            return device
    return run_command(
        "losetup", "--find", "--show", resolved, what=f"setting up {image}", retryable=True
    ).strip()


def make_filesystem(filesystem: str, device: str, owner_id: str) -> None:
    """Makes a volume's filesystem (labelled after its owner; xfs with
    reflink), for the driver and for the CSI node plugin alike."""
    label = f"osd-{owner_id[:8]}"
    if filesystem == "xfs":
        argv = ["mkfs.xfs", "-f", "-q", "-m", "reflink=1", "-L", label, device]
    elif filesystem == "btrfs":
        argv = ["mkfs.btrfs", "-f", "-q", "-L", label, device]
    elif filesystem == "ext4":
        argv = ["mkfs.ext4", "-F", "-q", "-L", label, device]
    else:
        raise DriverError(f"osd makes no {filesystem} filesystem")
    run_command(*argv, what=f"making a {filesystem} filesystem on {device}")


def _resolve(path: str) -> str:
    """``path`` with every symbolic link of its existing part followed."""
    head, rest = Path(path), []
    while not os.path.lexists(head) and head != head.parent:
        rest.append(head.name)
        head = head.parent
    return str(Path(os.path.realpath(head)).joinpath(*reversed(rest)))


def _mount_volume(a: _Attachment) -> None:
    """Mounts an attachment's filesystem where it asks, and grows the
    filesystem to its device (a volume grown while it was not mounted)."""
    point = Path(a.mount_path)
    mounted = _mounted_from(a.mount_path)
    if mounted == a.device:
        return
    if mounted is not None:
        raise DriverError(f"{mounted} is mounted at {a.mount_path} already")
    try:
        point.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DriverError(f"cannot make the mount point {a.mount_path}: {exc.strerror}") from exc
    if a.filesystem == "ext4" and not a.read_only:
        grow_ext4_offline(a.device)
    options = [*a.mount_options, *(["ro"] if a.read_only else [])]
    argv = ["mount", "-t", a.filesystem] + (["-o", ",".join(options)] if options else [])
    run_command(*argv, a.device, a.mount_path, what=f"mounting {a.device} at {a.mount_path}")
    if not a.read_only:
        _grow_filesystem(a)


def grow_ext4_offline(device: str) -> None:
    """Grows an unmounted ext4 filesystem that is smaller than its device (a
    volume grown while it was not mounted, or where online growth was not
    allowed): checked first, as resize2fs requires."""
    out = run_command("dumpe2fs", "-h", device, what=f"reading the filesystem on {device}")
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    try:
        fs_bytes = int(fields["Block count"]) * int(fields["Block size"])
    except (KeyError, ValueError):
        return
    fd = os.open(device, os.O_RDONLY)
    try:
        device_bytes = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0]
    finally:
        os.close(fd)
    if device_bytes - fs_bytes < int(fields["Block size"]) * 8:
        return
    checked = subprocess.run(
        ["e2fsck", "-f", "-p", device], capture_output=True, text=True, timeout=600, check=False
    )
    if checked.returncode not in (0, 1):  # 1: errors found and corrected
        raise DriverError(f"checking the filesystem on {device}: {checked.stdout.strip()[-300:]}")
    run_command("resize2fs", device, what=f"growing the filesystem on {device}")


def _grow_filesystem(a: _Attachment) -> None:
    """Grows a mounted filesystem, online, to the size of its device."""
    if a.filesystem == "ext4":
        run_command("resize2fs", a.device, what=f"growing the filesystem at {a.mount_path}")
    elif a.filesystem == "xfs":
        run_command("xfs_growfs", a.mount_path, what=f"growing the filesystem at {a.mount_path}")
