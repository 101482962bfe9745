"""Every read answers with the store generation it reflects (top-level
`generation`), on SQLite and PostgreSQL: every change up to it is in the
answer, and a change made before the read is. Over REST:
tests/gateway/test_read_generation.py."""

from __future__ import annotations

import importlib
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor

from osd.v1 import (
    datastore_pb2,
    datastore_pb2_grpc,
    service_pb2,
    service_pb2_grpc,
    template_pb2,
    volume_pb2,
)
from tests.conftest import RunningDaemon
from tests.factories import make_pool, make_snapshot, make_topology
from tests.volume_helpers import create, generation, mask, templates, volumes

SERVICE_MODULES = (
    "audit",
    "cluster",
    "datastore",
    "job",
    "node",
    "pool",
    "service",
    "template",
    "volume",
)
READ_PREFIXES = ("Inspect", "List", "Get")


def read_methods() -> list[MethodDescriptor]:
    """Every unary read of the osd.v1 services."""
    found = []
    for name in SERVICE_MODULES:
        module = importlib.import_module(f"osd.v1.{name}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            found.extend(
                m
                for m in service.methods
                if m.name.startswith(READ_PREFIXES) and not m.server_streaming
            )
    return found


def call(channel: grpc.Channel, method: MethodDescriptor, request: Any) -> Any:
    module = importlib.import_module(method.output_type.file.name.replace("/", ".")[:-6] + "_pb2")
    response_class = getattr(module, method.output_type.name)
    invoke = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    return invoke(request, timeout=10)


def objects(daemon: RunningDaemon) -> dict[str, str]:
    """One of each kind of object, made over the wire where a call makes it;
    field name -> id."""
    cluster_id, nodes, drives = make_topology(daemon.store)
    pool_id = make_pool(daemon.store, cluster_id, "p1", drive_ids=drives)
    vol = create(volumes(daemon), cluster_id, "v1", size="1G")
    snap = volumes(daemon).CreateSnapshot(
        volume_pb2.CreateSnapshotRequest(volume_id=vol.id, name="s1"), timeout=10
    )
    tpl = templates(daemon).CreateTemplate(
        template_pb2.CreateTemplateRequest(cluster_id=cluster_id, name="t1"), timeout=10
    )
    image = make_snapshot(daemon.store, cluster_id, vol.id, "image")
    version = datastore_pb2_grpc.DatastoreServiceStub(daemon.channel).CreateDatastoreVersion(
        datastore_pb2.CreateDatastoreVersionRequest(
            datastore="mysql", name="8.0", image_snapshot_id=image
        ),
        timeout=10,
    )
    service = service_pb2_grpc.ServiceStub(daemon.channel)
    added = service.StartDriveAdd(
        service_pb2.StartDriveAddRequest(node_id=nodes[0], device_path="/dev/sdq"), timeout=10
    )
    service.StartDriveReplace(
        service_pb2.StartDriveReplaceRequest(
            source_drive_id=drives[0], target_device_path="/dev/sdn"
        ),
        timeout=10,
    )
    return {
        "cluster_id": cluster_id,
        "node_id": nodes[0],
        "drive_id": drives[0],
        "source_drive_id": drives[0],
        "pool_id": pool_id,
        "volume_id": vol.id,
        "snapshot_id": snap.snapshot.id,
        "template_id": tpl.template.id,
        "datastore_id": version.datastore_version.datastore_id,
        "datastore_version_id": version.datastore_version.id,
        "job_id": added.job.id,
    }


def request_for(method: MethodDescriptor, ids: dict[str, str]) -> Any:
    module = importlib.import_module(method.input_type.file.name.replace("/", ".")[:-6] + "_pb2")
    request = getattr(module, method.input_type.name)()
    for field in method.input_type.fields:
        # Lists filtered by nothing list everything; single objects are named.
        if field.name in ids and method.name.startswith(("Inspect", "Get")):
            setattr(request, field.name, ids[field.name])
    if method.name == "GetDriveAddStatus":
        request.device_path = "/dev/sdq"
    return request


def test_every_read_answers_with_a_generation_that_holds_every_earlier_change(
    daemon: RunningDaemon,
) -> None:
    ids = objects(daemon)
    methods = read_methods()
    assert len(methods) >= 25  # the test is not vacuous
    for method in methods:
        before = generation(daemon)
        answer = call(daemon.channel, method, request_for(method, ids))
        after = generation(daemon)
        assert before <= answer.generation <= after, method.full_name


def test_a_read_after_a_change_reflects_it_and_its_generation(daemon: RunningDaemon) -> None:
    stub = volumes(daemon)
    cluster_id, _, _ = make_topology(daemon.store)
    vol = create(stub, cluster_id, "v1", size="1G")
    first = stub.InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=vol.id), timeout=10)
    again = stub.InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=vol.id), timeout=10)
    assert first.generation == again.generation >= vol.generation > 0
    for round_ in range(3):
        changed = stub.UpdateVolume(
            volume_pb2.UpdateVolumeRequest(
                volume_id=vol.id, labels={"round": str(round_)}, update_mask=mask("labels")
            ),
            timeout=10,
        )
        seen = stub.InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=vol.id), timeout=10)
        assert seen.volume.labels["round"] == str(round_)
        assert seen.generation >= changed.generation > first.generation
        listed = stub.ListVolumes(volume_pb2.ListVolumesRequest(cluster_id=cluster_id), timeout=10)
        assert listed.generation >= changed.generation
        assert [v.labels["round"] for v in listed.volumes] == [str(round_)]
