"""Store-level builders for tests that need objects whose API is not the subject.

Tests of a service go through its API; these builders set up the *other*
objects a test needs (a topology under a volume test, say) directly in the
store, each in its own committed write.
"""

from __future__ import annotations

import uuid

from osd.enums import DriveState, NodeState
from osd.store.db import Store
from osd.store.models import ClusterRow, DriveRow, NodeRow, utcnow
from osd.store.state import bump_generation
from tests.helpers import node_row

GIB = 1 << 30


def make_cluster(store: Store, name: str = "c1") -> str:
    now = utcnow()
    with store.write() as s:
        gen = bump_generation(s)
        row = ClusterRow(
            id=uuid.uuid4().hex,
            name=name,
            labels={},
            block=True,
            file=True,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
    return row.id


def make_node(
    store: Store,
    cluster_id: str,
    name: str,
    zone: str = "z1",
    *,
    state: NodeState = NodeState.ONLINE,
    labels: dict[str, str] | None = None,
) -> str:
    with store.write() as s:
        gen = bump_generation(s)
        row = node_row(cluster_id, name, zone)
        row.state = int(state)
        row.labels = dict(labels or {})
        row.management_addresses = [f"{name}.mgmt"]
        row.storage_addresses = [f"{name}.data"]
        row.generation = gen
        s.add(row)
    return row.id


def make_drive(
    store: Store,
    node_id: str,
    device_path: str = "/dev/sdb",
    total_bytes: int = 100 * GIB,
    *,
    state: DriveState = DriveState.ONLINE,
    journal: bool = False,
    labels: dict[str, str] | None = None,
) -> str:
    now = utcnow()
    with store.write() as s:
        gen = bump_generation(s)
        node = s.get_one(NodeRow, node_id)
        row = DriveRow(
            id=uuid.uuid4().hex,
            cluster_id=node.cluster_id,
            node_id=node_id,
            device_path=device_path,
            description="",
            labels=dict(labels or {}),
            journal=journal,
            state=int(state),
            total_bytes=total_bytes,
            used_bytes=0,
            model="fake",
            serial=uuid.uuid4().hex[:12],
            ssd=True,
            active_job_id=None,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
    return row.id


def make_topology(
    store: Store,
    zones: int = 3,
    nodes_per_zone: int = 1,
    drives_per_node: int = 2,
    drive_bytes: int = 100 * GIB,
    cluster_name: str = "c1",
) -> tuple[str, list[str], list[str]]:
    """A cluster of ``zones`` zones; returns (cluster id, node ids, drive ids)."""
    cluster_id = make_cluster(store, cluster_name)
    nodes: list[str] = []
    drives: list[str] = []
    for z in range(zones):
        for n in range(nodes_per_zone):
            node_id = make_node(store, cluster_id, f"n{z}-{n}", f"zone{z}")
            nodes.append(node_id)
            for d in range(drives_per_node):
                drives.append(make_drive(store, node_id, f"/dev/sd{chr(98 + d)}", drive_bytes))
    return cluster_id, nodes, drives


def make_snapshot(
    store: Store,
    cluster_id: str,
    volume_id: str,
    name: str,
    *,
    image: bool = True,
    state: int = 2,  # SnapshotState.READY
    size_bytes: int = GIB,
) -> str:
    """A snapshot record (by default a READY golden image) with no allocations.

    ``volume_id`` is a plain column: the volume need not exist.
    """
    from osd.enums import DurabilityType
    from osd.store.models import SnapshotRow

    now = utcnow()
    with store.write() as s:
        gen = bump_generation(s)
        row = SnapshotRow(
            id=uuid.uuid4().hex,
            cluster_id=cluster_id,
            name=name,
            auto_named=False,
            volume_id=volume_id,
            size_bytes=size_bytes,
            durability_type=int(DurabilityType.NONE),
            replicas=0,
            data_fragments=0,
            redundancy_fragments=0,
            labels={},
            image=image,
            state=int(state),
            space_used_bytes=0,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
    return row.id


def make_volume_row(
    store: Store,
    cluster_id: str,
    name: str,
    *,
    size_bytes: int = GIB,
    datastore_version_id: str | None = None,
    parent_snapshot_id: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """A bare UP volume record with no allocations; with ``datastore_version_id``
    it stands for a volume provisioned from that version."""
    from osd.enums import DurabilityType, Provisioning, SourceKind, VolumeKind, VolumeState
    from osd.store.models import VolumeRow

    now = utcnow()
    if datastore_version_id is not None:
        source_kind, source_id = SourceKind.DATASTORE_VERSION, datastore_version_id
    elif parent_snapshot_id is not None:
        source_kind, source_id = SourceKind.SNAPSHOT, parent_snapshot_id
    else:
        source_kind, source_id = SourceKind.NONE, None
    with store.write() as s:
        gen = bump_generation(s)
        row = VolumeRow(
            id=uuid.uuid4().hex,
            cluster_id=cluster_id,
            name=name,
            kind=int(VolumeKind.BLOCK),
            size_bytes=size_bytes,
            durability_type=int(DurabilityType.NONE),
            replicas=0,
            data_fragments=0,
            redundancy_fragments=0,
            placement={},
            provisioning=int(Provisioning.THIN),
            snapshot_factor=1.0,
            qos_iops_limit=0,
            qos_bandwidth_limit_bytes=0,
            labels=dict(labels or {}),
            source_kind=int(source_kind),
            source_id=source_id,
            parent_snapshot_id=parent_snapshot_id,
            datastore_version_id=datastore_version_id,
            multi_attach=False,
            state=int(VolumeState.UP),
            stored_bytes=0,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
    return row.id


def make_allocation(
    store: Store,
    drive_id: str,
    *,
    volume_id: str | None = None,
    snapshot_id: str | None = None,
    nbytes: int = GIB,
    index: int = 0,
    state: int = 2,  # AllocationState.ACTIVE
) -> str:
    """An allocation on a drive, reserved through the books (used bytes follow)."""
    from osd.store import allocations

    with store.write() as s:
        bump_generation(s)
        drive = s.get_one(DriveRow, drive_id)
        row = allocations.reserve(
            s,
            drive_id=drive_id,
            node_id=drive.node_id,
            nbytes=nbytes,
            index=index,
            state=state,
            volume_id=volume_id,
            snapshot_id=snapshot_id,
        )
    return row.id


def place_volume_in_pool(
    store: Store, volume_id: str, pool_id: str | None, tail_pool_id: str | None = None
) -> None:
    """Points a volume record's placement at pools (as VolumeService would)."""
    from osd.store.models import VolumeRow

    with store.write() as s:
        bump_generation(s)
        row = s.get_one(VolumeRow, volume_id)
        row.pool_id = pool_id
        row.tail_pool_id = tail_pool_id
        row.placement = {"pool_id": pool_id or "", "tail_pool_id": tail_pool_id or ""}


def make_template_row(
    store: Store, cluster_id: str, name: str, placement: dict[str, str] | None = None
) -> str:
    """A template record whose placement JSON is ``placement``."""
    from osd.store.models import TemplateRow

    now = utcnow()
    with store.write() as s:
        gen = bump_generation(s)
        row = TemplateRow(
            id=uuid.uuid4().hex,
            cluster_id=cluster_id,
            name=name,
            labels={},
            kind=0,
            size_bytes=0,
            durability_type=0,
            replicas=0,
            data_fragments=0,
            redundancy_fragments=0,
            placement=dict(placement or {}),
            provisioning=0,
            snapshot_factor=0.0,
            qos_iops_limit=0,
            qos_bandwidth_limit_bytes=0,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
    return row.id


def make_job_row(
    store: Store,
    cluster_id: str,
    target_id: str,
    *,
    kind: int = 5,  # JobKind.NODE_DRAIN
    target_kind: int = 2,  # ObjectKind.NODE
    state: int = 3,  # JobState.PAUSED
) -> str:
    """An unfinished job record targeting an object. PAUSED by default, so no job
    runner picks it up or adopts it while a test looks at what it holds."""
    from osd.store.models import JobRow

    now = utcnow()
    with store.write() as s:
        gen = bump_generation(s)
        row = JobRow(
            id=uuid.uuid4().hex,
            cluster_id=cluster_id,
            kind=kind,
            target_kind=target_kind,
            target_id=target_id,
            related=[],
            state=state,
            cancel_requested=False,
            pause_requested=False,
            spec={},
            checkpoint={},
            progress_done_bytes=0,
            progress_total_bytes=0,
            progress_done_steps=0,
            progress_total_steps=0,
            progress_message="",
            error_code=0,
            error_reason="",
            error_message="",
            restart_count=0,
            owner=None,
            heartbeat_time=None,
            create_time=now,
            start_time=now,
            update_time=now,
            end_time=None,
            generation=gen,
        )
        s.add(row)
    return row.id


def make_pool(
    store: Store,
    cluster_id: str,
    name: str,
    drive_ids: list[str] | tuple[str, ...] = (),
    node_ids: list[str] | tuple[str, ...] = (),
) -> str:
    """A pool record with drives and whole nodes as members."""
    from osd.store.models import PoolDriveRow, PoolNodeRow, PoolRow

    now = utcnow()
    with store.write() as s:
        gen = bump_generation(s)
        row = PoolRow(
            id=uuid.uuid4().hex,
            cluster_id=cluster_id,
            name=name,
            labels={},
            active_job_id=None,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
        s.flush()
        s.add_all(PoolDriveRow(pool_id=row.id, drive_id=d) for d in drive_ids)
        s.add_all(PoolNodeRow(pool_id=row.id, node_id=n) for n in node_ids)
    return row.id


def make_volume(
    store: Store,
    cluster_id: str,
    drive_ids: list[str],
    size_bytes: int = GIB,
    *,
    name: str | None = None,
    durability: int | None = None,
    data_fragments: int = 0,
    redundancy_fragments: int = 0,
    failure_domain: int = 3,  # FailureDomain.ZONE
    pool_id: str | None = None,
    driver: object | None = None,
) -> str:
    """An UP volume with one ACTIVE allocation of ``size_bytes`` per drive of
    ``drive_ids`` (copy i on drive i), reserved through the books.

    ``durability`` defaults to REPLICATE with one replica per drive (NONE for a
    single drive). With ``driver`` (a FakeDriver), each copy is also created
    in the driver, named by its allocation id as the volume engine names them.
    """
    from osd.enums import DurabilityType, Provisioning, SourceKind, VolumeKind, VolumeState
    from osd.store import allocations
    from osd.store.models import VolumeRow

    if durability is None:
        durability = DurabilityType.REPLICATE if len(drive_ids) > 1 else DurabilityType.NONE
    now = utcnow()
    copies: list[tuple[str, str, int]] = []
    with store.write() as s:
        gen = bump_generation(s)
        row = VolumeRow(
            id=uuid.uuid4().hex,
            cluster_id=cluster_id,
            name=name or f"vol-{uuid.uuid4().hex[:8]}",
            kind=int(VolumeKind.BLOCK),
            size_bytes=size_bytes,
            durability_type=int(durability),
            replicas=len(drive_ids) if durability == DurabilityType.REPLICATE else 0,
            data_fragments=data_fragments,
            redundancy_fragments=redundancy_fragments,
            placement={
                "pool_id": pool_id or "",
                "tail_pool_id": "",
                "failure_domain": failure_domain,
                "node_selector": {},
                "drive_selector": {},
            },
            pool_id=pool_id,
            tail_pool_id=None,
            provisioning=int(Provisioning.THICK),
            snapshot_factor=1.0,
            qos_iops_limit=0,
            qos_bandwidth_limit_bytes=0,
            labels={},
            source_kind=int(SourceKind.NONE),
            source_id=None,
            multi_attach=False,
            state=int(VolumeState.UP),
            stored_bytes=0,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
        s.flush()
        for index, drive_id in enumerate(drive_ids):
            drive = s.get_one(DriveRow, drive_id)
            alloc = allocations.reserve(
                s,
                drive_id=drive_id,
                node_id=drive.node_id,
                nbytes=size_bytes,
                index=index,
                state=2,  # AllocationState.ACTIVE
                volume_id=row.id,
            )
            copies.append((drive_id, alloc.id, size_bytes))
    if driver is not None:
        for drive_id, replica_id, nbytes in copies:
            driver.create_replica(drive_id, replica_id, nbytes)  # type: ignore[attr-defined]
    return row.id
