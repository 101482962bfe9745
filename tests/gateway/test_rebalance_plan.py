"""A rebalance preview over REST: GET /v1/pools/{pool_id}/rebalancePlan."""

from __future__ import annotations

from tests.factories import GIB, make_pool, make_topology, make_volume
from tests.gateway.conftest import RestDaemon


def test_a_rebalance_preview_over_rest(rest_daemon: RestDaemon) -> None:
    cluster_id, nodes, drives = make_topology(rest_daemon.store)
    pool = make_pool(rest_daemon.store, cluster_id, "p", node_ids=nodes)
    for _ in range(2):
        make_volume(
            rest_daemon.store, cluster_id, [drives[0], drives[2], drives[4]], 5 * GIB, pool_id=pool
        )
    answer = rest_daemon.http.get(f"/v1/pools/{pool}/rebalancePlan")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["moves"]) == 3 and body["complete"] is True
    assert body["spread_percent_before"] > body["spread_percent_after"]
    assert {m["source_drive_id"] for m in body["moves"]} == {drives[0], drives[2], drives[4]}
    assert int(body["generation"]) > 0
    missing = rest_daemon.http.get(f"/v1/pools/{'a' * 32}/rebalancePlan")
    assert missing.status_code == 404


def test_auto_balance_is_set_with_a_patch(rest_daemon: RestDaemon) -> None:
    cluster_id, nodes, _drives = make_topology(rest_daemon.store)
    pool = make_pool(rest_daemon.store, cluster_id, "p", node_ids=nodes)
    http = rest_daemon.http
    answer = http.patch(
        f"/v1/pools/{pool}", json={"auto_balance": True, "auto_balance_threshold_percent": 25}
    )
    assert answer.status_code == 200, answer.text
    shown = http.get(f"/v1/pools/{pool}").json()["pool"]
    assert (shown["auto_balance"], shown["auto_balance_threshold_percent"]) == (True, 25)
    wrong = http.patch(f"/v1/pools/{pool}", json={"auto_balance_threshold_percent": 0.0})
    assert wrong.status_code == 400 and "auto_balance_threshold_percent" in wrong.text


def test_the_cluster_rebalance_report_over_rest(rest_daemon: RestDaemon) -> None:
    cluster_id, nodes, _drives = make_topology(rest_daemon.store)
    pool = make_pool(rest_daemon.store, cluster_id, "p", node_ids=nodes)
    answer = rest_daemon.http.get(f"/v1/clusters/{cluster_id}/rebalanceStatus")
    assert answer.status_code == 200, answer.text
    [entry] = answer.json()["pools"]
    assert (entry["pool_id"], entry["pool_name"], entry["status"]) == (
        pool,
        "p",
        "REBALANCE_STATUS_NONE",
    )
    assert rest_daemon.http.get(f"/v1/clusters/{'a' * 32}/rebalanceStatus").status_code == 404
