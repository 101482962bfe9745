"""Column types that the models share."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, TypeVar

from sqlalchemy import Dialect, Integer, TypeDecorator

E = TypeVar("E", bound=IntEnum)


class IntEnumType(TypeDecorator[E]):
    """An ``osd.enums`` IntEnum kept as its number in an INTEGER column.

    Binds a member of the enum or a plain int that is one of its numbers, and
    loads the member. Any other value, on the way in or out, raises ValueError
    (TypeError for what is not an int at all): a number that names no member
    never reaches the database nor the engine. The column stays INTEGER, so
    the schema does not depend on this type.
    """

    impl = Integer
    cache_ok = True

    def __init__(self, enum: type[E]) -> None:
        super().__init__()
        # The attribute has the parameter's name: the statement cache keys on it.
        self.enum = enum

    @property
    def python_type(self) -> type[E]:
        return self.enum

    def _member(self, value: int, where: str) -> E:
        # A look-up in the enum's own map: calling the enum costs several
        # times as much, on every enum column of every row loaded.
        member = self.enum._value2member_map_.get(value)
        if member is None:
            known = ", ".join(f"{m.name}={m.value}" for m in self.enum)
            raise ValueError(f"{value!r} {where} is not a {self.enum.__name__} (one of {known})")
        return member  # type: ignore[return-value]

    def process_bind_param(self, value: int | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, self.enum):
            return int(value)
        if isinstance(value, IntEnum):
            raise TypeError(f"{value!r} given where a {self.enum.__name__} is expected")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{value!r} given where a {self.enum.__name__} number is expected")
        return int(self._member(value, "given"))

    def process_result_value(self, value: Any | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        return self._member(int(value), "in the database")
