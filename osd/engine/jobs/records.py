"""Job specs and checkpoints as records: dataclasses stored as JSON.

A job keeps its spec and its checkpoint in JSON columns; each kind declares
them as dataclasses (see :mod:`osd.engine.jobs.handler`), subclasses of
:class:`Record`. A record's fields are ``str``, ``int``, ``float``, ``bool``,
an enum, another dataclass, or ``X | None``, ``list[X]``, ``tuple[X, ...]``,
a fixed ``tuple[X, Y]`` or ``dict[str, X]`` of those: plain data, never a
store row, which a job re-reads by id when it runs.

:meth:`Record.to_json` gives the JSON form: an object of the fields by name,
an ``IntEnum`` as its number, another enum as its name, a tuple as a list.
:meth:`Record.from_json` checks every value against its field's type and
raises :class:`RecordError`, naming the field (``work[2].nbytes``), when one
does not fit. A field with a default may be missing (a record written
before the field existed reads as the default); keys no field names are
ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any, Self, TypeVar, cast

T = TypeVar("T")


class RecordError(ValueError):
    """A stored value does not fit its record: ``field`` names it (a path such as
    ``work[2].nbytes``; empty for the record itself)."""

    def __init__(self, record: str, field: str, problem: str) -> None:
        where = f"{record}.{field}" if field else record
        super().__init__(f"{where}: {problem}")
        self.record = record
        self.field = field
        self.problem = problem


class Record:
    """A dataclass that is stored as JSON (see the module docstring)."""

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, data: object) -> Self:
        return from_json(cls, data)


def to_json(record: object) -> dict[str, Any]:
    """The JSON form of the dataclass ``record``."""
    if not _is_instance(record):
        raise TypeError(f"{type(record).__name__} is not a dataclass")
    _fields(type(record))  # the type must be one a record can hold
    out = _dump(record, type(record).__name__)
    assert isinstance(out, dict)
    return out


def from_json(cls: type[T], data: object) -> T:
    """The ``cls`` dataclass that ``data`` (its JSON form) holds; RecordError when a
    value does not fit its field."""
    return cast(T, _Loader(cls.__name__).record(cls, data, ""))


# -- the field types ----------------------------------------------------------------

_SCALARS = (str, int, float, bool)


def _is_instance(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


_Fields = tuple[tuple[str, Any, bool], ...]
_FIELDS: dict[type[Any], _Fields] = {}


def _fields(cls: type[Any]) -> _Fields:
    """(name, type, required) of each field of the dataclass ``cls``; TypeError when
    a field has a type a record cannot hold."""
    known = _FIELDS.get(cls)
    if known is not None:
        return known
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        _check_type(hint, f"{cls.__name__}.{f.name}")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, hint, required))
    _FIELDS[cls] = tuple(out)
    return _FIELDS[cls]


def _check_type(hint: Any, where: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SCALARS:
        return
    if isinstance(hint, type) and issubclass(hint, Enum):
        return
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        _fields(hint)
        return
    if _is_optional(origin, args):
        _check_type(_inner(args), where)
        return
    if origin is list and len(args) == 1:
        _check_type(args[0], where)
        return
    if origin is tuple and args:
        for arg in args[:1] if _variadic(args) else args:
            _check_type(arg, where)
        return
    if origin is dict and len(args) == 2 and args[0] is str:
        _check_type(args[1], where)
        return
    raise TypeError(f"{where}: a record cannot hold a {hint!r}")


def _is_optional(origin: Any, args: tuple[Any, ...]) -> bool:
    union = origin is typing.Union or origin is types.UnionType
    return union and len(args) == 2 and type(None) in args


def _inner(args: tuple[Any, ...]) -> Any:
    return next(a for a in args if a is not type(None))


def _variadic(args: tuple[Any, ...]) -> bool:
    return len(args) == 2 and args[1] is Ellipsis


# -- to JSON ------------------------------------------------------------------------


def _dump(value: object, where: str) -> Any:
    if isinstance(value, Enum):
        return int(value) if isinstance(value, int) else value.name
    if value is None or isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        return int(value)
    if _is_instance(value):
        return {
            name: _dump(getattr(value, name), f"{where}.{name}")
            for name, _hint, _required in _fields(type(value))
        }
    if isinstance(value, list | tuple):
        return [_dump(x, f"{where}[{i}]") for i, x in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _dump(x, f"{where}[{k!r}]") for k, x in value.items()}
    raise TypeError(f"{where}: a record cannot hold a {type(value).__name__}")


# -- from JSON ----------------------------------------------------------------------


_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


class _Loader:
    def __init__(self, record: str) -> None:
        self._record = record

    def fail(self, field: str, problem: str) -> RecordError:
        return RecordError(self._record, field, problem)

    def record(self, cls: type[Any], data: object, path: str) -> object:
        if not isinstance(data, Mapping):
            raise self.fail(path, f"is {_shown(data)}, not an object")
        values: dict[str, Any] = {}
        for name, hint, required in _fields(cls):
            field = f"{path}.{name}" if path else name
            if name in data:
                values[name] = self.value(data[name], hint, field)
            elif required:
                raise self.fail(field, "is missing")
        return cls(**values)

    def value(self, data: object, hint: Any, path: str) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if _is_optional(origin, args):
            return None if data is None else self.value(data, _inner(args), path)
        if isinstance(hint, type) and issubclass(hint, Enum):
            return self.enum(data, hint, path)
        if hint in _SCALARS:
            return self.scalar(data, hint, path)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.record(hint, data, path)
        if not isinstance(data, list | tuple | Mapping):
            raise self.fail(path, f"is {_shown(data)}, not {_container(origin)}")
        if origin is dict:
            if not isinstance(data, Mapping):
                raise self.fail(path, f"is {_shown(data)}, not an object")
            out: dict[str, Any] = {}
            for key, item in data.items():
                if not isinstance(key, str):
                    raise self.fail(path, f"has the key {key!r}, not a string")
                out[key] = self.value(item, args[1], f"{path}[{key!r}]")
            return out
        if isinstance(data, Mapping):
            raise self.fail(path, "is an object, not a list")
        if origin is list:
            return [self.value(x, args[0], f"{path}[{i}]") for i, x in enumerate(data)]
        if _variadic(args):
            return tuple(self.value(x, args[0], f"{path}[{i}]") for i, x in enumerate(data))
        if len(data) != len(args):
            raise self.fail(path, f"has {len(data)} items, not {len(args)}")
        pairs = enumerate(zip(data, args, strict=True))
        return tuple(self.value(x, a, f"{path}[{i}]") for i, (x, a) in pairs)

    def scalar(self, data: object, hint: type[Any], path: str) -> object:
        ok = isinstance(data, hint) and (hint is bool or not isinstance(data, bool))
        if hint is float and isinstance(data, int) and not isinstance(data, bool):
            return float(data)
        if not ok:
            raise self.fail(path, f"is {_shown(data)}, not {_KINDS[hint]}")
        return hint(data)

    def enum(self, data: object, hint: type[Enum], path: str) -> Enum:
        if issubclass(hint, int):
            if isinstance(data, int) and not isinstance(data, bool):
                if data in hint._value2member_map_:
                    return hint(data)
                raise self.fail(path, f"is {data}, which is no {hint.__name__}")
            raise self.fail(path, f"is {_shown(data)}, not a {hint.__name__} number")
        if isinstance(data, str):
            if data in hint.__members__:
                return hint[data]
            raise self.fail(path, f"is {data!r}, which is no {hint.__name__}")
        raise self.fail(path, f"is {_shown(data)}, not a {hint.__name__} name")


def _container(origin: Any) -> str:
    return "an object" if origin is dict else "a list"


def _shown(data: object) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool | int | float):
        return repr(data)
    if isinstance(data, str):
        text = data if len(data) <= 40 else data[:40] + "..."
        return repr(text)
    if isinstance(data, Mapping):
        return "an object"
    if isinstance(data, list | tuple):
        return "a list"
    return f"a {type(data).__name__}"
