"""The OpenAPI 3.1 document of the gateway, generated from the descriptors.

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

Request schemas are as strict as the daemon, so that a request that fits the
document is refused only for what the world says (404, 409, 429), never as
malformed: ids, names, labels, sizes and the other field rules, required
fields, ranges, oneofs (at most one member, exactly one when required) and
the relations the comments state, all from the descriptors, the comments
and the contract's conventions (see gateway.conventions). A PATCH body that
lets the gateway derive update_mask names at least one field it takes, and an
explicit update_mask names paths the update takes. Response schemas keep to
what the daemon answers: "" for an unset reference, ids as ids.

Responses carry OpenAPI links: the id of an object a response holds feeds
the operations that take such an id (path, query or body), so a client or a
stateful tester can chain CreateCluster into InspectCluster and CreateNode.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)

from gateway import conventions as rules
from gateway import errors, jobs, transcode
from gateway.comments import Comments
from gateway.jsonvalue import INT_RANGES, STRING_TYPES, WRAPPERS, is_map, map_value, message_of
from gateway.routes import Route

OPENAPI_VERSION = "3.1.0"
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
* The request schemas are as strict as the daemon: a request that fits them
  is well formed. Label values use the format `printable` (Python's
  `str.isprintable`). Responses link each object's id to the operations that
  take it.
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
        unsigned = kind in _UNSIGNED
        fmt = "uint64" if unsigned else "int64"
        return {
            "type": "string",
            "format": fmt,
            "pattern": rules.int64_pattern(0 if unsigned else None, unsigned),
        }
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


class Need(enum.Enum):
    """How much a request asks of a field's value."""

    OPTIONAL = 0  # may be absent or empty ("" where "" means "none")
    GIVEN = 1  # when present it is a real value: a oneof member, a field an update sets
    REQUIRED = 2  # must be present and not empty (a "Required" comment, a path variable)


def _reachable(roots: Sequence[Descriptor]) -> dict[str, Descriptor]:
    """``roots`` and every message their fields hold, by full name."""
    seen: dict[str, Descriptor] = {}
    pending = list(roots)
    while pending:
        message = pending.pop()
        if message.full_name in seen:
            continue
        seen[message.full_name] = message
        pending.extend(f.message_type for f in message.fields if f.message_type is not None)
    return seen


def _optional(pattern: str) -> str:
    """``pattern`` (anchored) that also admits the empty string."""
    return f"^(?:{pattern[1:-1]})?$"


def _given(field: FieldDescriptor) -> Schema:
    """The schema of a present field that counts as given: not empty, true, not UNSPECIFIED,
    a message with a field set."""
    if field.is_repeated:
        return {"minProperties": 1} if is_map(field) else {"minItems": 1}
    if field.message_type is not None:
        return {"minProperties": 1}
    if field.enum_type is not None:
        return {"not": {"enum": [v.name for v in field.enum_type.values if v.number == 0]}}
    if field.type == FieldDescriptor.TYPE_STRING:
        return {"minLength": 1}
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"const": True}
    if field.type in _INT64_TYPES:
        return {"not": {"pattern": "^-?0+$"}}
    return {"not": {"const": 0}}


def _chooser(fields: Mapping[str, FieldDescriptor], value: str) -> FieldDescriptor | None:
    """The enum field among ``fields`` that has a value named ``*_<value>``."""
    return next(
        (
            f
            for f in fields.values()
            if f.enum_type is not None
            and not f.is_repeated
            and any(v.name.endswith("_" + value) for v in f.enum_type.values)
        ),
        None,
    )


def _cleared(field: FieldDescriptor) -> Schema:
    """The schema of a present field whose value is the empty one: "", false, [], 0."""
    if field.is_repeated:
        return {"maxProperties": 0} if is_map(field) else {"maxItems": 0}
    if field.enum_type is not None:
        return {"enum": [v.name for v in field.enum_type.values if v.number == 0]}
    if field.type == FieldDescriptor.TYPE_STRING:
        return {"maxLength": 0}
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"const": False}
    if field.type in _INT64_TYPES:
        return {"pattern": "^-?0+$"}
    return {"const": 0}


def _present(names: Sequence[str], fields: dict[str, FieldDescriptor]) -> Schema:
    """Every field of ``names`` is given."""
    return {
        "required": list(names),
        "properties": {n: _given(fields[n]) for n in names if _given(fields[n])},
    }


@dataclass
class _Patch:
    """A PATCH body whose update_mask is derived from the fields it gives."""

    paths: list[str]  # the paths update_mask takes, as its comment lists them

    @property
    def tops(self) -> list[str]:
        return list(dict.fromkeys(p.split(".", 1)[0] for p in self.paths))

    def parts(self, top: str) -> list[str]:
        """The sub-paths of ``top`` that may change when ``top`` itself may not change whole."""
        if top in self.paths:
            return []
        return [p.split(".", 1)[1] for p in self.paths if p.startswith(top + ".")]


class _Builder:
    """Collects component schemas while the operations are built."""

    def __init__(
        self,
        comments: Comments,
        answers: frozenset[str] = frozenset(),
        asks: frozenset[str] | None = None,
    ) -> None:
        self.comments = comments
        self.schemas: dict[str, Schema] = {}
        # Messages that responses hold: their fields take the forms the daemon
        # answers ("" for an unset reference), and only exact rules apply.
        self.answers = answers
        # Messages that requests hold (None: all): only these carry the label
        # rules; a response-only message answers what requests were held to.
        self.asks = asks

    def described(self, schema: Schema, name: str) -> Schema:
        text = self.comments.get(name)
        if not text:
            return schema
        if "$ref" in schema:
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

    def enum_ref(self, enum_type: EnumDescriptor) -> Schema:
        name = enum_type.full_name
        if name not in self.schemas:
            lines = [self.comments.get(name), ""] if self.comments.get(name) else []
            for value in enum_type.values:
                note = self.comments.get(f"{name}.{value.name}").replace("\n", " ")
                lines.append(f"* `{value.name}`" + (f": {note}" if note else ""))
            self.schemas[name] = {
                "type": "string",
                "enum": [v.name for v in enum_type.values],
                "description": "\n".join(lines),
            }
        return {"$ref": _REF + name}

    def label_value_ref(self) -> Schema:
        if "LabelValue" not in self.schemas:
            self.schemas["LabelValue"] = {
                "type": "string",
                "maxLength": rules.LABEL_VALUE_MAX,
                "format": rules.PRINTABLE_FORMAT,
                "pattern": rules.NO_CONTROL_PATTERN,
                "description": f"A label value: at most {rules.LABEL_VALUE_MAX} characters of "
                f"printable text. Format `{rules.PRINTABLE_FORMAT}`: no control, format, "
                "surrogate, private-use or unassigned character, no separator but the space "
                "(Python's str.isprintable); the pattern says the part of it a short regular "
                "expression can.",
            }
        return {"$ref": _REF + "LabelValue"}

    # -- messages -----------------------------------------------------------

    def need(self, field: FieldDescriptor, patch: _Patch | None = None) -> Need:
        if rules.is_required(self.comments.get(field.full_name)) and not (
            patch is not None and field.name == transcode.MASK_FIELD
        ):
            return Need.REQUIRED
        if rules.in_real_oneof(field) or (patch is not None and field.name in patch.tops):
            return Need.GIVEN
        return Need.OPTIONAL

    def message_schema(
        self, message: Descriptor, skip: frozenset[str] = frozenset(), patch: _Patch | None = None
    ) -> Schema:
        answered = message.full_name in self.answers
        fields = [f for f in message.fields if f.name not in skip]
        if patch is not None:
            keep = {*patch.tops, transcode.MASK_FIELD, *transcode.MASK_EXEMPT}
            fields = [f for f in fields if f.name in keep]
        properties: Schema = {}
        required: list[str] = []
        for field in fields:
            need = self.need(field, patch)
            parts = patch.parts(field.name) if patch is not None else []
            if parts and field.message_type is not None:
                value = self.part_schema(field.message_type, parts)
            else:
                value = self.field_schema(field, need, answered)
            properties[field.name] = self.described(value, field.full_name)
            if need is Need.REQUIRED:
                required.append(field.name)
        schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        constraints = self.relations(message, {f.name: f for f in fields})
        if patch is not None:
            constraints += self.mask_relations(patch, properties)
        if constraints:
            schema["allOf"] = constraints
        text = self.comments.get(message.full_name)
        if text:
            schema["description"] = text
        return schema

    def part_schema(self, message: Descriptor, parts: list[str]) -> Schema:
        """The fields ``parts`` of ``message``, which are all an update may change of it."""
        fields = [message.fields_by_name[p] for p in parts if p in message.fields_by_name]
        answered = message.full_name in self.answers
        return {
            "type": "object",
            "properties": {
                f.name: self.described(self.field_schema(f, Need.OPTIONAL, answered), f.full_name)
                for f in fields
            },
            "required": [f.name for f in fields],
            "additionalProperties": False,
        }

    def relations(self, message: Descriptor, fields: dict[str, FieldDescriptor]) -> list[Schema]:
        """What the message's fields say of each other: oneofs, and its comments' rules."""
        out: list[Schema] = []
        for oneof in rules.real_oneofs(message):
            names = [f.name for f in oneof.fields if f.name in fields]
            comment = self.comments.get(oneof.full_name)
            if rules.is_required(comment):
                out.append({"oneOf": [{"required": [n]} for n in names]})
                continue
            if len(names) > 1:
                out += [{"not": {"required": [a, b]}} for a, b in itertools.combinations(names, 2)]
            unless = [n for n in rules.required_unless(comment) if n in fields]
            if unless:
                out.append(
                    {
                        "anyOf": [{"required": [n]} for n in names]
                        + [_present([n], fields) for n in unless]
                    }
                )
        at_least, at_most = rules.related_fields(self.comments.get(message.full_name), message)
        for group in at_least:
            names = [n for n in group if n in fields]
            out.append({"anyOf": [_present([n], fields) for n in names]})
        for group in at_most:  # present at all is too many: in a PATCH body it is a change
            names = [n for n in group if n in fields]
            out += [{"not": {"required": [a, b]}} for a, b in itertools.combinations(names, 2)]
        for a, b in rules.requirements(self.comments.get(message.full_name), message):
            if a in fields and b in fields:
                given = _present([a], fields)
                out.append(
                    {
                        "not": {
                            **given,
                            "required": [a, b],
                            "properties": {**given.get("properties", {}), b: _cleared(fields[b])},
                        }
                    }
                )
        for field in fields.values():
            out += self.field_relations(field, fields)
        out += self.nested_relations(fields)
        return out

    def nested_relations(self, fields: dict[str, FieldDescriptor]) -> list[Schema]:
        """ "X only" fields of one message field that hang on the enum of another
        (placement.tail_pool_id is REPLICATE only: durability.type)."""
        out: list[Schema] = []
        messages = [f for f in fields.values() if f.message_type is not None and not f.is_repeated]
        for holder in messages:
            assert holder.message_type is not None
            for inner in holder.message_type.fields:
                value = rules.only_when(self.comments.get(inner.full_name))
                if value is None or inner.is_repeated or inner.message_type is not None:
                    continue
                for other in messages:
                    assert other.message_type is not None
                    chooser = _chooser(other.message_type.fields_by_name, value)
                    if other is holder or chooser is None:
                        continue
                    assert chooser.enum_type is not None
                    others = [
                        v.name
                        for v in chooser.enum_type.values
                        if v.number != 0 and not v.name.endswith("_" + value)
                    ]
                    out.append(
                        {
                            "not": {
                                "required": [holder.name, other.name],
                                "properties": {
                                    holder.name: _present([inner.name], {inner.name: inner}),
                                    other.name: {
                                        "required": [chooser.name],
                                        "properties": {chooser.name: {"enum": others}},
                                    },
                                },
                            }
                        }
                    )
        return out

    def field_relations(
        self, field: FieldDescriptor, fields: dict[str, FieldDescriptor]
    ) -> list[Schema]:
        """A field's comment on its siblings: "X only" (empty unless the enum
        is X), "at most <sibling>"."""
        comment = self.comments.get(field.full_name)
        out: list[Schema] = []
        value = rules.only_when(comment)
        chooser = _chooser(fields, value) if value else None
        if value and chooser is not None and chooser.enum_type is not None:
            chosen = next(v.name for v in chooser.enum_type.values if v.name.endswith("_" + value))
            out.append(
                {
                    "anyOf": [
                        {
                            "required": [chooser.name],
                            "properties": {chooser.name: {"const": chosen}},
                        },
                        {"properties": {field.name: _cleared(field)}},
                    ]
                }
            )
        bound = rules.bounds(comment, set(fields)) if _is_number(field) else None
        other = fields.get(bound.at_most_field or "") if bound else None
        if bound and other is not None and bound.maximum is not None:
            limit = rules.bounds(self.comments.get(other.full_name))
            high = int(bound.maximum)
            values = range(int(limit.minimum or 0), int(limit.maximum or 0) + 1)
            for v in values:
                if v < high:
                    out.append(
                        {
                            "not": {
                                "required": [other.name, field.name],
                                "properties": {
                                    other.name: {"const": v},
                                    field.name: {"minimum": v + 1},
                                },
                            }
                        }
                    )
            if limit.default is not None and limit.default < high:
                out.append(
                    {
                        "not": {
                            "required": [field.name],
                            "properties": {field.name: {"minimum": limit.default + 1}},
                            "anyOf": [
                                {"not": {"required": [other.name]}},
                                {"properties": {other.name: {"const": 0}}},
                            ],
                        }
                    }
                )
        return out

    def mask_relations(self, patch: _Patch, properties: Schema) -> list[Schema]:
        """A PATCH body changes something, and an explicit update_mask names only
        fields the body gives, of those whose empty value an update refuses
        (a name: naming it in the mask without a value would set "")."""
        tops = [t for t in patch.tops if t in properties]
        changes: list[Schema] = [{"required": [t]} for t in tops]
        if transcode.MASK_FIELD in properties:
            changes.append({"required": [transcode.MASK_FIELD]})
        out: list[Schema] = [{"anyOf": changes}]
        for top in tops:
            if _takes_empty(properties[top]):
                continue
            named = rules.json_path(top).replace(".", "\\.")
            out.append(
                {
                    "if": {
                        "required": [transcode.MASK_FIELD],
                        "properties": {
                            transcode.MASK_FIELD: {"pattern": f"(?:^|,){named}(?:[.,]|$)"}
                        },
                    },
                    "then": {"required": [top]},
                }
            )
        return out

    # -- fields -------------------------------------------------------------

    def single_schema(
        self, field: FieldDescriptor, need: Need = Need.OPTIONAL, answered: bool = False
    ) -> Schema:
        if field.message_type is not None:
            return self.message_ref(field.message_type)
        if field.enum_type is not None:
            return self.enum_schema(field, need)
        schema = _scalar(field)
        if field.type == FieldDescriptor.TYPE_STRING:
            return self.text_schema(field, schema, need, answered)
        if field.type == FieldDescriptor.TYPE_BOOL:
            return {**schema, "enum": [True]} if need is Need.REQUIRED else schema
        if _is_number(field):
            return self.number_schema(field, schema, need, answered)
        return schema

    def enum_schema(self, field: FieldDescriptor, need: Need) -> Schema:
        assert field.enum_type is not None
        ref = self.enum_ref(field.enum_type)
        names = [v.name for v in field.enum_type.values]
        allowed = rules.listed_values(self.comments.get(field.full_name), names) or names
        # A required enum, an item of a list, and a proto3 optional or oneof
        # member (set means chosen) name a value: never UNSPECIFIED. (An update
        # may set UNSPECIFIED where it means "no default".)
        chosen = need is Need.REQUIRED or field.is_repeated or field.containing_oneof is not None
        if chosen:
            zero = {v.name for v in field.enum_type.values if v.number == 0}
            allowed = [n for n in allowed if n not in zero]
        if allowed == names:
            return ref
        return {**ref, "enum": allowed}

    def text_schema(
        self, field: FieldDescriptor, schema: Schema, need: Need, answered: bool
    ) -> Schema:
        rule = rules.text_rule(field.name)
        if field.name in ("size", "size_add") and field.containing_oneof is not None:
            rule = rules.TextRule(rules.size_text_pattern(self.size_zero(field)), exact=False)
        if rule is None or (answered and not rule.exact):
            return {**schema, "minLength": 1} if need is not Need.OPTIONAL else schema
        out = {**schema, **rule.extra}
        if rule.pattern:
            if need is Need.OPTIONAL:
                out["pattern"] = rule.optional_pattern or _optional(rule.pattern)
            else:
                out["pattern"] = rule.pattern
        elif need is not Need.OPTIONAL:
            out["minLength"] = 1
        return out

    def size_zero(self, field: FieldDescriptor) -> bool:
        """Whether a text size accepts "0": when its byte-count sibling accepts 0."""
        oneof = field.containing_oneof
        for sibling in oneof.fields if oneof is not None else ():
            if sibling is not field and _is_number(sibling):
                bound = rules.bounds(self.comments.get(sibling.full_name))
                return bound.admits_zero()
        return True

    def number_schema(
        self, field: FieldDescriptor, schema: Schema, need: Need, answered: bool
    ) -> Schema:
        if field.name == "page_size":
            return {**schema, "minimum": 0, "maximum": rules.MAX_PAGE_SIZE}
        if answered and schema.get("type") == "string":
            # What the daemon answers is in range: the short form will do.
            unsigned = field.type in _UNSIGNED
            schema = {**schema, "pattern": "^[0-9]{1,20}$" if unsigned else "^-?[0-9]{1,19}$"}
        bound = rules.bounds(self.comments.get(field.full_name))
        if not bound:
            return schema
        if schema.get("type") == "string":  # a 64-bit integer
            low = bound.exclusive_minimum + 1 if bound.exclusive_minimum is not None else None
            low = bound.minimum if bound.minimum is not None else low
            simple = low in (0, 1) and bound.maximum is None and bound.multiple_of is None
            if simple or answered:
                if simple:
                    zero = bound.zero and low == 1
                    pattern = rules.int64_pattern(0 if zero else int(low or 0))
                    return {**schema, "pattern": pattern}
                return schema
            low_, high = INT_RANGES[field.type]
            schema = {
                "type": "integer",
                "format": schema["format"],
                "minimum": low_,
                "maximum": high,
            }
        ranged = {**schema}
        if bound.minimum is not None:
            ranged["minimum"] = max(bound.minimum, ranged.get("minimum", bound.minimum))
        if bound.maximum is not None:
            ranged["maximum"] = min(bound.maximum, ranged.get("maximum", bound.maximum))
        if bound.exclusive_minimum is not None:
            ranged["exclusiveMinimum"] = bound.exclusive_minimum
            if ranged.get("minimum", bound.exclusive_minimum) <= bound.exclusive_minimum:
                ranged.pop("minimum", None)
        if bound.multiple_of is not None:
            ranged["multipleOf"] = bound.multiple_of
            if isinstance(ranged.get("maximum"), int):
                ranged["maximum"] -= ranged["maximum"] % bound.multiple_of
        if bound.zero and not _admits(ranged, 0):
            kind = {k: v for k, v in schema.items() if k in ("type", "format")}
            return {
                **kind,
                "anyOf": [{"const": 0}, {k: v for k, v in ranged.items() if k not in kind}],
            }
        return ranged

    def field_schema(
        self, field: FieldDescriptor, need: Need = Need.OPTIONAL, answered: bool = False
    ) -> Schema:
        comment = self.comments.get(field.full_name)
        if is_map(field):
            value = map_value(field)
            holder = field.containing_type
            asked = self.asks is None or (holder is not None and holder.full_name in self.asks)
            if (
                asked
                and rules.is_label_map(field.name)
                and value.type == FieldDescriptor.TYPE_STRING
            ):
                return {
                    "type": "object",
                    "propertyNames": {"pattern": rules.LABEL_KEY_PATTERN},
                    "additionalProperties": self.label_value_ref(),
                    "maxProperties": rules.LABELS_MAX,
                }
            return {"type": "object", "additionalProperties": self.single_schema(value)}
        if field.is_repeated:
            item = (
                rules.item_rule(field.name) if field.type == FieldDescriptor.TYPE_STRING else None
            )
            if item is not None and (item[0].exact or not answered):
                rule, extra = item
                items: Schema = {"type": "string", "pattern": rule.pattern, **rule.extra}
                schema: Schema = {"type": "array", "items": items, **extra}
            else:
                schema = {"type": "array", "items": self.single_schema(field, answered=answered)}
            text = " ".join(comment.split())
            if need is Need.REQUIRED or re.search(r"\bat least one\b", text, re.I):
                schema["minItems"] = 1
            if found := re.search(r"\bat most (\d+)\b", text):
                schema["maxItems"] = int(found.group(1))
            if re.search(r"\bno duplicates\b", text):
                schema["uniqueItems"] = True
            return schema
        return self.single_schema(field, need, answered)

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
                "schema": self.single_schema(field, Need.REQUIRED),
            }
            text = self.comments.get(field.full_name)
            if text:
                param["description"] = text
            out.append(param)
        return out

    def query_parameters(self, route: Route) -> list[Schema]:
        if route.body == "*":
            return []
        skip = set(route.bound_paths()) | set(route.alternatives())
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
            need = self.need(field)
            param: Schema = {"name": name, "in": "query"}
            if text:
                param["description"] = text
            if need is Need.REQUIRED and not prefix:
                param["required"] = True
            nested = field.message_type
            if is_map(field):
                value = map_value(field)
                if value.message_type is not None and value.message_type.full_name not in WRAPPERS:
                    continue
                param.update(style="deepObject", explode=True, schema=self.field_schema(field))
            elif nested is not None and nested.full_name not in WRAPPERS | STRING_TYPES:
                if not field.is_repeated and depth < MAX_QUERY_DEPTH:
                    self._query_fields(nested, name + ".", skip, out, depth + 1)
                continue
            elif field.is_repeated:
                param.update(style="form", explode=True, schema=self.field_schema(field, need))
            else:
                param["schema"] = self.single_schema(field, need)
            out.append(param)

    def request_body(self, route: Route) -> Schema | None:
        if not route.body:
            return None
        if route.body == "*":
            patch = None
            if transcode.derives_mask(route):
                mask = route.input_type.fields_by_name[transcode.MASK_FIELD]
                paths = rules.mask_paths(self.comments.get(mask.full_name))
                patch = _Patch(paths) if paths else None
            skip = route.bound_fields() | frozenset(route.alternatives())
            schema = self.message_schema(route.input_type, skip=skip, patch=patch)
            if patch is not None:
                self.mask_schema(schema, patch)
        else:
            field = route.input_type.fields_by_name[route.body]
            schema = self.described(self.field_schema(field), field.full_name)
        # No body is the empty message: then the body is required when {} does not fit.
        return {
            "required": not _admits_empty(schema),
            "content": {"application/json": {"schema": schema}},
        }

    @staticmethod
    def mask_schema(schema: Schema, patch: _Patch) -> None:
        """update_mask, when a PATCH body gives it, names paths the update takes."""
        mask = schema["properties"].get(transcode.MASK_FIELD)
        if mask is None:
            return
        one = "|".join(re.escape(rules.json_path(p)) for p in patch.paths)
        pattern = f"^(?:{one})(?:,(?:{one}))*$"
        if "allOf" in mask:
            mask["allOf"].append({"pattern": pattern})
        else:
            mask["pattern"] = pattern

    def response_schema(self, route: Route) -> Schema:
        if route.response_body:
            field = route.output_type.fields_by_name[route.response_body]
            return self.field_schema(field, answered=True)
        return self.message_ref(route.output_type)


def _takes_empty(schema: Schema) -> bool:
    """Whether a field schema admits its type's empty value: "", "0", 0, [], false."""
    kind = schema.get("type")
    if "allOf" in schema or "$ref" in schema:
        return True  # a message (or an enum): absent is the empty message
    if kind == "array":
        return not schema.get("minItems")
    if kind == "boolean":
        return bool(schema.get("enum", [False]) != [True])
    if kind == "object":
        return not schema.get("minProperties") and not schema.get("required")
    if kind == "string":
        empty = "0" if schema.get("format") in ("int64", "uint64") else ""
        pattern = schema.get("pattern")
        if pattern and not re.search(pattern, empty):
            return False
        return len(empty) >= int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        if any(branch.get("const") == 0 for branch in schema.get("anyOf", [])):
            return True
        return _admits(schema, 0)
    return True


def _admits_empty(schema: Schema) -> bool:
    """Whether ``{}`` fits ``schema``, for the keywords the object schemas here use."""
    if schema.get("required"):
        return False
    if "anyOf" in schema and not any(_admits_empty(s) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema and sum(_admits_empty(s) for s in schema["oneOf"]) != 1:
        return False
    if "not" in schema and _admits_empty(schema["not"]):
        return False
    if "if" in schema and _admits_empty(schema["if"]) and not _admits_empty(schema["then"]):
        return False
    return all(_admits_empty(s) for s in schema.get("allOf", []))


def _is_number(field: FieldDescriptor) -> bool:
    return field.enum_type is None and (
        field.type in INT_RANGES
        or field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
    )


def _admits(schema: Schema, value: float) -> bool:
    if "minimum" in schema and value < schema["minimum"]:
        return False
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return False
    if "maximum" in schema and value > schema["maximum"]:
        return False
    return not ("multipleOf" in schema and value % schema["multipleOf"])


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


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _resources(routes: Sequence[Route]) -> dict[str, str]:
    """Messages that are objects addressed by id: the full name -> the object's name.

    A message with a string ``id`` field is the object that ``<snake name>_id``
    fields name (osd.v1.DatastoreVersion: datastore_version_id) when some
    route takes such a path variable.
    """
    taken = {v.name for r in routes for v in r.variables}
    out: dict[str, str] = {}
    for name, message in _reachable([r.output_type for r in routes]).items():
        field = message.fields_by_name.get("id")
        if field is None or field.type != FieldDescriptor.TYPE_STRING:
            continue
        prefix = _snake(message.name)
        if any(t == f"{prefix}_id" or t.endswith(f"_{prefix}_id") for t in taken):
            out[name] = prefix
    return out


def _targets(route: Route) -> list[tuple[str, str]]:
    """Where ``route`` takes an id: ("path" | "query" | "body", field name)."""
    out = [("path", v.name) for v in route.variables if len(v.field_path) == 1]
    bound = route.bound_fields() | frozenset(route.alternatives())
    for field in route.input_type.fields:
        if field.name in bound or field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
            continue
        if not field.name.endswith("_id"):
            continue
        if route.body == "*":
            out.append(("body", field.name))
        elif not route.body:
            out.append(("query", field.name))
    return out


def _add_links(built: Sequence[tuple[Route, Schema]]) -> None:
    """OpenAPI links: an object a response holds feeds the ids of the operations that take one.

    ``CreateClusterResponse.cluster`` is an osd.v1.Cluster, so its id can be
    the ``cluster_id`` of InspectCluster (path), CreateNode (body) or
    ListNodes (query); a list's first object feeds them too. Generated from
    the descriptors: a field named ``<object>_id`` or ``<role>_<object>_id``
    takes the id of the message ``<Object>``.
    """
    resources = _resources([route for route, _ in built])
    for route, operation in built:
        if route.response_body or route.streaming_response:
            continue  # the body is not the response message
        links: Schema = {}
        for field in route.output_type.fields:
            message = field.message_type
            prefix = resources.get(message.full_name) if message is not None else None
            if prefix is None or is_map(field):
                continue
            index = "/0" if field.is_repeated else ""
            pointer = f"$response.body#/{field.name}{index}/id"
            for target, target_op in built:
                for where, name in _targets(target):
                    if not (name == f"{prefix}_id" or name.endswith(f"_{prefix}_id")):
                        continue
                    link: Schema = {"operationId": target_op["operationId"]}
                    if where == "body":
                        link["requestBody"] = {name: pointer}
                    else:
                        link["parameters"] = {f"{where}.{name}": pointer}
                    links[f"{target_op['operationId']}.{name}.{field.name}"] = link
        if links:
            for status in ("200", "202"):
                if status in operation["responses"]:
                    operation["responses"][status]["links"] = links


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
    builder = _Builder(
        comments,
        answers=frozenset(_reachable([route.output_type for route in routes])),
        asks=frozenset(_reachable([route.input_type for route in routes])),
    )
    paths: dict[str, Schema] = {}
    used_ids: dict[str, int] = {}
    built: list[tuple[Route, Schema]] = []
    for route in routes:
        base = f"{route.method.containing_service.name}_{route.method.name}"
        used_ids[base] = used_ids.get(base, 0) + 1
        operation_id = base if used_ids[base] == 1 else f"{base}_{used_ids[base]}"
        item = paths.setdefault(route.openapi_path, {})
        operation = _operation(builder, route, operation_id)
        item[route.http_method.lower()] = operation
        built.append((route, operation))
    _add_links(built)
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
