"""Request fields from the query string and from path variables.

Query parameters fill the request fields that neither the path nor the body
sets:

* a scalar field by its name, in proto or camelCase form: ``page_size=10``;
* a field of a nested message by its dotted path: ``target.kind=OBJECT_KIND_NODE``;
* a repeated field by repeating the parameter:
  ``states=JOB_STATE_PENDING&states=JOB_STATE_RUNNING``;
* a map field as ``name[key]=value``: ``labels[env]=prod&labels[tier]=gold``;
* booleans as ``true``/``false`` (or ``1``/``0``), enums by name or number,
  Timestamp, Duration and FieldMask in their JSON string forms.

A parameter that names no field, names a field the path or body sets, or is
given twice for a single field is an error naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.jsonvalue import (
    JSON,
    STRING_TYPES,
    WRAPPERS,
    Problems,
    fields_by_any_name,
    is_map,
    map_value,
    message_of,
)

_PARAM = re.compile(
    r"(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:\[(?P<key>[^\]]*)\])?"
)
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def text_value(text: str, field: FieldDescriptor) -> JSON:
    """The JSON form of a field's value written as text (in a query or a path)."""
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in WRAPPERS:
            return text_value(text, field.message_type.fields_by_name["value"])
        return text  # STRING_TYPES; other messages are refused before this
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return text  # the check names it
    if field.type == FieldDescriptor.TYPE_ENUM and re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


def _takes_text(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is None or message.full_name in WRAPPERS or message.full_name in STRING_TYPES


def query_json(
    params: Iterable[tuple[str, str]],
    message: Descriptor,
    taken: Mapping[str, str],
    problems: Problems,
) -> dict[str, JSON]:
    """The query parameters as a JSON object of ``message`` with proto field names.

    Args:
        params: the parameters in the order given, names and values decoded.
        message: the request type.
        taken: dotted paths of fields the query must not set, with the reason.
        problems: where each bad parameter is recorded.
    """
    out: dict[str, Any] = {}
    for name, value in params:
        found = _PARAM.fullmatch(name)
        if found is None:
            problems.add(name, "is not a parameter name (field, field.sub or field[key])")
            continue
        _put(
            out,
            found.group("path").split("."),
            found.group("key"),
            value,
            message,
            taken,
            problems,
            name,
        )
    return out


def _put(
    out: dict[str, Any],
    steps: list[str],
    key: str | None,
    value: str,
    message: Descriptor,
    taken: Mapping[str, str],
    problems: Problems,
    param: str,
) -> None:
    target = out
    current = message
    resolved: list[str] = []
    for depth, step in enumerate(steps):
        field = fields_by_any_name(current).get(step)
        if field is None:
            problems.add(param, f"unknown field {step!r} of {current.full_name}")
            return
        resolved.append(field.name)
        dotted = ".".join(resolved)
        if dotted in taken:
            problems.add(param, f"{dotted} {taken[dotted]}")
            return
        last = depth == len(steps) - 1
        if not last:
            if field.message_type is None or field.is_repeated or _takes_text(field):
                problems.add(param, f"{field.name} has no fields to name with '.'")
                return
            nested = target.setdefault(field.name, {})
            target, current = nested, message_of(field)
            continue
        _set_leaf(target, field, key, value, problems, param)


def _set_leaf(
    target: dict[str, Any],
    field: FieldDescriptor,
    key: str | None,
    value: str,
    problems: Problems,
    param: str,
) -> None:
    if is_map(field):
        value_field = map_value(field)
        if key is None:
            problems.add(param, f"is a map: give each entry as {field.name}[KEY]=VALUE")
        elif not _takes_text(value_field):
            problems.add(param, "maps of messages cannot be given in the query")
        else:
            entries = target.setdefault(field.name, {})
            if key in entries:
                problems.add(param, "is given more than once")
            entries[key] = text_value(value, value_field)
        return
    if key is not None:
        problems.add(param, f"{field.name} is not a map; '[...]' applies only to maps")
        return
    if not _takes_text(field):
        problems.add(param, f"{field.name} is a message: name its fields, e.g. {field.name}.FIELD")
        return
    if field.is_repeated:
        target.setdefault(field.name, []).append(text_value(value, field))
    elif field.name in target:
        problems.add(param, f"is given more than once, but {field.name} takes one value")
    else:
        target[field.name] = text_value(value, field)
