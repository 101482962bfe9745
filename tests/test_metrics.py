"""Prometheus metrics at /metrics on the REST port (with credentials when
authentication is on) and on a port of their own, parsed with
prometheus-client's own parser."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from osd.config import Settings, SettingsError
from osd.daemon import Daemon
from osd.v1 import volume_pb2
from tests.auth_helpers import (
    OK,
    PERMISSION_DENIED,
    Call,
    World,
    bearer,
    create_cluster,
    over_grpc,
    token,
)
from tests.conftest import Database, running_daemon
from tests.test_ownership import create, who

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


def test_metrics_count_calls_and_show_the_store(w: World) -> None:
    alice, dan = who(w, "alice"), who(w, "dan", "view")
    assert over_grpc(w, create(w.cluster_id, "measured"), alice).code == OK
    assert over_grpc(w, create_cluster("nope"), dan).code == PERMISSION_DENIED
    summary = over_grpc(
        w,
        Call(
            "/osd.v1.VolumeService/GetCapacitySummary",
            volume_pb2.GetCapacitySummaryRequest(cluster_id=w.cluster_id),
            volume_pb2.GetCapacitySummaryResponse,
            "GET",
            "",
        ),
        dan,
    ).body
    assert summary is not None
    [cluster] = summary["clusters"]

    anonymous = w.rest.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    answer = w.rest.get("/metrics", headers=dan)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples = scrape(answer.text)

    create_volume = "osd.v1.VolumeService/CreateVolume"
    assert value(samples, "osd_rpc_requests_total", method=create_volume, code="OK") == 1
    assert value(samples, "osd_rpc_duration_seconds_count", method=create_volume) == 1
    assert (
        value(
            samples,
            "osd_rpc_requests_total",
            method="osd.v1.ClusterService/CreateCluster",
            code="PERMISSION_DENIED",
        )
        == 1
    )
    capacity = cluster["capacity"]
    assert value(samples, "osd_cluster_capacity_bytes", cluster_id=w.cluster_id) == int(
        capacity["total_bytes"]
    )
    assert value(samples, "osd_cluster_used_bytes", cluster_id=w.cluster_id) == int(
        capacity["used_bytes"]
    )
    assert value(samples, "osd_cluster_provisioned_bytes", cluster_id=w.cluster_id) == int(
        cluster["provisioned_bytes"]
    )
    [volumes] = series(samples, "osd_volumes")
    assert volumes["cluster_id"] == w.cluster_id
    assert value(samples, "osd_volumes", **volumes) == 1
    drives = series(samples, "osd_drive_capacity_bytes")
    assert len(drives) > 1 and all(d["node_id"] and d["drive_id"] for d in drives)
    total = sum(value(samples, "osd_drive_capacity_bytes", **d) for d in drives)
    assert total == int(capacity["total_bytes"])
    used = sum(
        value(samples, "osd_node_used_bytes", **n) for n in series(samples, "osd_node_used_bytes")
    )
    assert used == int(capacity["used_bytes"]) > 0
    assert value(samples, "osd_store_up") == 1
    # A caller whose role may not read capacity may not read metrics either.
    custom = bearer(token(w.keys, roles=["node-reader"], subject="nr"))
    assert w.rest.get("/metrics", headers=custom).status_code == 403


def test_metrics_on_a_port_of_their_own(database: Database) -> None:
    with running_daemon(database, metrics_listen="127.0.0.1:0") as d:
        assert d.daemon.metrics_port
        answer = httpx.get(f"http://127.0.0.1:{d.daemon.metrics_port}/metrics", timeout=10)
        assert answer.status_code == 200
        assert value(scrape(answer.text), "osd_store_up") == 1


def test_a_public_metrics_port_needs_insecure(database: Database) -> None:
    settings = Settings(database_url=database.url, metrics_listen="0.0.0.0:0", auth_enabled=True)
    with pytest.raises(SettingsError, match="serves /metrics without credentials"):
        Daemon(settings).start()
