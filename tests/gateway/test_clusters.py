"""Cluster CRUD over REST against the real daemon, on both stores."""

from __future__ import annotations

from typing import Any

import httpx

from osd.v1 import cluster_pb2, cluster_pb2_grpc
from tests.gateway.conftest import RestDaemon


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_create_inspect_and_idempotent_create(rest_daemon: RestDaemon) -> None:
    http = rest_daemon.http
    created = ok(
        http.post("/v1/clusters", json={"name": "east", "labels": {"env": "prod"}, "file": False})
    )
    cluster = created["cluster"]
    assert created["created"] is True
    assert created["generation"] == "1"  # int64 as a string
    assert cluster["name"] == "east" and cluster["labels"] == {"env": "prod"}
    assert cluster["block"] is True and cluster["file"] is False
    assert set(cluster) == {
        "id",
        "name",
        "labels",
        "block",
        "file",
        "create_time",
        "update_time",
        "generation",
        "repair",
    }
    again = ok(
        http.post("/v1/clusters", json={"name": "east", "labels": {"env": "prod"}, "file": False})
    )
    assert again["created"] is False and again["cluster"]["id"] == cluster["id"]
    assert ok(http.get(f"/v1/clusters/{cluster['id']}"))["cluster"] == cluster
    # what REST created is what gRPC reads
    stub = cluster_pb2_grpc.ClusterServiceStub(rest_daemon.channel)
    seen = stub.InspectCluster(cluster_pb2.InspectClusterRequest(cluster_id=cluster["id"]))
    assert (seen.cluster.name, seen.cluster.file) == ("east", False)


def test_list_pages_through_every_cluster(http: httpx.Client) -> None:
    names = [f"c{i:02d}" for i in range(7)]
    for name in names:
        ok(
            http.post(
                "/v1/clusters", json={"name": name, "labels": {"odd": str(int(name[-1]) % 2)}}
            )
        )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = ok(http.get("/v1/clusters", params={"page_size": 3, "page_token": token}))
        assert len(page["clusters"]) <= 3
        seen += [c["name"] for c in page["clusters"]]
        pages += 1
        token = page["next_page_token"]
        if not token:
            break
    assert seen == names and pages == 3
    odd = ok(http.get("/v1/clusters", params={"labels[odd]": "1"}))
    assert [c["name"] for c in odd["clusters"]] == ["c01", "c03", "c05"]
    matched = ok(http.get("/v1/clusters", params={"nameRegex": "^c0[12]$"}))
    assert [c["name"] for c in matched["clusters"]] == ["c01", "c02"]


def test_patch_with_a_derived_mask_changes_only_what_it_names(rest_daemon: RestDaemon) -> None:
    http = rest_daemon.http
    cluster = ok(http.post("/v1/clusters", json={"name": "old", "labels": {"a": "1"}}))["cluster"]
    url = f"/v1/clusters/{cluster['id']}"
    renamed = ok(http.patch(url, json={"name": "new", "expectedGeneration": cluster["generation"]}))
    assert renamed["cluster"]["name"] == "new"
    assert renamed["cluster"]["labels"] == {"a": "1"}  # not in the body: unchanged
    assert renamed["cluster"]["block"] is True
    relabelled = ok(http.patch(url, json={"labels": {"b": "2"}, "block": False}))["cluster"]
    assert (relabelled["name"], relabelled["labels"], relabelled["block"]) == (
        "new",
        {"b": "2"},
        False,
    )
    explicit = ok(http.patch(url, json={"name": "ignored", "file": False, "update_mask": "file"}))
    assert (explicit["cluster"]["name"], explicit["cluster"]["file"]) == ("new", False)
    # stored state, read over gRPC
    stub = cluster_pb2_grpc.ClusterServiceStub(rest_daemon.channel)
    stored = stub.InspectCluster(cluster_pb2.InspectClusterRequest(cluster_id=cluster["id"]))
    assert (
        stored.cluster.name,
        dict(stored.cluster.labels),
        stored.cluster.block,
        stored.cluster.file,
    ) == ("new", {"b": "2"}, False, False)


def test_patch_without_fields_names_update_mask(http: httpx.Client) -> None:
    cluster = ok(http.post("/v1/clusters", json={"name": "x"}))["cluster"]
    response = http.patch(f"/v1/clusters/{cluster['id']}", json={})
    assert response.status_code == 400
    assert response.json()["message"].startswith("update_mask: is required")


def test_status_and_delete(http: httpx.Client) -> None:
    cluster = ok(http.post("/v1/clusters", json={"name": "gone"}))["cluster"]
    status = ok(http.get(f"/v1/clusters/{cluster['id']}/status"))
    assert status["node_count"] == "0" and status["capacity"]["total_bytes"] == "0"
    deleted = ok(http.delete(f"/v1/clusters/{cluster['id']}"))
    assert int(deleted["generation"]) > int(cluster["generation"])
    assert http.get(f"/v1/clusters/{cluster['id']}").status_code == 404
    assert ok(http.get("/v1/clusters"))["clusters"] == []


def test_page_tokens_over_rest_are_refused_the_same_way(rest_daemon: RestDaemon) -> None:
    http = rest_daemon.http
    for name in ("c1", "c2"):
        assert http.post("/v1/clusters", json={"name": name}).status_code in (200, 201)
    page = http.get("/v1/clusters", params={"page_size": 1}).json()
    token = page["next_page_token"]
    assert http.get("/v1/clusters", params={"page_token": token}).status_code == 200
    refused = http.get("/v1/clusters", params={"page_token": token, "name_regex": "c"})
    assert refused.status_code == 400, refused.text
    assert "other filters" in refused.text
    edited = http.get("/v1/clusters", params={"page_token": "x" + token[1:]})
    assert edited.status_code == 400 and "page_token" in edited.text


def test_the_daemons_sharing_the_store_are_listed(rest_daemon: RestDaemon) -> None:
    listed = ok(rest_daemon.http.get("/v1/daemons"))["daemons"]
    [me] = [d for d in listed if d["this_daemon"]]
    assert me["state"] == "DAEMON_STATE_SERVING"
    assert me["pid"] > 0 and me["version"] and me["address"].startswith("127.0.0.1:")
    host, pid, run = me["name"].split(":")
    assert (host, int(pid)) == (me["host"], me["pid"]) and run
    assert me["heartbeat_time"] >= me["start_time"]


def test_wait_for_generation_over_rest(rest_daemon: RestDaemon) -> None:
    made = ok(rest_daemon.http.post("/v1/clusters", json={"name": "gen"}))
    waited = ok(
        rest_daemon.http.post("/v1/generation:wait", json={"generation": made["generation"]})
    )
    assert waited["reached"] is True and int(waited["generation"]) >= int(made["generation"])
    missed = ok(
        rest_daemon.http.post(
            "/v1/generation:wait",
            json={"generation": str(int(made["generation"]) + 50), "wait_seconds": 0.2},
        )
    )
    assert missed["reached"] is False


def test_the_topology_over_rest_is_the_grpc_answer(rest_daemon: RestDaemon) -> None:
    from google.protobuf import json_format

    from tests.factories import make_topology

    cluster_id, _, drives = make_topology(rest_daemon.store, zones=2)
    body = ok(rest_daemon.http.get(f"/v1/clusters/{cluster_id}/topology"))
    stub = cluster_pb2_grpc.ClusterServiceStub(rest_daemon.channel)
    answer = stub.GetClusterTopology(cluster_pb2.GetClusterTopologyRequest(cluster_id=cluster_id))
    assert json_format.ParseDict(body, cluster_pb2.GetClusterTopologyResponse()) == answer
    assert sorted(d["id"] for n in body["nodes"] for d in n["drives"]) == sorted(drives)
    missing = rest_daemon.http.get(f"/v1/clusters/{'a' * 32}/topology")
    assert missing.status_code == 404


def test_the_status_over_rest_lists_each_services_health(rest_daemon: RestDaemon) -> None:
    from tests.factories import make_topology

    cluster_id, _, drives = make_topology(rest_daemon.store, zones=1, drives_per_node=1)
    body = ok(rest_daemon.http.get(f"/v1/clusters/{cluster_id}/status"))
    kinds = {(h["kind"], h.get("up", False)) for h in body["services"]}
    assert kinds == {("SERVICE_KIND_DAEMON", True), ("SERVICE_KIND_DRIVE", True)}
    assert [h["name"] for h in body["services"] if h["kind"] == "SERVICE_KIND_DRIVE"] == drives
    assert body.get("services_down", "0") == "0"
