"""Objects by name over REST: /v1/clusters/by-name/{cluster_name},
/v1/datastores/by-name/{datastore_name}, and
/v1/clusters/{cluster_id}/<kind>/by-name/{name} for nodes, pools, templates,
volumes and snapshots (GET, PATCH and DELETE)."""

from __future__ import annotations

import uuid

from tests.factories import make_pool, make_snapshot, make_topology
from tests.gateway.conftest import RestDaemon


def test_volumes_and_snapshots_by_name(rest_daemon: RestDaemon) -> None:
    cluster_id, _nodes, _drives = make_topology(rest_daemon.store, zones=3)
    http = rest_daemon.http
    made = http.post(
        "/v1/volumes",
        json={
            "cluster_id": cluster_id,
            "name": "data",
            "size": "64M",
            "durability": {"type": "DURABILITY_TYPE_REPLICATE", "replicas": 3},
        },
    )
    assert made.status_code == 200, made.text
    vol_id = made.json()["volume"]["id"]
    base = f"/v1/clusters/{cluster_id}/volumes/by-name"

    got = http.get(f"{base}/data")
    assert got.status_code == 200, got.text
    assert got.json()["volume"]["id"] == vol_id
    assert int(got.json()["generation"]) > 0

    patched = http.patch(f"{base}/data", json={"size_add": "64M"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["volume"]["size_bytes"] == str(128 << 20)

    snap = http.post(f"/v1/volumes/{vol_id}/snapshots", json={"name": "s1"})
    assert snap.status_code == 200, snap.text
    snaps = f"/v1/clusters/{cluster_id}/snapshots/by-name"
    assert http.get(f"{snaps}/s1").json()["snapshot"]["id"] == snap.json()["snapshot"]["id"]
    assert http.delete(f"{snaps}/s1").status_code == 200

    missing = http.get(f"{base}/nope")
    assert missing.status_code == 404, missing.text
    assert "volume_name" in missing.text
    bad = http.get("/v1/clusters/not-an-id/volumes/by-name/data")
    assert bad.status_code == 400, bad.text
    assert "cluster_id" in bad.text

    # A path that says which volume is not overridden by a name or an id
    # beside it, in the body or the query.
    other = http.patch(f"/v1/volumes/{vol_id}", json={"volume_name": "x", "labels": {"a": "b"}})
    assert other.status_code == 400, other.text
    assert "volume_name" in other.text
    other = http.get(f"{base}/data", params={"volume_id": "a" * 32})
    assert other.status_code == 400, other.text
    assert "volume_id" in other.text
    other = http.get(f"/v1/volumes/{vol_id}", params={"cluster_id": cluster_id})
    assert other.status_code == 400, other.text
    assert http.get(f"/v1/volumes/{vol_id}").json()["volume"]["labels"] == {}

    assert http.delete(f"{base}/data").status_code == 200
    assert http.get(f"/v1/volumes/{vol_id}").status_code == 404


def test_topology_objects_by_name(rest_daemon: RestDaemon) -> None:
    # A cluster named like a route's own word is still found by name.
    cluster_id, nodes, _drives = make_topology(rest_daemon.store, zones=3, cluster_name="topology")
    http = rest_daemon.http
    got = http.get("/v1/clusters/by-name/topology")
    assert got.status_code == 200, got.text
    assert got.json()["cluster"]["id"] == cluster_id
    relabel = http.patch("/v1/clusters/by-name/topology", json={"labels": {"site": "a"}})
    assert relabel.status_code == 200, relabel.text
    assert relabel.json()["cluster"]["labels"] == {"site": "a"}
    # ... and its topology by id as before.
    assert http.get(f"/v1/clusters/{cluster_id}/topology").status_code == 200

    node = http.get(f"/v1/clusters/{cluster_id}/nodes/by-name/n1-0")
    assert node.status_code == 200, node.text
    assert node.json()["node"]["id"] == nodes[1]

    pool_id = make_pool(rest_daemon.store, cluster_id, "fast", node_ids=nodes[:1])
    pool = http.get(f"/v1/clusters/{cluster_id}/pools/by-name/fast")
    assert pool.status_code == 200, pool.text
    assert pool.json()["pool"]["id"] == pool_id
    assert http.delete(f"/v1/clusters/{cluster_id}/pools/by-name/fast").status_code == 200
    assert http.get(f"/v1/pools/{pool_id}").status_code == 404

    made = http.post("/v1/templates", json={"cluster_id": cluster_id, "name": "gold", "size": "1G"})
    assert made.status_code == 200, made.text
    tmpl = http.get(f"/v1/clusters/{cluster_id}/templates/by-name/gold")
    assert tmpl.json()["template"]["id"] == made.json()["template"]["id"]

    image = make_snapshot(rest_daemon.store, cluster_id, uuid.uuid4().hex, "golden")
    version = http.post(
        "/v1/datastoreVersions",
        json={"datastore": "mysql", "name": "8.0", "image_snapshot_id": image},
    )
    assert version.status_code == 200, version.text
    store = http.get("/v1/datastores/by-name/mysql")
    assert store.status_code == 200, store.text
    assert store.json()["datastore"]["id"] == version.json()["datastore_version"]["datastore_id"]
    assert http.get("/v1/datastores/by-name/nope").status_code == 404
