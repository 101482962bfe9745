"""The OpenAPI document: valid, complete, described, as strict as the daemon, and true to the wire.

The strictness tests read the generated document: ids, required fields,
page sizes, oneofs, enums, names, labels, sizes, ranges, PATCH bodies and
links, each checked against the daemon's own rules where it has them.

The property-based run generates requests for every operation from the
document, then follows its links in chains of requests, and checks each
response: no 5xx except a 501 from a pending RPC, documented status, content
type and headers, a body that fits its schema, and for a request the
document calls valid, never a 400 (see ACCEPTED_REFUSALS and KNOWN_REFUSALS).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import checks

from gateway.app import GatewayApp
from gateway.comments import Comments
from gateway.conventions import (
    ADDRESS_MAX,
    ADDRESS_PATTERN,
    ADDRESSES_MAX,
    DESCRIPTION_PATTERN,
    DEVICE_PATH_MAX,
    ID_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_MAX,
    LABELS_MAX,
    MAX_PAGE_SIZE,
    MOUNT_OPTION_PATTERN,
    MOUNT_OPTIONS_MAX,
    MOUNT_PATH_MAX,
    MOUNT_PATH_PATTERN,
    NAME_PATTERN,
    OPTIONAL_ID_PATTERN,
    PACKAGE_PATTERN,
    PACKAGES_MAX,
    PRINTABLE_FORMAT,
    REGEX_MAX,
    RESERVED_NAMES,
    is_required,
)
from gateway.errors import HTTP_STATUS
from gateway.openapi import _files
from osd.contract import contract
from osd.engine.datastores import registry
from osd.engine.shared import paging, validation
from osd.engine.topology import drives, nodes
from osd.engine.volumes import attachments
from tests.gateway import shapes as shapes_proto
from tests.gateway.conftest import RestDaemon, ShapesGateway

# The budget of the schemathesis run, per store: generated requests per
# operation, then chains of requests that follow the document's links.
EXAMPLES_PER_OPERATION = 12
STATEFUL_SCENARIOS = 150
STATEFUL_STEPS = 12
# scripts/fuzz: run round after round, each with new seeds, for this long.
FUZZ_SECONDS = float(os.environ.get("OSD_FUZZ_SECONDS") or 0)

# The document's one custom format: printable text, as Python's str.isprintable
# (test_label_values_are_printable_text checks that the two agree).
NOT_PRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
schemathesis.openapi.format(
    PRINTABLE_FORMAT,
    st.text(st.characters(exclude_categories=NOT_PRINTABLE) | st.just(" ")),
)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return GatewayApp("127.0.0.1:1").openapi_document()


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_is_an_operation(document: dict[str, Any]) -> None:
    app = GatewayApp("127.0.0.1:1")
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    for route in app.routes:
        assert (route.http_method, route.openapi_path) in operations
    assert len(operations) == len(app.routes) + 2  # /healthz and the document itself
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_proto_comments_are_the_descriptions(document: dict[str, Any]) -> None:
    create = document["paths"]["/v1/clusters"]["post"]
    assert create["summary"] == "Creates a cluster."
    assert "Role: admin." in create["description"]
    assert "osd.v1.ClusterService/CreateCluster" in create["description"]
    tags = {t["name"]: t["description"] for t in document["tags"]}
    assert tags["ClusterService"].startswith("ClusterService: the clusters osd manages.")
    cluster = document["components"]["schemas"]["osd.v1.Cluster"]
    assert cluster["description"] == "A cluster."
    assert "Unique name" in cluster["properties"]["name"]["description"]


def test_schemas_follow_proto3_json(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    cluster = schemas["osd.v1.Cluster"]["properties"]
    assert cluster["generation"]["type"] == "string"
    assert cluster["generation"]["format"] == "int64"
    assert cluster["create_time"] == {"type": "string", "format": "date-time"}
    assert cluster["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    states = schemas["osd.v1.JobState"]
    assert states["type"] == "string" and "JOB_STATE_DONE" in states["enum"]
    assert "Final." in states["description"]
    jobs = schemas["osd.v1.ListJobsResponse"]["properties"]["jobs"]
    assert jobs == {"type": "array", "items": {"$ref": "#/components/schemas/osd.v1.Job"}}
    patch = document["paths"]["/v1/clusters/{cluster_id}"]["patch"]
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["update_mask"]["type"] == "string"
    assert "cluster_id" not in body["properties"]  # the path carries it
    assert body["additionalProperties"] is False


def test_query_parameters_of_a_list(document: dict[str, Any]) -> None:
    params = {p["name"]: p for p in document["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert params["states"]["schema"]["type"] == "array"
    assert params["states"]["explode"] is True
    labels = {p["name"]: p for p in document["paths"]["/v1/clusters"]["get"]["parameters"]}
    assert labels["labels"]["style"] == "deepObject"


def test_errors_reference_the_error_schema(document: dict[str, Any]) -> None:
    delete = document["paths"]["/v1/clusters/{cluster_id}"]["delete"]["responses"]
    # DeleteCluster's comment names NOT_FOUND and FAILED_PRECONDITION
    assert {"400", "404", "409", "default"} <= set(delete)
    assert delete["409"] == {"$ref": "#/components/responses/Error"}
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "status", "message", "details"]
    assert set(error["properties"]["status"]["enum"]) == {c.name for c in HTTP_STATUS}


def test_job_starting_routes_document_202(document: dict[str, Any]) -> None:
    drain = document["paths"]["/v1/nodes/{node_id}:drain"]["post"]["responses"]
    assert "Location" in drain["202"]["headers"]
    assert "202" not in document["paths"]["/v1/jobs/{job_id}:cancel"]["post"]["responses"]


def test_the_served_document_is_the_generated_one(
    http: httpx.Client, document: dict[str, Any]
) -> None:
    response = http.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.json() == document
    # ...and the file written beside the generated code (osd/v1/openapi.json).
    committed = Path(__file__).resolve().parents[2] / "osd" / "v1" / "openapi.json"
    assert json.loads(committed.read_text()) == response.json()


def test_a_document_for_other_services(shapes: ShapesGateway) -> None:
    doc = shapes.http.get("/v1/openapi.json").json()
    validate(doc)
    assert "/v1/shapes/{shape.id}/named/{name}" in doc["paths"]
    watch = doc["paths"]["/v1/shapes:watch"]["get"]["responses"]["200"]["content"]
    assert "application/x-ndjson" in watch
    names = {p["name"] for p in doc["paths"]["/v1/shapes/{shape.id}"]["get"]["parameters"]}
    assert {"shape.id", "shape.count", "shape.inner.tags", "labels", "name"} <= names
    assert "shape" not in names


def test_contract_files_all_have_comments(document: dict[str, Any]) -> None:
    described = [
        op
        for item in document["paths"].values()
        for op in item.values()
        if op["summary"] != op["operationId"].split("_", 1)[1]
    ]
    # every RPC of the contract has a comment, so every summary is a sentence,
    # on each of its routes (a by-name binding is an operation of its own)
    total = len(GatewayApp("127.0.0.1:1").routes)
    assert total >= sum(len(e.descriptor.methods) for e in contract())
    assert len(described) == total + 2
    assert shapes_proto.service().full_name not in str(document)


# -- strictness: the document refuses what the daemon refuses ----------------


def _body(document: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path][method]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


def _param(document: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    params = document["paths"][path][method]["parameters"]
    return next(p for p in params if p["name"] == name)


def _component(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def _fits(document: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    """Whether ``value`` fits ``schema`` (whose $refs point into the document)."""
    root = {**schema, "components": document["components"]}
    return bool(jsonschema.Draft202012Validator(root).is_valid(value))


def _walk(node: Any) -> Any:
    """Every object schema's properties in the document: (name, schema) pairs."""
    if isinstance(node, dict):
        for name, value in (node.get("properties") or {}).items():
            if isinstance(value, dict):
                yield name, value
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _enum_of(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """The values an enum field takes: its own list, else its enum component's."""
    inner = schema.get("allOf", [schema])[0]
    if "enum" in inner:
        return list(inner["enum"])
    return list(_component(document, inner["$ref"].rsplit("/", 1)[1])["enum"])


def test_ids_carry_their_pattern(document: dict[str, Any]) -> None:
    assert f"^{validation.ID_RE.pattern}$" == ID_PATTERN
    assert re.fullmatch(ID_PATTERN, "0123456789abcdef" * 2)
    assert not re.fullmatch(ID_PATTERN, "") and not re.fullmatch(ID_PATTERN, "AB" * 16)
    assert re.fullmatch(OPTIONAL_ID_PATTERN, "")
    # path variables: the strict form
    path_ids = [
        p
        for item in document["paths"].values()
        for op in item.values()
        for p in op.get("parameters", [])
        if p["in"] == "path" and p["name"].endswith("_id")
    ]
    assert len(path_ids) > 40
    assert {p["schema"]["pattern"] for p in path_ids} == {ID_PATTERN}
    # a required body field: strict; a filter and an optional reference: "" is "none"
    node = _body(document, "/v1/nodes")
    assert node["properties"]["cluster_id"]["pattern"] == ID_PATTERN
    assert "cluster_id" in node["required"]
    assert _param(document, "/v1/volumes", "get", "template_id")["schema"]["pattern"] == (
        OPTIONAL_ID_PATTERN
    )
    assert _body(document, "/v1/volumes")["properties"]["template_id"]["pattern"] == (
        OPTIONAL_ID_PATTERN
    )
    # a response field: an unset template_id is ""
    volume = _component(document, "osd.v1.Volume")["properties"]
    assert volume["template_id"]["pattern"] == OPTIONAL_ID_PATTERN
    # a oneof member names something when set; so does an item of a list of ids
    assert _component(document, "osd.v1.VolumeSource")["properties"]["snapshot_id"]["pattern"] == (
        ID_PATTERN
    )
    members = _body(document, "/v1/pools/{pool_id}:addMembers")["properties"]
    assert members["drive_ids"]["items"]["pattern"] == ID_PATTERN
    # and every id field anywhere has one of the two forms
    ids = [(n, s) for n, s in _walk(document) if n == "id" or n.endswith("_id")]
    ids = [(n, s) for n, s in ids if s.get("type") == "string"]  # fields, not relations
    assert len(ids) > 50
    assert {s.get("pattern") for _, s in ids} == {ID_PATTERN, OPTIONAL_ID_PATTERN}, [
        n for n, s in ids if s.get("pattern") not in (ID_PATTERN, OPTIONAL_ID_PATTERN)
    ]
    lists = [s for n, s in _walk(document) if n.endswith("_ids") and s.get("type") == "array"]
    assert lists and {s["items"]["pattern"] for s in lists} == {ID_PATTERN}


def test_required_fields_are_marked(document: dict[str, Any]) -> None:
    cluster = _body(document, "/v1/clusters")
    assert cluster["required"] == ["name"]
    assert not _fits(document, cluster, {}) and not _fits(document, cluster, {"name": ""})
    assert _fits(document, cluster, {"name": "east"})
    # a required confirmation is true
    forget = _body(document, "/v1/drives/{drive_id}:forget")
    assert forget["required"] == ["yes_i_really_mean_it"]
    assert forget["properties"]["yes_i_really_mean_it"]["enum"] == [True]
    assert not _fits(document, forget, {"yes_i_really_mean_it": False})
    # "Required for a hard eject" is a condition, not a requirement
    eject = _body(document, "/v1/drives/{drive_id}:eject")
    assert "required" not in eject and _fits(document, eject, {"soft": True})
    # a required enum is not UNSPECIFIED
    attach = _body(document, "/v1/volumes/{volume_id}:attach")
    assert set(attach["required"]) == {"node_id", "mode"}
    modes = _enum_of(attach["properties"]["mode"], document)
    assert modes == ["ATTACH_MODE_READ_WRITE", "ATTACH_MODE_READ_ONLY"]
    assert not _fits(document, attach, {"node_id": "a" * 32, "mode": "ATTACH_MODE_UNSPECIFIED"})
    # a required list has an item
    node = _body(document, "/v1/nodes")
    assert node["properties"]["management_addresses"]["minItems"] == 1
    # over REST a PATCH derives update_mask from the body: not required there
    for path, item in document["paths"].items():
        if "patch" in item:
            assert "update_mask" not in _body(document, path, "patch").get("required", []), path
    # a required query parameter, and bodies that must be sent
    assert _param(document, "/v1/nodes/{node_id}/driveAddStatus", "get", "device_path")["required"]
    assert document["paths"]["/v1/clusters"]["post"]["requestBody"]["required"] is True
    detach = document["paths"]["/v1/volumes/{volume_id}:detach"]["post"]["requestBody"]
    assert detach["required"] is False
    # every top-level field of a body whose comment says "Required" is required
    comments = Comments.load(_files(GatewayApp("127.0.0.1:1").services))
    checked = 0
    for route in GatewayApp("127.0.0.1:1").routes:
        if route.body != "*":
            continue
        body = _body(document, route.openapi_path, route.http_method.lower())
        for field in route.input_type.fields:
            if field.name in route.bound_fields() or field.name == "update_mask":
                continue
            if is_required(comments.get(field.full_name)):
                assert field.name in body.get("required", []), field.full_name
                checked += 1
    assert checked > 20


def test_page_size_is_bounded(document: dict[str, Any]) -> None:
    assert MAX_PAGE_SIZE == paging.MAX_PAGE_SIZE
    sizes = [
        p["schema"]
        for item in document["paths"].values()
        for op in item.values()
        for p in op.get("parameters", [])
        if p["name"] == "page_size"
    ]
    assert len(sizes) >= 10
    for schema in sizes:
        assert (schema["minimum"], schema["maximum"]) == (0, MAX_PAGE_SIZE)


def test_oneofs_allow_at_most_one_member(document: dict[str, Any]) -> None:
    volume = _body(document, "/v1/volumes")
    assert _fits(document, volume, {"name": "v", "size": "20G"})
    assert not _fits(document, volume, {"name": "v", "size": "20G", "size_bytes": 512})
    source = _component(document, "osd.v1.VolumeSource")
    assert _fits(document, source, {}) and _fits(document, source, {"volume_id": "a" * 32})
    assert not _fits(document, source, {"volume_id": "a" * 32, "snapshot_id": "b" * 32})
    # a oneof whose comment says "Required": exactly one
    replace = _body(document, "/v1/drives/{source_drive_id}:startReplace")
    assert not _fits(document, replace, {})
    assert _fits(document, replace, {"target_drive_id": "a" * 32})
    assert not _fits(
        document, replace, {"target_drive_id": "a" * 32, "target_device_path": "/dev/sdb"}
    )
    # and schemathesis generates by them
    schema = schemathesis.openapi.from_dict(document)
    for label in ("POST /v1/volumes", "POST /v1/drives/{source_drive_id}:startReplace"):
        operation = next(r.ok() for r in schema.get_all_operations() if r.ok().label == label)
        assert max(_members_set(operation)) == 1, label


def _members_set(operation: Any) -> list[int]:
    """How many members of the size and target oneofs each generated body sets."""
    seen: list[int] = []
    names = {"size", "size_bytes", "target_drive_id", "target_device_path"}

    @settings(max_examples=30, deadline=None, database=None, derandomize=True)
    @given(case=operation.as_strategy())
    def one(case: Any) -> None:
        seen.append(len(names & set(case.body or {})))

    one()
    return seen


def test_enums_are_listed_by_name(document: dict[str, Any]) -> None:
    from osd.v1 import job_pb2

    states = _component(document, "osd.v1.JobState")
    assert states["enum"] == [v.name for v in job_pb2.JobState.DESCRIPTOR.values]
    enums = [s for n, s in document["components"]["schemas"].items() if "enum" in s]
    assert len(enums) > 15
    assert all(s["type"] == "string" and all(isinstance(v, str) for v in s["enum"]) for s in enums)
    # a list filter takes no UNSPECIFIED; a comment that names the values lists them
    states_filter = _param(document, "/v1/jobs", "get", "states")["schema"]["items"]
    assert "JOB_STATE_UNSPECIFIED" not in _enum_of(states_filter, document)
    set_state = _body(document, "/v1/nodes/{node_id}:setState")["properties"]["state"]
    assert _enum_of(set_state, document) == ["NODE_STATE_ONLINE", "NODE_STATE_OFFLINE"]


def test_names_labels_and_paths_follow_the_daemons_rules(document: dict[str, Any]) -> None:
    assert f"^{validation.NAME_RE.pattern}$" == NAME_PATTERN
    assert set(RESERVED_NAMES) == validation.RESERVED_NAMES
    assert f"^{validation.LABEL_KEY_RE.pattern}$" == LABEL_KEY_PATTERN
    assert (LABELS_MAX, LABEL_VALUE_MAX) == (validation.LABELS_MAX, validation.LABEL_VALUE_MAX)
    assert REGEX_MAX == validation.REGEX_MAX
    assert f"^{drives.DESCRIPTION_RE.pattern}$" == DESCRIPTION_PATTERN
    assert f"^{registry.PACKAGE_RE.pattern}$" == PACKAGE_PATTERN
    assert (PACKAGES_MAX, DEVICE_PATH_MAX) == (registry.PACKAGES_MAX, drives.DEVICE_PATH_MAX)
    assert f"^{attachments.MOUNT_OPTION_RE.pattern}$" == MOUNT_OPTION_PATTERN
    assert (MOUNT_PATH_MAX, MOUNT_OPTIONS_MAX) == (
        attachments.MOUNT_PATH_MAX,
        attachments.MOUNT_OPTIONS_MAX,
    )
    for path in ["/mnt/data", "/", "relative", "/mnt/../etc", "/mnt/./x", "/a b", "/.x/..y"]:
        expected = not attachments.mount_violations(path, ())
        assert bool(re.fullmatch(MOUNT_PATH_PATTERN, path)) == expected, path
    assert (ADDRESS_MAX, ADDRESSES_MAX) == (nodes.ADDRESS_MAX, nodes.ADDRESSES_MAX)
    cluster = _body(document, "/v1/clusters")
    for name in ["", "list", "has space", "x" * 201, "é", "a/b", "ok-1.2:3_x"]:
        expected = validation.name_violation(name) is None
        assert _fits(document, cluster, {"name": name}) is expected, name
    for key in ["env", "", "-x", "a/b.c:d", "k" * 64, "é"]:
        expected = not validation.label_violations({key: "v"})
        assert _fits(document, cluster, {"name": "c", "labels": {key: "v"}}) is expected, key
    assert not _fits(document, cluster, {"name": "c", "labels": {"k": "x" * 254}})
    too_many = {f"k{i}": "" for i in range(LABELS_MAX + 1)}
    assert not _fits(document, cluster, {"name": "c", "labels": too_many})
    value = _component(document, "LabelValue")
    assert value["format"] == PRINTABLE_FORMAT and not re.search(value["pattern"], "a\x07")
    # the device path rule is the daemon's, exactly
    drive = _body(document, "/v1/nodes/{node_id}/drives")
    for path in ["/dev/sdb", "/dev/", "/dev", "/etc/passwd", "/dev/../sda", "/dev/.x", "dev/sdb"]:
        expected = drives.device_path_violation(path) is None
        assert _fits(document, drive, {"device_path": path}) is expected, path
    # addresses: every one the pattern admits, the daemon takes
    for address in ["10.0.0.1", "10.0.0.1:22", "h", "h.example", "::1", "[::1]:22", "a_b"]:
        assert re.fullmatch(ADDRESS_PATTERN, address), address
        assert nodes.address_problem(address) is None, address
    for address in ["1.2.3", "256.0.0.1", "h:0", "h:", "[::1]x", "-h"]:
        assert not re.fullmatch(ADDRESS_PATTERN, address), address
    assert _param(document, "/v1/clusters", "get", "name_regex")["schema"] == {
        "type": "string",
        "format": "regex",
        "maxLength": REGEX_MAX,
    }


def test_label_values_are_printable_text() -> None:
    """The custom format this module registers is the daemon's rule (str.isprintable)."""
    for code in range(0x3400):
        char = chr(code)
        printable = char == " " or unicodedata.category(char) not in NOT_PRINTABLE
        assert printable is char.isprintable(), hex(code)


def test_sizes_and_numbers_have_their_ranges(document: dict[str, Any]) -> None:
    volume = _body(document, "/v1/volumes")
    size_bytes = volume["properties"]["size_bytes"]
    assert (size_bytes["type"], size_bytes["multipleOf"], size_bytes["exclusiveMinimum"]) == (
        "integer",
        512,
        0,
    )
    size = volume["properties"]["size"]
    for text, expected in [("20G", True), ("4096m", True), ("0", False), ("1.5G", False)]:
        assert bool(re.fullmatch(size["pattern"], text)) is expected, text
        assert _fits(document, volume, {"name": "v", "size": text}) is expected, text
    for text in ["20GB", "-1G", "8192P"]:
        assert not re.fullmatch(size["pattern"], text), text
    assert re.fullmatch(size["pattern"], "8191P")
    # a template may say 0: no default size
    template = _body(document, "/v1/templates")["properties"]
    assert re.fullmatch(template["size"]["pattern"], "0")
    assert template["size_bytes"]["minimum"] == 0
    # durability: ranges, "REPLICATE only", "at most data_fragments"
    durability = _component(document, "osd.v1.Durability")
    fits = [
        ({"type": "DURABILITY_TYPE_REPLICATE", "replicas": 3}, True),
        ({"type": "DURABILITY_TYPE_REPLICATE", "replicas": 0}, True),
        ({"type": "DURABILITY_TYPE_REPLICATE", "replicas": 1}, False),
        ({"type": "DURABILITY_TYPE_REPLICATE", "replicas": 6}, False),
        ({"type": "DURABILITY_TYPE_NONE", "replicas": 3}, False),
        ({"replicas": 3}, False),
        ({"type": "DURABILITY_TYPE_ERASURE", "data_fragments": 4, "redundancy_fragments": 2}, True),
        (
            {"type": "DURABILITY_TYPE_ERASURE", "data_fragments": 2, "redundancy_fragments": 3},
            False,
        ),
        ({"type": "DURABILITY_TYPE_ERASURE", "redundancy_fragments": 4}, True),
    ]
    for value, expected in fits:
        assert _fits(document, durability, value) is expected, value
    # placement.tail_pool_id is REPLICATE only, said in the same request
    assert not _fits(
        document,
        _body(document, "/v1/templates"),
        {
            "cluster_id": "a" * 32,
            "name": "t",
            "durability": {"type": "DURABILITY_TYPE_NONE"},
            "placement": {"tail_pool_id": "b" * 32},
        },
    )
    repair = _component(document, "osd.v1.RepairPolicy")
    assert _fits(document, repair, {"delay_seconds": "0", "max_repairs": 1})
    assert not _fits(document, repair, {"delay_seconds": "-1"})
    assert not _fits(document, repair, {"max_repairs": 0})
    qos = _component(document, "osd.v1.Qos")
    assert _fits(document, qos, {"iops_limit": "0"}) and not _fits(
        document, qos, {"iops_limit": "-5"}
    )
    factor = volume["properties"]["snapshot_factor"]
    assert (factor["exclusiveMinimum"], factor["maximum"]) == (1, 100)
    # a 64-bit integer string is in range
    generation = _body(document, "/v1/clusters/{cluster_id}", "patch")["properties"][
        "expected_generation"
    ]["pattern"]
    for text, expected in [
        (str(2**63 - 1), True),
        (str(-(2**63)), True),
        (str(2**63), False),
        (str(-(2**63) - 1), False),
        ("12", True),
    ]:
        assert bool(re.fullmatch(generation, text)) is expected, text


def test_patch_bodies_follow_the_update_mask(document: dict[str, Any]) -> None:
    body = _body(document, "/v1/volumes/{volume_id}", "patch")
    assert document["paths"]["/v1/volumes/{volume_id}"]["patch"]["requestBody"]["required"]
    mask = body["properties"]["update_mask"]["pattern"]
    assert re.fullmatch(mask, "name,qos.iopsLimit,durability.replicas")
    assert not re.fullmatch(mask, "size_bytes") and not re.fullmatch(mask, "durability.type")
    cases = [
        ({}, False),  # nothing to change
        ({"expected_generation": "3"}, False),
        ({"name": "v2"}, True),
        ({"name": ""}, False),  # a name is never empty
        ({"update_mask": "labels"}, True),
        ({"update_mask": "name"}, False),  # naming the name without giving it
        ({"durability": {"replicas": 3}}, True),
        ({"durability": {"type": "DURABILITY_TYPE_NONE"}}, False),  # only replicas changes
        ({"size": "20G", "placement": {}}, False),  # at most one of them per call
        ({"size": "20G", "shrink_ok": True}, True),
    ]
    for value, expected in cases:
        assert _fits(document, body, value) is expected, value
    node = _body(document, "/v1/nodes/{node_id}", "patch")
    assert not _fits(document, node, {"management_addresses": []})
    assert not _fits(document, node, {"zone": ""})


def test_links_feed_ids_to_the_operations_that_take_them(document: dict[str, Any]) -> None:
    links = document["paths"]["/v1/clusters"]["post"]["responses"]["200"]["links"]
    inspect = links["ClusterService_InspectCluster.cluster_id.cluster"]
    assert inspect["operationId"] == "ClusterService_InspectCluster"
    assert inspect["parameters"] == {"path.cluster_id": "$response.body#/cluster/id"}
    create_node = links["NodeService_CreateNode.cluster_id.cluster"]
    assert create_node["requestBody"] == {"cluster_id": "$response.body#/cluster/id"}
    assert links["NodeService_ListNodes.cluster_id.cluster"]["parameters"] == {
        "query.cluster_id": "$response.body#/cluster/id"
    }
    # a list's first object; a job of a 202; a role-prefixed id (source_drive_id)
    listed = document["paths"]["/v1/nodes"]["get"]["responses"]["200"]["links"]
    assert listed["NodeService_InspectNode.node_id.nodes"]["parameters"] == {
        "path.node_id": "$response.body#/nodes/0/id"
    }
    drain = document["paths"]["/v1/nodes/{node_id}:drain"]["post"]["responses"]["202"]["links"]
    assert "JobService_CancelJob.job_id.job" in drain
    drive = document["paths"]["/v1/drives/{drive_id}"]["get"]["responses"]["200"]["links"]
    assert "Service_StartDriveReplace.source_drive_id.drive" in drive
    # schemathesis takes every link (an invalid one fails building the state machine)
    declared = sum(
        len(response.get("links", {}))
        for item in document["paths"].values()
        for op in item.values()
        for response in op["responses"].values()
    )
    assert declared > 300
    schema = schemathesis.openapi.from_dict(document)
    schema.as_state_machine()
    assert schema.statistic.transitions.total >= declared


# -- property-based: schemathesis against the live daemon -------------------

# A request the document calls valid may still meet a world that says no: an
# unknown id (404), an object in use, a name taken or a generation moved on
# (409: ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED), too many jobs (429).
# It must never be refused as malformed (400), nor be too large (413).
ACCEPTED_REFUSALS = frozenset({404, 409, 429})


# The 400s a schema-valid request can still get, each for a reason no
# OpenAPI document can state; every other 400 to a valid request fails the
# run. (field regex, description regex, why). They are reported, not fixed:
# see the report of the change that added this list.
def _no_endless_stream(case: Any) -> None:
    """A following watch (GET /v1/watch?follow=true) streams until the client
    leaves, by design: the fuzzer asks for the stream that ends once caught
    up (tests/test_watch.py covers following). Waiting for a generation
    waits up to 300 s, by design: the fuzzer waits a moment at most."""
    if case.path == "/v1/watch" and isinstance(case.query, dict):
        case.query.pop("follow", None)
    if case.path == "/v1/generation:wait" and isinstance(case.body, dict):
        wait = case.body.get("wait_seconds")
        if not isinstance(wait, int | float) or wait > 0.2 or wait == 0:
            case.body["wait_seconds"] = 0.2


KNOWN_REFUSALS: list[tuple[str, str, str]] = [
    (
        r"changes\[\d+\]\.volume_id",
        r"is listed in an earlier change",
        "ReassignAttachments: JSON Schema cannot say that list items differ in one field",
    ),
    (
        r"changes\[\d+\]",
        r"node [0-9a-f]{32} is listed twice",
        "ReassignAttachments: JSON Schema cannot say that two lists share no item",
    ),
    (
        r"page_token",
        r"not a page token this server issued|issued for a list with other filters"
        r"|is the page token of",
        "a page token is opaque: the document gives its type, not which ones the server issued",
    ),
    (
        r"cluster_id",
        r"is required: there is more than one cluster|cannot be inferred|names cluster",
        "CreateVolume infers the cluster from the store's state (semantic, answered 400)",
    ),
    (
        r"size_bytes",
        r"is required: neither the template nor a source gives a size",
        "CreateVolume: the template named gives no size (semantic, answered 400)",
    ),
    (
        r"size(_bytes)?",
        r"beyond the cluster's raw capacity",
        "CreateVolume: a size beyond the cluster's raw capacity (semantic, answered 400)",
    ),
    (
        r"size_add",
        r"is larger than \d+ bytes",
        "UpdateVolume: a size_add past the largest size from the volume's own (semantic, "
        "answered 400)",
    ),
    (
        r"(management|storage)_addresses\[\d+\]",
        r"is given twice",
        "CreateNode/UpdateNode: host names compare without case ('d.A' is 'D.A'); JSON "
        "Schema's uniqueItems compares strings exactly",
    ),
    (
        r"acl\[\d+\]",
        r"is listed twice",
        "UpdateVolume: JSON Schema cannot say that list items differ in one field",
    ),
    (
        r"update_mask",
        r"name either size_bytes or size, not both",
        "UpdateVolume/UpdateTemplate: JSON Schema cannot say that two mask paths (two "
        "spellings of one field) exclude each other",
    ),
    (
        r"mount_options",
        r"needs mount_path",
        "AttachVolume: JSON Schema cannot say that a list needs a non-empty string beside it",
    ),
    (
        r"filesystem",
        r"volume has no filesystem",
        "CreateVolume: JSON Schema cannot say that a filesystem needs kind FILE (or none)",
    ),
    (
        r"datastore_(id|name)",
        r"give datastore_id or datastore_name, not both",
        "ListDatastoreVersions: OpenAPI cannot say that two query parameters exclude each other",
    ),
]


def _no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """5xx fails, except 501 from an RPC whose capability is pending."""
    if response.status_code < 500:
        return None
    if response.status_code == 501:
        body = response.json()
        reasons = [d.get("reason") for d in body.get("details", [])]
        if "CAPABILITY_PENDING" in reasons:
            return None
    raise AssertionError(f"server error {response.status_code}: {response.text[:500]}")


CHECKS = [
    _no_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def _violations(response: Any) -> list[tuple[str, str]]:
    try:
        details = response.json().get("details", [])
    except ValueError:
        return []
    return [
        (v.get("field", ""), v.get("description", ""))
        for d in details
        if d.get("@type", "").endswith("google.rpc.BadRequest")
        for v in d.get("fieldViolations", d.get("field_violations", []))
    ]


def _known(violations: list[tuple[str, str]]) -> list[str] | None:
    """The reasons of KNOWN_REFUSALS that explain every violation, or None."""
    reasons = []
    for field, description in violations:
        reason = next(
            (
                why
                for name, text, why in KNOWN_REFUSALS
                if re.fullmatch(name, field) and re.search(text, description)
            ),
            None,
        )
        if reason is None:
            return None
        reasons.append(reason)
    return reasons or None


class _Verdicts:
    """The statuses seen, and the known refusals met, over one run."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.known: Counter[str] = Counter()
        self.invalid = 0  # requests the chains made invalid on purpose

    def check(self, ctx: Any, response: Any, case: Any) -> bool | None:
        """A valid request is answered 2xx or with a refusal of ACCEPTED_REFUSALS."""
        status = response.status_code
        meta = case.meta
        if meta is not None and not meta.generation.mode.is_positive:
            self.invalid += 1
            return None
        if 200 <= status < 300 or status in ACCEPTED_REFUSALS or status >= 500:
            return None  # 5xx: _no_server_error's
        if status == 400:
            reasons = _known(_violations(response))
            if reasons is not None:
                self.known.update(set(reasons))
                return None
        raise AssertionError(
            f"a request the document calls valid was refused with {status}: "
            f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300}: "
            f"{response.text[:500]}"
        )


def _settings(examples: int, **more: Any) -> settings:
    return settings(
        **{
            "max_examples": examples,
            "deadline": None,
            "database": None,
            "derandomize": not FUZZ_SECONDS,
            "suppress_health_check": list(HealthCheck),
            **more,
        }
    )


def test_generated_requests_find_no_server_error_and_no_schema_break(
    rest_daemon: RestDaemon,
) -> None:
    """Every operation, EXAMPLES_PER_OPERATION schema-valid requests each, then
    STATEFUL_SCENARIOS chains that follow the document's links (a created
    object's id into the operations that take it). With OSD_FUZZ_SECONDS, round
    after round with new seeds until the time is up."""
    base = rest_daemon.base_url
    # one real cluster, so cluster routes can also answer 2xx
    rest_daemon.http.post("/v1/clusters", json={"name": "seed"})
    schema = schemathesis.openapi.from_url(f"{base}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) > 70
    session = requests.Session()
    verdicts = _Verdicts()
    checks_ = [*CHECKS, verdicts.check]

    @_settings(EXAMPLES_PER_OPERATION * len(operations), phases=[Phase.explicit, Phase.generate])
    @given(case=schema.as_strategy())
    def run(case: Any) -> None:
        _no_endless_stream(case)
        response = case.call(base_url=base, session=session, timeout=10)
        verdicts.statuses[response.status_code] += 1
        case.validate_response(response, checks=checks_)

    scenarios = Counter[str]()

    class Chains(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            _no_endless_stream(case)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base, "session": session, "timeout": 10}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            verdicts.statuses[response.status_code] += 1
            case.validate_response(response, checks=checks_, recorder=self.recorder)

        def teardown(self) -> None:
            scenarios["run"] += 1
            super().teardown()

    started, stateless, rounds = time.monotonic(), 0, 0
    first_seed = (
        int(os.environ.get("OSD_FUZZ_SEED") or random.randrange(2**31)) if FUZZ_SECONDS else 0
    )
    try:
        while True:
            rounds += 1
            before = sum(verdicts.statuses.values())
            hypothesis.seed(first_seed + rounds)(run)()
            stateless += sum(verdicts.statuses.values()) - before
            # The chains depend on what the daemon answered before, which
            # Hypothesis notices as "flaky" data generation when a later scenario
            # retraces an earlier one; as schemathesis's own runner does, start
            # again with the next seed until the budget of scenarios has run. (A
            # failure that does not reproduce, FlakyFailure, still fails the test.)
            goal = scenarios["run"] + STATEFUL_SCENARIOS
            for seed in range(STATEFUL_SCENARIOS):
                if scenarios["run"] >= goal:
                    break
                try:
                    hypothesis.seed(first_seed + (rounds - 1) * STATEFUL_SCENARIOS + seed)(
                        Chains
                    ).run(
                        settings=_settings(
                            goal - scenarios["run"],
                            stateful_step_count=STATEFUL_STEPS,
                            phases=[Phase.generate],
                            derandomize=False,
                        )
                    )
                except hypothesis.errors.FlakyStrategyDefinition:
                    scenarios["restarted"] += 1
            if not FUZZ_SECONDS or time.monotonic() - started >= FUZZ_SECONDS:
                break
    finally:
        session.close()
        print(
            f"{rest_daemon.database.backend}: {len(operations)} operations, "
            f"{sum(verdicts.statuses.values())} requests ({stateless} generated, "
            f"{sum(verdicts.statuses.values()) - stateless} in chains) in "
            f"{time.monotonic() - started:.0f}s; "
            f"statuses {dict(sorted(verdicts.statuses.items()))}; "
            f"{verdicts.invalid} of them schema-invalid on purpose; "
            f"known refusals {dict(verdicts.known)}; scenarios {dict(scenarios)}"
        )
        server_errors = sum(n for status, n in verdicts.statuses.items() if status >= 500)
        print(
            f"fuzz: REST on {rest_daemon.database.backend}: "
            f"{sum(verdicts.statuses.values())} requests in {rounds} round(s) "
            f"(first seed {first_seed}), {server_errors} answered 5xx"
        )
    assert stateless >= len(operations)
    assert any(200 <= status < 300 for status in verdicts.statuses), verdicts.statuses
