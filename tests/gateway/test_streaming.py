"""Server-streaming RPCs over REST: one JSON object per line."""

from __future__ import annotations

import json

from tests.gateway.conftest import ShapesGateway


def lines(body: bytes) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in body.splitlines()]


def test_each_response_is_a_result_line(shapes: ShapesGateway) -> None:
    response = shapes.http.get(
        "/v1/shapes:watch",
        params={"shape.small": 3, "name": "w"},
        headers={"X-Request-Id": "stream-1"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["x-request-id"] == "stream-1"
    got = lines(response.content)
    assert [g["result"]["request"]["shape"]["small"] for g in got] == [0, 1, 2]
    assert all(g["result"]["request"]["name"] == "w" for g in got)


def test_an_empty_stream(shapes: ShapesGateway) -> None:
    response = shapes.http.get("/v1/shapes:watch")
    assert (response.status_code, response.content) == (200, b"")


def test_a_failure_before_the_first_response_is_an_http_error(shapes: ShapesGateway) -> None:
    response = shapes.http.get("/v1/shapes:watch", params={"shape.count": 5})
    assert response.status_code == 404
    assert response.json()["status"] == "NOT_FOUND"


def test_a_failure_mid_stream_is_a_last_error_line(shapes: ShapesGateway) -> None:
    response = shapes.http.get("/v1/shapes:watch", params={"shape.small": 2, "shape.count": 10})
    assert response.status_code == 200
    got = lines(response.content)
    assert [set(g) for g in got] == [{"result"}, {"result"}, {"error"}]
    error = got[-1]["error"]
    assert (error["code"], error["status"], error["message"]) == (10, "ABORTED", "stream failed")
    assert error["details"][0]["reason"] == "FAKE"
