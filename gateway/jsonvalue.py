"""Checks decoded JSON against a message type before it is parsed into a message.

protobuf's own JSON parser is correct but its messages do not always say
which field is wrong. :func:`check_message` walks the value alongside the
descriptor and reports every wrong field by its path (``cluster.labels["a"]``,
``kinds[2]``) with what it expected and what it got. It also returns the
value with every field keyed by its proto name, so later steps (path
variables, the derived update mask) never care whether the client wrote
``updateMask`` or ``update_mask``.

The accepted forms are proto3 JSON: field names as in the proto or in
lowerCamelCase; 64-bit integers as numbers or decimal strings; enums by name
(or number); bytes in base64; Timestamp, Duration and FieldMask as strings;
``null`` for "not set". Unknown fields are errors.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.errors import Violation

JSON = Any  # a value as json.loads returns it

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOAT_MAX = 3.4028234663852886e38
_INT_TEXT = re.compile(r"-?[0-9]+")
_SPECIAL_FLOATS = frozenset({"NaN", "Infinity", "-Infinity"})

WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
STRING_TYPES = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)


class Problems:
    """The violations found so far; stops collecting after a few dozen."""

    LIMIT = 32

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def add(self, path: str, description: str) -> None:
        if len(self.violations) < self.LIMIT:
            self.violations.append(Violation(path, description))


@functools.cache
def fields_by_any_name(message: Descriptor) -> dict[str, FieldDescriptor]:
    """The fields of ``message`` by proto name and by JSON (camelCase) name."""
    out: dict[str, FieldDescriptor] = {}
    for field in message.fields:
        out[field.json_name] = field
        out[field.name] = field
    return out


def message_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message (or map) field."""
    if field.message_type is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return field.message_type


def map_value(field: FieldDescriptor) -> FieldDescriptor:
    """The value field of a map field's entry type."""
    return message_of(field).fields_by_name["value"]


def is_map(field: FieldDescriptor) -> bool:
    return bool(
        field.is_repeated
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def kind_of(value: JSON) -> str:
    """How a JSON value reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def check_message(
    value: JSON, message: Descriptor, problems: Problems, path: str = ""
) -> dict[str, JSON]:
    """``value`` as an object of ``message`` with proto field names; records problems."""
    if not isinstance(value, dict):
        problems.add(path, f"expected an object ({message.full_name}), got {kind_of(value)}")
        return {}
    known = fields_by_any_name(message)
    out: dict[str, JSON] = {}
    given_as: dict[str, str] = {}
    for key, item in value.items():
        field = known.get(key)
        if field is None:
            problems.add(join(path, key), f"unknown field of {message.full_name}")
            continue
        here = join(path, field.name)
        if field.name in given_as:
            problems.add(here, f"given twice (as {given_as[field.name]!r} and {key!r})")
            continue
        given_as[field.name] = key
        if item is None and not _takes_null(field):
            continue  # null means "not set"
        out[field.name] = check_field(item, field, problems, here)
    _check_oneofs(message, out, problems, path)
    return out


def _takes_null(field: FieldDescriptor) -> bool:
    """Whether null is a value of the field (google.protobuf.Value's null) rather than "unset"."""
    return (
        field.message_type is not None
        and not field.is_repeated
        and field.message_type.full_name == "google.protobuf.Value"
    )


def _check_oneofs(
    message: Descriptor, value: dict[str, JSON], problems: Problems, path: str
) -> None:
    for oneof in message.oneofs:
        if len(oneof.fields) == 1 and oneof.fields[0].has_presence and oneof.name.startswith("_"):
            continue  # the synthetic oneof of a proto3 `optional` field
        present = [f.name for f in oneof.fields if f.name in value]
        if len(present) > 1:
            problems.add(
                join(path, present[1]),
                f"only one of {', '.join(present)} may be set (oneof {oneof.name})",
            )


def check_field(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    if is_map(field):
        return _check_map(value, field, problems, path)
    if field.is_repeated:
        if not isinstance(value, list):
            problems.add(path, f"expected an array, got {kind_of(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if item is None:
                problems.add(f"{path}[{i}]", "null is not allowed in an array")
                continue
            out.append(check_single(item, field, problems, f"{path}[{i}]"))
        return out
    return check_single(value, field, problems, path)


def _check_map(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    if not isinstance(value, dict):
        problems.add(path, f"expected an object (a map), got {kind_of(value)}")
        return {}
    key_field = message_of(field).fields_by_name["key"]
    value_field = map_value(field)
    out: dict[str, JSON] = {}
    for key, item in value.items():
        here = f"{path}[{key!r}]"
        if key_field.type == FieldDescriptor.TYPE_BOOL and key not in ("true", "false"):
            problems.add(here, "map key must be true or false")
        elif key_field.type in INT_RANGES:
            _check_int(key, key_field, problems, here)
        if item is None:
            problems.add(here, "null is not allowed as a map value")
            continue
        out[key] = check_single(item, value_field, problems, here)
    return out


def check_single(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    """One value of a non-repeated field (or one element of a repeated one)."""
    if field.message_type is not None:
        return _check_message_value(value, field.message_type, problems, path)
    checker = _SCALAR_CHECKS.get(field.type)
    if checker is None:  # a group: not used in proto3
        problems.add(path, "field type not supported over REST")
        return value
    return checker(value, field, problems, path)


def _check_message_value(value: JSON, message: Descriptor, problems: Problems, path: str) -> JSON:
    name = message.full_name
    if name in WRAPPERS:
        return check_single(value, message.fields_by_name["value"], problems, path)
    if name in STRING_TYPES:
        return _check_string_type(value, name, problems, path)
    if name == "google.protobuf.Struct":
        if not isinstance(value, dict):
            problems.add(path, f"expected an object, got {kind_of(value)}")
        return value
    if name == "google.protobuf.ListValue":
        if not isinstance(value, list):
            problems.add(path, f"expected an array, got {kind_of(value)}")
        return value
    if name == "google.protobuf.Value":
        return value
    if name == "google.protobuf.Any":
        if not isinstance(value, dict) or not isinstance(value.get("@type"), str):
            problems.add(path, 'expected an object with an "@type" string')
        return value
    return check_message(value, message, problems, path)


def _check_string_type(value: JSON, name: str, problems: Problems, path: str) -> JSON:
    if not isinstance(value, str):
        problems.add(path, f"expected a string ({name}), got {kind_of(value)}")
        return value
    if name == "google.protobuf.FieldMask":
        return _check_field_mask(value, problems, path)
    target = timestamp_pb2.Timestamp() if name.endswith("Timestamp") else duration_pb2.Duration()
    try:
        target.FromJsonString(value)
    except ValueError:
        example = "2024-05-01T12:00:00Z" if name.endswith("Timestamp") else "1.5s"
        problems.add(path, f"{value[:64]!r} is not a {name.rsplit('.', 1)[1]} (e.g. {example!r})")
    return value


def _check_field_mask(value: str, problems: Problems, path: str) -> str:
    """A comma-separated list of paths in proto or camelCase names, as camelCase."""
    paths = [p.strip() for p in value.split(",") if p.strip()]
    mask = field_mask_pb2.FieldMask(paths=[_snake(p) for p in paths])
    for p in mask.paths:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*", p):
            problems.add(path, f"{p!r} is not a field path")
            return value
    try:
        text: str = mask.ToJsonString()
    except ValueError as exc:
        problems.add(path, str(exc))
        return value
    return text


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _check_string(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {kind_of(value)}")
    return value


def _check_bytes(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    if not isinstance(value, str):
        problems.add(path, f"expected a base64 string, got {kind_of(value)}")
        return value
    text = value.replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        problems.add(path, "is not valid base64")
    return value


def _check_bool(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    if not isinstance(value, bool):
        shown = f" {value[:32]!r}" if isinstance(value, str) else ""
        problems.add(path, f"expected true or false, got {kind_of(value)}{shown}")
    return value


def _check_int(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    low, high = INT_RANGES[field.type]
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and _INT_TEXT.fullmatch(value.strip())
    ):
        number = int(value)
    if number is None:
        problems.add(
            path,
            f"expected an integer (a number or a decimal string), got "
            f"{kind_of(value)}{' ' + repr(value[:32]) if isinstance(value, str) else ''}",
        )
        return value
    if not low <= number <= high:
        problems.add(path, f"{number} is out of range [{low}, {high}]")
    return (
        number
        if field.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32)
        else str(number)
    )


def _check_float(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    number: float | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        if value in _SPECIAL_FLOATS:
            return value
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None:
        problems.add(path, f"expected a number, got {kind_of(value)}")
        return value
    if not math.isfinite(number) or (
        field.type == FieldDescriptor.TYPE_FLOAT and abs(number) > FLOAT_MAX
    ):
        problems.add(path, f"{value} is out of range for a {_type_name(field)}")
    return number


def _check_enum(value: JSON, field: FieldDescriptor, problems: Problems, path: str) -> JSON:
    enum = field.enum_type
    if enum is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    if isinstance(value, str) and value in enum.values_by_name:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in enum.values_by_number:
        return value
    names = ", ".join(v.name for v in enum.values)
    shown = repr(value[:64]) if isinstance(value, str) else kind_of(value)
    problems.add(path, f"{shown} is not a value of {enum.full_name}: one of {names}")
    return value


def _type_name(field: FieldDescriptor) -> str:
    return "float" if field.type == FieldDescriptor.TYPE_FLOAT else "double"


_Checker = Callable[[JSON, FieldDescriptor, Problems, str], JSON]
_SCALAR_CHECKS: dict[int, _Checker] = {
    FieldDescriptor.TYPE_STRING: _check_string,
    FieldDescriptor.TYPE_BYTES: _check_bytes,
    FieldDescriptor.TYPE_BOOL: _check_bool,
    FieldDescriptor.TYPE_DOUBLE: _check_float,
    FieldDescriptor.TYPE_FLOAT: _check_float,
    FieldDescriptor.TYPE_ENUM: _check_enum,
    **{t: _check_int for t in INT_RANGES},
}
