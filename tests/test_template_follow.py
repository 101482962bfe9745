"""Templates that follow through: a template change propagated to its volumes,
a volume moved to another template or detached, and the template status, over
gRPC, REST and the CLI, on both stores."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import func, or_, select

from osd import cli
from osd.enums import JobKind, ObjectKind
from osd.store.models import AllocationRow, SnapshotRow, VolumeRow
from osd.v1 import job_pb2 as jpb
from osd.v1 import template_pb2 as tpb
from osd.v1 import template_pb2_grpc, volume_pb2_grpc
from osd.v1 import volume_pb2 as pb
from tests import auth_helpers
from tests.conftest import Database, RunningDaemon, running_daemon
from tests.factories import make_cluster, make_job_row, make_pool, make_topology
from tests.test_jobs import wait_job
from tests.volume_helpers import GIB, NONE, fails, generation, mask, replicated, templates, volumes


@dataclass
class World:
    d: RunningDaemon
    cluster_id: str
    nodes: list[str]
    drives: list[str]

    @property
    def t(self) -> template_pb2_grpc.TemplateServiceStub:
        return templates(self.d)

    @property
    def v(self) -> volume_pb2_grpc.VolumeServiceStub:
        return volumes(self.d)

    def template(self, name: str = "gold", **kw: Any) -> tpb.Template:
        fields: dict[str, Any] = {"durability": replicated(2), "qos": pb.Qos(iops_limit=1000)}
        fields.update(kw)
        return self.t.CreateTemplate(
            tpb.CreateTemplateRequest(cluster_id=self.cluster_id, name=name, **fields)
        ).template

    def volume(self, name: str, template_id: str = "", **kw: Any) -> pb.Volume:
        req = pb.CreateVolumeRequest(
            cluster_id=self.cluster_id, name=name, template_id=template_id, **{"size": "1G", **kw}
        )
        return self.v.CreateVolume(req).volume

    def get(self, volume_id: str) -> pb.Volume:
        return self.v.InspectVolume(pb.InspectVolumeRequest(volume_id=volume_id)).volume

    def copies(self, volume_id: str) -> int:
        with self.d.store.read() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(AllocationRow)
                    .where(AllocationRow.volume_id == volume_id)
                )
                or 0
            )


@pytest.fixture
def w(daemon: RunningDaemon) -> World:
    cluster_id, nodes, drives = make_topology(daemon.store)
    return World(daemon, cluster_id, nodes, drives)


def propagate(
    w: World, template_id: str, *paths: str, confirm: bool = False, **fields: Any
) -> tpb.UpdateTemplateResponse:
    return w.t.UpdateTemplate(
        tpb.UpdateTemplateRequest(
            template_id=template_id,
            update_mask=mask(*paths),
            propagate=True,
            yes_i_really_mean_it=confirm,
            **fields,
        )
    )


# -- propagation -----------------------------------------------------------------


def test_a_change_without_propagate_leaves_the_volumes_alone(w: World) -> None:
    t = w.template()
    a = w.volume("a", t.id)
    resp = w.t.UpdateTemplate(
        tpb.UpdateTemplateRequest(
            template_id=t.id, qos=pb.Qos(iops_limit=5000), update_mask=mask("qos")
        )
    )
    assert resp.template.qos.iops_limit == 5000
    assert not resp.HasField("propagation")
    assert w.get(a.id).qos.iops_limit == 1000


def test_qos_and_copies_follow_the_template_to_its_volumes_only(w: World) -> None:
    t = w.template()
    a, b = w.volume("a", t.id), w.volume("b", t.id)
    alone = w.volume("alone", durability=replicated(2), qos=pb.Qos(iops_limit=1000))
    gone = w.volume("gone", t.id)
    # Detached: no longer the template's.
    w.v.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=gone.id, template_id="", update_mask=mask("template_id"))
    )
    before = generation(w.d)
    resp = propagate(
        w,
        t.id,
        "qos",
        "durability",
        qos=pb.Qos(iops_limit=5000, bandwidth_limit_bytes=1 << 20),
        durability=replicated(3),
    )
    p = resp.propagation
    # The replica jobs the call started may already have written by now,
    # so the store may be past the generation the change committed at.
    assert before < resp.generation <= generation(w.d)
    assert list(p.updated_volume_ids) == [a.id, b.id]
    assert list(p.refused) == [] and p.unchanged_count == 0 and p.hidden_count == 0
    assert sorted(j.target.id for j in p.jobs) == sorted([a.id, b.id])
    assert {j.kind for j in p.jobs} == {jpb.JOB_KIND_VOLUME_REPLICA_CHANGE}
    # QoS changed within the call; the copies come with the jobs.
    for vol in (a, b):
        got = w.get(vol.id)
        assert (got.qos.iops_limit, got.qos.bandwidth_limit_bytes) == (5000, 1 << 20)
    for job in p.jobs:
        assert wait_job(w.d, job.id).state == jpb.JOB_STATE_DONE
    for vol in (a, b):
        assert w.get(vol.id).durability.replicas == 3 and w.copies(vol.id) == 3
    for other in (alone, gone):
        got = w.get(other.id)
        assert (got.qos.iops_limit, got.durability.replicas) == (1000, 2)
        assert w.copies(other.id) == 2
    # Again: nothing left to change.
    again = propagate(
        w,
        t.id,
        "qos",
        "durability",
        qos=pb.Qos(iops_limit=5000, bandwidth_limit_bytes=1 << 20),
        durability=replicated(3),
    ).propagation
    assert list(again.updated_volume_ids) == [] and again.unchanged_count == 2
    assert list(again.jobs) == []


def test_dropping_redundancy_needs_the_same_confirmation(w: World) -> None:
    t = w.template()
    a = w.volume("a", t.id)
    p = propagate(
        w, t.id, "qos", "durability", qos=pb.Qos(iops_limit=7), durability=pb.Durability(type=NONE)
    ).propagation
    assert list(p.updated_volume_ids) == [] and list(p.jobs) == []
    assert [(r.volume_id, r.reason) for r in p.refused] == [(a.id, "CONFIRMATION_REQUIRED")]
    assert "yes_i_really_mean_it" in p.refused[0].message
    # The volume is changed whole or not at all: its QoS stayed too.
    got = w.get(a.id)
    assert (got.qos.iops_limit, got.durability.replicas, w.copies(a.id)) == (1000, 2, 2)
    confirmed = propagate(
        w, t.id, "durability", durability=pb.Durability(type=NONE), confirm=True
    ).propagation
    assert list(confirmed.updated_volume_ids) == [a.id] and list(confirmed.refused) == []
    (job,) = confirmed.jobs
    assert wait_job(w.d, job.id).state == jpb.JOB_STATE_DONE
    got = w.get(a.id)
    assert got.durability.type == NONE and w.copies(a.id) == 1


def test_a_volume_with_a_job_in_progress_is_reported_and_left_whole(w: World) -> None:
    t = w.template()
    busy, free = w.volume("busy", t.id), w.volume("free", t.id)
    job_id = make_job_row(
        w.d.store,
        w.cluster_id,
        busy.id,
        kind=int(JobKind.VOLUME_REPAIR),
        target_kind=int(ObjectKind.VOLUME),
    )
    with w.d.store.write() as s:
        row = s.get(VolumeRow, busy.id)
        assert row is not None
        row.active_job_id = job_id
    p = propagate(
        w, t.id, "qos", "durability", qos=pb.Qos(iops_limit=9), durability=replicated(3)
    ).propagation
    assert [(r.volume_id, r.reason) for r in p.refused] == [(busy.id, "JOB_IN_PROGRESS")]
    assert list(p.updated_volume_ids) == [free.id]
    assert [j.target.id for j in p.jobs] == [free.id]
    assert w.get(busy.id).qos.iops_limit == 1000
    assert w.get(free.id).qos.iops_limit == 9


def test_a_qos_change_alone_starts_no_job_even_beside_one(w: World) -> None:
    t = w.template()
    a = w.volume("a", t.id)
    p = propagate(w, t.id, "qos", qos=pb.Qos(iops_limit=42)).propagation
    assert list(p.updated_volume_ids) == [a.id] and list(p.jobs) == []
    assert w.get(a.id).qos.iops_limit == 42


def test_a_placement_the_copies_obey_is_recorded_without_a_job(w: World) -> None:
    pool = make_pool(w.d.store, w.cluster_id, "all", node_ids=w.nodes)
    t = w.template()
    a = w.volume("a", t.id)
    p = propagate(w, t.id, "placement", placement=pb.Placement(pool_id=pool)).propagation
    assert list(p.updated_volume_ids) == [a.id] and list(p.jobs) == []
    assert w.get(a.id).placement.pool_id == pool


def test_a_copy_count_and_a_placement_at_once_are_refused_per_volume(w: World) -> None:
    pool = make_pool(w.d.store, w.cluster_id, "all", node_ids=w.nodes)
    t = w.template()
    a = w.volume("a", t.id)
    p = propagate(
        w,
        t.id,
        "durability",
        "placement",
        durability=replicated(3),
        placement=pb.Placement(pool_id=pool),
    ).propagation
    assert [(r.volume_id, r.reason) for r in p.refused] == [(a.id, "INVALID_ARGUMENT")]
    assert "not both" in p.refused[0].message
    got = w.get(a.id)
    assert (got.durability.replicas, got.placement.pool_id) == (2, "")
    # One at a time, each goes through.
    first = propagate(w, t.id, "placement", placement=pb.Placement(pool_id=pool)).propagation
    second = propagate(w, t.id, "durability", durability=replicated(3)).propagation
    assert list(first.updated_volume_ids) == list(second.updated_volume_ids) == [a.id]
    assert len(second.jobs) == 1


def test_an_erasure_layout_is_refused_per_volume(w: World) -> None:
    t = w.template()
    a = w.volume("a", t.id)
    p = propagate(
        w,
        t.id,
        "durability",
        durability=pb.Durability(
            type=pb.DURABILITY_TYPE_ERASURE, data_fragments=2, redundancy_fragments=1
        ),
    ).propagation
    assert [(r.volume_id, r.reason) for r in p.refused] == [(a.id, "INVALID_ARGUMENT")]
    assert w.get(a.id).durability.replicas == 2 and w.copies(a.id) == 2


@pytest.mark.parametrize(
    ("fields", "paths", "code", "field"),
    [
        (
            {"qos": pb.Qos(iops_limit=5), "placement": pb.Placement(pool_id="ab" * 16)},
            ("qos", "placement"),
            grpc.StatusCode.NOT_FOUND,
            "placement.pool_id",
        ),
        (
            {"qos": pb.Qos(iops_limit=5), "durability": replicated(9)},
            ("qos", "durability"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "durability.replicas",
        ),
        (
            {"qos": pb.Qos(iops_limit=5), "expected_generation": 1},
            ("qos",),
            grpc.StatusCode.ABORTED,
            "",
        ),
    ],
)
def test_a_refused_template_change_changes_no_volume(
    w: World, fields: dict[str, Any], paths: tuple[str, ...], code: grpc.StatusCode, field: str
) -> None:
    t = w.template()
    a = w.volume("a", t.id)
    before = generation(w.d)
    err = fails(
        w.t.UpdateTemplate,
        tpb.UpdateTemplateRequest(
            template_id=t.id, update_mask=mask(*paths), propagate=True, **fields
        ),
    )
    assert err.code == code
    if field:
        assert list(err.fields) == [field]
    assert generation(w.d) == before
    assert w.get(a.id).qos.iops_limit == 1000
    got = w.t.InspectTemplate(tpb.InspectTemplateRequest(template_id=t.id)).template
    assert (got.generation, got.qos, got.durability) == (t.generation, t.qos, t.durability)


def test_a_pool_of_another_cluster_is_refused(w: World) -> None:
    other = make_cluster(w.d.store, "other")
    pool = make_pool(w.d.store, other, "p")
    t = w.template()
    a = w.volume("a", t.id)
    err = fails(
        w.t.UpdateTemplate,
        tpb.UpdateTemplateRequest(
            template_id=t.id,
            qos=pb.Qos(iops_limit=3),
            placement=pb.Placement(pool_id=pool),
            update_mask=mask("qos", "placement"),
            propagate=True,
        ),
    )
    assert (err.code, list(err.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["placement.pool_id"])
    assert w.get(a.id).qos.iops_limit == 1000


# -- a volume's template ------------------------------------------------------------


def test_a_volumes_template_changes_only_the_record(w: World) -> None:
    gold = w.template()
    silver = w.template("silver", qos=pb.Qos(iops_limit=10), durability=replicated(3))
    a = w.volume("a", gold.id)
    moved = w.v.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=a.id, template_id=silver.id, update_mask=mask("template_id")
        )
    )
    assert moved.volume.template_id == silver.id and not moved.HasField("job")
    assert (moved.volume.qos.iops_limit, moved.volume.durability.replicas) == (1000, 2)
    listed = w.v.ListVolumes(pb.ListVolumesRequest(template_id=silver.id)).volumes
    assert [x.id for x in listed] == [a.id]

    def count(t: tpb.Template) -> int:
        got = w.t.InspectTemplate(tpb.InspectTemplateRequest(template_id=t.id))
        return got.template.volume_count

    assert (count(gold), count(silver)) == (0, 1)
    # Gold has no volume left: it can go.
    w.t.DeleteTemplate(tpb.DeleteTemplateRequest(template_id=gold.id))
    # Silver's propagated change now reaches the volume.
    p = propagate(w, silver.id, "qos", qos=pb.Qos(iops_limit=11)).propagation
    assert list(p.updated_volume_ids) == [a.id]
    detached = w.v.UpdateVolume(
        pb.UpdateVolumeRequest(volume_id=a.id, template_id="", update_mask=mask("template_id"))
    ).volume
    assert detached.template_id == "" and count(silver) == 0
    w.t.DeleteTemplate(tpb.DeleteTemplateRequest(template_id=silver.id))


def test_a_volumes_template_must_exist_in_its_cluster(w: World) -> None:
    other = make_cluster(w.d.store, "other")
    elsewhere = w.t.CreateTemplate(tpb.CreateTemplateRequest(cluster_id=other, name="x")).template
    a = w.volume("a", w.template().id)
    before = generation(w.d)
    for template_id, code in (
        (elsewhere.id, grpc.StatusCode.INVALID_ARGUMENT),
        ("ab" * 16, grpc.StatusCode.NOT_FOUND),
        ("not-an-id", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        err = fails(
            w.v.UpdateVolume,
            pb.UpdateVolumeRequest(
                volume_id=a.id,
                template_id=template_id,
                qos=pb.Qos(iops_limit=1),
                update_mask=mask("template_id", "qos"),
            ),
        )
        assert (err.code, list(err.fields)) == (code, ["template_id"])
    assert generation(w.d) == before
    got = w.get(a.id)
    assert got.template_id == a.template_id and got.qos.iops_limit == 1000


# -- status ---------------------------------------------------------------------------


def _allocated(w: World, volume_ids: list[str]) -> int:
    with w.d.store.read() as s:
        snaps = select(SnapshotRow.id).where(SnapshotRow.volume_id.in_(volume_ids))
        return int(
            s.scalar(
                select(func.coalesce(func.sum(AllocationRow.bytes), 0)).where(
                    or_(
                        AllocationRow.volume_id.in_(volume_ids),
                        AllocationRow.snapshot_id.in_(snaps),
                    )
                )
            )
            or 0
        )


def test_template_status_counts_what_was_made_and_the_room_left(w: World) -> None:
    pool = make_pool(w.d.store, w.cluster_id, "p", node_ids=w.nodes[:2])
    gold = w.template(placement=pb.Placement(pool_id=pool))
    empty = w.template("empty", durability=replicated(3), snapshot_factor=2.0)
    a, b = w.volume("a", gold.id), w.volume("b", gold.id, size="2G")
    w.volume("alone", durability=replicated(2))
    w.v.CreateSnapshot(pb.CreateSnapshotRequest(volume_id=a.id, name="snap"))

    st = w.t.GetTemplateStatus(tpb.GetTemplateStatusRequest(template_id=gold.id))
    assert st.generation == generation(w.d)
    s = st.status
    assert (s.template_id, s.name, s.volume_count, s.snapshot_count) == (gold.id, "gold", 2, 1)
    assert s.logical_bytes == (1 + 2 + 1) * GIB
    assert s.allocated_bytes == _allocated(w, [a.id, b.id]) >= (1 + 2) * 2 * GIB
    summary = w.v.GetCapacitySummary(pb.GetCapacitySummaryRequest(cluster_id=w.cluster_id))
    (cluster,) = summary.clusters
    (pool_cap,) = cluster.pools
    assert s.capacity == pool_cap.capacity and s.available_bytes == pool_cap.available_bytes
    assert s.capacity.total_bytes == 4 * 100 * GIB  # two nodes of two drives
    assert not s.HasField("tail_capacity") and s.tail_available_bytes == 0
    assert s.volume_available_bytes == s.available_bytes // 2 // 512 * 512

    whole = w.t.GetClusterTemplateStatus(
        tpb.GetClusterTemplateStatusRequest(cluster_id=w.cluster_id)
    )
    assert [x.name for x in whole.statuses] == ["empty", "gold"] and whole.generation > 0
    e = whole.statuses[0]
    assert (e.template_id, e.volume_count, e.snapshot_count) == (empty.id, 0, 0)
    assert (e.logical_bytes, e.allocated_bytes) == (0, 0)
    assert e.capacity == cluster.capacity and e.available_bytes == cluster.available_bytes
    # Three copies, each twice its share.
    assert e.volume_available_bytes == int(e.available_bytes // 3 / 2) // 512 * 512
    assert whole.statuses[1] == s


def test_a_tail_pool_has_its_own_figures(w: World) -> None:
    head = make_pool(w.d.store, w.cluster_id, "head", node_ids=w.nodes[:2])
    tail = make_pool(w.d.store, w.cluster_id, "tail", drive_ids=w.drives[4:5])
    t = w.template(
        durability=replicated(3), placement=pb.Placement(pool_id=head, tail_pool_id=tail)
    )
    s = w.t.GetTemplateStatus(tpb.GetTemplateStatusRequest(template_id=t.id)).status
    assert s.tail_capacity.total_bytes == 100 * GIB
    assert s.tail_available_bytes == 100 * GIB
    # Two copies in the head pool (400 GiB free), the last in the tail (100 GiB).
    assert s.volume_available_bytes == 100 * GIB


def test_status_refusals(w: World) -> None:
    for call, request, code, field in (
        (
            w.t.GetTemplateStatus,
            tpb.GetTemplateStatusRequest(template_id="ab" * 16),
            grpc.StatusCode.NOT_FOUND,
            "template_id",
        ),
        (
            w.t.GetTemplateStatus,
            tpb.GetTemplateStatusRequest(template_id="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "template_id",
        ),
        (
            w.t.GetClusterTemplateStatus,
            tpb.GetClusterTemplateStatusRequest(cluster_id="ab" * 16),
            grpc.StatusCode.NOT_FOUND,
            "cluster_id",
        ),
        (
            w.t.GetClusterTemplateStatus,
            tpb.GetClusterTemplateStatusRequest(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "cluster_id",
        ),
    ):
        err = fails(call, request)
        assert (err.code, list(err.fields)) == (code, [field])


# -- REST and the CLI -------------------------------------------------------------------


@dataclass
class Rest:
    w: World
    http: httpx.Client


@pytest.fixture
def rest(database: Database) -> Iterator[Rest]:
    with running_daemon(database, rest_enabled=True, rest_listen="127.0.0.1:0") as d:
        cluster_id, nodes, drives = make_topology(d.store)
        with httpx.Client(base_url=f"http://127.0.0.1:{d.daemon.rest_port}", timeout=10) as c:
            yield Rest(World(d, cluster_id, nodes, drives), c)


def test_rest_propagates_detaches_and_reports_status(rest: Rest) -> None:
    w, http = rest.w, rest.http
    t = w.template()
    a = w.volume("a", t.id)
    # propagate is a flag, not a field to change: the derived mask is qos.iopsLimit.
    r = http.patch(f"/v1/templates/{t.id}", json={"qos": {"iops_limit": "7000"}, "propagate": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["template"]["qos"]["iops_limit"] == "7000"
    assert body["propagation"]["updated_volume_ids"] == [a.id]
    assert body["propagation"]["refused"] == [] and body["propagation"]["jobs"] == []
    got = http.get(f"/v1/volumes/{a.id}").json()["volume"]
    assert got["qos"]["iops_limit"] == "7000"
    # Without confirmation a single copy is refused for the volume.
    r = http.patch(
        f"/v1/templates/{t.id}",
        json={"durability": {"type": "DURABILITY_TYPE_NONE"}, "propagate": True},
    )
    assert r.status_code == 200, r.text
    refused = r.json()["propagation"]["refused"]
    assert [(x["volume_id"], x["reason"]) for x in refused] == [(a.id, "CONFIRMATION_REQUIRED")]
    assert w.copies(a.id) == 2

    r = http.get(f"/v1/templates/{t.id}/status")
    assert r.status_code == 200, r.text
    status = r.json()["status"]
    assert (status["template_id"], status["volume_count"]) == (t.id, "1")
    assert int(r.json()["generation"]) == generation(w.d)
    r = http.get(f"/v1/clusters/{w.cluster_id}/templateStatus")
    assert r.status_code == 200, r.text
    assert [x["name"] for x in r.json()["statuses"]] == ["gold"]
    assert http.get(f"/v1/clusters/{'ab' * 16}/templateStatus").status_code == 404

    r = http.patch(f"/v1/volumes/{a.id}", json={"template_id": "nope"})
    assert r.status_code == 400, r.text
    r = http.patch(f"/v1/volumes/{a.id}", json={"template_id": ""})
    assert r.status_code == 200, r.text
    assert r.json()["volume"]["template_id"] == ""
    assert http.get(f"/v1/templates/{t.id}/status").json()["status"]["volume_count"] == "0"


def _osd(d: RunningDaemon, *argv: str) -> Any:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.MonkeyPatch.context() as mp:
        mp.setenv("OSD_CLIENT_CONFIG", "/nonexistent/osd-client.toml")
        rc = cli.main([*argv, "--endpoint", d.target, "-o", "json"])
    assert rc == 0, err.getvalue()
    return json.loads(out.getvalue())


def test_cli_propagates_and_reports_status(w: World) -> None:
    t = w.template()
    a = w.volume("a", t.id)
    out = _osd(w.d, "template", "update", t.id, "--qos-iops-limit", "321", "--propagate", "true")
    assert out["propagation"]["updated_volume_ids"] == [a.id]
    assert w.get(a.id).qos.iops_limit == 321
    status = _osd(w.d, "template", "status", t.id)["status"]
    assert (status["name"], status["volume_count"]) == ("gold", "1")
    whole = _osd(w.d, "cluster", "template-status", w.cluster_id)
    assert [x["template_id"] for x in whole["statuses"]] == [t.id]
    moved = _osd(w.d, "volume", "update", a.id, "--template-id", "", "--update-mask", "template_id")
    assert moved["volume"]["id"] == a.id and moved["volume"].get("template_id", "") == ""
    assert w.get(a.id).template_id == ""


# -- with authentication on ---------------------------------------------------------------


@pytest.fixture
def authed(database: Database, tmp_path: Path) -> Iterator[auth_helpers.World]:
    keys = auth_helpers.make_keys(tmp_path)
    with auth_helpers.auth_world(database, keys, tmp_path) as world:
        yield world


def test_a_propagated_change_reaches_only_volumes_the_caller_may_change(
    authed: auth_helpers.World,
) -> None:
    def as_(subject: str) -> list[tuple[str, str]]:
        token = auth_helpers.token(authed.keys, roles=["user"], subject=subject)
        return list(auth_helpers.bearer(token).items())

    alice, bob = as_("alice"), as_("bob")
    t_stub = template_pb2_grpc.TemplateServiceStub(authed.daemon.channel)
    v_stub = volume_pb2_grpc.VolumeServiceStub(authed.daemon.channel)
    t = t_stub.CreateTemplate(
        tpb.CreateTemplateRequest(
            cluster_id=authed.cluster_id, name="shared", qos=pb.Qos(iops_limit=100)
        ),
        metadata=alice,
    ).template

    def made(name: str, who: list[tuple[str, str]]) -> pb.Volume:
        req = pb.CreateVolumeRequest(
            cluster_id=authed.cluster_id, name=name, size="1G", template_id=t.id
        )
        return v_stub.CreateVolume(req, metadata=who).volume

    mine, hidden, seen = made("mine", alice), made("hidden", bob), made("seen", bob)
    v_stub.UpdateVolume(
        pb.UpdateVolumeRequest(
            volume_id=seen.id,
            acl=[pb.AccessGrant(user="alice", access=pb.ACCESS_READ)],
            update_mask=mask("acl"),
        ),
        metadata=bob,
    )
    p = t_stub.UpdateTemplate(
        tpb.UpdateTemplateRequest(
            template_id=t.id, qos=pb.Qos(iops_limit=200), update_mask=mask("qos"), propagate=True
        ),
        metadata=alice,
    ).propagation
    assert list(p.updated_volume_ids) == [mine.id]
    assert [(r.volume_id, r.reason) for r in p.refused] == [(seen.id, "ACCESS_DENIED")]
    assert p.hidden_count == 1 and hidden.id not in str(p)
    for vol, limit in ((mine, 200), (hidden, 100), (seen, 100)):
        got = v_stub.InspectVolume(
            pb.InspectVolumeRequest(volume_id=vol.id), metadata=bob if vol is not mine else alice
        )
        assert got.volume.qos.iops_limit == limit
