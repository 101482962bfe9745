"""The gRPC -> HTTP table, and each row of it over real HTTP.

Rows the daemon can produce today are exercised against the real daemon (on
both stores); the others (codes no osd RPC returns yet) through the same
gateway code in front of the fake ShapeService.
"""

from __future__ import annotations

import socket
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.errors import HTTP_STATUS, rpc_error, status_body
from gateway.server import GatewayServer
from tests.gateway.conftest import RestDaemon, ShapesGateway
from tests.helpers import node_row

MISSING_ID = "0" * 32

EXPECTED = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def test_the_table_covers_every_code() -> None:
    assert {code.name: status for code, status in HTTP_STATUS.items()} == EXPECTED
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


def detail(body: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        d for d in body["details"] if d["@type"] == f"type.googleapis.com/google.rpc.{kind}"
    ]
    assert len(found) == 1, body
    return found[0]


def assert_error(
    response: httpx.Response, status: int, code: str, reason: str = ""
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "status", "message", "details"}
    assert body["status"] == code
    assert body["code"] == grpc.StatusCode[code].value[0]
    assert body["message"]
    if reason:
        assert detail(body, "ErrorInfo")["reason"] == reason
    assert detail(body, "RequestInfo")["request_id"] == response.headers["x-request-id"]
    return body


# -- unit ------------------------------------------------------------------


def test_status_body_decodes_details_and_adds_a_request_info() -> None:
    status = status_pb2.Status(code=5, message="gone")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="R", domain="d"))
    unknown = any_pb2.Any(type_url="type.googleapis.com/x.Unknown", value=b"\x01")
    status.details.append(unknown)
    body = status_body(status, "rid")
    assert body["code"] == 5 and body["status"] == "NOT_FOUND" and body["message"] == "gone"
    assert body["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "R",
        "domain": "d",
    }
    assert body["details"][1] == {"@type": "type.googleapis.com/x.Unknown", "value": "AQ=="}
    assert body["details"][2]["request_id"] == "rid"
    status.details.add().Pack(error_details_pb2.RequestInfo(request_id="theirs"))
    assert [d.get("request_id") for d in status_body(status, "rid")["details"]][-1] == "theirs"


def test_rpc_error_reads_the_status_trailer_when_it_agrees_with_the_code() -> None:
    status = status_pb2.Status(code=6, message="taken")
    trailer = [("grpc-status-details-bin", status.SerializeToString())]
    assert rpc_error(grpc.StatusCode.ALREADY_EXISTS, "taken", trailer) == (409, status)
    http, plain = rpc_error(grpc.StatusCode.INTERNAL, "boom", trailer)
    assert (http, plain.code, plain.message) == (500, 13, "boom")
    http, plain = rpc_error(
        grpc.StatusCode.UNAVAILABLE, "down", [("grpc-status-details-bin", b"\xff\xff")]
    )
    assert (http, plain.code, plain.message) == (503, 14, "down")


# -- rows produced by the real daemon --------------------------------------


def create(http: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    response = http.post("/v1/clusters", json={"name": name, **fields})
    assert response.status_code == 200, response.text
    cluster: dict[str, Any] = response.json()["cluster"]
    return cluster


def test_invalid_argument_from_the_daemon_names_the_field(http: httpx.Client) -> None:
    body = assert_error(
        http.post("/v1/clusters", json={"name": "no spaces"}), 400, "INVALID_ARGUMENT"
    )
    violations = detail(body, "BadRequest")["field_violations"]
    assert [v["field"] for v in violations] == ["name"]


def test_not_found(http: httpx.Client) -> None:
    body = assert_error(http.get(f"/v1/clusters/{MISSING_ID}"), 404, "NOT_FOUND", "NOT_FOUND")
    assert MISSING_ID in body["message"]


def test_already_exists(http: httpx.Client) -> None:
    create(http, "east", block=True)
    assert_error(
        http.post("/v1/clusters", json={"name": "east", "block": False}), 409, "ALREADY_EXISTS"
    )


def test_failed_precondition_for_an_object_in_use(rest_daemon: RestDaemon) -> None:
    cluster = create(rest_daemon.http, "busy")
    with rest_daemon.store.write() as session:
        session.add(node_row(cluster["id"], "n1"))
    body = assert_error(
        rest_daemon.http.delete(f"/v1/clusters/{cluster['id']}"),
        409,
        "FAILED_PRECONDITION",
        "CLUSTER_NOT_EMPTY",
    )
    assert "not empty" in body["message"]
    assert detail(body, "ErrorInfo")["metadata"] == {"nodes": "1"}


def test_aborted_on_a_generation_mismatch(http: httpx.Client) -> None:
    cluster = create(http, "gen")
    response = http.patch(
        f"/v1/clusters/{cluster['id']}", json={"name": "gen2", "expected_generation": "999"}
    )
    assert_error(response, 409, "ABORTED")


def test_deadline_exceeded(http: httpx.Client) -> None:
    response = http.get("/v1/clusters", headers={"grpc-timeout": "1n"})
    assert_error(response, 504, "DEADLINE_EXCEEDED")
    bad = http.get("/v1/clusters", headers={"grpc-timeout": "soon"})
    assert "Grpc-Timeout" in assert_error(bad, 400, "INVALID_ARGUMENT")["message"]


def test_unavailable_when_the_daemon_stops(rest_daemon: RestDaemon) -> None:
    gateway = GatewayServer("127.0.0.1:0", rest_daemon.grpc_target, call_timeout=3)
    gateway.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            assert client.get("/v1/clusters").status_code == 200
            assert client.get("/healthz").json() == {"status": "SERVING"}
            rest_daemon.daemon.stop(grace=0)
            assert_error(client.get("/v1/clusters"), 503, "UNAVAILABLE")
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "UNKNOWN"
    finally:
        gateway.stop()


def test_healthz_follows_the_health_service(rest_daemon: RestDaemon) -> None:
    assert rest_daemon.http.get("/healthz").json() == {"status": "SERVING"}
    rest_daemon.daemon._set_serving(False)
    response = rest_daemon.http.get("/healthz")
    assert (response.status_code, response.json()) == (503, {"status": "NOT_SERVING"})


# -- rows the gateway produces itself -----------------------------------------


def test_malformed_json(http: httpx.Client) -> None:
    body = assert_error(
        http.post("/v1/clusters", content=b'{"name": }'), 400, "INVALID_ARGUMENT", "MALFORMED_JSON"
    )
    assert "not valid JSON" in body["message"] and "column 10" in body["message"]


def test_unknown_field(http: httpx.Client) -> None:
    body = assert_error(
        http.post("/v1/clusters", json={"name": "x", "colour": "red"}),
        400,
        "INVALID_ARGUMENT",
        "INVALID_FIELD",
    )
    assert body["message"] == "colour: unknown field of osd.v1.CreateClusterRequest"
    assert detail(body, "BadRequest")["field_violations"] == [
        {"field": "colour", "description": "unknown field of osd.v1.CreateClusterRequest"}
    ]


def test_wrong_type(http: httpx.Client) -> None:
    body = assert_error(
        http.post("/v1/clusters", json={"name": "x", "block": "yes"}),
        400,
        "INVALID_ARGUMENT",
        "INVALID_FIELD",
    )
    assert body["message"] == "block: expected true or false, got a string 'yes'"


def test_bad_query_parameter(http: httpx.Client) -> None:
    body = assert_error(
        http.get("/v1/clusters", params={"page_size": "many"}),
        400,
        "INVALID_ARGUMENT",
        "INVALID_QUERY",
    )
    assert body["message"].startswith("page_size: expected an integer")


def test_body_over_the_limit(http: httpx.Client) -> None:
    response = http.post("/v1/clusters", content=b" " * (1024 * 1024 + 1))
    body = assert_error(response, 413, "INVALID_ARGUMENT", "BODY_TOO_LARGE")
    assert "over the limit of 1048576 bytes" in body["message"]


def test_body_over_the_limit_without_a_content_length(shapes: ShapesGateway) -> None:
    def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    response = shapes.http.post("/v1/shapes", content=chunks())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "INVALID_ARGUMENT", "BODY_TOO_LARGE")


def test_wrong_method_answers_405_with_allow(http: httpx.Client) -> None:
    response = http.put(f"/v1/clusters/{MISSING_ID}", json={})
    body = assert_error(response, 405, "UNIMPLEMENTED", "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    assert "PUT is not allowed" in body["message"]
    response = http.post("/healthz")
    assert (response.status_code, response.headers["allow"]) == (405, "GET")


def test_unknown_path_answers_404(http: httpx.Client) -> None:
    body = assert_error(http.get("/v1/widgets"), 404, "NOT_FOUND", "NO_ROUTE")
    assert body["message"] == "no route for /v1/widgets"


def test_client_streaming_rpcs_answer_501(shapes: ShapesGateway) -> None:
    body = assert_error(
        shapes.http.post("/v1/shapes:upload", json={}),
        501,
        "UNIMPLEMENTED",
        "NOT_SUPPORTED_OVER_REST",
    )
    assert "call it over gRPC" in body["message"]


# -- every other code, through the fake ------------------------------------


@pytest.mark.parametrize(
    "code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK], ids=lambda c: c.name
)
def test_each_code_maps_through_the_table(shapes: ShapesGateway, code: grpc.StatusCode) -> None:
    response = shapes.http.post(
        "/v1/shapes:fail",
        json={"name": f"failed with {code.name}", "shape": {"small": code.value[0]}},
    )
    body = assert_error(response, HTTP_STATUS[code], code.name, "FAKE")
    assert body["message"] == f"failed with {code.name}"


def test_an_unreachable_daemon_answers_503() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    gateway = GatewayServer("127.0.0.1:0", dead, call_timeout=3)
    gateway.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            assert_error(client.get("/v1/clusters"), 503, "UNAVAILABLE")
    finally:
        gateway.stop()


def test_an_unexpected_failure_answers_500_and_is_logged(
    shapes: ShapesGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("rendering broke")

    monkeypatch.setattr("gateway.transcode.response_json", broken)
    response = shapes.http.get("/v1/shapes/s1", headers={"X-Request-Id": "r-500"})
    body = assert_error(response, 500, "INTERNAL", "INTERNAL")
    assert "request id r-500" in body["message"]
    assert "rendering broke" in caplog.text
