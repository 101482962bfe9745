"""REST updates mean what they say: a PATCH without update_mask changes the
leaf fields its body gives and nothing else, and request flags (shrink_ok,
expected_generation) are never taken as fields to change."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import GIB, make_topology
from tests.gateway.conftest import RestDaemon


def _volume(http: httpx.Client, cluster_id: str, **body: Any) -> dict[str, Any]:
    response = http.post(
        "/v1/volumes",
        json={"name": "v1", "cluster_id": cluster_id, "size": "20G", **body},
    )
    assert response.status_code == 200, response.text
    volume: dict[str, Any] = response.json()["volume"]
    return volume


def _patch(http: httpx.Client, volume_id: str, body: dict[str, Any]) -> httpx.Response:
    return http.patch(f"/v1/volumes/{volume_id}", json=body)


def test_a_nested_field_changes_alone(rest_daemon: RestDaemon) -> None:
    cluster_id, _, _ = make_topology(rest_daemon.store)
    http = rest_daemon.http
    vol = _volume(
        http, cluster_id, qos={"iops_limit": "1000", "bandwidth_limit_bytes": str(50 * 2**20)}
    )
    response = _patch(http, vol["id"], {"qos": {"iops_limit": "2000"}})
    assert response.status_code == 200, response.text
    qos = response.json()["volume"]["qos"]
    assert qos == {"iops_limit": "2000", "bandwidth_limit_bytes": str(50 * 2**20)}
    # The whole qos given as a path still replaces it whole.
    response = http.patch(
        f"/v1/volumes/{vol['id']}",
        json={"qos": {"iops_limit": "3000"}, "update_mask": "qos"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["volume"]["qos"] == {"iops_limit": "3000", "bandwidth_limit_bytes": "0"}


def test_a_replica_count_in_its_message_starts_the_change(rest_daemon: RestDaemon) -> None:
    cluster_id, _, _ = make_topology(rest_daemon.store)
    http = rest_daemon.http
    vol = _volume(http, cluster_id, durability={"type": "DURABILITY_TYPE_REPLICATE", "replicas": 2})
    response = _patch(http, vol["id"], {"durability": {"replicas": 3}})
    assert response.status_code == 202, response.text
    assert response.json()["job"]["kind"] == "JOB_KIND_VOLUME_REPLICA_CHANGE"


def test_shrink_ok_is_a_flag_not_a_field(rest_daemon: RestDaemon) -> None:
    cluster_id, _, _ = make_topology(rest_daemon.store)
    http = rest_daemon.http
    vol = _volume(http, cluster_id)
    refused = _patch(http, vol["id"], {"size": "11G"})
    assert refused.status_code == 409
    assert refused.json()["details"][0]["reason"] == "SHRINK_NOT_ALLOWED"
    response = _patch(
        http,
        vol["id"],
        {"size": "11G", "shrink_ok": True, "expected_generation": vol["generation"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["volume"]["size_bytes"] == str(11 * GIB)


def test_a_path_that_names_no_updatable_field_is_refused(rest_daemon: RestDaemon) -> None:
    cluster_id, _, _ = make_topology(rest_daemon.store)
    http = rest_daemon.http
    vol = _volume(http, cluster_id)
    response = _patch(http, vol["id"], {"durability": {"type": "DURABILITY_TYPE_NONE"}})
    assert response.status_code == 400
    body = response.json()
    assert "cannot update durability.type" in body["message"]


def test_size_add_grows_by_a_delta(rest_daemon: RestDaemon) -> None:
    cluster_id, _, _ = make_topology(rest_daemon.store)
    http = rest_daemon.http
    vol = _volume(http, cluster_id)
    response = _patch(http, vol["id"], {"size_add": "1G"})
    assert response.status_code == 200, response.text
    assert response.json()["volume"]["size_bytes"] == str(21 * GIB)
    refused = _patch(http, vol["id"], {"size_add": "1G", "size": "30G"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"].startswith("size_add: only one of size, size_add")


def test_one_copy_needs_the_confirmation_flag_which_is_no_field(rest_daemon: RestDaemon) -> None:
    cluster_id, _, _ = make_topology(rest_daemon.store)
    http = rest_daemon.http
    vol = _volume(http, cluster_id, durability={"type": "DURABILITY_TYPE_REPLICATE", "replicas": 2})
    refused = _patch(http, vol["id"], {"durability": {"replicas": 1}})
    assert refused.status_code == 409, refused.text
    assert refused.json()["details"][0]["reason"] == "CONFIRMATION_REQUIRED"
    started = _patch(http, vol["id"], {"durability": {"replicas": 1}, "yes_i_really_mean_it": True})
    assert started.status_code == 202, started.text
    assert started.json()["job"]["kind"] == "JOB_KIND_VOLUME_REPLICA_CHANGE"
