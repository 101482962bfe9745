"""FlushNode and ReadyNode over REST: POST /v1/nodes/{node_id}:flush and :ready."""

from __future__ import annotations

from tests.factories import make_cluster, make_drive, make_node
from tests.gateway.conftest import RestDaemon


def test_a_node_is_flushed_and_readied_over_rest(rest_daemon: RestDaemon) -> None:
    store, http = rest_daemon.store, rest_daemon.http
    cluster_id = make_cluster(store, "c1")
    a = make_node(store, cluster_id, "a", "z1")
    b = make_node(store, cluster_id, "b", "z1")
    c = make_node(store, cluster_id, "c", "z2")
    for node in (a, b, c):
        make_drive(store, node, "/dev/sdb")
        make_drive(store, node, "/dev/sdc")
    made = http.post(
        "/v1/volumes",
        json={
            "cluster_id": cluster_id,
            "name": "v",
            "size": "1G",
            "durability": {"type": "DURABILITY_TYPE_REPLICATE", "replicas": 2},
        },
    )
    assert made.status_code == 200, made.text
    volume_id = made.json()["volume"]["id"]
    put = http.post(
        f"/v1/volumes/{volume_id}:attach", json={"node_id": a, "mode": "ATTACH_MODE_READ_WRITE"}
    )
    assert put.status_code == 200, put.text

    flushed = http.post(f"/v1/nodes/{a}:flush", json={})
    assert flushed.status_code == 200, flushed.text
    body = flushed.json()
    assert body["node"]["domain_state"] == "DOMAIN_STATE_FLUSH"
    assert body["moved"] == [
        {
            "volume_id": volume_id,
            "from_node_id": a,
            "to_node_id": b,
            "mode": "ATTACH_MODE_READ_WRITE",
        }
    ]
    assert body.get("not_moved", []) == []
    shown = http.get(f"/v1/volumes/{volume_id}").json()
    assert [x["node_id"] for x in shown["attachments"]] == [b]

    refused = http.post(
        f"/v1/volumes/{volume_id}:attach", json={"node_id": a, "mode": "ATTACH_MODE_READ_ONLY"}
    )
    assert refused.status_code == 409 and "NODE_FLUSHING" in refused.text

    readied = http.post(f"/v1/nodes/{a}:ready", json={})
    assert readied.status_code == 200, readied.text
    assert readied.json()["node"]["domain_state"] == "DOMAIN_STATE_READY"
    assert [m["to_node_id"] for m in readied.json()["returned"]] == [a]
    shown = http.get(f"/v1/volumes/{volume_id}").json()
    assert [x["node_id"] for x in shown["attachments"]] == [a]

    wrong = http.post("/v1/nodes/nope:flush", json={})
    assert wrong.status_code == 400 and "node_id" in wrong.text
