"""The OpenAPI 3 document of the gateway, generated from the descriptors.

Every route becomes an operation: its path and query parameters, its request
body, its response (and 202 with ``Location`` where the call may start a job),
and its error responses. The errors an RPC's comment names (``Errors:
NOT_FOUND (...)``) are listed with their HTTP status; every operation also has
400 (the gateway's own checks) and ``default``, all with the Error schema.

Schemas mirror proto3 JSON as the gateway writes it: proto field names,
64-bit integers as strings (``format: int64``), enums as their value names,
Timestamp as ``date-time`` strings, Duration and FieldMask as strings, Struct
as an object, maps as objects with ``additionalProperties``. Descriptions are
the proto comments (see gateway.comments).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)

from gateway import errors, jobs
from gateway.comments import Comments
from gateway.jsonvalue import INT_RANGES, STRING_TYPES, WRAPPERS, is_map, map_value, message_of
from gateway.routes import Route

OPENAPI_VERSION = "3.0.3"
TITLE = "osd REST API"
MAX_QUERY_DEPTH = 4

Schema = dict[str, Any]

_REF = "#/components/schemas/"
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_UNSIGNED = frozenset({FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64})
_ERRORS_LINE = re.compile(r"Errors:(.*?)(?:\n\s*\n|$)", re.S)

INFO_DESCRIPTION = """\
HTTP/JSON access to every RPC of the osd gRPC API, generated from the
contract's google.api.http rules.

* Bodies and responses are proto3 JSON. Responses use the proto field names
  (`create_time`); requests accept those or lowerCamelCase. 64-bit integers
  are strings in responses and strings or numbers in requests; enums are
  written by name.
* Fields that neither the path nor the body carries come from the query
  string: `page_size=10`, dotted names for nested fields (`target.kind=...`),
  repeated parameters for repeated fields (`states=A&states=B`) and
  `labels[key]=value` for maps.
* A PATCH body without `update_mask` updates the leaf fields it gives
  (`{"qos": {"iops_limit": "2000"}}` changes only the IOPS limit); request
  flags such as `expected_generation` and `shrink_ok` are never fields to change.
* Errors answer `{"code", "status", "message", "details"}`: the gRPC code
  number and name, a message, and google.rpc details (ErrorInfo, BadRequest,
  RequestInfo) with their `@type`.
* A call that starts a job answers 202 with `Location: /v1/jobs/{id}`.
* `Authorization` and `X-Api-Key` pass to the daemon; `X-Request-Id` is
  accepted or generated and always returned.
"""


def _scalar(field: FieldDescriptor) -> Schema:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return {"type": "string"}
    if kind == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "format": "byte"}
    if kind == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in _INT64_TYPES:
        pattern = "^[0-9]{1,20}$" if kind in _UNSIGNED else "^-?[0-9]{1,19}$"
        fmt = "uint64" if kind in _UNSIGNED else "int64"
        return {"type": "string", "format": fmt, "pattern": pattern}
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        fmt = "int32" if low < 0 else "int64"
        return {"type": "integer", "format": fmt, "minimum": low, "maximum": high}
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return {"type": "number", "format": "double"}
    if kind == FieldDescriptor.TYPE_FLOAT:
        return {"type": "number", "format": "float"}
    return {}


def _well_known(name: str, field_of: Descriptor) -> Schema | None:
    if name in WRAPPERS:
        return _scalar(field_of.fields_by_name["value"])
    if name == "google.protobuf.Timestamp":
        return {"type": "string", "format": "date-time"}
    if name == "google.protobuf.Duration":
        return {
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "A duration in seconds with an 's' suffix, e.g. \"1.5s\".",
        }
    if name == "google.protobuf.FieldMask":
        return {"type": "string", "description": 'Comma-separated field paths, e.g. "name,labels".'}
    if name == "google.protobuf.Struct":
        return {"type": "object", "additionalProperties": True}
    if name == "google.protobuf.Value":
        return {}
    if name == "google.protobuf.ListValue":
        return {"type": "array", "items": {}}
    if name == "google.protobuf.Empty":
        return {"type": "object", "additionalProperties": False}
    if name == "google.protobuf.Any":
        return {
            "type": "object",
            "required": ["@type"],
            "properties": {"@type": {"type": "string"}},
            "additionalProperties": True,
        }
    return None


class _Builder:
    """Collects component schemas while the operations are built."""

    def __init__(self, comments: Comments) -> None:
        self.comments = comments
        self.schemas: dict[str, Schema] = {}

    def described(self, schema: Schema, name: str) -> Schema:
        text = self.comments.get(name)
        if not text:
            return schema
        if "$ref" in schema:  # siblings of $ref are ignored in 3.0
            return {"allOf": [schema], "description": text}
        return {**schema, "description": text}

    def message_ref(self, message: Descriptor) -> Schema:
        known = _well_known(message.full_name, message)
        if known is not None:
            return known
        name = message.full_name
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: breaks cycles
            self.schemas[name] = self.message_schema(message)
        return {"$ref": _REF + name}

    def enum_ref(self, enum: EnumDescriptor) -> Schema:
        name = enum.full_name
        if name not in self.schemas:
            lines = [self.comments.get(name), ""] if self.comments.get(name) else []
            for value in enum.values:
                note = self.comments.get(f"{name}.{value.name}").replace("\n", " ")
                lines.append(f"* `{value.name}`" + (f": {note}" if note else ""))
            self.schemas[name] = {
                "type": "string",
                "enum": [v.name for v in enum.values],
                "description": "\n".join(lines),
            }
        return {"$ref": _REF + name}

    def message_schema(self, message: Descriptor, skip: frozenset[str] = frozenset()) -> Schema:
        properties = {
            field.name: self.described(self.field_schema(field), field.full_name)
            for field in message.fields
            if field.name not in skip
        }
        schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
        text = self.comments.get(message.full_name)
        if text:
            schema["description"] = text
        return schema

    def single_schema(self, field: FieldDescriptor) -> Schema:
        if field.message_type is not None:
            return self.message_ref(field.message_type)
        if field.enum_type is not None:
            return self.enum_ref(field.enum_type)
        return _scalar(field)

    def field_schema(self, field: FieldDescriptor) -> Schema:
        if is_map(field):
            value = map_value(field)
            return {"type": "object", "additionalProperties": self.single_schema(value)}
        if field.is_repeated:
            return {"type": "array", "items": self.single_schema(field)}
        return self.single_schema(field)

    # -- parameters -------------------------------------------------------

    def path_parameters(self, route: Route) -> list[Schema]:
        out = []
        for variable in route.variables:
            message = route.input_type
            for step in variable.field_path[:-1]:
                message = message_of(message.fields_by_name[step])
            field = message.fields_by_name[variable.field_path[-1]]
            param: Schema = {
                "name": variable.name,
                "in": "path",
                "required": True,
                "schema": self.single_schema(field),
            }
            text = self.comments.get(field.full_name)
            if text:
                param["description"] = text
            out.append(param)
        return out

    def query_parameters(self, route: Route) -> list[Schema]:
        if route.body == "*":
            return []
        skip = set(route.bound_paths())
        if route.body:
            skip.add(route.body)
        out: list[Schema] = []
        self._query_fields(route.input_type, "", skip, out, depth=0)
        return out

    def _query_fields(
        self, message: Descriptor, prefix: str, skip: set[str], out: list[Schema], depth: int
    ) -> None:
        for field in message.fields:
            name = prefix + field.name
            if name in skip:
                continue
            text = self.comments.get(field.full_name)
            param: Schema = {"name": name, "in": "query"}
            if text:
                param["description"] = text
            nested = field.message_type
            if is_map(field):
                value = map_value(field)
                if value.message_type is not None and value.message_type.full_name not in WRAPPERS:
                    continue
                param.update(
                    style="deepObject",
                    explode=True,
                    schema={"type": "object", "additionalProperties": self.single_schema(value)},
                )
            elif nested is not None and nested.full_name not in WRAPPERS | STRING_TYPES:
                if not field.is_repeated and depth < MAX_QUERY_DEPTH:
                    self._query_fields(nested, name + ".", skip, out, depth + 1)
                continue
            elif field.is_repeated:
                param.update(
                    style="form",
                    explode=True,
                    schema={"type": "array", "items": self.single_schema(field)},
                )
            else:
                param["schema"] = self.single_schema(field)
            out.append(param)

    def request_body(self, route: Route) -> Schema | None:
        if not route.body:
            return None
        if route.body == "*":
            schema = self.message_schema(route.input_type, skip=route.bound_fields())
        else:
            field = route.input_type.fields_by_name[route.body]
            schema = self.described(self.field_schema(field), field.full_name)
        return {"required": False, "content": {"application/json": {"schema": schema}}}

    def response_schema(self, route: Route) -> Schema:
        if route.response_body:
            return self.field_schema(route.output_type.fields_by_name[route.response_body])
        return self.message_ref(route.output_type)


def _error_statuses(comment: str) -> list[int]:
    """HTTP statuses of the gRPC codes an RPC's comment lists under "Errors:"."""
    found = _ERRORS_LINE.search(comment)
    if not found:
        return []
    statuses = set()
    for code in grpc.StatusCode:
        if re.search(rf"\b{code.name}\b", found.group(1)):
            statuses.add(errors.http_status(code))
    return sorted(statuses)


def _summary(comment: str, fallback: str) -> str:
    first = comment.split("\n\n", 1)[0].replace("\n", " ").strip()
    sentence = re.split(r"(?<=\.)\s", first, maxsplit=1)[0]
    return sentence or fallback


_REQUEST_ID_HEADER = {
    "description": "The request id: the caller's X-Request-Id when well formed, else a new one.",
    "schema": {"type": "string"},
}


def _operation(builder: _Builder, route: Route, operation_id: str) -> Schema:
    method = route.method
    service = method.containing_service
    comment = builder.comments.get(method.full_name)
    ok_content = {"application/json": {"schema": builder.response_schema(route)}}
    if route.streaming_response:
        ok_content = {
            "application/x-ndjson": {
                "schema": {
                    "type": "object",
                    "description": 'One line per response: {"result": ...} or, when the stream '
                    'fails, a last {"error": Error}.',
                }
            }
        }
    responses: Schema = {
        "200": {
            "description": "OK",
            "headers": {"X-Request-Id": _REQUEST_ID_HEADER},
            "content": ok_content,
        },
    }
    if jobs.starts_jobs(route):
        responses["202"] = {
            "description": "Accepted: the call started a job; poll it at Location.",
            "headers": {
                "X-Request-Id": _REQUEST_ID_HEADER,
                "Location": {
                    "description": "/v1/jobs/{id} of the job",
                    "schema": {"type": "string"},
                },
            },
            "content": ok_content,
        }
    statuses = {400, *_error_statuses(comment)}
    if route.body:
        statuses.add(413)
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": "#/components/responses/Error"}
    responses["default"] = {"$ref": "#/components/responses/Error"}
    operation: Schema = {
        "operationId": operation_id,
        "tags": [service.name],
        "summary": _summary(comment, method.name),
        "description": (comment + "\n\n" if comment else "")
        + f"gRPC: `{service.full_name}/{method.name}`",
        "parameters": builder.path_parameters(route) + builder.query_parameters(route),
        "responses": responses,
    }
    body = builder.request_body(route)
    if body is not None:
        operation["requestBody"] = body
    if not operation["parameters"]:
        del operation["parameters"]
    return operation


def _error_components() -> tuple[Schema, Schema]:
    schema: Schema = {
        "type": "object",
        "description": "An error: the gRPC status of the call (or of the gateway's own check).",
        "required": ["code", "status", "message", "details"],
        "properties": {
            "code": {
                "type": "integer",
                "format": "int32",
                "description": "The gRPC status code number.",
            },
            "status": {
                "type": "string",
                "enum": [c.name for c in grpc.StatusCode],
                "description": "The gRPC status code name.",
            },
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "description": "google.rpc details: ErrorInfo, BadRequest, RequestInfo.",
                "items": {
                    "type": "object",
                    "required": ["@type"],
                    "properties": {"@type": {"type": "string"}},
                    "additionalProperties": True,
                },
            },
        },
        "additionalProperties": False,
    }
    response: Schema = {
        "description": "An error; the HTTP status follows the gRPC code (see the gateway's "
        "README for the table).",
        "headers": {"X-Request-Id": _REQUEST_ID_HEADER},
        "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}},
    }
    return schema, response


def _extra_paths() -> Schema:
    health = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "description": "The gRPC health status, e.g. SERVING."},
            "message": {"type": "string"},
        },
        "additionalProperties": False,
    }
    return {
        "/healthz": {
            "get": {
                "operationId": "Gateway_Health",
                "tags": ["Gateway"],
                "summary": "The daemon's health, from its gRPC health service.",
                "responses": {
                    "200": {
                        "description": "SERVING",
                        "headers": {"X-Request-Id": _REQUEST_ID_HEADER},
                        "content": {"application/json": {"schema": health}},
                    },
                    "503": {
                        "description": "Not serving, or the daemon cannot be reached.",
                        "headers": {"X-Request-Id": _REQUEST_ID_HEADER},
                        "content": {"application/json": {"schema": health}},
                    },
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "Gateway_OpenAPI",
                "tags": ["Gateway"],
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "headers": {"X-Request-Id": _REQUEST_ID_HEADER},
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def _files(services: Sequence[ServiceDescriptor]) -> list[FileDescriptor]:
    seen: dict[str, FileDescriptor] = {}
    pending = [s.file for s in services]
    while pending:
        file = pending.pop()
        if file.name in seen:
            continue
        seen[file.name] = file
        pending.extend(file.dependencies)
    return list(seen.values())


def document(
    services: Sequence[ServiceDescriptor],
    routes: Sequence[Route],
    comments: Comments | None = None,
    version: str = "v1",
) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (the routes of ``services``)."""
    if comments is None:
        comments = Comments.load(_files(services))
    builder = _Builder(comments)
    paths: dict[str, Schema] = {}
    used_ids: dict[str, int] = {}
    for route in routes:
        base = f"{route.method.containing_service.name}_{route.method.name}"
        used_ids[base] = used_ids.get(base, 0) + 1
        operation_id = base if used_ids[base] == 1 else f"{base}_{used_ids[base]}"
        item = paths.setdefault(route.openapi_path, {})
        item[route.http_method.lower()] = _operation(builder, route, operation_id)
    paths.update(_extra_paths())
    error_schema, error_response = _error_components()
    builder.schemas["Error"] = error_schema
    tags = [
        {"name": s.name, "description": comments.get(s.full_name) or comments.get(s.file.name)}
        for s in services
    ]
    tags.append({"name": "Gateway", "description": "The gateway's own endpoints."})
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": version, "description": INFO_DESCRIPTION},
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "responses": {"Error": error_response},
        },
    }
