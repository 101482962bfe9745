"""Stored volume, snapshot and attachment rows as domain objects."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from osd.engine.volumes import specs
from osd.engine.volumes.health import health_of
from osd.engine.volumes.models import (
    Attachment,
    Copies,
    Durability,
    Grant,
    MissingCopy,
    Placement,
    Qos,
    Snapshot,
    SnapshotAttachment,
    Source,
    Usage,
    Volume,
)
from osd.enums import (
    Access,
    AttachMode,
    FailureDomain,
    JobKind,
    Provisioning,
    SnapshotState,
    SourceKind,
    VolumeKind,
    VolumeState,
)
from osd.store import grants as grant_repo
from osd.store import snapshots as snap_repo
from osd.store import volumes as repo
from osd.store.models import AttachmentRow, SnapshotAttachmentRow, SnapshotRow, VolumeRow


def durability_of(row: VolumeRow | SnapshotRow) -> Durability:
    return Durability(
        row.durability_type, row.replicas, row.data_fragments, row.redundancy_fragments
    )


def placement_of(row: VolumeRow) -> Placement:
    return specs.placement_from_json(row.placement) or Placement(
        failure_domain=int(FailureDomain.ZONE)
    )


def volume_of(
    row: VolumeRow,
    allocated: int,
    attachments: int,
    snapshots: int,
    copies: Copies | None = None,
    acl: tuple[Grant, ...] = (),
) -> Volume:
    durability = durability_of(row)
    size = row.size_bytes
    factor = row.snapshot_factor
    return Volume(
        id=row.id,
        cluster_id=row.cluster_id,
        name=row.name,
        kind=VolumeKind(row.kind),
        size_bytes=size,
        durability=durability,
        placement=placement_of(row),
        provisioning=Provisioning(row.provisioning),
        snapshot_factor=factor,
        qos=Qos(row.qos_iops_limit, row.qos_bandwidth_limit_bytes),
        labels=dict(row.labels),
        template_id=row.template_id or "",
        source=Source(SourceKind(row.source_kind), row.source_id or ""),
        parent_snapshot_id=row.parent_snapshot_id or "",
        multi_attach=row.multi_attach,
        state=VolumeState(row.state),
        usage=Usage(sum(specs.room_sizes(size, durability, factor)), allocated, row.stored_bytes),
        attachment_count=attachments,
        snapshot_count=snapshots,
        active_job_id=row.active_job_id or "",
        create_time=row.create_time,
        update_time=row.update_time,
        generation=row.generation,
        copies=copies or Copies(durability_copies(row), 0),
        owner=row.owner,
        public=row.public,
        acl=acl,
        filesystem=row.filesystem,
    )


def acls_of(session: Session, ids: Sequence[str]) -> dict[str, tuple[Grant, ...]]:
    """The access list of each volume of ``ids``, in one query."""
    return {
        volume_id: tuple(Grant(g.grantee_kind, g.grantee, Access(g.access)) for g in rows)
        for volume_id, rows in grant_repo.of_volumes(session, ids).items()
    }


def durability_copies(row: VolumeRow) -> int:
    return specs.copies(durability_of(row))


def _copies(row: VolumeRow, views: Sequence[repo.CopyView], repair_job_id: str) -> Copies:
    """The copies of ``row`` (its copy views ``views``): declared, live,
    missing, and the repair job."""
    h = health_of(row, views)
    return Copies(
        declared=h.declared,
        live=h.live,
        missing=tuple(
            MissingCopy(m.index, m.loss, m.allocation_id, m.drive_id, m.node_id) for m in h.missing
        ),
        repair_job_id=repair_job_id,
        degraded_time=row.degraded_time,
    )


# The attributes of a volume row that volume_of reads (every column).
_COLUMNS = tuple(attr.key for attr in sa_inspect(VolumeRow).column_attrs)
# Some 3 KB a volume, and as much again for its message in the servicer.
BUILT_KEPT = 2048


class _Built:
    """The volume last built for each volume id, with what it was built from.

    :func:`volume_of` is a function of its row's columns, its copy views,
    counts, access list and repair job alone: when a read finds all of them
    equal to what a volume was built from, that volume is the answer again.
    So a page read after a change elsewhere in the store builds only the
    volumes that changed. Volumes are only read once built, so threads share
    them."""

    def __init__(self, max_entries: int = BUILT_KEPT) -> None:
        self._max = max_entries
        self._entries: dict[str, tuple[tuple[Any, ...], Volume]] = {}
        self._lock = threading.Lock()

    def get(self, row: VolumeRow, rest: tuple[Any, ...], build: Callable[[], Volume]) -> Volume:
        loaded = vars(row)
        try:
            inputs = (tuple(loaded[c] for c in _COLUMNS), rest)
        except KeyError:  # a column not loaded (expired): built, not kept
            return build()
        entry = self._entries.get(row.id)
        if entry is not None and entry[0] == inputs:
            with self._lock:  # the least recently shown goes first
                if self._entries.get(row.id) is entry:
                    del self._entries[row.id]
                    self._entries[row.id] = entry
            return entry[1]
        volume = build()
        # Copies of what may change in place (labels, placement), so that the
        # inputs kept stay what the volume was built from.
        kept = (tuple(_frozen(v) for v in inputs[0]), rest)
        with self._lock:
            self._entries.pop(row.id, None)
            self._entries[row.id] = (kept, volume)
            while len(self._entries) > self._max:
                del self._entries[next(iter(self._entries))]
        return volume


def _frozen(value: Any) -> Any:
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


_built = _Built()


def volumes_of(session: Session, rows: Sequence[VolumeRow]) -> list[Volume]:
    """Volumes with their usage, counts and copies, in a few queries for the
    lot; a volume whose row and related rows are as they were when it was
    last built is not built again (see :class:`_Built`)."""
    ids = [r.id for r in rows]
    views = repo.copy_views(session, ids)
    counts = repo.attachment_and_snapshot_counts(session, ids)
    repairs = {
        j.target_id: j.id
        for j in repo.unfinished_jobs_of_kind(session, JobKind.VOLUME_REPAIR, target_ids=ids)
    }
    acls = acls_of(session, ids)
    out: list[Volume] = []
    for r in rows:
        mine = views.get(r.id, [])
        attached, snapshots = counts.get(r.id, (0, 0))
        acl = acls.get(r.id, ())
        repair = repairs.get(r.id, "")

        def build(
            r: VolumeRow = r,
            mine: list[repo.CopyView] = mine,
            attached: int = attached,
            snapshots: int = snapshots,
            acl: tuple[Grant, ...] = acl,
            repair: str = repair,
        ) -> Volume:
            return volume_of(
                r,
                # Every allocation of a volume is one of its copy views.
                sum(c.nbytes for c in mine),
                attached,
                snapshots,
                _copies(r, mine, repair),
                acl,
            )

        out.append(_built.get(r, (tuple(mine), attached, snapshots, acl, repair), build))
    return out


def volume_from(session: Session, row: VolumeRow) -> Volume:
    [volume] = volumes_of(session, [row])
    return volume


def attachment_of(row: AttachmentRow) -> Attachment:
    return Attachment(
        volume_id=row.volume_id,
        node_id=row.node_id,
        mode=AttachMode(row.mode),
        device_path=row.device_path,
        attach_time=row.attach_time,
        generation=row.generation,
        mount_path=row.mount_path,
        mount_options=tuple(row.mount_options),
    )


def snapshot_attachment_of(row: SnapshotAttachmentRow) -> SnapshotAttachment:
    return SnapshotAttachment(
        snapshot_id=row.snapshot_id,
        node_id=row.node_id,
        device_path=row.device_path,
        attach_time=row.attach_time,
        generation=row.generation,
    )


def snapshots_of(session: Session, rows: Sequence[SnapshotRow]) -> list[Snapshot]:
    """Snapshots with their space used and dependants.

    A snapshot's space used is what deleting it would free: the bytes of the
    allocations it holds of its own when no other snapshot of its volume
    remains to take them over; otherwise nothing.
    """
    ids = [r.id for r in rows]
    own = snap_repo.own_bytes(session, ids)
    owners = {r.volume_id for r in rows if own.get(r.id)}
    siblings = snap_repo.live_counts(session, owners)
    clones = snap_repo.clone_counts(session, ids)
    images = snap_repo.image_use_counts(session, ids)
    out = []
    for r in rows:
        held = own.get(r.id, 0)
        alone = held and siblings.get(r.volume_id, 0) <= 1
        out.append(
            Snapshot(
                id=r.id,
                cluster_id=r.cluster_id,
                name=r.name,
                auto_named=r.auto_named,
                volume_id=r.volume_id,
                size_bytes=r.size_bytes,
                durability=durability_of(r),
                labels=dict(r.labels),
                image=r.image,
                state=SnapshotState(r.state),
                space_used_bytes=(
                    r.measured_bytes if r.measured_bytes is not None else held if alone else 0
                ),
                clone_count=clones.get(r.id, 0),
                datastore_version_count=images.get(r.id, 0),
                create_time=r.create_time,
                update_time=r.update_time,
                generation=r.generation,
                owner=r.owner,
                parent_snapshot_id=r.parent_snapshot_id or "",
            )
        )
    return out


def snapshot_from(session: Session, row: SnapshotRow) -> Snapshot:
    [snap] = snapshots_of(session, [row])
    return snap
