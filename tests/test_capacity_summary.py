"""VolumeService.GetCapacitySummary: exact figures and a constant number of statements.

Runs on SQLite and PostgreSQL. The expected figures are computed in this
file from the rows the store holds (a Python model of the documented rules),
and again with the per-cluster store functions the summary used before it
was grouped; the answer over the wire must equal both.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, delete, event, func, select, update

from osd.engine.shared.allocation_math import allocation_sizes
from osd.engine.shared.models import Capacity
from osd.engine.volumes.models import CapacitySummary, ClusterCapacity, PoolCapacity
from osd.enums import (
    AllocationState,
    DriveState,
    DurabilityType,
    JobKind,
    JobState,
    NodeState,
    ObjectKind,
    Provisioning,
)
from osd.store import allocations
from osd.store import clusters as cluster_repo
from osd.store import pools as pool_repo
from osd.store import volumes as volume_repo
from osd.store.db import Store
from osd.store.models import (
    AllocationRow,
    ClusterRow,
    DriveRow,
    JobRow,
    NodeRow,
    PoolDriveRow,
    PoolNodeRow,
    PoolRow,
    SnapshotRow,
    VolumeRow,
)
from osd.store.state import bump_generation, current_generation
from osd.v1 import common_pb2
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import (
    make_cluster,
    make_drive,
    make_job_row,
    make_node,
    make_pool,
    make_snapshot,
    make_topology,
    make_volume,
    make_volume_row,
)
from tests.volume_helpers import GIB, create, fails, volumes

MIB = 1 << 20


# -- building a store --------------------------------------------------------------


def set_volume(store: Store, volume_id: str, **values: Any) -> None:
    """Overwrites columns of a volume record (layouts the factories do not make)."""
    with store.write() as s:
        bump_generation(s)
        s.execute(update(VolumeRow).where(VolumeRow.id == volume_id).values(**values))


def reserve(
    store: Store,
    drive_id: str,
    volume_id: str,
    nbytes: int,
    *,
    state: AllocationState = AllocationState.ACTIVE,
    job_id: str | None = None,
    index: int = 0,
) -> None:
    """An allocation through the books, room or not (used bytes follow)."""
    with store.write() as s:
        bump_generation(s)
        drive = s.get_one(DriveRow, drive_id)
        allocations.reserve(
            s,
            drive_id=drive_id,
            node_id=drive.node_id,
            nbytes=nbytes,
            index=index,
            state=state,
            volume_id=volume_id,
            job_id=job_id,
            check_room=False,
        )


def build_alpha(daemon: RunningDaemon, other_cluster_drive: str) -> str:
    """A cluster with every case the summary must tell apart; returns its id."""
    store = daemon.store
    cid = make_cluster(store, "alpha")
    n0 = make_node(store, cid, "n0", "z0")
    n1 = make_node(store, cid, "n1", "z1")
    n2 = make_node(store, cid, "n2", "z2")
    offline = make_node(store, cid, "n3", "z0", state=NodeState.OFFLINE)
    maintenance = make_node(store, cid, "n4", "z1", state=NodeState.MAINTENANCE)
    draining = make_node(store, cid, "n5", "z2", state=NodeState.DRAINING)
    # Data drives that take data, of several sizes.
    a0 = make_drive(store, n0, "/dev/sdb", 100 * GIB)
    a1 = make_drive(store, n1, "/dev/sdb", 120 * GIB)
    a2 = make_drive(store, n2, "/dev/sdb", 80 * GIB)
    a3 = make_drive(store, n0, "/dev/sdc", 50 * GIB)
    # Drives that take none: a journal, every other drive state, and the
    # ONLINE drives of nodes that are not ONLINE.
    journal = make_drive(store, n0, "/dev/sdj", 10 * GIB, journal=True)
    failed = make_drive(store, n1, "/dev/sdc", 30 * GIB, state=DriveState.FAILED)
    ejected = make_drive(store, n1, "/dev/sdd", 31 * GIB, state=DriveState.EJECTED)
    adding = make_drive(store, n2, "/dev/sdc", 32 * GIB, state=DriveState.ADDING)
    soft = make_drive(store, n2, "/dev/sdd", 33 * GIB, state=DriveState.SOFT_EJECTING)
    replacing = make_drive(store, n2, "/dev/sde", 34 * GIB, state=DriveState.REPLACING)
    make_drive(store, offline, "/dev/sdb", 40 * GIB)
    make_drive(store, maintenance, "/dev/sdb", 41 * GIB)
    make_drive(store, draining, "/dev/sdb", 42 * GIB)
    # An over-committed drive: used above total, so it has no free bytes.
    tight = make_drive(store, n1, "/dev/sde", GIB)

    # Pools: whole nodes (an ONLINE one with a journal and failed drives, an
    # OFFLINE one), drives alone (one also a member through its node, a
    # journal, an ejected one, and a drive of another cluster), and none.
    make_pool(store, cid, "pnodes", node_ids=[n0, offline])
    make_pool(
        store,
        cid,
        "pdrives",
        drive_ids=[a0, a1, a2, journal, ejected, failed, tight, other_cluster_drive],
        node_ids=[n2],
    )
    make_pool(store, cid, "pempty")
    make_pool(store, cid, "pstates", drive_ids=[adding, soft, replacing, a2])

    # Volumes of every durability, sizes off the sector, snapshot factors,
    # both provisionings, and some layouts shared by several volumes.
    replicated = [make_volume(store, cid, [a0, a1, a2], 4 * GIB, name=f"rep-{i}") for i in range(3)]
    set_volume(store, replicated[1], provisioning=Provisioning.THIN)
    odd = make_volume(store, cid, [a0, a1], 1_000_003, name="rep-odd")
    set_volume(store, odd, snapshot_factor=1.3)
    erasure = make_volume(
        store,
        cid,
        [a0, a1, a2],
        GIB,
        name="ec",
        durability=int(DurabilityType.ERASURE),
        data_fragments=2,
        redundancy_fragments=1,
    )
    set_volume(store, erasure, size_bytes=3 * GIB + 7, snapshot_factor=1.25)
    single = make_volume(store, cid, [a3], 2 * GIB, name="single")
    set_volume(store, single, snapshot_factor=0.5)
    for i in range(2):
        bare = make_volume_row(store, cid, f"bare-{i}", size_bytes=5 * MIB + 1)
        set_volume(store, bare, snapshot_factor=2.0)
    reserve(store, tight, single, 2 * GIB)
    make_snapshot(store, cid, replicated[0], "s1")
    make_snapshot(store, cid, replicated[0], "s2")
    make_snapshot(store, cid, "0" * 32, "gone")  # of a volume deleted since

    # Repair reservations: PENDING allocations of an unfinished VOLUME_REPAIR
    # job count; an ACTIVE one of it, one of a finished repair and one of
    # another kind of job do not.
    repair = make_job_row(
        store, cid, replicated[2], kind=JobKind.VOLUME_REPAIR, target_kind=ObjectKind.VOLUME
    )
    done = make_job_row(
        store,
        cid,
        replicated[1],
        kind=JobKind.VOLUME_REPAIR,
        target_kind=ObjectKind.VOLUME,
        state=JobState.DONE,
    )
    move = make_job_row(
        store, cid, replicated[0], kind=JobKind.VOLUME_MOVE, target_kind=ObjectKind.VOLUME
    )
    reserve(store, a3, replicated[2], 4 * GIB, state=AllocationState.PENDING, job_id=repair)
    reserve(store, a3, replicated[2], 3 * MIB, state=AllocationState.PENDING, job_id=repair)
    reserve(store, a3, replicated[2], 5 * MIB, state=AllocationState.ACTIVE, job_id=repair)
    reserve(store, a3, replicated[1], 7 * MIB, state=AllocationState.PENDING, job_id=done)
    reserve(store, a3, replicated[0], 9 * MIB, state=AllocationState.PENDING, job_id=move)
    return cid


def build_world(daemon: RunningDaemon) -> tuple[str, str, str]:
    """alpha (every case), beta (volumes made over the wire), gamma (empty)."""
    beta, beta_nodes, beta_drives = make_topology(daemon.store, cluster_name="beta")
    alpha = build_alpha(daemon, beta_drives[0])
    make_pool(daemon.store, beta, "pb", node_ids=beta_nodes[:2])
    stub = volumes(daemon)
    create(stub, beta, "a", size="10G", replicas=3)
    create(stub, beta, "b", size="3G", replicas=2, provisioning=pb.PROVISIONING_THIN)
    make_snapshot(daemon.store, beta, "1" * 32, "s")
    gamma = make_cluster(daemon.store, "gamma")
    return alpha, beta, gamma


# -- what the summary must answer -----------------------------------------------------


def modelled(store: Store, cluster_id: str = "") -> list[pb.ClusterCapacity]:
    """The summary computed in Python from every row of the store."""
    with store.read() as s:
        clusters = sorted(s.scalars(select(ClusterRow)), key=lambda c: c.name)
        node_state = {n.id: n.state for n in s.scalars(select(NodeRow))}
        drives = list(s.scalars(select(DriveRow)))
        pools = list(s.scalars(select(PoolRow)))
        pool_drives = list(s.scalars(select(PoolDriveRow)))
        pool_nodes = list(s.scalars(select(PoolNodeRow)))
        vols = list(s.scalars(select(VolumeRow)))
        snapshots = list(s.scalars(select(SnapshotRow)))
        allocs = list(s.scalars(select(AllocationRow)))
        jobs = list(s.scalars(select(JobRow)))
    by_id = {d.id: d for d in drives}

    def takes_data(d: DriveRow) -> bool:
        return (
            d.state == DriveState.ONLINE
            and not d.journal
            and node_state[d.node_id] == NodeState.ONLINE
        )

    def free(d: DriveRow) -> int:
        return max(d.total_bytes - d.used_bytes, 0)

    def members(pool_id: str) -> set[str]:
        alone = {
            m.drive_id
            for m in pool_drives
            if m.pool_id == pool_id and by_id[m.drive_id].state != DriveState.EJECTED
        }
        nodes = {m.node_id for m in pool_nodes if m.pool_id == pool_id}
        through = {
            d.id
            for d in drives
            if d.node_id in nodes and not d.journal and d.state != DriveState.EJECTED
        }
        return alone | through

    out = []
    for c in clusters:
        if cluster_id and c.id != cluster_id:
            continue
        mine = [d for d in drives if d.cluster_id == c.id and takes_data(d)]
        cvols = [v for v in vols if v.cluster_id == c.id]
        repairs = {
            j.id
            for j in jobs
            if j.cluster_id == c.id
            and j.kind == JobKind.VOLUME_REPAIR
            and not JobState(j.state).final
        }
        pool_out = []
        for p in sorted((p for p in pools if p.cluster_id == c.id), key=lambda p: p.name):
            live = [by_id[d] for d in members(p.id) if takes_data(by_id[d])]
            pool_out.append(
                pb.PoolCapacity(
                    pool_id=p.id,
                    pool_name=p.name,
                    capacity=common_pb2.Capacity(
                        total_bytes=sum(d.total_bytes for d in live),
                        used_bytes=sum(d.used_bytes for d in live),
                        free_bytes=sum(d.total_bytes - d.used_bytes for d in live),
                    ),
                    available_bytes=sum(free(d) for d in live if d.cluster_id == c.id),
                )
            )
        total = sum(d.total_bytes for d in mine)
        used = sum(d.used_bytes for d in mine)
        out.append(
            pb.ClusterCapacity(
                cluster_id=c.id,
                cluster_name=c.name,
                capacity=common_pb2.Capacity(
                    total_bytes=total, used_bytes=used, free_bytes=total - used
                ),
                available_bytes=sum(free(d) for d in mine),
                logical_bytes=sum(v.size_bytes for v in cvols),
                provisioned_bytes=sum(
                    sum(
                        allocation_sizes(
                            v.size_bytes,
                            v.durability_type,
                            v.replicas,
                            v.data_fragments,
                            v.redundancy_fragments,
                            v.snapshot_factor,
                        )
                    )
                    for v in cvols
                ),
                volume_count=len(cvols),
                snapshot_count=sum(1 for x in snapshots if x.cluster_id == c.id),
                repair_reserved_bytes=sum(
                    a.bytes
                    for a in allocs
                    if a.state == AllocationState.PENDING and a.job_id in repairs
                ),
                pools=pool_out,
            )
        )
    return out


def per_cluster(store: Store, cluster_id: str = "") -> CapacitySummary:
    """The summary as it was computed before it was grouped: the per-cluster and
    per-pool store functions, several statements for each."""
    with store.read() as s:
        out = []
        for c in volume_repo.cluster_rows(s, cluster_id):
            total, used = cluster_repo.capacity(s, c.id)
            count, logical = volume_repo.volume_totals(s, c.id)
            provisioned = sum(
                sum(allocation_sizes(*layout)) for layout in cluster_repo.volume_layouts(s, c.id)
            )
            pools = []
            for p in volume_repo.pool_rows(s, c.id):
                p_total, p_used = pool_repo.capacity(s, p.id)
                members = volume_repo.pool_member_select(p.id)
                pools.append(
                    PoolCapacity(
                        pool_id=p.id,
                        pool_name=p.name,
                        capacity=Capacity(p_total, p_used),
                        available_bytes=volume_repo.available_bytes(s, c.id, members),
                    )
                )
            out.append(
                ClusterCapacity(
                    cluster_id=c.id,
                    cluster_name=c.name,
                    capacity=Capacity(total, used),
                    available_bytes=volume_repo.available_bytes(s, c.id),
                    logical_bytes=logical,
                    provisioned_bytes=provisioned,
                    volume_count=count,
                    snapshot_count=volume_repo.snapshot_total(s, c.id),
                    pools=pools,
                    repair_reserved_bytes=volume_repo.repair_reserved_bytes(s, c.id),
                )
            )
        return CapacitySummary(out, current_generation(s))


def summary(daemon: RunningDaemon, cluster_id: str = "") -> pb.GetCapacitySummaryResponse:
    return volumes(daemon).GetCapacitySummary(
        pb.GetCapacitySummaryRequest(cluster_id=cluster_id), timeout=30
    )


# -- exact figures ----------------------------------------------------------------------


def test_the_summary_answers_exactly_what_the_rows_say(daemon: RunningDaemon) -> None:
    alpha, beta, gamma = build_world(daemon)
    store = daemon.store
    expected = modelled(store)
    # The model is not vacuous: every rule it applies changes a figure here.
    a = next(c for c in expected if c.cluster_id == alpha)
    assert a.capacity.total_bytes == (100 + 120 + 80 + 50 + 1) * GIB
    # The over-committed drive adds its negative free space to free, not to available.
    assert a.available_bytes > a.capacity.total_bytes - a.capacity.used_bytes > 0
    assert a.volume_count == 8 and a.snapshot_count == 3
    assert a.repair_reserved_bytes == 4 * GIB + 3 * MIB
    assert a.provisioned_bytes not in (a.logical_bytes, 0)
    assert [p.pool_name for p in a.pools] == ["pdrives", "pempty", "pnodes", "pstates"]
    pdrives = a.pools[0]
    assert pdrives.capacity.total_bytes > pdrives.available_bytes > 0
    assert a.pools[1].capacity.total_bytes == 0

    answer = summary(daemon)
    assert [c.cluster_name for c in answer.clusters] == ["alpha", "beta", "gamma"]
    assert list(answer.clusters) == expected
    with store.read() as s:
        assert answer.generation == current_generation(s)
    for cluster_id in (alpha, beta, gamma):
        one = summary(daemon, cluster_id)
        assert list(one.clusters) == [c for c in expected if c.cluster_id == cluster_id]

    # And the same as the per-cluster store functions answer, field by field.
    engine = daemon.daemon.engine.volumes
    assert engine.capacity("") == per_cluster(store)
    for cluster_id in (alpha, beta, gamma):
        assert engine.capacity(cluster_id) == per_cluster(store, cluster_id)


def test_an_empty_store_has_no_clusters(daemon: RunningDaemon) -> None:
    answer = summary(daemon)
    assert list(answer.clusters) == []
    with daemon.store.read() as s:
        assert answer.generation == current_generation(s)


# -- a constant number of statements ---------------------------------------------------------


def _engines(store: Store) -> list[Engine]:
    """The engines the store's sessions run on: on SQLite reads use an engine
    of their own, besides ``store.engine``, which writes."""
    with store.read() as s:
        reader = s.get_bind()
    assert isinstance(reader, Engine)
    return [store.engine] if reader is store.engine else [store.engine, reader]


@contextlib.contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements this thread runs on the store meanwhile (the
    daemon's own background work on other threads is not counted)."""
    seen: list[str] = []
    me = threading.get_ident()

    def on_execute(*args: Any) -> None:
        if threading.get_ident() == me:
            seen.append(args[2])

    engines = _engines(store)
    for e in engines:
        event.listen(e, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        for e in engines:
            event.remove(e, "before_cursor_execute", on_execute)


def populate(daemon: RunningDaemon, i: int) -> str:
    """A cluster with nodes, drives, two pools, volumes, a snapshot and a repair."""
    store = daemon.store
    cid, nodes, drives = make_topology(
        store, zones=2, drives_per_node=2, drive_bytes=10 * GIB, cluster_name=f"c{i:03d}"
    )
    pool = make_pool(store, cid, "pa", node_ids=nodes[:1])
    make_pool(store, cid, "pb", drive_ids=drives[1:3])
    first = make_volume(store, cid, drives[:2], GIB + i, pool_id=pool)
    make_volume(store, cid, drives[2:3], 2 * GIB)
    set_volume(store, first, snapshot_factor=1.5)
    make_snapshot(store, cid, first, "s")
    job = make_job_row(store, cid, first, kind=JobKind.VOLUME_REPAIR, target_kind=ObjectKind.VOLUME)
    reserve(store, drives[3], first, MIB, state=AllocationState.PENDING, job_id=job)
    return cid


def test_the_summary_runs_as_many_statements_for_30_clusters_as_for_1(
    daemon: RunningDaemon,
) -> None:
    engine = daemon.daemon.engine.volumes
    first = populate(daemon, 0)
    with statements(daemon.store) as one:
        small = engine.capacity("")
    with statements(daemon.store) as one_by_id:
        engine.capacity(first)
    for i in range(1, 30):
        populate(daemon, i)
    with statements(daemon.store) as thirty:
        large = engine.capacity("")
    with statements(daemon.store) as thirty_by_id:
        engine.capacity(first)
    assert len(small.clusters) == 1 and len(large.clusters) == 30
    assert all(len(c.pools) == 2 and c.volume_count == 2 for c in large.clusters)
    assert all(c.repair_reserved_bytes == MIB for c in large.clusters)
    assert 0 < len(one) == len(thirty), (one, thirty)
    assert 0 < len(one_by_id) == len(thirty_by_id), (one_by_id, thirty_by_id)
    assert len(thirty) <= 12, thirty
    # Grouping did not change a figure.
    assert large == per_cluster(daemon.store)


# -- errors ---------------------------------------------------------------------------------


def test_an_unknown_or_malformed_cluster_id_is_refused(daemon: RunningDaemon) -> None:
    make_topology(daemon.store)
    stub = volumes(daemon)
    err = fails(stub.GetCapacitySummary, pb.GetCapacitySummaryRequest(cluster_id="ab" * 16))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["cluster_id"])
    err = fails(stub.GetCapacitySummary, pb.GetCapacitySummaryRequest(cluster_id="nope"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["cluster_id"])


# -- the layout counts the store keeps ----------------------------------------------


def counted_layouts(store: Store) -> dict[str, list[tuple[Any, int]]]:
    with store.read() as s:
        kept = cluster_repo.volume_layout_counts(s)
    return {cid: sorted(layouts) for cid, layouts in kept.items()}


def grouped_layouts(store: Store) -> dict[str, list[tuple[Any, int]]]:
    """The same, grouped from the volumes themselves."""
    v = VolumeRow
    layout = (
        v.size_bytes,
        v.durability_type,
        v.replicas,
        v.data_fragments,
        v.redundancy_fragments,
        v.snapshot_factor,
    )
    out: dict[str, list[tuple[Any, int]]] = {}
    with store.read() as s:
        for cid, *key, n in s.execute(
            select(v.cluster_id, *layout, func.count()).group_by(v.cluster_id, *layout)
        ):
            out.setdefault(cid, []).append(((*(int(k) for k in key[:5]), key[5]), int(n)))
    return {cid: sorted(layouts) for cid, layouts in out.items()}


def test_the_layout_counts_follow_every_change_of_a_volume(daemon: RunningDaemon) -> None:
    """The summary reads counts kept by the store, not the volumes: every
    create, resize, change of durability, delete and statement made outside
    the engine keeps them equal to what grouping the volumes gives."""
    store = daemon.store
    stub = volumes(daemon)
    cid, _nodes, _drives = make_topology(store)
    other, _, _ = make_topology(store, cluster_name="other")

    def same() -> None:
        assert counted_layouts(store) == grouped_layouts(store)

    made = [create(stub, cid, f"v{i}", size="1G") for i in range(4)]
    create(stub, other, "w", size="1G")
    create(stub, cid, "two", size="2G", replicas=2)
    same()
    counts = [n for _layout, n in counted_layouts(store)[cid]]
    assert sorted(counts) == [1, 4]  # four volumes share a layout

    stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=made[0].id, size="3G", update_mask=field_mask_pb2.FieldMask(paths=["size"])
        )
    )
    same()
    set_volume(store, made[1].id, snapshot_factor=1.5, replicas=2)
    set_volume(store, made[2].id, cluster_id=other)  # no call does this; a statement may
    same()
    for v in made:
        stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v.id))
    same()
    with store.write() as s:
        bump_generation(s)
        s.execute(delete(AllocationRow))
        s.execute(delete(VolumeRow))
    assert counted_layouts(store) == {}
    [emptied] = summary(daemon, cid).clusters
    assert emptied.volume_count == 0


def test_the_migration_counts_the_volumes_a_store_already_holds(daemon: RunningDaemon) -> None:
    from osd.store import migrate

    store = daemon.store
    stub = volumes(daemon)
    cid, _nodes, _drives = make_topology(store)
    for i in range(3):
        create(stub, cid, f"v{i}", size="1G")
    create(stub, cid, "big", size="3G", replicas=2)
    migrate.downgrade(store.engine, "0019")  # no counts, no triggers
    with store.write() as s:
        bump_generation(s)
        s.execute(update(VolumeRow).where(VolumeRow.name == "v0").values(size_bytes=2 * GIB))
    migrate.upgrade(store.engine)
    assert counted_layouts(store) == grouped_layouts(store)
    assert sorted(n for _layout, n in counted_layouts(store)[cid]) == [1, 1, 2]


# -- the snapshot counts the store keeps ----------------------------------------------


def counted_snapshots(store: Store) -> dict[str, int]:
    from osd.store.models import SnapshotCountRow

    with store.read() as s:
        return {
            c: int(n)
            for c, n in s.execute(select(SnapshotCountRow.cluster_id, SnapshotCountRow.count))
        }


def grouped_snapshots(store: Store) -> dict[str, int]:
    from osd.store.models import SnapshotRow

    with store.read() as s:
        return {
            c: int(n)
            for c, n in s.execute(
                select(SnapshotRow.cluster_id, func.count()).group_by(SnapshotRow.cluster_id)
            )
        }


def test_the_snapshot_counts_follow_every_snapshot(daemon: RunningDaemon) -> None:
    """Status and summary read per-cluster snapshot counts kept by the store:
    snapshots made and deleted over the wire or by any statement keep them
    equal to a count of the snapshots."""
    from osd.store.models import SnapshotRow
    from osd.v1 import cluster_pb2, cluster_pb2_grpc
    from tests.factories import make_snapshot

    store = daemon.store
    stub = volumes(daemon)
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    cid, _nodes, _drives = make_topology(store)
    other, _, _ = make_topology(store, cluster_name="other")

    def shown(cluster_id: str) -> tuple[int, int]:
        status = clusters.GetClusterStatus(
            cluster_pb2.GetClusterStatusRequest(cluster_id=cluster_id)
        )
        [cap] = summary(daemon, cluster_id).clusters
        return status.snapshot_count, cap.snapshot_count

    vol = create(stub, cid, "v", size="1G")
    made = [
        stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=vol.id, name=f"s{i}")).snapshot
        for i in range(3)
    ]
    assert counted_snapshots(store) == grouped_snapshots(store) == {cid: 3}
    assert shown(cid) == (3, 3) and shown(other) == (0, 0)
    status = clusters.GetClusterStatus(cluster_pb2.GetClusterStatusRequest(cluster_id=cid))
    assert (status.volume_count, status.node_count) == (1, 3)
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=made[0].id))
    raw = make_snapshot(store, other, "gone-volume", "image")
    assert counted_snapshots(store) == grouped_snapshots(store) == {cid: 2, other: 1}
    assert shown(cid) == (2, 2) and shown(other) == (1, 1)
    with store.write() as s:
        bump_generation(s)
        s.execute(update(SnapshotRow).where(SnapshotRow.id == raw).values(cluster_id=cid))
    assert counted_snapshots(store) == grouped_snapshots(store) == {cid: 3}
    with store.write() as s:
        bump_generation(s)
        s.execute(delete(SnapshotRow).where(SnapshotRow.id == raw))
    assert counted_snapshots(store) == grouped_snapshots(store) == {cid: 2}
    assert shown(other) == (0, 0)

    # The migration counts the snapshots a store already holds.
    from osd.store import migrate

    migrate.downgrade(store.engine, "0020")
    make_snapshot(store, other, "gone-volume", "made-before")
    migrate.upgrade(store.engine)
    assert counted_snapshots(store) == grouped_snapshots(store) == {cid: 2, other: 1}
