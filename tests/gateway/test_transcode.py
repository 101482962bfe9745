"""HTTP -> request message: body, query and path; response -> JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import GatewayError, Reason
from gateway.routes import Route, Router, method_routes
from gateway.transcode import build_request, response_json
from gateway.upstream import message_class
from osd.contract import contract
from osd.v1 import cluster_pb2
from tests.gateway import shapes as shapes_proto

ROUTER = Router(
    [r for e in contract() for m in e.descriptor.methods for r in method_routes(m)]
    + [r for m in shapes_proto.service().methods for r in method_routes(m)]
)


def build(
    method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None
) -> Any:
    route, values = ROUTER.resolve(method, path)
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return build_request(route, message_class(route.input_type), values, query or [], raw)


def refused(method: str, path: str, body: Any = None, query: Any = None) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        build(method, path, body, query)
    assert caught.value.http_status == 400
    return caught.value


def fields(error: GatewayError) -> list[str]:
    return [v.field for v in error.violations]


def test_body_star_with_original_and_camel_case_names() -> None:
    request = build("POST", "/v1/clusters", {"name": "east", "labels": {"a": "b"}, "block": False})
    assert request == cluster_pb2.CreateClusterRequest(name="east", labels={"a": "b"}, block=False)
    assert request.HasField("block") and not request.HasField("file")
    update = build("PATCH", "/v1/clusters/c1", {"updateMask": "name", "expectedGeneration": 7})
    assert update.update_mask.paths == ["name"]
    assert update.expected_generation == 7
    assert update.cluster_id == "c1"


def test_int64_as_string_or_number_and_range_checks() -> None:
    for value in ("9223372036854775807", 9223372036854775807, "-5", 12.0):
        request = build("POST", "/v1/shapes", {"shape": {"count": value}})
        assert request.shape.count == int(float(value)) if isinstance(value, float) else int(value)
    error = refused("POST", "/v1/shapes", {"shape": {"count": "9223372036854775808"}})
    assert fields(error) == ["shape.count"]
    assert "out of range" in error.message
    error = refused("POST", "/v1/shapes", {"shape": {"size": -1, "small": 2**31, "count": 1.5}})
    assert fields(error) == ["shape.size", "shape.small", "shape.count"]


def test_enums_by_name_or_number() -> None:
    request = build(
        "POST", "/v1/shapes", {"shape": {"color": "COLOR_RED", "colors": [2, "COLOR_RED"]}}
    )
    assert request.shape.color == 1
    assert list(request.shape.colors) == [2, 1]
    error = refused("POST", "/v1/shapes", {"shape": {"color": "PURPLE"}})
    assert fields(error) == ["shape.color"]
    assert "one of COLOR_UNSPECIFIED, COLOR_RED, COLOR_BLUE" in error.message


def test_well_known_types() -> None:
    request = build(
        "POST",
        "/v1/shapes",
        {
            "shape": {
                "when": "2024-05-01T12:00:00Z",
                "span": "1.5s",
                "maybeCount": "3",
                "extra": {"k": [1, "x", None]},
                "blob": "aGVsbG8",
            },
            "update_mask": "shape.maybeCount,expected_generation",
        },
    )
    assert request.shape.when.seconds == 1714564800
    assert request.shape.span.seconds == 1 and request.shape.span.nanos == 500_000_000
    assert request.shape.maybe_count.value == 3
    assert request.shape.extra["k"][1] == "x"
    assert request.shape.blob == b"hello"
    assert list(request.update_mask.paths) == ["shape.maybe_count", "expected_generation"]
    error = refused(
        "POST", "/v1/shapes", {"shape": {"when": "yesterday", "span": 3, "blob": "***"}}
    )
    assert fields(error) == ["shape.when", "shape.span", "shape.blob"]


def test_unknown_fields_wrong_types_and_nulls() -> None:
    error = refused("POST", "/v1/clusters", {"name": 5, "labels": {"a": 1}, "nope": True})
    assert error.reason == Reason.INVALID_FIELD
    assert fields(error) == ["name", "labels['a']", "nope"]
    assert "nope: unknown field of osd.v1.CreateClusterRequest" in error.message
    assert "name: expected a string, got a number" in error.message
    # null means "not set"
    assert build("POST", "/v1/clusters", {"name": "x", "labels": None}).labels == {}
    error = refused("POST", "/v1/shapes", {"names": ["a", None], "shape": {"flag": "yes"}})
    assert fields(error) == ["names[1]", "shape.flag"]


def test_a_field_given_twice_or_two_members_of_a_oneof() -> None:
    error = refused(
        "POST", "/v1/clusters", {"name": "a", "labels": {}, "block": True, "file": True, "Name": 1}
    )
    assert fields(error) == ["Name"]
    error = refused("POST", "/v1/shapes", {"update_mask": "name", "updateMask": "name"})
    assert "given twice" in error.message
    error = refused("POST", "/v1/shapes", {"shape": {"a": "x", "b": 1}})
    assert fields(error) == ["shape.b"]
    assert "oneof choice" in error.message


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"name": "a", "name": "b"}', "has the key 'name' twice"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_bodies(raw: bytes, problem: str) -> None:
    error = refused("POST", "/v1/clusters", raw)
    assert problem in error.message


def test_an_empty_body_is_an_empty_object() -> None:
    assert build("POST", "/v1/clusters", b"") == cluster_pb2.CreateClusterRequest()


def test_a_body_where_the_route_takes_none() -> None:
    error = refused("GET", "/v1/clusters/c1", {"cluster_id": "c1"})
    assert error.reason == Reason.BODY_NOT_ALLOWED


def test_query_scalars_repeated_maps_and_nested() -> None:
    request = build(
        "GET",
        "/v1/shapes/s1",
        query=[
            ("shape.count", "12"),
            ("shape.flag", "true"),
            ("shape.colors", "COLOR_RED"),
            ("shape.colors", "2"),
            ("shape.weights[a]", "5"),
            ("shape.inner.tags", "x"),
            ("shape.inner.tags", "y"),
            ("shape.maybeCount", "4"),
            ("labels[env]", "prod"),
            ("names", "n1"),
            ("updateMask", "name,labels"),
        ],
    )
    assert request.shape.id == "s1"
    assert request.shape.count == 12 and request.shape.flag
    assert list(request.shape.colors) == [1, 2]
    assert request.shape.weights == {"a": 5}
    assert list(request.shape.inner.tags) == ["x", "y"]
    assert request.shape.maybe_count.value == 4
    assert request.labels == {"env": "prod"} and list(request.names) == ["n1"]
    assert list(request.update_mask.paths) == ["name", "labels"]


@pytest.mark.parametrize(
    ("param", "problem"),
    [
        (("nope", "1"), "unknown field 'nope'"),
        (("shape.id", "x"), "shape.id is set by the path"),
        (("labels", "x"), "is a map: give each entry as labels[KEY]=VALUE"),
        (("names[k]", "x"), "names is not a map"),
        (("shape", "x"), "shape is a message: name its fields"),
        (("shape.inners.name", "x"), "inners has no fields to name"),
        (("shape.flag", "maybe"), "expected true or false, got a string 'maybe'"),
        (("shape.count", "ten"), "expected an integer"),
        (("bad name", "x"), "is not a parameter name"),
    ],
)
def test_bad_query_parameters_name_the_parameter(param: tuple[str, str], problem: str) -> None:
    error = refused("GET", "/v1/shapes/s1", query=[param])
    assert error.reason == Reason.INVALID_QUERY
    assert problem in error.message


def test_a_single_field_given_twice_in_the_query() -> None:
    error = refused("GET", "/v1/clusters", query=[("page_size", "1"), ("page_size", "2")])
    assert "is given more than once" in error.message


def test_no_query_on_a_body_star_route() -> None:
    error = refused("POST", "/v1/clusters", {"name": "x"}, query=[("name", "y")])
    assert fields(error) == ["name"]
    assert "every field from the request body" in error.message


def test_path_values_and_body_values_must_agree() -> None:
    assert build("PATCH", "/v1/clusters/c1", {"cluster_id": "c1", "name": "x"}).cluster_id == "c1"
    error = refused("PATCH", "/v1/clusters/c1", {"cluster_id": "c2"})
    assert error.reason == Reason.INVALID_PATH
    assert "the path says 'c1' but the body says 'c2'" in error.message


def test_path_variable_inside_the_body_field() -> None:
    request = build("PATCH", "/v1/shapes/s1", {"count": "3"})
    assert request.shape.id == "s1" and request.shape.count == 3


def test_patch_derives_the_mask_from_the_top_level_keys() -> None:
    request = build(
        "PATCH", "/v1/clusters/c1", {"name": "x", "labels": {}, "expectedGeneration": 3}
    )
    assert list(request.update_mask.paths) == ["name", "labels"]
    assert request.expected_generation == 3
    # the mask given wins
    request = build("PATCH", "/v1/clusters/c1", {"name": "x", "update_mask": "labels"})
    assert list(request.update_mask.paths) == ["labels"]
    # nothing to derive: no mask (the daemon then names update_mask as required)
    assert not build("PATCH", "/v1/clusters/c1", {}).HasField("update_mask")


def test_patch_of_one_body_field_derives_the_mask_inside_it() -> None:
    request = build("PATCH", "/v1/shapes/s1", {"count": 1, "maybeCount": 2})
    assert list(request.update_mask.paths) == ["count", "maybe_count"]
    # An object is walked into: its leaves are the paths.
    request = build("PATCH", "/v1/wholes/s1", {"shape": {"count": 1}, "name": "n"})
    assert list(request.update_mask.paths) == ["shape.count", "name"]


def test_patch_derives_leaf_paths_and_leaves_out_the_request_flags() -> None:
    vol = "/v1/volumes/" + "a" * 32
    request = build("PATCH", vol, {"qos": {"iops_limit": "2000"}})
    assert list(request.update_mask.paths) == ["qos.iops_limit"]
    assert request.qos.iops_limit == 2000
    request = build("PATCH", vol, {"durability": {"replicas": 3}})
    assert list(request.update_mask.paths) == ["durability.replicas"]
    request = build("PATCH", vol, {"size": "11G", "shrink_ok": True, "expectedGeneration": 4})
    assert list(request.update_mask.paths) == ["size"]
    assert request.shrink_ok and request.expected_generation == 4
    # Maps, lists and empty objects are leaves; camelCase keys give proto paths.
    request = build("PATCH", vol, {"labels": {"a": "b"}, "multiAttach": True, "placement": {}})
    assert list(request.update_mask.paths) == ["labels", "multi_attach", "placement"]
    request = build("PATCH", vol, {"qos": {"iopsLimit": "1", "bandwidthLimitBytes": "2"}})
    assert list(request.update_mask.paths) == ["qos.iops_limit", "qos.bandwidth_limit_bytes"]


def test_posts_do_not_derive_masks() -> None:
    assert not build("POST", "/v1/shapes", {"name": "x"}).HasField("update_mask")


def _route(method: str, path: str) -> Route:
    return ROUTER.resolve(method, path)[0]


def test_responses_use_proto_names_defaults_int64_strings_and_enum_names() -> None:
    response = shapes_proto.message("EchoResponse")()
    response.request.shape.count = 5
    response.request.shape.color = 2
    doc = response_json(_route("GET", "/v1/shapes/s1"), response)
    shape = doc["request"]["shape"]
    assert shape["count"] == "5" and shape["color"] == "COLOR_BLUE"
    assert shape["size"] == "0" and shape["colors"] == [] and shape["weights"] == {}
    assert "inner" not in shape and "note" not in shape  # unset messages and optionals
    assert doc["metadata"] == {} and "job" not in doc


def test_response_body_picks_one_field() -> None:
    response = shapes_proto.message("EchoResponse")()
    response.request.name = "n"
    doc = response_json(_route("GET", "/v1/shapes/s1/inner"), response)
    assert doc["name"] == "n" and "request" not in doc
    assert (
        response_json(_route("GET", "/v1/shapes/s1/inner"), shapes_proto.message("EchoResponse")())
        == {}
    )
