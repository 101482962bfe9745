"""Objects by name over gRPC, on SQLite and PostgreSQL: every Inspect, Update
and Delete of clusters, nodes, pools, templates, volumes, snapshots and
datastores takes a name where it takes an id (``<kind>_name``, with
``cluster_id`` for the kinds named within a cluster)."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import field_mask_pb2

from osd.v1 import cluster_pb2 as cpb
from osd.v1 import cluster_pb2_grpc, datastore_pb2_grpc, pool_pb2_grpc
from osd.v1 import datastore_pb2 as dpb
from osd.v1 import node_pb2 as npb
from osd.v1 import pool_pb2 as ppb
from osd.v1 import template_pb2 as tpb
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_pool, make_snapshot, make_topology
from tests.volume_helpers import create, fails, generation, node_stub, templates, volumes


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_each_kind_is_inspected_updated_and_deleted_by_name(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _drives = make_topology(daemon.store, zones=3)
    other, _, _ = make_topology(daemon.store, zones=3, cluster_name="c2")
    stub = volumes(daemon)
    vol = create(stub, cluster_id, "data", size="64M")
    twin = create(stub, other, "data", size="64M")  # the same name elsewhere

    # Volumes: named within their cluster.
    got = stub.InspectVolume(pb.InspectVolumeRequest(volume_name="data", cluster_id=cluster_id))
    assert got.volume.id == vol.id
    assert got.generation == generation(daemon)
    assert (
        stub.InspectVolume(pb.InspectVolumeRequest(volume_name="data", cluster_id=other)).volume.id
        == twin.id
    )
    changed = stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_name="data",
            cluster_id=cluster_id,
            labels={"tier": "gold"},
            update_mask=mask("labels"),
        )
    )
    assert changed.volume.id == vol.id and dict(changed.volume.labels) == {"tier": "gold"}
    assert dict(stub.InspectVolume(pb.InspectVolumeRequest(volume_id=twin.id)).volume.labels) == {}

    # Snapshots: named within their cluster.
    snap = stub.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=vol.id, name="before")).snapshot
    by_name = stub.InspectSnapshot(
        pb.InspectSnapshotRequest(snapshot_name="before", cluster_id=cluster_id)
    )
    assert by_name.snapshot.id == snap.id
    renamed = stub.UpdateSnapshot(
        pb.UpdateSnapshotRequest(
            snapshot_name="before", cluster_id=cluster_id, name="after", update_mask=mask("name")
        )
    )
    assert (renamed.snapshot.id, renamed.snapshot.name) == (snap.id, "after")
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_name="after", cluster_id=cluster_id))
    gone = fails(stub.InspectSnapshot, pb.InspectSnapshotRequest(snapshot_id=snap.id))
    assert gone.code == grpc.StatusCode.NOT_FOUND

    deleted = stub.DeleteVolume(pb.DeleteVolumeRequest(volume_name="data", cluster_id=cluster_id))
    assert deleted.deleted
    assert stub.InspectVolume(pb.InspectVolumeRequest(volume_id=twin.id)).volume.name == "data"

    # Nodes.
    nstub = node_stub(daemon)
    node = nstub.InspectNode(npb.InspectNodeRequest(node_name="n0-0", cluster_id=cluster_id)).node
    assert node.id == nodes[0]
    zoned = nstub.UpdateNode(
        npb.UpdateNodeRequest(
            node_name="n0-0",
            cluster_id=cluster_id,
            labels={"rack": "r1"},
            update_mask=mask("labels"),
        )
    ).node
    assert zoned.id == nodes[0] and dict(zoned.labels) == {"rack": "r1"}

    # Pools.
    pool_id = make_pool(daemon.store, cluster_id, "fast", node_ids=nodes[:1])
    pstub = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    assert (
        pstub.InspectPool(ppb.InspectPoolRequest(pool_name="fast", cluster_id=cluster_id)).pool.id
        == pool_id
    )
    pstub.UpdatePool(
        ppb.UpdatePoolRequest(
            pool_name="fast", cluster_id=cluster_id, name="faster", update_mask=mask("name")
        )
    )
    assert pstub.InspectPool(ppb.InspectPoolRequest(pool_id=pool_id)).pool.name == "faster"
    pstub.DeletePool(ppb.DeletePoolRequest(pool_name="faster", cluster_id=cluster_id))
    assert fails(pstub.InspectPool, ppb.InspectPoolRequest(pool_id=pool_id)).code == (
        grpc.StatusCode.NOT_FOUND
    )

    # Templates.
    tstub = templates(daemon)
    made = tstub.CreateTemplate(
        tpb.CreateTemplateRequest(cluster_id=cluster_id, name="gold", size="1G")
    ).template
    assert (
        tstub.InspectTemplate(
            tpb.InspectTemplateRequest(template_name="gold", cluster_id=cluster_id)
        ).template.id
        == made.id
    )
    tstub.UpdateTemplate(
        tpb.UpdateTemplateRequest(
            template_name="gold", cluster_id=cluster_id, size="2G", update_mask=mask("size")
        )
    )
    assert (
        tstub.InspectTemplate(tpb.InspectTemplateRequest(template_id=made.id)).template.size_bytes
        == 2 << 30
    )
    tstub.DeleteTemplate(tpb.DeleteTemplateRequest(template_name="gold", cluster_id=cluster_id))
    assert fails(tstub.InspectTemplate, tpb.InspectTemplateRequest(template_id=made.id)).code == (
        grpc.StatusCode.NOT_FOUND
    )

    # Clusters: named across the store.
    cstub = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    assert cstub.InspectCluster(cpb.InspectClusterRequest(cluster_name="c2")).cluster.id == other
    relabelled = cstub.UpdateCluster(
        cpb.UpdateClusterRequest(
            cluster_name="c2", labels={"site": "b"}, update_mask=mask("labels")
        )
    ).cluster
    assert relabelled.id == other and dict(relabelled.labels) == {"site": "b"}


def test_a_datastore_is_inspected_and_deleted_by_name(daemon: RunningDaemon) -> None:
    cluster_id = make_topology(daemon.store, zones=3)[0]
    image = make_snapshot(daemon.store, cluster_id, uuid.uuid4().hex, "golden")
    stub = datastore_pb2_grpc.DatastoreServiceStub(daemon.channel)
    version = stub.CreateDatastoreVersion(
        dpb.CreateDatastoreVersionRequest(datastore="mysql", name="8.0", image_snapshot_id=image)
    ).datastore_version
    found = stub.InspectDatastore(dpb.InspectDatastoreRequest(datastore_name="mysql")).datastore
    assert found.id == version.datastore_id
    stub.DeleteDatastoreVersion(dpb.DeleteDatastoreVersionRequest(datastore_version_id=version.id))
    stub.DeleteDatastore(dpb.DeleteDatastoreRequest(datastore_name="mysql"))
    err = fails(stub.InspectDatastore, dpb.InspectDatastoreRequest(datastore_id=found.id))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_wrong_names_are_refused_naming_the_field_and_change_nothing(
    daemon: RunningDaemon,
) -> None:
    cluster_id, _nodes, _drives = make_topology(daemon.store, zones=3)
    other, _, _ = make_topology(daemon.store, zones=3, cluster_name="c2")
    stub = volumes(daemon)
    create(stub, cluster_id, "data", size="64M")
    before = generation(daemon)

    # A name without its cluster.
    err = fails(stub.InspectVolume, pb.InspectVolumeRequest(volume_name="data"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["cluster_id"])
    err = fails(stub.InspectVolume, pb.InspectVolumeRequest(volume_name="data", cluster_id="x"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["cluster_id"])
    # No such name, or not in that cluster.
    for cluster in (cluster_id, other):
        err = fails(
            stub.DeleteVolume,
            pb.DeleteVolumeRequest(
                volume_name="nope" if cluster == cluster_id else "data", cluster_id=cluster
            ),
        )
        assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["volume_name"])
    err = fails(
        stub.UpdateVolume,
        pb.UpdateVolumeRequest(
            volume_name="nope", cluster_id=cluster_id, labels={"a": "b"}, update_mask=mask("labels")
        ),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["volume_name"])
    cstub = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    err = fails(cstub.InspectCluster, cpb.InspectClusterRequest(cluster_name="c9"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["cluster_name"])
    assert generation(daemon) == before


def test_a_name_outside_the_name_rule_is_refused_naming_the_field(daemon: RunningDaemon) -> None:
    # NUL, too long, reserved: refused before any lookup, on both stores.
    cluster_id, _nodes, _drives = make_topology(daemon.store, zones=3)
    stub = volumes(daemon)
    for name in ("a\x00b", "x" * 201, "list", "a b"):
        err = fails(
            stub.InspectVolume, pb.InspectVolumeRequest(volume_name=name, cluster_id=cluster_id)
        )
        assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["volume_name"])
    dstub = datastore_pb2_grpc.DatastoreServiceStub(daemon.channel)
    err = fails(dstub.InspectDatastore, dpb.InspectDatastoreRequest(datastore_name="a\x00b"))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["datastore_name"])
