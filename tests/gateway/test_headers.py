"""Authorization, X-Api-Key and X-Request-Id between HTTP and gRPC."""

from __future__ import annotations

import re

import httpx

from tests.gateway.conftest import ShapesGateway


def test_credentials_pass_through_as_metadata(shapes: ShapesGateway) -> None:
    response = shapes.http.get(
        "/v1/shapes/s1",
        headers={"Authorization": "Bearer t0ken", "X-Api-Key": "k3y", "Cookie": "c=1"},
    )
    assert response.status_code == 200
    metadata = response.json()["metadata"]
    assert metadata["authorization"] == "Bearer t0ken"
    assert metadata["x-api-key"] == "k3y"
    assert "cookie" not in metadata


def test_no_credentials_no_metadata(shapes: ShapesGateway) -> None:
    metadata = shapes.http.get("/v1/shapes/s1").json()["metadata"]
    assert "authorization" not in metadata and "x-api-key" not in metadata


def test_a_request_id_is_passed_on_and_returned(shapes: ShapesGateway) -> None:
    response = shapes.http.get("/v1/shapes/s1", headers={"X-Request-Id": "trace-1.a:b"})
    assert response.headers["x-request-id"] == "trace-1.a:b"
    assert response.json()["metadata"]["x-request-id"] == "trace-1.a:b"


def test_a_request_id_is_made_when_missing_or_malformed(shapes: ShapesGateway) -> None:
    for headers in ({}, {"X-Request-Id": "not ok!"}, {"X-Request-Id": "x" * 129}):
        response = shapes.http.get("/v1/shapes/s1", headers=headers)
        made = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        assert response.json()["metadata"]["x-request-id"] == made


def test_the_daemon_echoes_the_request_id(http: httpx.Client) -> None:
    response = http.get("/v1/clusters", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    failed = http.get("/v1/clusters/" + "0" * 32, headers={"X-Request-Id": "abc-456"})
    assert failed.headers["x-request-id"] == "abc-456"
    infos = [d for d in failed.json()["details"] if d["@type"].endswith("RequestInfo")]
    assert infos == [
        {"@type": "type.googleapis.com/google.rpc.RequestInfo", "request_id": "abc-456"}
    ]


def test_gateway_errors_carry_the_request_id_too(http: httpx.Client) -> None:
    response = http.get("/v1/nowhere", headers={"X-Request-Id": "r-404"})
    assert response.headers["x-request-id"] == "r-404"
    assert response.json()["details"][-1]["request_id"] == "r-404"
