"""HTTP request -> request message, and response message -> JSON.

One request message is assembled from three sources, in this order:

1. the body, when the rule has one: the whole request (``body: "*"``) or one
   field of it (``body: "volume"``);
2. the query string, for the fields neither the path nor the body sets (see
   gateway.query); with ``body: "*"`` there are none, so any parameter is an
   error;
3. the path variables. A field that the body also gives must have the same
   value there.

A PATCH whose request has a ``google.protobuf.FieldMask update_mask`` and
whose body does not give it gets a derived mask, as grpc-gateway derives it:
the leaf field paths present in the body (inside the body field's object when
the body is one field). An object is walked into, so ``{"qos": {"iops_limit":
"2000"}}`` names ``qos.iops_limit`` and leaves the rest of ``qos`` alone;
maps, lists, well-known types and empty objects are leaves. Left out are the
path variables and the request-only flags (``expected_generation``, the
precondition common.proto defines for every update, ``shrink_ok``,
``yes_i_really_mean_it`` and ``propagate``),
which say how to update, not what. Give ``update_mask`` explicitly to send
anything else.

Responses are proto3 JSON with the proto field names (``create_time``, not
``createTime``), every field printed even when it has its default value
(messages and ``optional`` fields only when set), 64-bit integers as strings
and enums by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from gateway.errors import GatewayError, Reason, Violation
from gateway.jsonvalue import (
    JSON,
    Problems,
    check_field,
    check_message,
    check_single,
    fields_by_any_name,
    is_map,
    message_of,
)
from gateway.query import query_json, text_value
from gateway.routes import Route

MASK_FIELD = "update_mask"
# Request fields that qualify an update rather than name a field to change.
MASK_EXEMPT = frozenset({"expected_generation", "shrink_ok", "yes_i_really_mean_it", "propagate"})


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def parse_json(body: bytes) -> JSON:
    """The decoded body; a 400 that says where the JSON breaks."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GatewayError.bad_request(
            Reason.MALFORMED_JSON, "", f"request body is not UTF-8 (byte {exc.start})"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise GatewayError.bad_request(
            Reason.MALFORMED_JSON,
            "",
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except _DuplicateKey as exc:
        raise GatewayError.bad_request(
            Reason.MALFORMED_JSON, "", f"request body has the key {exc.key!r} twice in one object"
        ) from None
    except RecursionError:
        raise GatewayError.bad_request(
            Reason.MALFORMED_JSON, "", "request body is nested too deeply"
        ) from None


def _raise(problems: Problems, reason: Reason) -> None:
    if not problems.violations:
        return
    shown = problems.violations[:5]
    message = "; ".join(f"{v.field}: {v.description}" if v.field else v.description for v in shown)
    if len(problems.violations) > len(shown):
        message += f"; and {len(problems.violations) - len(shown)} more"
    raise GatewayError(
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        reason=reason,
        violations=problems.violations,
    )


def _body_json(route: Route, body: bytes) -> dict[str, JSON]:
    problems = Problems()
    empty = not body.strip()
    if not route.body:
        if not empty:
            raise GatewayError.bad_request(
                Reason.BODY_NOT_ALLOWED,
                "",
                f"{route.http_method} {route.template} takes no request body; "
                "give the fields in the query string",
            )
        return {}
    if empty:
        return {}
    doc = parse_json(body)
    if route.body == "*":
        if not isinstance(doc, dict):
            problems.add("", f"request body must be a JSON object ({route.input_type.full_name})")
            _raise(problems, Reason.INVALID_FIELD)
        out = check_message(doc, route.input_type, problems)
        for name, why in route.alternatives().items():
            if name in out:
                problems.add(name, why)
    else:
        field = route.input_type.fields_by_name[route.body]
        out = {route.body: check_field(doc, field, problems, route.body)} if doc is not None else {}
    _raise(problems, Reason.INVALID_FIELD)
    return out


def _query_json(route: Route, params: Iterable[tuple[str, str]]) -> dict[str, JSON]:
    problems = Problems()
    params = list(params)
    if route.body == "*":
        for name, _ in params:
            problems.add(name, "not accepted: this route takes every field from the request body")
        _raise(problems, Reason.INVALID_QUERY)
        return {}
    if not params:
        return {}
    taken = {name: "is set by the path" for name in route.bound_paths()}
    taken.update(route.alternatives())
    if route.body:
        taken[route.body] = "belongs in the request body"
    raw = query_json(params, route.input_type, taken, problems)
    _raise(problems, Reason.INVALID_QUERY)
    out = check_message(raw, route.input_type, problems)
    _raise(problems, Reason.INVALID_QUERY)
    return out


def _put_path_values(route: Route, values: Mapping[str, str], doc: dict[str, JSON]) -> None:
    problems = Problems()
    for variable in route.variables:
        target = doc
        message = route.input_type
        for step in variable.field_path[:-1]:
            field = message.fields_by_name[step]
            nested = target.setdefault(step, {})
            if not isinstance(nested, dict):  # the body gave a non-object; already refused
                break
            target, message = nested, message_of(field)
        field = message.fields_by_name[variable.field_path[-1]]
        value = check_single(
            text_value(values[variable.name], field), field, problems, variable.name
        )
        given = target.get(field.name)
        if given is not None and given != value:
            problems.add(
                variable.name,
                f"the path says {values[variable.name]!r} but the body says {given!r}",
            )
        target[field.name] = value
    _raise(problems, Reason.INVALID_PATH)


def derives_mask(route: Route) -> bool:
    """Whether a body without update_mask gets one derived: a PATCH with a FieldMask mask."""
    mask = route.input_type.fields_by_name.get(MASK_FIELD)
    return (
        route.http_method == "PATCH"
        and bool(route.body)
        and mask is not None
        and mask.message_type is not None
        and mask.message_type.full_name == "google.protobuf.FieldMask"
    )


def _derive_mask(route: Route, body: dict[str, JSON]) -> None:
    """Fills update_mask from the body's leaf paths when a PATCH body does not give one."""
    if not derives_mask(route) or MASK_FIELD in body:
        return
    if route.body == "*":
        skip = route.bound_fields() | frozenset(route.alternatives()) | MASK_EXEMPT
        top = {k: v for k, v in body.items() if _proto_name(route.input_type, k) not in skip}
        paths = _leaf_paths(route.input_type, top)
    else:
        part = body.get(route.body)
        field = route.input_type.fields_by_name.get(route.body)
        inner = field.message_type if field is not None else None
        paths = _leaf_paths(inner, part) if isinstance(part, dict) and inner else []
    if paths:
        body[MASK_FIELD] = ",".join(paths)


def _proto_name(message: Descriptor, key: str) -> str:
    """The proto name of the field ``key`` names (proto or JSON name), else ``key``."""
    field = fields_by_any_name(message).get(key)
    return field.name if field is not None else key


def _leaf_paths(message: Descriptor | None, obj: Mapping[str, JSON], prefix: str = "") -> list[str]:
    """The paths, in FieldMask's JSON form (camelCase), of the leaves ``obj`` sets."""
    paths: list[str] = []
    for key, value in obj.items():
        field = fields_by_any_name(message).get(key) if message is not None else None
        path = prefix + (field.json_name if field is not None else json_format_name(key))
        inner = field.message_type if field is not None else None
        walk = (
            field is not None
            and inner is not None
            and isinstance(value, dict)
            and bool(value)
            and not is_map(field)
            and not field.is_repeated
            and not inner.full_name.startswith("google.protobuf.")
        )
        if walk and isinstance(value, dict):
            paths += _leaf_paths(inner, value, f"{path}.")
        else:
            paths.append(path)
    return paths


def json_format_name(name: str) -> str:
    """A proto field name in the camelCase form FieldMask's JSON string uses."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def build_request(
    route: Route,
    message_class: type[Message],
    path_values: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: bytes,
) -> Message:
    """The request message of ``route``, or a GatewayError (400) naming what is wrong."""
    doc = _body_json(route, body)
    _derive_mask(route, doc)
    doc.update(_query_json(route, query))
    _put_path_values(route, path_values, doc)
    request = message_class()
    try:
        json_format.ParseDict(doc, request)
    except json_format.ParseError as exc:
        raise GatewayError(
            400,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request does not fit {route.input_type.full_name}: {exc}",
            reason=Reason.INVALID_FIELD,
            violations=(Violation("", str(exc)),),
        ) from None
    return request


def response_json(route: Route, response: Message) -> JSON:
    """The JSON of a response message (or of its response_body field)."""
    doc = json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    if not route.response_body:
        return doc
    field = route.output_type.fields_by_name[route.response_body]
    default: JSON = {} if field.message_type is not None else None
    return doc.get(route.response_body, default)


def dumps(doc: JSON) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
