"""Rebase over REST: POST /v1/volumes/{volume_id}:rebase and
/v1/snapshots/{snapshot_id}:rebase, and the chain filters of the lists."""

from __future__ import annotations

from tests.factories import make_topology
from tests.gateway.conftest import RestDaemon


def test_a_clone_is_made_independent_over_rest(rest_daemon: RestDaemon) -> None:
    cluster_id, _nodes, _drives = make_topology(rest_daemon.store, zones=3)
    http = rest_daemon.http
    durability = {"type": "DURABILITY_TYPE_REPLICATE", "replicas": 3}
    base = http.post(
        "/v1/volumes",
        json={"cluster_id": cluster_id, "name": "base", "size": "64M", "durability": durability},
    ).json()["volume"]
    s1 = http.post(f"/v1/volumes/{base['id']}/snapshots", json={"name": "s1"}).json()["snapshot"]
    s2 = http.post(f"/v1/volumes/{base['id']}/snapshots", json={"name": "s2"}).json()["snapshot"]
    assert s2["parent_snapshot_id"] == s1["id"]
    clone = http.post(
        "/v1/volumes",
        json={
            "cluster_id": cluster_id,
            "name": "clone",
            "size": "64M",
            "durability": durability,
            "source": {"snapshot_id": s2["id"]},
        },
    ).json()["volume"]
    listed = http.get("/v1/volumes", params={"parent_snapshot_id": s2["id"]}).json()["volumes"]
    assert [v["id"] for v in listed] == [clone["id"]]
    children = http.get("/v1/snapshots", params={"parent_snapshot_id": s1["id"]}).json()
    assert [s["id"] for s in children["snapshots"]] == [s2["id"]]

    refused = http.post(
        f"/v1/volumes/{clone['id']}:rebase", json={"parent_snapshot_id": base["id"]}
    )
    assert refused.status_code == 404, refused.text
    assert "parent_snapshot_id" in refused.text
    up = http.post(f"/v1/volumes/{clone['id']}:rebase", json={"parent_snapshot_id": s1["id"]})
    assert up.status_code == 200, up.text
    assert up.json()["volume"]["parent_snapshot_id"] == s1["id"]
    free = http.post(f"/v1/volumes/{clone['id']}:rebase", json={})
    assert free.status_code == 200, free.text
    assert free.json()["volume"]["parent_snapshot_id"] == ""  # independent
    assert http.delete(f"/v1/snapshots/{s2['id']}").status_code == 200

    # s2 is gone: rebasing onto it names the field.
    gone = http.post(f"/v1/snapshots/{s1['id']}:rebase", json={"parent_snapshot_id": s2["id"]})
    assert gone.status_code == 404, gone.text
    assert "parent_snapshot_id" in gone.text
