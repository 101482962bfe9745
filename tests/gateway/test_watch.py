"""GET /v1/watch: the recorded changes as one JSON object per line."""

from __future__ import annotations

import json

from tests.factories import make_topology
from tests.gateway.conftest import RestDaemon


def test_watch_over_rest_is_ndjson(rest_daemon: RestDaemon) -> None:
    _, nodes, _ = make_topology(rest_daemon.daemon.engine.store)
    response = rest_daemon.http.get("/v1/watch", params={"kinds": "OBJECT_KIND_NODE"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line)["result"] for line in response.content.splitlines()]
    assert {e["object_id"] for e in lines} == set(nodes)
    assert all(e["action"] == "WATCH_ACTION_CREATED" and e["node"]["id"] for e in lines)
    later = rest_daemon.http.get(
        "/v1/watch",
        params={"from_generation": lines[-1]["generation"], "kinds": "OBJECT_KIND_NODE"},
    )
    assert (later.status_code, later.content) == (200, b"")
