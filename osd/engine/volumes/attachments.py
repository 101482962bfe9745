"""Attachments: which nodes hold a volume, and how.

At most one node holds a volume READ_WRITE unless the volume has
multi_attach; any number hold it READ_ONLY. Attach records the attachment,
then asks the driver, and takes the record back if the driver fails; detach
asks the driver first and then forgets the record. ReassignAttachments
applies many changes all or nothing: every rule is checked against the
result, the records change in one transaction, and a driver failure puts
back the records and, as far as it can, the devices.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from osd.engine.drivers import CopyRef, DriverError, Mount, StorageDriver
from osd.engine.jobs.kinds.snapshot_copy import copying
from osd.engine.shared import paging
from osd.engine.shared import validation as v
from osd.engine.shared.models import Page
from osd.engine.shared.phased import best_effort, driver_failed
from osd.engine.volumes import access
from osd.engine.volumes.guards import get_snapshot, get_volume, require_serving
from osd.engine.volumes.models import (
    Attached,
    Attachment,
    AttachmentChange,
    AttachmentQuery,
    Detached,
    Reassigned,
    SnapshotAttached,
)
from osd.engine.volumes.phases import snapshot_copies
from osd.engine.volumes.views import attachment_of, snapshot_attachment_of
from osd.enums import (
    Access,
    AllocationState,
    AttachMode,
    DomainState,
    Filesystem,
    NodeState,
    SnapshotState,
    VolumeKind,
)
from osd.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OsdError,
    ResourceExhausted,
)
from osd.store import attachments as repo
from osd.store import nodes as node_repo
from osd.store import volumes as volume_repo
from osd.store.db import Store
from osd.store.models import (
    AttachmentRow,
    DriveRow,
    NodeRow,
    SnapshotAttachmentRow,
    SnapshotRow,
    VolumeRow,
    utcnow,
)
from osd.store.state import bump_generation, current_generation

log = logging.getLogger(__name__)

# StorPool's limit of attached volumes per client.
MAX_ATTACHMENTS_PER_NODE = 1024
MAX_CHANGES = 1000


def device_path(volume_id: str) -> str:
    return f"/dev/osd/{volume_id}"


def node_address(node: NodeRow) -> str:
    return node.management_addresses[0] if node.management_addresses else node.name


MOUNT_OPTIONS_MAX = 32
MOUNT_PATH_MAX = 4096
MOUNT_PATH_RE = re.compile(r"(/[A-Za-z0-9._+:@,=-]+)+")
MOUNT_OPTION_RE = re.compile(r"[A-Za-z0-9_=.:/-]{1,255}")


def mount_violations(path: str, options: Sequence[str]) -> list[FieldViolation]:
    """What is wrong with an attachment's mount path and options."""
    out: list[FieldViolation] = []
    if len(path) > MOUNT_PATH_MAX:
        out.append(FieldViolation("mount_path", f"is {len(path)} characters; at most 4096"))
    elif path and (
        not MOUNT_PATH_RE.fullmatch(path) or any(p in (".", "..") for p in path.split("/"))
    ):
        out.append(
            FieldViolation(
                "mount_path",
                "must be an absolute path such as /mnt/data, from letters, digits and "
                "._+:@,=-, with no . or .. part",
            )
        )
    if len(options) > MOUNT_OPTIONS_MAX:
        out.append(FieldViolation("mount_options", f"has {len(options)} options; at most 32"))
    else:
        for i, option in enumerate(options):
            if not MOUNT_OPTION_RE.fullmatch(option):
                out.append(
                    FieldViolation(
                        f"mount_options[{i}]",
                        f"{option[:80]!r} is not one option of letters, digits and _=.:/-",
                    )
                )
    if options and not path:
        out.append(FieldViolation("mount_options", "needs mount_path"))
    return out


def mount_of(volume: VolumeRow, path: str = "", options: Sequence[str] = ()) -> Mount | None:
    """What the driver is told of a FILE volume's filesystem; None for BLOCK."""
    if volume.kind != VolumeKind.FILE:
        return None
    filesystem = Filesystem(volume.filesystem or Filesystem.EXT4).name.lower()
    return Mount(filesystem, path, tuple(options))


def _check_mount(volume: VolumeRow, mount_path: str) -> None:
    if mount_path and volume.kind != VolumeKind.FILE:
        raise FailedPrecondition(
            f"volume {volume.name} is a BLOCK volume, with no filesystem to mount at "
            f"{mount_path}; attach it without mount_path",
            reason="NOT_A_FILE_VOLUME",
            metadata={"field": "mount_path"},
        )


def _same_mount(row: AttachmentRow, path: str, options: Sequence[str]) -> bool:
    return row.mount_path == path and list(row.mount_options) == list(options)


def snapshot_device_path(snapshot_id: str) -> str:
    return f"/dev/osd/snapshots/{snapshot_id}"


def snapshot_copies_for(s: Session, snap: SnapshotRow, node_id: str) -> list[CopyRef]:
    """The live copies that hold a snapshot's data, those on ``node_id`` first."""
    copies = snapshot_copies(s, snap)
    drives = [d for d, _ in copies]
    on = set(
        s.scalars(select(DriveRow.id).where(DriveRow.id.in_(drives), DriveRow.node_id == node_id))
    )
    return sorted(copies, key=lambda c: c[0] not in on)


def copies_for(s: Session, volume_id: str, node_id: str) -> list[CopyRef]:
    """The volume's live copies for the driver, those on ``node_id`` first."""
    live = [a for a in volume_repo.allocations(s, volume_id) if a.state == AllocationState.ACTIVE]
    live.sort(key=lambda a: a.node_id != node_id)
    return [(a.drive_id, a.id) for a in live]


class AttachmentEngine:
    def __init__(self, store: Store, driver: StorageDriver) -> None:
        self._store = store
        self._driver = driver

    # -- attach ----------------------------------------------------------------

    def attach(
        self,
        volume_id: str,
        node_id: str,
        mode: int,
        *,
        mount_path: str = "",
        mount_options: Sequence[str] = (),
    ) -> Attached:
        v.check_id(volume_id, "volume_id")
        v.check_id(node_id, "node_id")
        if mode not in AttachMode._value2member_map_:
            raise InvalidArgument.field("mode", "is required: READ_WRITE or READ_ONLY")
        options = tuple(mount_options)
        problems = mount_violations(mount_path, options)
        if problems:
            raise InvalidArgument.fields(problems)
        with self._store.read() as s:
            volume = get_volume(s, volume_id)
            access.require_volume(s, volume, Access.WRITE)
            _check_mount(volume, mount_path)
            row = repo.get(s, volume_id, node_id)
            if row is not None and _same_mount(row, mount_path, options) and row.mode == mode:
                return Attached(attachment_of(row), False, current_generation(s))
        with self._store.write() as s:
            generation = bump_generation(s)
            volume = get_volume(s, volume_id)
            access.require_volume(s, volume, Access.WRITE)
            node = _node(s, node_id, "node_id", volume)
            row = repo.get(s, volume_id, node_id)
            if row is not None and not _same_mount(row, mount_path, options):
                raise FailedPrecondition(
                    f"volume {volume.name} is attached to node {node.name} "
                    + (f"mounted at {row.mount_path}" if row.mount_path else "as a device alone")
                    + "; detach it first to attach it otherwise",
                    reason="MOUNT_CONFLICT",
                    metadata={"node_id": node_id, "mount_path": row.mount_path},
                )
            if row is not None and row.mode == mode:
                return Attached(attachment_of(row), False, generation)
            require_serving(volume)
            if mode == AttachMode.READ_WRITE and (job := copying(s, volume)) is not None:
                raise FailedPrecondition(
                    f"volume {volume.name} ({volume.id}) is being snapshotted as a full copy "
                    f"by job {job.id}; attach it read-only, or wait for the job",
                    reason="JOB_IN_PROGRESS",
                    metadata={"job_id": job.id, "volume_id": volume.id},
                )
            check_node(s, node, new=row is None)
            if mode == AttachMode.READ_WRITE and not volume.multi_attach:
                writers = [
                    a.node_id
                    for a in repo.of_volume(s, volume_id)
                    if a.mode == AttachMode.READ_WRITE and a.node_id != node_id
                ]
                if writers:
                    raise _conflict(volume, writers[0])
            previous = row.mode if row is not None else None
            if row is None:
                row = AttachmentRow(
                    volume_id=volume_id,
                    node_id=node_id,
                    mode=int(mode),
                    device_path=device_path(volume_id),
                    attach_time=utcnow(),
                    generation=generation,
                    mount_path=mount_path,
                    mount_options=list(options),
                )
                repo.add(s, row)
            else:
                row.mode = AttachMode(mode)
                row.generation = generation
            # Its copies that are away from now on miss what is written.
            node_repo.mark_stale(s, [volume_id])
            attachment = attachment_of(row)
            address = node_address(node)
            copies = copies_for(s, volume_id, node_id)
            mount = mount_of(volume, mount_path, options)
        try:
            device = self._driver.attach(
                address, volume_id, mode == AttachMode.READ_ONLY, copies, mount
            )
        except DriverError as exc:
            with self._store.write() as s:
                bump_generation(s)
                row = repo.get(s, volume_id, node_id)
                if row is not None and previous is None:
                    repo.remove(s, volume_id, node_id)
                elif row is not None and previous is not None:
                    row.mode = previous
            raise driver_failed("attaching the volume failed and was rolled back", exc) from exc
        if device and device != attachment.device_path:
            generation = self._record_device(volume_id, node_id, device) or generation
            attachment = dataclasses.replace(attachment, device_path=device, generation=generation)
        return Attached(attachment, True, generation)

    def _record_device(self, volume_id: str, node_id: str, device: str) -> int:
        """Records the device the driver attached a volume as; 0 when the
        attachment is gone meanwhile."""
        with self._store.write() as s:
            row = repo.get(s, volume_id, node_id)
            if row is None:
                return 0
            generation = bump_generation(s)
            row.device_path = device
            row.generation = generation
            return generation

    def restore(self) -> None:
        """After a restart, makes the driver's devices match the attachments,
        of volumes and of snapshots, the store records (a driver that keeps
        none has nothing to do)."""
        restore = getattr(self._driver, "restore_attachments", None)
        if restore is None:
            self._restore_snapshots()
            return
        wanted: list[tuple[str, str, bool, list[CopyRef], Mount | None]] = []
        recorded: dict[str, tuple[str, str]] = {}  # volume -> (node, device)
        with self._store.read() as s:
            for row in s.scalars(select(AttachmentRow)):
                node = s.get_one(NodeRow, row.node_id)
                volume = s.get_one(VolumeRow, row.volume_id)
                wanted.append(
                    (
                        node_address(node),
                        row.volume_id,
                        row.mode == AttachMode.READ_ONLY,
                        copies_for(s, row.volume_id, row.node_id),
                        mount_of(volume, row.mount_path, row.mount_options),
                    )
                )
                recorded[row.volume_id] = (row.node_id, row.device_path)
        devices: dict[str, str] = restore(wanted)
        for volume_id, device in devices.items():
            node_id, was = recorded[volume_id]
            if device != was:
                self._record_device(volume_id, node_id, device)
        self._restore_snapshots()

    def _restore_snapshots(self) -> None:
        restore = getattr(self._driver, "restore_snapshot_attachments", None)
        if restore is None:
            return
        wanted: list[tuple[str, str, list[CopyRef]]] = []
        recorded: dict[str, tuple[str, str]] = {}  # snapshot -> (node, device)
        with self._store.read() as s:
            for row in s.scalars(select(SnapshotAttachmentRow)):
                node = s.get_one(NodeRow, row.node_id)
                snap = s.get_one(SnapshotRow, row.snapshot_id)
                copies = snapshot_copies_for(s, snap, row.node_id)
                wanted.append((node_address(node), row.snapshot_id, copies))
                recorded[row.snapshot_id] = (row.node_id, row.device_path)
        devices: dict[str, str] = restore(wanted)
        for snapshot_id, device in devices.items():
            node_id, was = recorded[snapshot_id]
            if device == was:
                continue
            with self._store.write() as s:
                found = repo.snapshot_attachment(s, snapshot_id, node_id)
                if found is not None:
                    found.device_path = device
                    found.generation = bump_generation(s)

    # -- detach ----------------------------------------------------------------

    def detach(self, volume_id: str, node_id: str = "", force: bool = False) -> Detached:
        v.check_id(volume_id, "volume_id")
        if node_id:
            v.check_id(node_id, "node_id")
        with self._store.read() as s:
            access.require_volume(s, get_volume(s, volume_id), Access.WRITE)
            if node_id:
                node = s.get(NodeRow, node_id)
                if node is None:
                    raise NotFound.object("node", "node_id", node_id)
                rows = [r for r in [repo.get(s, volume_id, node_id)] if r is not None]
            else:
                rows = repo.of_volume(s, volume_id)
            targets = [(r.node_id, node_address(s.get_one(NodeRow, r.node_id))) for r in rows]
            if not targets:
                return Detached([], current_generation(s))
        detached: list[str] = []
        busy: tuple[str, DriverError] | None = None
        for target, address in targets:
            try:
                self._driver.detach(address, volume_id)
            except DriverError as exc:
                if not force:
                    busy = (target, exc)
                    break
                log.warning("forced detach of %s from %s: %s", volume_id, target, exc)
            detached.append(target)
        generation = 0
        if detached:
            with self._store.write() as s:
                generation = bump_generation(s)
                for target in detached:
                    repo.remove(s, volume_id, target)
        if busy is not None:
            raise _busy(volume_id, busy[0], busy[1])
        return Detached(detached, generation)

    # -- snapshots ---------------------------------------------------------------

    def attach_snapshot(self, snapshot_id: str, node_id: str) -> SnapshotAttached:
        """Attaches a snapshot to a node, read-only: its data as it was taken."""
        v.check_id(snapshot_id, "snapshot_id")
        v.check_id(node_id, "node_id")
        with self._store.read() as s:
            snap = get_snapshot(s, snapshot_id)
            access.require_snapshot(s, snap, Access.WRITE)
            row = repo.snapshot_attachment(s, snapshot_id, node_id)
            if row is not None:
                return SnapshotAttached(snapshot_attachment_of(row), False, current_generation(s))
        with self._store.write() as s:
            generation = bump_generation(s)
            snap = get_snapshot(s, snapshot_id)
            access.require_snapshot(s, snap, Access.WRITE)
            node = _snapshot_node(s, node_id, snap)
            row = repo.snapshot_attachment(s, snapshot_id, node_id)
            if row is not None:
                return SnapshotAttached(snapshot_attachment_of(row), False, generation)
            if snap.state != SnapshotState.READY:
                raise FailedPrecondition(
                    f"snapshot {snap.name} ({snap.id}) is {SnapshotState(snap.state).name}, "
                    "not READY",
                    reason="SNAPSHOT_NOT_READY",
                    metadata={"snapshot_id": snap.id},
                )
            check_node(s, node, new=True, count=False)
            held = repo.count_on_node(s, node_id) + repo.count_snapshots_on_node(s, node_id)
            if held >= MAX_ATTACHMENTS_PER_NODE:
                raise _too_many(node_id)
            copies = snapshot_copies_for(s, snap, node_id)
            if not copies:
                raise FailedPrecondition(
                    f"snapshot {snap.name} ({snap.id}) has no copy available to read",
                    reason="SNAPSHOT_NOT_AVAILABLE",
                    metadata={"snapshot_id": snap.id},
                )
            row = SnapshotAttachmentRow(
                snapshot_id=snapshot_id,
                node_id=node_id,
                device_path=snapshot_device_path(snapshot_id),
                attach_time=utcnow(),
                generation=generation,
            )
            s.add(row)
            s.flush()
            attachment = snapshot_attachment_of(row)
            address = node_address(node)
        try:
            device = self._driver.attach_snapshot(address, snapshot_id, copies)
        except DriverError as exc:
            with self._store.write() as s:
                bump_generation(s)
                repo.remove_snapshot_attachment(s, snapshot_id, node_id)
            raise driver_failed("attaching the snapshot failed and was rolled back", exc) from exc
        if device and device != attachment.device_path:
            with self._store.write() as s:
                found = repo.snapshot_attachment(s, snapshot_id, node_id)
                if found is not None:
                    generation = bump_generation(s)
                    found.device_path = device
                    found.generation = generation
                    attachment = snapshot_attachment_of(found)
        return SnapshotAttached(attachment, True, generation)

    def detach_snapshot(self, snapshot_id: str, node_id: str = "", force: bool = False) -> Detached:
        """Detaches a snapshot from one node, or from every node."""
        v.check_id(snapshot_id, "snapshot_id")
        if node_id:
            v.check_id(node_id, "node_id")
        with self._store.read() as s:
            access.require_snapshot(s, get_snapshot(s, snapshot_id), Access.WRITE)
            if node_id:
                if s.get(NodeRow, node_id) is None:
                    raise NotFound.object("node", "node_id", node_id)
                found = repo.snapshot_attachment(s, snapshot_id, node_id)
                rows = [found] if found is not None else []
            else:
                rows = repo.of_snapshot(s, snapshot_id)
            targets = [(r.node_id, node_address(s.get_one(NodeRow, r.node_id))) for r in rows]
            if not targets:
                return Detached([], current_generation(s))
        detached: list[str] = []
        busy: tuple[str, DriverError] | None = None
        for target, address in targets:
            try:
                self._driver.detach_snapshot(address, snapshot_id)
            except DriverError as exc:
                if not force:
                    busy = (target, exc)
                    break
                log.warning("forced detach of snapshot %s from %s: %s", snapshot_id, target, exc)
            detached.append(target)
        generation = 0
        if detached:
            with self._store.write() as s:
                generation = bump_generation(s)
                for target in detached:
                    repo.remove_snapshot_attachment(s, snapshot_id, target)
        if busy is not None:
            error = _busy(snapshot_id, busy[0], busy[1])
            error.metadata["snapshot_id"] = error.metadata.pop("volume_id")
            raise error
        return Detached(detached, generation)

    # -- list ------------------------------------------------------------------

    def list(self, query: AttachmentQuery) -> Page[Attachment]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "attachment", query)
        key = pages.after_pair(query.page_token, "v", "n")
        for name in ("volume_id", "node_id", "cluster_id"):
            value = getattr(query, name)
            if value:
                v.check_id(value, name)
        with self._store.read() as s:
            rows, token = pages.take(
                repo.scan(
                    s,
                    volume_id=query.volume_id,
                    node_id=query.node_id,
                    cluster_id=query.cluster_id,
                    after=key,
                    batch=size + 1,
                    readable_by=access.list_filter(),
                ),
                size,
                lambda _r: True,
                lambda r: {"v": r.volume_id, "n": r.node_id},
            )
            return Page([attachment_of(r) for r in rows], token)

    # -- reassign --------------------------------------------------------------

    def reassign(self, changes: Sequence[AttachmentChange]) -> Reassigned:
        _check_changes(changes)
        with self._store.write() as s:
            generation = bump_generation(s)
            plans = [_plan(s, i, change) for i, change in enumerate(changes)]
            _check_node_limits(s, plans)
            for p in plans:
                p.apply(s, generation)
        try:
            self._drive(plans)
        except _StepFailed as failed:
            self._undo(plans)
            if failed.busy:
                raise _busy(
                    changes[failed.index].volume_id, failed.node_id, failed.cause, failed.index
                ) from failed.cause
            error = driver_failed(
                "reassigning attachments failed and was rolled back", failed.cause
            )
            error.metadata["change_index"] = str(failed.index)
            raise error from failed.cause
        for p in plans:
            for node_id, device in p.devices.items():
                generation = self._record_device(p.volume.id, node_id, device) or generation
        with self._store.read() as s:
            out = [attachment_of(r) for p in plans for r in repo.of_volume(s, p.volume.id)]
        return Reassigned(out, generation)

    def _drive(self, plans: Sequence[_ChangePlan]) -> None:
        for p in plans:
            for node_id in sorted(p.removed):
                try:
                    self._driver.detach(p.addresses[node_id], p.volume.id)
                except DriverError as exc:
                    if not p.change.force:
                        raise _StepFailed(p.index, node_id, exc, busy=True) from exc
                    log.warning("forced detach of %s from %s: %s", p.volume.id, node_id, exc)
                p.done_detach.append(node_id)
        for p in plans:
            for node_id in sorted(p.attaching):
                try:
                    device = self._driver.attach(
                        p.addresses[node_id],
                        p.volume.id,
                        p.after[node_id] == AttachMode.READ_ONLY,
                        p.copies[node_id],
                        p.mounts[node_id],
                    )
                except DriverError as exc:
                    raise _StepFailed(p.index, node_id, exc, busy=False) from exc
                p.done_attach.append(node_id)
                if device and device != p.device_paths.get(node_id):
                    p.devices[node_id] = device

    def _undo(self, plans: Sequence[_ChangePlan]) -> None:
        for p in plans:
            for node_id in p.done_attach:
                if node_id in p.before:
                    best_effort(
                        "restoring an attachment's mode",
                        self._driver.attach,
                        p.addresses[node_id],
                        p.volume.id,
                        p.before[node_id] == AttachMode.READ_ONLY,
                        p.copies[node_id],
                        p.mounts[node_id],
                    )
                else:
                    best_effort("detaching", self._driver.detach, p.addresses[node_id], p.volume.id)
            for node_id in p.done_detach:
                best_effort(
                    "re-attaching",
                    self._driver.attach,
                    p.addresses[node_id],
                    p.volume.id,
                    p.before[node_id] == AttachMode.READ_ONLY,
                    p.copies[node_id],
                    p.mounts[node_id],
                )
        with self._store.write() as s:
            generation = bump_generation(s)
            for p in plans:
                p.restore(s, generation)


# -- reassign: plans -----------------------------------------------------------


class _StepFailed(Exception):
    """A driver step of a reassign failed: which change, which node, why."""

    def __init__(self, index: int, node_id: str, cause: DriverError, *, busy: bool) -> None:
        super().__init__(str(cause))
        self.index = index
        self.node_id = node_id
        self.cause = cause
        self.busy = busy


@dataclass
class _ChangePlan:
    index: int
    change: AttachmentChange
    volume: VolumeRow
    before: dict[str, AttachMode]
    after: dict[str, AttachMode]
    addresses: dict[str, str]
    copies: dict[str, list[CopyRef]]
    device_paths: dict[str, str]
    mounts: dict[str, Mount | None]
    done_detach: list[str] = field(default_factory=list)
    done_attach: list[str] = field(default_factory=list)
    # Devices the driver answered that differ from the recorded ones.
    devices: dict[str, str] = field(default_factory=dict)

    @property
    def removed(self) -> set[str]:
        return set(self.before) - set(self.after)

    @property
    def added(self) -> set[str]:
        return set(self.after) - set(self.before)

    @property
    def attaching(self) -> set[str]:
        """New attachments and mode changes."""
        return {n for n, m in self.after.items() if self.before.get(n) != m}

    def apply(self, s: Session, generation: int) -> None:
        self._write(s, self.after, generation)

    def restore(self, s: Session, generation: int) -> None:
        self._write(s, self.before, generation)

    def _write(self, s: Session, wanted: dict[str, AttachMode], generation: int) -> None:
        current = {r.node_id: r for r in repo.of_volume(s, self.volume.id)}
        for node_id, row in current.items():
            if node_id not in wanted:
                repo.remove(s, self.volume.id, node_id)
            elif row.mode != wanted[node_id]:
                row.mode = wanted[node_id]
                row.generation = generation
        for node_id, mode in wanted.items():
            if node_id not in current:
                repo.add(
                    s,
                    AttachmentRow(
                        volume_id=self.volume.id,
                        node_id=node_id,
                        mode=mode,
                        device_path=device_path(self.volume.id),
                        attach_time=utcnow(),
                        generation=generation,
                    ),
                )
        node_repo.mark_stale(s, [self.volume.id])


def _check_changes(changes: Sequence[AttachmentChange]) -> None:
    if not changes:
        raise InvalidArgument.field("changes", "is required: at least one change")
    if len(changes) > MAX_CHANGES:
        raise InvalidArgument.field("changes", f"has {len(changes)} changes; at most {MAX_CHANGES}")
    out: list[FieldViolation] = []
    seen: set[str] = set()
    for i, c in enumerate(changes):
        f = f"changes[{i}]"
        if not c.volume_id or not v.ID_RE.fullmatch(c.volume_id):
            out.append(FieldViolation(f"{f}.volume_id", "is required: a volume id"))
        elif c.volume_id in seen:
            out.append(FieldViolation(f"{f}.volume_id", "is listed in an earlier change"))
        seen.add(c.volume_id)
        lists = (
            ("detach_node_ids", c.detach_node_ids),
            ("read_only_node_ids", c.read_only_node_ids),
            ("read_write_node_ids", c.read_write_node_ids),
        )
        for name, ids in lists:
            for node_id in ids:
                if not v.ID_RE.fullmatch(node_id):
                    out.append(FieldViolation(f"{f}.{name}", f"{node_id[:80]!r} is not an id"))
        if not (c.detach_all or c.detach_node_ids or c.read_only_node_ids or c.read_write_node_ids):
            out.append(FieldViolation(f, "does nothing: name nodes to detach or attach"))
        twice = [
            n for n, k in Counter([*c.read_only_node_ids, *c.read_write_node_ids]).items() if k > 1
        ] + [n for n, k in Counter(c.detach_node_ids).items() if k > 1]
        if twice:
            out.append(FieldViolation(f, f"node {twice[0]} is listed twice"))
    if out:
        raise InvalidArgument.fields(out)


def _plan(s: Session, index: int, c: AttachmentChange) -> _ChangePlan:
    f = f"changes[{index}]"
    volume = get_volume(s, c.volume_id, f"{f}.volume_id")
    access.require_volume(s, volume, Access.WRITE, f"{f}.volume_id")
    nodes: dict[str, NodeRow] = {}
    for name, ids in (
        ("detach_node_ids", c.detach_node_ids),
        ("read_only_node_ids", c.read_only_node_ids),
        ("read_write_node_ids", c.read_write_node_ids),
    ):
        for node_id in ids:
            nodes[node_id] = _node(s, node_id, f"{f}.{name}", volume)
    current = repo.of_volume(s, volume.id)
    rows = {r.node_id: r for r in current}
    for r in current:
        nodes.setdefault(r.node_id, s.get_one(NodeRow, r.node_id))
    before = {r.node_id: r.mode for r in current}
    after = {} if c.detach_all else dict(before)
    for node_id in c.detach_node_ids:
        after.pop(node_id, None)
    after.update({n: AttachMode.READ_ONLY for n in c.read_only_node_ids})
    after.update({n: AttachMode.READ_WRITE for n in c.read_write_node_ids})
    plan = _ChangePlan(
        index=index,
        change=c,
        volume=volume,
        before=before,
        after=after,
        addresses={n: node_address(node) for n, node in nodes.items()},
        copies={n: copies_for(s, volume.id, n) for n in nodes},
        device_paths={r.node_id: r.device_path for r in current},
        mounts={
            n: mount_of(volume, rows[n].mount_path, rows[n].mount_options)
            if n in rows
            else mount_of(volume)
            for n in nodes
        },
    )
    try:
        if plan.attaching:
            require_serving(volume)
        for node_id in sorted(plan.attaching):
            check_node(s, nodes[node_id], new=node_id in plan.added, count=False)
        writers = sorted(n for n, m in after.items() if m == AttachMode.READ_WRITE)
        if len(writers) > 1 and not volume.multi_attach:
            raise _conflict(volume, writers[0])
    except OsdError as exc:
        exc.metadata["change_index"] = str(index)
        raise
    return plan


def _check_node_limits(s: Session, plans: list[_ChangePlan]) -> None:
    delta: Counter[str] = Counter()
    first: dict[str, int] = {}
    for p in plans:
        for n in p.added:
            delta[n] += 1
            first.setdefault(n, p.index)
        for n in p.removed:
            delta[n] -= 1
    for node_id, more in sorted(delta.items()):
        if more > 0 and repo.count_on_node(s, node_id) + more > MAX_ATTACHMENTS_PER_NODE:
            raise _too_many(node_id, first[node_id])


# -- shared rules --------------------------------------------------------------


def _node(s: Session, node_id: str, field_name: str, volume: VolumeRow) -> NodeRow:
    node = s.get(NodeRow, node_id)
    if node is None:
        raise NotFound.object("node", field_name, node_id)
    if node.cluster_id != volume.cluster_id:
        raise InvalidArgument.field(
            field_name, f"node {node.name} ({node_id}) is in another cluster than the volume"
        )
    return node


def _snapshot_node(s: Session, node_id: str, snap: SnapshotRow) -> NodeRow:
    node = s.get(NodeRow, node_id)
    if node is None:
        raise NotFound.object("node", "node_id", node_id)
    if node.cluster_id != snap.cluster_id:
        raise InvalidArgument.field(
            "node_id", f"node {node.name} ({node_id}) is in another cluster than the snapshot"
        )
    return node


def check_node(s: Session, node: NodeRow, *, new: bool, count: bool = True) -> None:
    if node.state != NodeState.ONLINE:
        raise FailedPrecondition(
            f"node {node.name} ({node.id}) is {NodeState(node.state).name}, not ONLINE",
            reason="NODE_NOT_ONLINE",
            metadata={"node_id": node.id, "state": NodeState(node.state).name},
        )
    if new and node.domain_state == DomainState.FLUSH:
        raise FailedPrecondition(
            f"node {node.name} ({node.id}) is being flushed: it takes no new attachments",
            reason="NODE_FLUSHING",
            metadata={"node_id": node.id},
        )
    if new and count and repo.count_on_node(s, node.id) >= MAX_ATTACHMENTS_PER_NODE:
        raise _too_many(node.id)


def _conflict(volume: VolumeRow, writer: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"volume {volume.name} ({volume.id}) is held READ_WRITE by node {writer}; one writer "
        "at a time unless the volume has multi_attach",
        reason="ATTACH_CONFLICT",
        metadata={"node_id": writer, "volume_id": volume.id},
    )


def _too_many(node_id: str, index: int | None = None) -> ResourceExhausted:
    metadata = {"node_id": node_id, "limit": str(MAX_ATTACHMENTS_PER_NODE)}
    if index is not None:
        metadata["change_index"] = str(index)
    return ResourceExhausted(
        f"node {node_id} holds the most attachments it may ({MAX_ATTACHMENTS_PER_NODE})",
        reason="TOO_MANY_ATTACHMENTS",
        metadata=metadata,
    )


def _busy(
    volume_id: str, node_id: str, exc: DriverError, index: int | None = None
) -> FailedPrecondition:
    metadata = {"node_id": node_id, "volume_id": volume_id}
    if index is not None:
        metadata["change_index"] = str(index)
    return FailedPrecondition(
        f"volume {volume_id} is busy on node {node_id}: {exc}; retry with force to detach anyway",
        reason="DEVICE_BUSY",
        metadata=metadata,
    )
