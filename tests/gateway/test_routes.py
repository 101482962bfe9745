"""Routes from http rules: templates, matching, precedence, 404/405."""

from __future__ import annotations

import pytest
from google.api import http_pb2

from gateway.routes import (
    BadPathVariable,
    MethodNotAllowed,
    NoRoute,
    Route,
    Router,
    TemplateError,
    _route,
    method_routes,
)
from osd.contract import contract
from tests.gateway import shapes as shapes_proto


def contract_routes() -> list[Route]:
    return [r for e in contract() for m in e.descriptor.methods for r in method_routes(m)]


def test_every_rpc_of_the_contract_has_a_route() -> None:
    methods = [m for e in contract() for m in e.descriptor.methods]
    routed = {r.method.full_name for r in contract_routes()}
    assert methods
    assert {m.full_name for m in methods} == routed


def test_the_contract_routes_build_one_router_without_clashes() -> None:
    router = Router(contract_routes())
    route, values = router.resolve("GET", "/v1/clusters/abc")
    assert route.method.full_name == "osd.v1.ClusterService.InspectCluster"
    assert values == {"cluster_id": "abc"}


def test_a_custom_verb_wins_over_a_plain_variable() -> None:
    router = Router(contract_routes())
    route, values = router.resolve("POST", "/v1/jobs/j1:cancel")
    assert route.method.full_name == "osd.v1.JobService.CancelJob"
    assert values == {"job_id": "j1"}
    with pytest.raises(MethodNotAllowed) as caught:
        router.resolve("GET", "/v1/jobs/j1:cancel")
    assert caught.value.allowed == ("POST",)


def test_a_verb_on_a_collection() -> None:
    route, values = Router(contract_routes()).resolve("POST", "/v1/attachments:reassign")
    assert route.method.full_name == "osd.v1.VolumeService.ReassignAttachments"
    assert values == {}


def test_wrong_method_lists_the_allowed_ones() -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        Router(contract_routes()).resolve("PUT", "/v1/clusters/abc")
    assert caught.value.allowed == ("DELETE", "GET", "PATCH")


@pytest.mark.parametrize("path", ["/v1/nothing", "/v2/clusters", "/v1/clusters/a/b/c", "/", ""])
def test_unknown_paths(path: str) -> None:
    with pytest.raises(NoRoute):
        Router(contract_routes()).resolve("GET", path)


def test_variables_are_percent_decoded_after_matching() -> None:
    router = Router(contract_routes())
    _, values = router.resolve("GET", "/v1/clusters/a%2Fb%20c")
    assert values == {"cluster_id": "a/b c"}
    with pytest.raises(BadPathVariable) as caught:
        router.resolve("GET", "/v1/clusters/%ff")
    assert caught.value.name == "cluster_id"


def test_nested_variables_double_star_and_additional_bindings() -> None:
    router = Router([r for m in shapes_proto.service().methods for r in method_routes(m)])
    route, values = router.resolve("GET", "/v1/shapes/s1/named/a/b/c")
    assert route.method.name == "Get"
    assert values == {"shape.id": "s1", "name": "a/b/c"}
    route, values = router.resolve("GET", "/v1/shapes/s1")
    assert (route.method.name, values) == ("Get", {"shape.id": "s1"})
    assert route.bound_fields() == frozenset()
    assert route.bound_paths() == {"shape.id"}
    route, _ = router.resolve("GET", "/v1/shapes:watch")
    assert route.streaming_response
    route, _ = router.resolve("POST", "/v1/shapes:upload")
    assert route.streaming_request


def test_openapi_path_drops_patterns() -> None:
    routes = [r for m in shapes_proto.service().methods for r in method_routes(m)]
    assert {r.openapi_path for r in routes} >= {
        "/v1/shapes/{shape.id}/named/{name}",
        "/v1/shapes/{shape.id}:act",
    }


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("v1/clusters", "must start with '/'"),
        ("/v1/{cluster_id", "unbalanced"),
        ("/v1//x", "empty segment"),
        ("/v1/{no_such_field}", "has no field"),
        ("/v1/{labels}", "must be a scalar"),
        ("/v1/{cluster_id}:bad verb", "bad verb"),
        ("/v1/{cluster_id=a/{b}}", "nests a variable"),
    ],
)
def test_bad_templates_are_refused_naming_the_problem(template: str, problem: str) -> None:
    method = next(
        m
        for e in contract()
        for m in e.descriptor.methods
        if m.full_name == "osd.v1.ClusterService.UpdateCluster"
    )
    with pytest.raises(TemplateError, match=problem):
        _route(method, http_pb2.HttpRule(get=template))


def test_two_rpcs_on_one_route_are_refused() -> None:
    routes = contract_routes()
    with pytest.raises(TemplateError, match="both bind"):
        Router([*routes, routes[0]])
