"""TemplateService over the wire, and volumes created with templates, on both stores."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from osd.v1 import template_pb2 as tpb
from osd.v1 import template_pb2_grpc
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.factories import make_cluster, make_pool, make_topology
from tests.volume_helpers import (
    GIB,
    counts,
    fails,
    generation,
    mask,
    replicated,
    templates,
    volumes,
)

Stub = template_pb2_grpc.TemplateServiceStub


@pytest.fixture
def stub(daemon: RunningDaemon) -> Stub:
    return templates(daemon)


@pytest.fixture
def topo(daemon: RunningDaemon) -> tuple[str, list[str], list[str]]:
    return make_topology(daemon.store)


def gold(cluster_id: str = "", **kw: Any) -> tpb.CreateTemplateRequest:
    fields: dict[str, Any] = {
        "cluster_id": cluster_id,
        "name": "gold",
        "durability": replicated(3),
        "qos": pb.Qos(iops_limit=1000),
        "size": "8G",
        "snapshot_factor": 1.5,
        "provisioning": pb.PROVISIONING_THIN,
    }
    if "size_bytes" in kw:
        del fields["size"]
    fields.update(kw)
    return tpb.CreateTemplateRequest(**fields)


def test_crud(stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str], list[str]]) -> None:
    cluster_id = topo[0]
    resp = stub.CreateTemplate(gold(cluster_id, labels={"tier": "1"}))
    t = resp.template
    assert resp.created and resp.generation == generation(daemon)
    assert (t.name, t.size_bytes, t.snapshot_factor) == ("gold", 8 * GIB, 1.5)
    assert (t.durability.type, t.durability.replicas) == (pb.DURABILITY_TYPE_REPLICATE, 3)
    assert t.qos.iops_limit == 1000 and t.provisioning == pb.PROVISIONING_THIN
    assert not t.HasField("placement") and t.volume_count == 0
    again = stub.CreateTemplate(gold(cluster_id, labels={"tier": "1"}))
    assert not again.created and again.template.id == t.id
    err = fails(stub.CreateTemplate, gold(cluster_id, size="9G"))
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "TEMPLATE_EXISTS")

    assert stub.InspectTemplate(tpb.InspectTemplateRequest(template_id=t.id)).template == (
        again.template
    )
    stub.CreateTemplate(tpb.CreateTemplateRequest(cluster_id=cluster_id, name="silver"))
    page = stub.ListTemplates(tpb.ListTemplatesRequest(page_size=1))
    assert [x.name for x in page.templates] == ["gold"]
    page = stub.ListTemplates(tpb.ListTemplatesRequest(page_token=page.next_page_token))
    assert [x.name for x in page.templates] == ["silver"]
    listed = stub.ListTemplates(tpb.ListTemplatesRequest(labels={"tier": "1"})).templates
    assert [x.name for x in listed] == ["gold"]

    updated = stub.UpdateTemplate(
        tpb.UpdateTemplateRequest(
            template_id=t.id,
            name="platinum",
            size_bytes=0,  # removes the default size
            qos=pb.Qos(iops_limit=5000),
            update_mask=mask("name", "size_bytes", "qos"),
            expected_generation=t.generation,
        )
    ).template
    assert (updated.name, updated.size_bytes, updated.qos.iops_limit) == ("platinum", 0, 5000)
    assert updated.durability.replicas == 3  # untouched
    cleared = stub.UpdateTemplate(
        tpb.UpdateTemplateRequest(template_id=t.id, update_mask=mask("durability", "qos"))
    ).template
    assert not cleared.HasField("durability") and not cleared.HasField("qos")
    err = fails(
        stub.UpdateTemplate,
        tpb.UpdateTemplateRequest(
            template_id=t.id, name="x", update_mask=mask("name"), expected_generation=1
        ),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.ABORTED, "GENERATION_MISMATCH")
    err = fails(
        stub.UpdateTemplate,
        tpb.UpdateTemplateRequest(template_id=t.id, name="silver", update_mask=mask("name")),
    )
    assert err.reason == "TEMPLATE_EXISTS"
    stub.DeleteTemplate(tpb.DeleteTemplateRequest(template_id=t.id))
    err = fails(stub.InspectTemplate, tpb.InspectTemplateRequest(template_id=t.id))
    assert (err.code, list(err.fields)) == (grpc.StatusCode.NOT_FOUND, ["template_id"])


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"cluster_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "cluster_id"),
        ({"cluster_id": "ab" * 16}, grpc.StatusCode.NOT_FOUND, "cluster_id"),
        ({"name": "a b"}, grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ({"size": "7"}, grpc.StatusCode.INVALID_ARGUMENT, "size"),
        ({"size_bytes": -512}, grpc.StatusCode.INVALID_ARGUMENT, "size_bytes"),
        ({"snapshot_factor": 1.0}, grpc.StatusCode.INVALID_ARGUMENT, "snapshot_factor"),
        ({"durability": replicated(7)}, grpc.StatusCode.INVALID_ARGUMENT, "durability.replicas"),
        ({"qos": pb.Qos(iops_limit=-2)}, grpc.StatusCode.INVALID_ARGUMENT, "qos.iops_limit"),
        (
            {"placement": pb.Placement(pool_id="ab" * 16)},
            grpc.StatusCode.NOT_FOUND,
            "placement.pool_id",
        ),
        ({"kind": 9}, grpc.StatusCode.INVALID_ARGUMENT, "kind"),
    ],
)
def test_create_refusals(
    stub: Stub,
    daemon: RunningDaemon,
    topo: tuple[str, list[str], list[str]],
    fields: dict[str, Any],
    code: grpc.StatusCode,
    field: str,
) -> None:
    before = counts(daemon)
    err = fails(stub.CreateTemplate, gold(**{"cluster_id": topo[0], **fields}))
    assert (err.code, list(err.fields)) == (code, [field])
    assert counts(daemon) == before


def test_a_volume_takes_the_templates_defaults(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str], list[str]]
) -> None:
    cluster_id, nodes, _ = topo
    pool = make_pool(daemon.store, cluster_id, "p", node_ids=nodes)
    t = stub.CreateTemplate(gold(cluster_id, placement=pb.Placement(pool_id=pool))).template
    vols = volumes(daemon)
    v = vols.CreateVolume(pb.CreateVolumeRequest(name="from-template", template_id=t.id)).volume
    assert v.cluster_id == cluster_id and v.template_id == t.id
    assert (v.size_bytes, v.durability.replicas, v.qos.iops_limit) == (8 * GIB, 3, 1000)
    assert (v.snapshot_factor, v.provisioning) == (1.5, pb.PROVISIONING_THIN)
    assert v.placement.pool_id == pool
    # The request's own fields win over the template's.
    w = vols.CreateVolume(
        pb.CreateVolumeRequest(
            name="override",
            template_id=t.id,
            size="2G",
            durability=replicated(2),
            provisioning=pb.PROVISIONING_THICK,
        )
    ).volume
    assert (w.size_bytes, w.durability.replicas, w.qos.iops_limit) == (2 * GIB, 2, 1000)
    assert w.provisioning == pb.PROVISIONING_THICK
    listed = vols.ListVolumes(pb.ListVolumesRequest(template_id=t.id)).volumes
    assert {x.name for x in listed} == {"from-template", "override"}
    assert (
        stub.InspectTemplate(tpb.InspectTemplateRequest(template_id=t.id)).template.volume_count
        == 2
    )
    # In use: refused, with the count.
    err = fails(stub.DeleteTemplate, tpb.DeleteTemplateRequest(template_id=t.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TEMPLATE_IN_USE")
    assert err.metadata["count"] == "2"
    for x in listed:
        vols.DeleteVolume(pb.DeleteVolumeRequest(volume_id=x.id))
    stub.DeleteTemplate(tpb.DeleteTemplateRequest(template_id=t.id))


def test_a_template_of_another_cluster_conflicts(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str], list[str]]
) -> None:
    other = make_cluster(daemon.store, "other")
    t = stub.CreateTemplate(tpb.CreateTemplateRequest(cluster_id=other, name="t")).template
    err = fails(
        volumes(daemon).CreateVolume,
        pb.CreateVolumeRequest(cluster_id=topo[0], name="v", size="1G", template_id=t.id),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["cluster_id"])


def test_an_unlimited_qos_written_explicitly_overrides_the_template(
    stub: Stub, daemon: RunningDaemon, topo: tuple[str, list[str], list[str]]
) -> None:
    cluster_id = topo[0]
    t = stub.CreateTemplate(
        gold(cluster_id, qos=pb.Qos(iops_limit=1000, bandwidth_limit_bytes=50 * 2**20))
    ).template
    vols = volumes(daemon)
    request = pb.CreateVolumeRequest(name="free", template_id=t.id)
    request.qos.SetInParent()  # "qos": {}
    free = vols.CreateVolume(request).volume
    assert (free.qos.iops_limit, free.qos.bandwidth_limit_bytes) == (0, 0)
    capped = vols.CreateVolume(pb.CreateVolumeRequest(name="capped", template_id=t.id)).volume
    assert (capped.qos.iops_limit, capped.qos.bandwidth_limit_bytes) == (1000, 50 * 2**20)
    # And lifted on a volume that has limits.
    lifted = vols.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=capped.id, qos=pb.Qos(), update_mask=mask("qos"))
    ).volume
    assert (lifted.qos.iops_limit, lifted.qos.bandwidth_limit_bytes) == (0, 0)
