"""VolumeService create, inspect, list and capacity over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import update

from osd.store.models import ClusterRow, NodeRow
from osd.v1 import common_pb2, job_pb2, volume_pb2_grpc
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_cluster, make_drive, make_node, make_pool, make_topology
from tests.volume_helpers import (
    ERASURE,
    GIB,
    NONE,
    books,
    counts,
    create,
    fails,
    generation,
    replicated,
    volumes,
)

Topology = tuple[str, list[str], list[str]]


@pytest.fixture
def stub(daemon: RunningDaemon) -> volume_pb2_grpc.VolumeServiceStub:
    return volumes(daemon)


@pytest.fixture
def topo(daemon: RunningDaemon) -> Topology:
    """Three zones of one node with two 100 GiB drives each."""
    return make_topology(daemon.store)


# -- create ----------------------------------------------------------------------


def test_create_places_three_copies_in_three_zones(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, _, _ = topo
    resp = stub.CreateVolume(
        pb.CreateVolumeRequest(
            cluster_id=cluster_id,
            name="db-1",
            size="20G",
            durability=replicated(3),
            labels={"app": "db"},
        )
    )
    v = resp.volume
    assert resp.created and resp.generation == v.generation == generation(daemon)
    assert v.state == pb.VOLUME_STATE_UP
    assert v.size_bytes == 20 * GIB
    assert (v.durability.type, v.durability.replicas) == (pb.DURABILITY_TYPE_REPLICATE, 3)
    assert v.placement.failure_domain == pb.FAILURE_DOMAIN_ZONE
    assert v.provisioning == pb.PROVISIONING_THICK and v.kind == pb.VOLUME_KIND_BLOCK
    assert v.usage.provisioned_bytes == v.usage.allocated_bytes == 60 * GIB
    assert dict(v.labels) == {"app": "db"}

    detail = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=v.id))
    allocs = detail.allocations
    assert [a.index for a in allocs] == [0, 1, 2]
    assert len({a.zone for a in allocs}) == 3 and len({a.node_id for a in allocs}) == 3
    assert all(a.bytes == 20 * GIB and a.volume_id == v.id for a in allocs)
    assert all(a.state == common_pb2.ALLOCATION_STATE_ACTIVE for a in allocs)
    assert {(a.drive_id, a.id) for a in allocs} == set(daemon.driver.state.replicas)
    assert books(daemon) == []


@pytest.mark.parametrize(
    ("size", "nbytes"),
    [
        ({"size": "20G"}, 21474836480),
        ({"size": "4096M"}, 4294967296),
        ({"size": "10g"}, 10 * GIB),
        ({"size": "512"}, 512),
        ({"size_bytes": 1048576}, 1048576),
    ],
)
def test_sizes_in_bytes_or_with_a_unit(
    stub: volume_pb2_grpc.VolumeServiceStub,
    topo: Topology,
    size: dict[str, Any],
    nbytes: int,
) -> None:
    req = pb.CreateVolumeRequest(cluster_id=topo[0], name="v", durability=replicated(2), **size)
    assert stub.CreateVolume(req).volume.size_bytes == nbytes


@pytest.mark.parametrize(
    ("size", "field"),
    [
        ({"size_bytes": 0}, "size_bytes"),
        ({"size_bytes": -512}, "size_bytes"),
        ({"size_bytes": 1000}, "size_bytes"),
        ({"size": "0"}, "size"),
        ({"size": "-1G"}, "size"),
        ({"size": "1.5G"}, "size"),
        ({"size": "20GB"}, "size"),
        ({"size": "abc"}, "size"),
        ({"size": "1000"}, "size"),
        ({"size": "1P"}, "size"),  # beyond the cluster's 600 GiB
        ({"size_bytes": 250 * GIB}, "size_bytes"),  # 3 copies: 750 GiB > 600 GiB
        ({}, "size_bytes"),  # no size, no template, no source
    ],
)
def test_bad_sizes_are_refused_naming_the_field_and_write_nothing(
    stub: volume_pb2_grpc.VolumeServiceStub,
    daemon: RunningDaemon,
    topo: Topology,
    size: dict[str, Any],
    field: str,
) -> None:
    before, gen = counts(daemon), generation(daemon)
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(cluster_id=topo[0], name="v", durability=replicated(3), **size),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == [field]
    assert counts(daemon) == before and generation(daemon) == gen


@pytest.mark.parametrize(
    "name", ["", "list", "status", ".", "..", "has space", "a/b", "x" * 201, "é"]
)
def test_bad_names_are_refused(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology, name: str
) -> None:
    before = counts(daemon)
    err = fails(stub.CreateVolume, pb.CreateVolumeRequest(cluster_id=topo[0], name=name, size="1G"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in err.fields
    assert counts(daemon) == before


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        (
            {"durability": pb.Durability(type=pb.DURABILITY_TYPE_REPLICATE, replicas=6)},
            "durability.replicas",
        ),
        (
            {"durability": pb.Durability(type=pb.DURABILITY_TYPE_REPLICATE, replicas=1)},
            "durability.replicas",
        ),
        ({"durability": pb.Durability(type=NONE, replicas=2)}, "durability.replicas"),
        ({"durability": pb.Durability(type=9)}, "durability.type"),  # type: ignore[arg-type]
        ({"durability": pb.Durability(replicas=2)}, "durability.type"),
        (
            {"durability": pb.Durability(type=ERASURE, data_fragments=20)},
            "durability.data_fragments",
        ),
        (
            {"durability": pb.Durability(type=ERASURE, data_fragments=2, redundancy_fragments=3)},
            "durability.redundancy_fragments",
        ),
        ({"placement": pb.Placement(failure_domain=7)}, "placement.failure_domain"),  # type: ignore[arg-type]
        ({"placement": pb.Placement(pool_id="nope")}, "placement.pool_id"),
        (
            {"placement": pb.Placement(node_selector={"-bad": "x"})},
            "placement.node_selector['-bad']",
        ),
        ({"snapshot_factor": 1.0}, "snapshot_factor"),
        ({"snapshot_factor": 0.5}, "snapshot_factor"),
        ({"qos": pb.Qos(iops_limit=-1)}, "qos.iops_limit"),
        ({"qos": pb.Qos(bandwidth_limit_bytes=-5)}, "qos.bandwidth_limit_bytes"),
        ({"provisioning": 5}, "provisioning"),
        ({"kind": 5}, "kind"),
        ({"labels": {"": "x"}}, "labels['']"),
        ({"template_id": "xyz"}, "template_id"),
        ({"source": pb.VolumeSource(snapshot_id="xyz")}, "source.snapshot_id"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(
    stub: volume_pb2_grpc.VolumeServiceStub,
    daemon: RunningDaemon,
    topo: Topology,
    request_fields: dict[str, Any],
    field: str,
) -> None:
    before = counts(daemon)
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(cluster_id=topo[0], name="v", size="1G", **request_fields),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT, err
    assert field in err.fields, err.fields
    assert counts(daemon) == before


def test_several_bad_fields_are_reported_together(
    stub: volume_pb2_grpc.VolumeServiceStub, topo: Topology
) -> None:
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=topo[0], name="bad name", size_bytes=100, qos=pb.Qos(iops_limit=-1)
        ),
    )
    assert set(err.fields) == {"name", "size_bytes", "qos.iops_limit"}


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"template_id": "ab" * 16}, "template_id"),
        ({"placement": pb.Placement(pool_id="ab" * 16)}, "placement.pool_id"),
        ({"placement": pb.Placement(tail_pool_id="ab" * 16)}, "placement.tail_pool_id"),
        ({"source": pb.VolumeSource(snapshot_id="ab" * 16)}, "source.snapshot_id"),
        ({"source": pb.VolumeSource(volume_id="ab" * 16)}, "source.volume_id"),
        (
            {"source": pb.VolumeSource(datastore_version_id="ab" * 16)},
            "source.datastore_version_id",
        ),
    ],
)
def test_unknown_references_are_not_found(
    stub: volume_pb2_grpc.VolumeServiceStub,
    daemon: RunningDaemon,
    topo: Topology,
    request_fields: dict[str, Any],
    field: str,
) -> None:
    before = counts(daemon)
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(cluster_id=topo[0], name="v", size="1G", **request_fields),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert list(err.fields) == [field]
    assert counts(daemon) == before


def test_unknown_cluster_is_not_found(
    stub: volume_pb2_grpc.VolumeServiceStub, topo: Topology
) -> None:
    err = fails(
        stub.CreateVolume, pb.CreateVolumeRequest(cluster_id="cd" * 16, name="v", size="1G")
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["cluster_id"])


@pytest.mark.parametrize(
    ("replicas", "domain", "available"),
    [
        (4, pb.FAILURE_DOMAIN_ZONE, 3),
        (4, pb.FAILURE_DOMAIN_NODE, 3),
        (5, pb.FAILURE_DOMAIN_UNSPECIFIED, 3),
    ],
)
def test_more_replicas_than_zones_or_nodes_is_impossible(
    stub: volume_pb2_grpc.VolumeServiceStub,
    daemon: RunningDaemon,
    topo: Topology,
    replicas: int,
    domain: int,
    available: int,
) -> None:
    before = counts(daemon)
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=topo[0],
            name="v",
            size="1G",
            durability=replicated(replicas),
            placement=pb.Placement(failure_domain=domain),  # type: ignore[arg-type]
        ),
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "PLACEMENT_IMPOSSIBLE"
    assert err.metadata["field"] == "durability.replicas"
    assert (err.metadata["needed"], err.metadata["available"]) == (str(replicas), str(available))
    assert counts(daemon) == before


def test_drive_failure_domain_allows_copies_on_one_node(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    cluster_id, _, _ = make_topology(daemon.store, zones=1, drives_per_node=4)
    v = create(
        stub,
        cluster_id,
        "v",
        replicas=4,
        placement=pb.Placement(failure_domain=pb.FAILURE_DOMAIN_DRIVE),
    )
    allocs = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=v.id)).allocations
    assert len({a.drive_id for a in allocs}) == 4 and len({a.node_id for a in allocs}) == 1


def test_without_room_the_create_is_refused_for_capacity(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    create(
        stub,
        topo[0],
        "big",
        size="90G",
        replicas=3,
        placement=pb.Placement(failure_domain=pb.FAILURE_DOMAIN_ZONE),
    )
    create(stub, topo[0], "big2", size="90G", replicas=3)
    before = counts(daemon)
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(cluster_id=topo[0], name="v", size="20G", durability=replicated(3)),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CAPACITY")
    assert counts(daemon) == before and books(daemon) == []


def test_erasure_coding_spreads_fragments(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    cluster_id, _, _ = make_topology(daemon.store, zones=6)
    v = create(
        stub,
        cluster_id,
        "ec",
        size="4G",
        durability=pb.Durability(type=ERASURE, data_fragments=4, redundancy_fragments=2),
    )
    allocs = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=v.id)).allocations
    assert len(allocs) == 6 and len({a.zone for a in allocs}) == 6
    assert all(a.bytes == GIB for a in allocs)
    assert v.usage.provisioned_bytes == 6 * GIB


def test_thin_volumes_reserve_nothing_but_need_room(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, topo[0], "thin", size="50G", provisioning=pb.PROVISIONING_THIN)
    assert v.usage.provisioned_bytes == 150 * GIB and v.usage.allocated_bytes == 0
    assert counts(daemon).used_bytes == 0
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=topo[0],
            name="thin2",
            size="150G",
            durability=replicated(3),
            provisioning=pb.PROVISIONING_THIN,
        ),
    )
    assert err.reason == "INSUFFICIENT_CAPACITY"


def test_snapshot_factor_multiplies_each_allocation(
    stub: volume_pb2_grpc.VolumeServiceStub, topo: Topology
) -> None:
    v = create(stub, topo[0], "v", size="10G", replicas=2, snapshot_factor=1.5)
    assert v.snapshot_factor == 1.5
    assert v.usage.allocated_bytes == 2 * 15 * GIB


def test_create_is_idempotent_by_name(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    req = pb.CreateVolumeRequest(
        cluster_id=topo[0], name="v", size="2G", durability=replicated(2), labels={"a": "1"}
    )
    first = stub.CreateVolume(req)
    gen = generation(daemon)
    # The same spec, spelt differently: bytes instead of text.
    again = stub.CreateVolume(
        pb.CreateVolumeRequest(
            cluster_id=topo[0],
            name="v",
            size_bytes=2 * GIB,
            durability=replicated(2),
            labels={"a": "1"},
        )
    )
    assert not again.created and again.volume.id == first.volume.id
    assert again.generation == gen and generation(daemon) == gen
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(cluster_id=topo[0], name="v", size="3G", durability=replicated(2)),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "VOLUME_EXISTS")
    assert err.metadata["volume_id"] == first.volume.id
    assert counts(daemon).volumes == 1


def test_the_cluster_is_inferred_when_there_is_only_one(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    v = create(stub, "", "v", replicas=2)
    assert v.cluster_id == topo[0]
    make_cluster(daemon.store, "other")
    err = fails(stub.CreateVolume, pb.CreateVolumeRequest(name="w", size="1G"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["cluster_id"])


def test_the_pool_names_the_cluster_and_must_agree_with_it(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, nodes, _ = topo
    other = make_cluster(daemon.store, "other")
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    v = create(stub, "", "v", replicas=2, placement=pb.Placement(pool_id=pool))
    assert v.cluster_id == cluster_id
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=other, name="w", size="1G", placement=pb.Placement(pool_id=pool)
        ),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["cluster_id"])


def test_a_disabled_kind_is_refused(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    with daemon.store.write() as s:
        s.execute(update(ClusterRow).values(file=False))
    before = counts(daemon)
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(cluster_id=topo[0], name="f", size="1G", kind=pb.VOLUME_KIND_FILE),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_KIND_DISABLED")
    assert counts(daemon) == before
    assert create(stub, topo[0], "b", kind=pb.VOLUME_KIND_BLOCK).kind == pb.VOLUME_KIND_BLOCK


def test_place_all_and_place_tail(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, _, drives = topo
    # Each node has /dev/sdb (even index) and /dev/sdc (odd index).
    hdd = make_pool(daemon.store, cluster_id, "hdd", drive_ids=drives[0::2])
    ssd = make_pool(daemon.store, cluster_id, "ssd", drive_ids=drives[1::2])
    v = create(stub, cluster_id, "v", placement=pb.Placement(pool_id=hdd, tail_pool_id=ssd))
    allocs = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=v.id)).allocations
    assert [a.drive_id in drives[0::2] for a in allocs] == [True, True, False]
    assert allocs[2].drive_id in drives[1::2]
    assert len({a.zone for a in allocs}) == 3
    # A tail needs a REPLICATE volume.
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=cluster_id, name="w", size="1G", placement=pb.Placement(tail_pool_id=ssd)
        ),
    )
    assert list(err.fields) == ["placement.tail_pool_id"]


def test_an_empty_pool_makes_placement_impossible(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    pool = make_pool(daemon.store, topo[0], "empty")
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=topo[0], name="v", size="1G", placement=pb.Placement(pool_id=pool)
        ),
    )
    assert err.reason == "PLACEMENT_IMPOSSIBLE"
    assert (err.metadata["needed"], err.metadata["available"]) == ("1", "0")


def test_node_and_drive_selectors(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon
) -> None:
    cluster_id = make_cluster(daemon.store)
    for z in range(3):
        node = make_node(
            daemon.store, cluster_id, f"n{z}", f"z{z}", labels={"rack": "a" if z else "b"}
        )
        make_drive(daemon.store, node, "/dev/sdb", labels={"media": "ssd"})
        make_drive(daemon.store, node, "/dev/sdc", labels={"media": "hdd"})
    v = create(
        stub,
        cluster_id,
        "v",
        replicas=2,
        placement=pb.Placement(node_selector={"rack": "a"}, drive_selector={"media": "ssd"}),
    )
    detail = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=v.id))
    assert {a.zone for a in detail.allocations} == {"z1", "z2"}
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=cluster_id,
            name="w",
            size="1G",
            durability=replicated(3),
            placement=pb.Placement(node_selector={"rack": "a"}),
        ),
    )
    assert err.reason == "PLACEMENT_IMPOSSIBLE"
    assert (err.metadata["needed"], err.metadata["available"]) == ("3", "2")


def test_offline_nodes_and_journal_drives_are_not_used(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, nodes, _ = topo
    with daemon.store.write() as s:
        s.execute(update(NodeRow).where(NodeRow.id == nodes[0]).values(state=2))
    make_drive(daemon.store, nodes[1], "/dev/nvme0", journal=True)
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=cluster_id, name="v", size="1G", durability=replicated(3)
        ),
    )
    assert (err.reason, err.metadata["available"]) == ("PLACEMENT_IMPOSSIBLE", "2")


def test_a_volume_copy_is_a_job(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    """The copy itself is tested in tests/test_volumes_jobs.py."""
    source = create(stub, topo[0], "src", replicas=2)
    resp = stub.CreateVolume(
        pb.CreateVolumeRequest(
            cluster_id=topo[0], name="copy", source=pb.VolumeSource(volume_id=source.id)
        )
    )
    assert resp.created and resp.job.kind == job_pb2.JOB_KIND_VOLUME_COPY
    assert resp.volume.state == pb.VOLUME_STATE_CREATING
    assert resp.volume.active_job_id == resp.job.id
    assert resp.volume.size_bytes == source.size_bytes
    # Creates of other sources answer without a job.
    assert not stub.CreateVolume(
        pb.CreateVolumeRequest(cluster_id=topo[0], name="plain", size="1G")
    ).HasField("job")


def test_every_node_carries_its_zone_and_name_for_placement(
    stub: volume_pb2_grpc.VolumeServiceStub, daemon: RunningDaemon, topo: Topology
) -> None:
    cluster_id, nodes, _ = topo
    in_zone = create(
        stub,
        cluster_id,
        "in-zone",
        durability=pb.Durability(type=pb.DURABILITY_TYPE_NONE),
        placement=pb.Placement(node_selector={"osd.dev/zone": "zone1"}),
    )
    detail = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=in_zone.id))
    assert [a.zone for a in detail.allocations] == ["zone1"]
    on_node = create(
        stub,
        cluster_id,
        "on-node",
        replicas=2,
        placement=pb.Placement(
            failure_domain=pb.FAILURE_DOMAIN_DRIVE, node_selector={"osd.dev/node": "n2-0"}
        ),
    )
    detail = stub.InspectVolume(pb.InspectVolumeRequest(volume_id=on_node.id))
    assert {a.node_id for a in detail.allocations} == {nodes[2]}
    err = fails(
        stub.CreateVolume,
        pb.CreateVolumeRequest(
            cluster_id=cluster_id,
            name="nowhere",
            size="1G",
            placement=pb.Placement(node_selector={"osd.dev/zone": "zone9"}),
        ),
    )
    assert err.reason == "PLACEMENT_IMPOSSIBLE"
