"""Every RPC of the contract has a route that reaches the daemon over HTTP.

A pending RPC answers 501 naming its capability. An implemented one answers
whatever the daemon says, but never the gateway's own 404 (no route) or 405:
a 404 must be the daemon's NOT_FOUND for the made-up id in the path. Cluster
routes get a real cluster, so they answer neither 404 nor 405 at all.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.app import GatewayApp
from gateway.routes import Route
from osd.contract import contract
from osd.server.registry import PENDING, implemented_methods
from tests.gateway.conftest import RestDaemon

SOME_ID = "0123456789abcdef0123456789abcdef"


def _url(route: Route, values: dict[str, str]) -> str:
    return re.sub(
        r"\{([^}=]+)(=[^}]*)?\}", lambda m: values.get(m.group(1), SOME_ID), route.template
    )


def _reasons(body: Any) -> list[str]:
    return [d.get("reason", "") for d in body.get("details", []) if isinstance(d, dict)]


def test_the_gateway_routes_every_rpc_of_the_contract() -> None:
    app = GatewayApp("127.0.0.1:1")
    expected = {m.full_name for e in contract() for m in e.descriptor.methods}
    assert {r.method.full_name for r in app.routes} == expected
    assert len(expected) >= 70


def test_every_route_reaches_the_daemon(rest_daemon: RestDaemon) -> None:
    http = rest_daemon.http
    implemented = {f"{e.full_name}.{name}" for e in contract() for name in implemented_methods(e)}
    assert "osd.v1.ClusterService.InspectCluster" in implemented
    app = GatewayApp(rest_daemon.grpc_target)
    for i, route in enumerate(app.routes):
        full = route.method.full_name
        service = route.method.containing_service.full_name
        values: dict[str, str] = {}
        if "cluster_id" in route.bound_paths():
            created = http.post("/v1/clusters", json={"name": f"parity{i}"})
            values["cluster_id"] = created.json()["cluster"]["id"]
        body = b"{}" if route.body else b""
        response = http.request(route.http_method, _url(route, values), content=body)
        if response.headers.get("content-type") == "application/x-ndjson":
            # A stream (Watch): it reached the daemon and answered, line by line.
            assert response.status_code == 200, (full, response.text)
            continue
        answer = response.json()
        assert response.status_code != 405, (full, answer)
        if response.status_code >= 400:
            reasons = _reasons(answer)
            assert reasons and reasons[0] not in ("NO_ROUTE", "METHOD_NOT_ALLOWED"), full
        if full not in implemented:
            assert response.status_code == 501, (full, answer)
            assert _reasons(answer)[0] == "CAPABILITY_PENDING"
            assert PENDING[service] in answer["message"], full
            assert route.method.name in answer["message"]
        elif values and any(v.name.endswith("_name") for v in route.variables):
            # By name: it reached the lookup in the cluster, which knows no such name.
            assert response.status_code == 404, (full, answer)
            [violation] = answer["details"][1]["field_violations"]
            assert violation["field"].endswith("_name"), (full, answer)
        elif values:
            assert response.status_code != 404, (full, answer)
        else:
            assert response.status_code != 501 or "CAPABILITY_PENDING" not in _reasons(answer)
