"""Input rules shared by every object: names, labels, pagination."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol, TypeVar

import re2  # type: ignore[import-untyped]

from osd.enums import CoordinatorRole, DomainState, DriveState, NodeState
from osd.errors import FieldViolation, InvalidArgument

NAME_MAX = 200
NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
RESERVED_NAMES = frozenset({"list", "status", ".", ".."})
ID_RE = re.compile(r"[0-9a-f]{32}")

LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}")
LABEL_VALUE_MAX = 253
LABELS_MAX = 64

REGEX_MAX = 256


def name_violation(name: str, field: str = "name") -> FieldViolation | None:
    """Why ``name`` breaks the name rule, or None when it is fine."""
    if not name:
        return FieldViolation(field, "is required")
    if len(name) > NAME_MAX:
        return FieldViolation(field, f"is {len(name)} characters long; at most {NAME_MAX}")
    if not NAME_RE.fullmatch(name):
        return FieldViolation(field, "may contain only letters, digits and _ . : -")
    if name in RESERVED_NAMES:
        return FieldViolation(field, f"{name!r} is a reserved word")
    return None


def check_name(name: str, field: str = "name") -> str:
    violation = name_violation(name, field)
    if violation:
        raise InvalidArgument.fields([violation])
    return name


def check_id(value: str, field: str) -> str:
    """An object id: required, 32 lowercase hex characters."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not ID_RE.fullmatch(value):
        raise InvalidArgument.field(field, f"{value[:80]!r} is not an id (32 hex characters)")
    return value


def label_violations(labels: Mapping[str, str], field: str = "labels") -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if len(labels) > LABELS_MAX:
        out.append(FieldViolation(field, f"has {len(labels)} labels; at most {LABELS_MAX}"))
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            out.append(
                FieldViolation(
                    f"{field}[{key[:80]!r}]",
                    "key must be 1 to 63 characters from [A-Za-z0-9_.:/-], "
                    "starting with a letter or digit",
                )
            )
        elif len(value) > LABEL_VALUE_MAX:
            out.append(
                FieldViolation(f"{field}[{key!r}]", f"value is longer than {LABEL_VALUE_MAX}")
            )
        elif not value.isprintable():
            out.append(FieldViolation(f"{field}[{key!r}]", "value has unprintable characters"))
    return out


def check_labels(labels: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    violations = label_violations(labels, field)
    if violations:
        raise InvalidArgument.fields(violations)
    return dict(labels)


class Pattern(Protocol):
    """A compiled user-supplied pattern: ``search`` says whether it matches."""

    def search(self, text: str) -> object: ...


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def compile_regex(pattern: str, field: str) -> Pattern | None:
    """A user-supplied filter regex, or None when empty.

    Patterns are RE2's: matched in time linear in the text, so no pattern can
    hold the daemon (Python's backtracking engine takes seconds on
    ``^(a+)+$`` against a short name). What RE2 cannot compile, such as
    backreferences and lookaround, is INVALID_ARGUMENT.
    """
    if not pattern:
        return None
    if len(pattern) > REGEX_MAX:
        raise InvalidArgument.field(field, f"is longer than {REGEX_MAX} characters")
    try:
        compiled: Pattern = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise InvalidArgument.field(
            field, f"is not a regular expression RE2 accepts: {str(detail)[:200]}"
        ) from None
    return compiled


E = TypeVar("E", NodeState, CoordinatorRole, DomainState, DriveState)


def enum_value(enum: type[E], value: int, field_name: str) -> E:
    """``value`` as a member of ``enum``; UNSPECIFIED (0) or unknown is refused."""
    try:
        return enum(value)
    except ValueError:
        names = ", ".join(m.name for m in enum)
        raise InvalidArgument.field(field_name, f"{value} is not one of {names}") from None


def id_violations(value: str, field_name: str) -> list[FieldViolation]:
    """What is wrong with an id field, as violations (empty when it is fine)."""
    try:
        check_id(value, field_name)
    except InvalidArgument as exc:
        return list(exc.violations)
    return []


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument.fields(violations)
