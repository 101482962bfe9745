"""VolumeService inspect, list and the capacity summary over the wire, on both stores."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import select

from osd.store.models import AllocationRow, VolumeRow
from osd.v1 import volume_pb2 as pb
from osd.v1 import volume_pb2_grpc
from tests.conftest import RunningDaemon
from tests.factories import make_pool, make_topology
from tests.volume_helpers import GIB, create, fails, generation, volumes

Topology = tuple[str, list[str], list[str]]


@pytest.fixture
def stub(daemon: RunningDaemon) -> volume_pb2_grpc.VolumeServiceStub:
    return volumes(daemon)


@pytest.fixture
def topo(daemon: RunningDaemon) -> Topology:
    return make_topology(daemon.store)


# -- inspect and list ----------------------------------------------------------


def test_inspect_unknown_or_bad_id(stub: volume_pb2_grpc.VolumeServiceStub, topo: Topology) -> None:
    err = fails(stub.InspectVolume, pb.InspectVolumeRequest(volume_id="ab" * 16))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["volume_id"])
    err = fails(stub.InspectVolume, pb.InspectVolumeRequest(volume_id="nope"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["volume_id"])


def test_list_pages_by_name_with_filters(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, nodes, _ = topo
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    for i in range(7):
        create(
            stub,
            cluster_id,
            f"vol-{i}",
            replicas=2,
            labels={"tier": "gold" if i % 2 else "silver"},
            placement=pb.Placement(pool_id=pool) if i < 3 else None,
        )
    names: list[str] = []
    token = ""
    while True:
        page = stub.ListVolumes(pb.ListVolumesRequest(page_size=3, page_token=token))
        names += [v.name for v in page.volumes]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"vol-{i}" for i in range(7)]

    def listed(**kw: Any) -> list[str]:
        return [v.name for v in stub.ListVolumes(pb.ListVolumesRequest(**kw)).volumes]

    assert listed(labels={"tier": "gold"}) == ["vol-1", "vol-3", "vol-5"]
    assert listed(name_regex="[56]$") == ["vol-5", "vol-6"]
    assert listed(pool_id=pool) == ["vol-0", "vol-1", "vol-2"]
    assert listed(cluster_id=cluster_id, states=[pb.VOLUME_STATE_UP]) == names
    assert listed(states=[pb.VOLUME_STATE_DELETING]) == []
    on_node = {v.name for v in stub.ListVolumes(pb.ListVolumesRequest(node_id=nodes[0])).volumes}
    with daemon.store.read() as s:
        expected = set(
            s.scalars(
                select(VolumeRow.name)
                .join(AllocationRow, AllocationRow.volume_id == VolumeRow.id)
                .where(AllocationRow.node_id == nodes[0])
            )
        )
    assert on_node == expected and on_node


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"cluster_id": "x"}, "cluster_id"),
        ({"pool_id": "x"}, "pool_id"),
        ({"node_id": "x"}, "node_id"),
        ({"template_id": "x"}, "template_id"),
        ({"name_regex": "("}, "name_regex"),
        ({"states": [42]}, "states"),
    ],
)
def test_list_bad_arguments(
    stub: volume_pb2_grpc.VolumeServiceStub,
    topo: Topology,
    request_fields: dict[str, Any],
    field: str,
) -> None:
    err = fails(stub.ListVolumes, pb.ListVolumesRequest(**request_fields))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


# -- capacity ------------------------------------------------------------------


def test_capacity_summary(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, nodes, _ = topo
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes[:2])
    create(stub, cluster_id, "a", size="10G", replicas=3)
    create(stub, cluster_id, "b", size="10G", replicas=2, provisioning=pb.PROVISIONING_THIN)
    resp = stub.GetCapacitySummary(pb.GetCapacitySummaryRequest(cluster_id=cluster_id))
    [c] = resp.clusters
    assert c.cluster_id == cluster_id and c.volume_count == 2
    assert c.capacity.total_bytes == 600 * GIB and c.capacity.used_bytes == 30 * GIB
    assert c.capacity.free_bytes == 570 * GIB and c.available_bytes == 570 * GIB
    assert c.logical_bytes == 20 * GIB and c.provisioned_bytes == 50 * GIB
    [p] = c.pools
    assert p.pool_id == pool and p.capacity.total_bytes == 400 * GIB
    assert resp.generation == generation(daemon)
    err = fails(stub.GetCapacitySummary, pb.GetCapacitySummaryRequest(cluster_id="ab" * 16))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_a_filter_that_turns_most_rows_down_pages_by_a_bounded_scan(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub, monkeypatch: Any
) -> None:
    """A page ends early once the budget of rows turned down is spent, with a
    token after the last row looked at: each call costs the same however many
    volumes the filters skip, and following the tokens finds every match."""
    from osd.engine.shared import paging
    from tests.factories import make_cluster, make_volume_row

    monkeypatch.setattr(paging, "SCAN_BUDGET", 10)
    cluster_id = make_cluster(daemon.store)
    for i in range(45):
        make_volume_row(daemon.store, cluster_id, f"v{i:03d}", labels={"k": str(i % 20)})
    # A pattern is matched here, row by row: the budget bounds each call.
    request = pb.ListVolumesRequest(cluster_id=cluster_id, name_regex="^v0[02]7$", page_size=100)
    pages = []
    while True:
        page = stub.ListVolumes(request)
        pages.append([v.name for v in page.volumes])
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert [n for p in pages for n in p] == ["v007", "v027"]
    assert len(pages) >= 4  # 43 rows turned down, 10 a call
    assert [] in pages  # a page may be empty and still lead on
    # Labels are matched by the database: no row is turned down here, and
    # one call finds the labels k=7 on v007 and v027 alone.
    by_label = stub.ListVolumes(
        pb.ListVolumesRequest(cluster_id=cluster_id, labels={"k": "7"}, page_size=100)
    )
    assert [v.name for v in by_label.volumes] == ["v007", "v027"]
    assert by_label.next_page_token == ""
    # A filter matching nothing ends, page by page, with an empty token.
    none = pb.ListVolumesRequest(cluster_id=cluster_id, name_regex="^nothing", page_size=5)
    calls = 0
    while True:
        calls += 1
        page = stub.ListVolumes(none)
        assert not page.volumes
        if not page.next_page_token:
            break
        none.page_token = page.next_page_token
    assert calls == 5  # 45 rows, 10 turned down a call


def test_the_degraded_filter_reads_copies_in_batches_and_finds_every_match(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub, monkeypatch: Any
) -> None:
    """ListVolumes(degraded) checks the copies of the scanned volumes a batch
    at a time, ahead of the page: across batches, a scan budget that ends
    pages early and tokens followed, it lists exactly the volumes that lack
    a live copy, each once, in order."""
    from sqlalchemy import update

    from osd.engine.shared import paging
    from osd.engine.volumes import volumes as volume_engine
    from osd.enums import AllocationState, VolumeState
    from osd.store.state import bump_generation
    from tests.factories import make_cluster, make_drive, make_node, make_volume

    monkeypatch.setattr(paging, "SCAN_BUDGET", 2)
    monkeypatch.setattr(volume_engine, "DEGRADED_BATCH", 16)
    store = daemon.store
    cluster_id = make_cluster(store)
    drives = [
        make_drive(store, make_node(store, cluster_id, f"n{z}", f"z{z}"), "/dev/sdb")
        for z in range(3)
    ]
    made = [make_volume(store, cluster_id, drives, name=f"v{i:03d}") for i in range(100)]
    lacking = {made[i] for i in range(0, 100, 9)}
    with store.write() as s:
        bump_generation(s)
        for volume_id in lacking:
            first = s.scalars(
                select(AllocationRow.id)
                .where(AllocationRow.volume_id == volume_id)
                .order_by(AllocationRow.index)
            ).first()
            s.execute(
                update(AllocationRow)
                .where(AllocationRow.id == first)
                .values(state=AllocationState.UNAVAILABLE)
            )
        # DEGRADED as stored, every copy live all the same: a candidate turned down.
        s.execute(
            update(VolumeRow)
            .where(VolumeRow.id.in_([made[i] for i in range(4, 100, 9)] + sorted(lacking)))
            .values(state=VolumeState.DEGRADED)
        )
    request = pb.ListVolumesRequest(cluster_id=cluster_id, degraded=True, page_size=4)
    listed: list[str] = []
    calls = 0
    while True:
        calls += 1
        page = stub.ListVolumes(request)
        listed += [v.id for v in page.volumes]
        assert all(v.missing_copies for v in page.volumes)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert listed == [m for m in made if m in lacking]
    # Scanned, one lacking a copy and one not by turns: two turned down end a page.
    assert calls >= 6


def test_labels_with_dots_slashes_and_colons_filter_in_the_database(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub
) -> None:
    from tests.factories import make_cluster, make_volume_row

    cluster_id = make_cluster(daemon.store)
    make_volume_row(
        daemon.store, cluster_id, "a", labels={"app.kubernetes.io/name": "db", "team:x": "a b"}
    )
    make_volume_row(daemon.store, cluster_id, "b", labels={"app.kubernetes.io/name": "web"})
    make_volume_row(daemon.store, cluster_id, "c", labels={"app": "db"})

    def names(**labels: str) -> list[str]:
        request = pb.ListVolumesRequest(cluster_id=cluster_id, labels=labels)
        return [v.name for v in stub.ListVolumes(request).volumes]

    assert names(**{"app.kubernetes.io/name": "db"}) == ["a"]
    assert names(**{"app.kubernetes.io/name": "db", "team:x": "a b"}) == ["a"]
    assert names(**{"app.kubernetes.io/name": "db", "team:x": "a"}) == []
    assert names(app="db") == ["c"]
    assert names(**{"app.kubernetes.io": "db"}) == []  # a key, not a path


# -- the label index the store keeps (volume_labels) -----------------------------------


def indexed_labels(store: Any) -> list[tuple[str, str, str, str, str]]:
    """The label rows the triggers keep."""
    from osd.store.models import VolumeLabelRow as L

    with store.read() as s:
        rows = s.execute(select(L.volume_id, L.key, L.value, L.cluster_id, L.name)).all()
    return sorted(tuple(r) for r in rows)  # type: ignore[misc]


def labels_of_volumes(store: Any) -> list[tuple[str, str, str, str, str]]:
    """The same, from the volumes' own labels."""
    with store.read() as s:
        rows = s.scalars(select(VolumeRow)).all()
        return sorted(
            (v.id, k, val, v.cluster_id, v.name) for v in rows for k, val in v.labels.items()
        )


def test_the_label_index_follows_every_change_of_a_volume(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub, topo: Topology
) -> None:
    """Labels, names and clusters changed over the wire or by any statement
    are in the index in the same transaction; a list by label reads it, in
    page order."""
    from google.protobuf import field_mask_pb2
    from sqlalchemy import delete, update

    from osd.store.state import bump_generation
    from tests.factories import make_cluster, make_volume_row

    store = daemon.store
    cluster_id, _nodes, _drives = topo

    def same() -> None:
        assert indexed_labels(store) == labels_of_volumes(store)

    made = [
        create(stub, cluster_id, f"v{i}", labels={"app": "db" if i % 2 else "web", "n": str(i)})
        for i in range(5)
    ]
    plain = create(stub, cluster_id, "plain")
    same()
    assert len(indexed_labels(store)) == 10
    stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=made[0].id,
            labels={"app": "db", "tier": "gold"},
            update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
        )
    )
    stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=made[1].id,
            name="a-first",
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        )
    )
    stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=plain.id,
            labels={"app": "db"},
            update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
        )
    )
    same()

    def names(page_size: int = 2, **request: Any) -> list[str]:
        out: list[str] = []
        token = ""
        while True:
            page = stub.ListVolumes(
                pb.ListVolumesRequest(page_size=page_size, page_token=token, **request)
            )
            out += [v.name for v in page.volumes]
            token = page.next_page_token
            if not token:
                return out

    # In (cluster, name) order, the renamed one first, page after page.
    assert names(labels={"app": "db"}) == ["a-first", "plain", "v0", "v3"]
    assert names(labels={"app": "db"}, cluster_id=cluster_id) == ["a-first", "plain", "v0", "v3"]
    assert names(labels={"app": "db", "tier": "gold"}) == ["v0"]
    assert names(labels={"n": "4"}) == ["v4"]
    assert names(labels={"n": "0"}) == []  # replaced by the update

    # Another cluster's volumes sort after or before by cluster id, and
    # statements that bypass the engine are indexed too.
    other = make_cluster(store, "other")
    row = make_volume_row(store, other, "x", labels={"app": "db"})
    with store.write() as s:
        bump_generation(s)
        s.execute(update(VolumeRow).where(VolumeRow.id == made[2].id).values(labels={"app": "db"}))
        s.execute(update(VolumeRow).where(VolumeRow.id == made[3].id).values(labels={}))
    same()
    expected = ["a-first", "plain", "v0", "v2"]
    expected = [*expected, "x"] if cluster_id < other else ["x", *expected]
    assert names(labels={"app": "db"}) == expected
    assert names(page_size=1, labels={"app": "db"}, cluster_id=other) == ["x"]

    for v in made[:2]:
        stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v.id))
    same()
    with store.write() as s:
        bump_generation(s)
        s.execute(delete(VolumeRow).where(VolumeRow.id == row))
    same()
    assert names(labels={"app": "db"}) == ["plain", "v2"]


def test_the_migration_indexes_the_labels_a_store_already_holds(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub, topo: Topology
) -> None:
    from sqlalchemy import update

    from osd.store import migrate
    from osd.store.state import bump_generation

    store = daemon.store
    cluster_id, _nodes, _drives = topo
    first = create(stub, cluster_id, "one", labels={"app": "db"})
    create(stub, cluster_id, "two", labels={"app": "web", "env": "prod"})
    migrate.downgrade(store.engine, "0020")  # no label table, no triggers
    with store.write() as s:
        bump_generation(s)
        s.execute(update(VolumeRow).where(VolumeRow.id == first.id).values(labels={"app": "web"}))
    migrate.upgrade(store.engine)
    assert indexed_labels(store) == labels_of_volumes(store)
    assert len(indexed_labels(store)) == 3
    listed = stub.ListVolumes(pb.ListVolumesRequest(labels={"app": "web"})).volumes
    assert [v.name for v in listed] == ["one", "two"]


def test_the_repairing_filter_reads_the_volumes_under_repair_in_order(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub
) -> None:
    """Unfinished VOLUME_REPAIR jobs name the volumes; a finished repair or
    another kind of job does not count; pages and the cluster filter hold."""
    from osd.enums import JobKind, JobState, ObjectKind
    from tests.factories import make_cluster, make_job_row, make_volume_row

    store = daemon.store
    one = make_cluster(store, "one")
    two = make_cluster(store, "two")
    ids = {
        (cid, name): make_volume_row(store, cid, name)
        for cid in (one, two)
        for name in ("a", "b", "c", "d", "e")
    }

    def job(
        cid: str,
        name: str,
        *,
        kind: JobKind = JobKind.VOLUME_REPAIR,
        state: JobState = JobState.PAUSED,
    ) -> None:
        make_job_row(
            store,
            cid,
            ids[cid, name],
            kind=int(kind),
            target_kind=int(ObjectKind.VOLUME),
            state=int(state),
        )

    for name in ("e", "b", "d"):
        job(one, name)
    job(two, "c", state=JobState.RUNNING)
    job(two, "a", state=JobState.DONE)  # finished
    job(two, "b", kind=JobKind.VOLUME_MOVE)  # not a repair

    def listed(page_size: int, cluster_id: str = "") -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        token = ""
        while True:
            page = stub.ListVolumes(
                pb.ListVolumesRequest(
                    repairing=True, page_size=page_size, page_token=token, cluster_id=cluster_id
                )
            )
            out += [(v.cluster_id, v.name) for v in page.volumes]
            token = page.next_page_token
            if not token:
                return out

    everything = sorted([(one, "b"), (one, "d"), (one, "e"), (two, "c")])
    assert listed(100) == everything
    assert listed(1) == everything
    assert listed(2, one) == [(one, "b"), (one, "d"), (one, "e")]
    assert listed(1, two) == [(two, "c")]


# -- volumes built once and shown again while what they show is unchanged ---------------


def test_a_volume_shown_again_follows_every_change_of_what_it_shows(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub, topo: Topology
) -> None:
    """A volume is built again only when its row, copies, counts, access list
    or repair changed (osd.engine.volumes.views): each of those, changed by a
    statement that leaves the volume's own generation alone, shows at once in
    the list and in InspectVolume."""
    from sqlalchemy import insert, update

    from osd.enums import AllocationState, DriveState, JobKind, ObjectKind
    from osd.store.models import DriveRow, VolumeGrantRow
    from osd.store.state import bump_generation
    from tests.factories import make_job_row

    store = daemon.store
    cluster_id, nodes, _drives = topo
    vol = create(stub, cluster_id, "shown", labels={"app": "db"})
    create(stub, cluster_id, "other")

    def shown() -> tuple[pb.Volume, pb.Volume]:
        listed = {v.name: v for v in stub.ListVolumes(pb.ListVolumesRequest()).volumes}
        inspected = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=vol.id)).volume
        return listed["shown"], inspected

    def change(*statements: Any) -> tuple[pb.Volume, pb.Volume]:
        with store.write() as s:
            bump_generation(s)
            for statement in statements:
                s.execute(statement)
        return shown()

    first, _ = shown()
    assert first.live_copies == 3 and first.generation == vol.generation

    for v in change(update(VolumeRow).where(VolumeRow.id == vol.id).values(stored_bytes=12345)):
        assert v.usage.stored_bytes == 12345 and v.generation == vol.generation
    for v in change(
        update(VolumeRow).where(VolumeRow.id == vol.id).values(labels={"app": "web", "k": "v"})
    ):
        assert dict(v.labels) == {"app": "web", "k": "v"}
    with store.read() as s:
        [copy0] = s.scalars(
            select(AllocationRow).where(AllocationRow.volume_id == vol.id, AllocationRow.index == 0)
        ).all()
    for v in change(
        update(DriveRow).where(DriveRow.id == copy0.drive_id).values(state=DriveState.FAILED),
        update(AllocationRow)
        .where(AllocationRow.id == copy0.id)
        .values(state=AllocationState.UNAVAILABLE),
    ):
        assert v.live_copies == 2
        assert [m.allocation_id for m in v.missing_copies] == [copy0.id]
    for v in change(update(AllocationRow).where(AllocationRow.id == copy0.id).values(bytes=1)):
        assert v.usage.allocated_bytes == sum(
            a.bytes
            for a in stub.InspectVolume(pb.InspectVolumeRequest(volume_id=vol.id)).allocations
        )
    for v in change(
        insert(VolumeGrantRow).values(
            volume_id=vol.id, grantee_kind="user", grantee="ann", access=1
        )
    ):
        assert [(g.user, g.access) for g in v.acl] == [("ann", 1)]
    job = make_job_row(
        store,
        cluster_id,
        vol.id,
        kind=int(JobKind.VOLUME_REPAIR),
        target_kind=int(ObjectKind.VOLUME),
    )
    for v in shown():
        assert v.repair_job_id == job
    stub.AttachVolume(
        pb.AttachVolumeRequest(volume_id=vol.id, node_id=nodes[0], mode=pb.ATTACH_MODE_READ_WRITE)
    )
    stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=vol.id, name="snap"))
    for v in shown():
        assert (v.attachment_count, v.snapshot_count) == (1, 1)
    # Nothing of it changed: the same answer.
    assert shown() == shown()


def test_a_name_regex_pages_with_labels_and_clusters(
    daemon: RunningDaemon, stub: volume_pb2_grpc.VolumeServiceStub
) -> None:
    """A name filter reads keys and loads the rows it keeps: with a label, a
    cluster and small pages, the pages hold what a filter of every volume
    gives, in list order."""
    from tests.factories import make_cluster, make_volume_row

    store = daemon.store
    one = make_cluster(store, "one")
    two = make_cluster(store, "two")
    every: list[tuple[str, str, str]] = []
    for cid in (one, two):
        for i in range(12):
            name = f"{'db' if i % 3 else 'web'}-{i:02d}"
            tier = "gold" if i % 2 else "silver"
            make_volume_row(store, cid, name, labels={"tier": tier})
            every.append((cid, name, tier))

    def listed(**request: Any) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        token = ""
        while True:
            page = stub.ListVolumes(pb.ListVolumesRequest(page_size=2, page_token=token, **request))
            out += [(v.cluster_id, v.name) for v in page.volumes]
            token = page.next_page_token
            if not token:
                return out

    def expected(cluster: str = "", tier: str = "") -> list[tuple[str, str]]:
        return sorted(
            (c, n)
            for c, n, t in every
            if n.startswith("db-") and (not cluster or c == cluster) and (not tier or t == tier)
        )

    assert listed(name_regex="^db-") == expected()
    assert listed(name_regex="^db-", labels={"tier": "gold"}) == expected(tier="gold")
    assert listed(name_regex="^db-", cluster_id=two) == expected(cluster=two)
    assert listed(name_regex="^db-", cluster_id=one, labels={"tier": "silver"}) == expected(
        cluster=one, tier="silver"
    )
    assert listed(name_regex="^nothing") == []
