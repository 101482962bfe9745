"""The input rules the OpenAPI document states, from proto comments and the contract's conventions.

The document is meant to be as strict as the daemon: a request that fits it
is well formed, so the daemon refuses it only for what the world says (not
found, in use, a conflict), never as INVALID_ARGUMENT. Two sources give the
rules, and neither is a per-route schema written by hand:

**Proto comments**, in a few fixed phrasings:

* a field comment that begins with "Required" (then ``.``, ``,``, ``:``,
  ``;`` or `` (``; not "Required when ...") marks the field required: a
  string or list must not be empty, a bool must be true, an enum must not
  be ``*_UNSPECIFIED``. "at least one" and "at most N" in it bound a list;
* a oneof comment that begins with "Required" asks for exactly one member;
  every other oneof for at most one, and "required unless `a` or `b` ..."
  for one unless one of those fields is given;
* a numeric field's comment states its range: "2 to 5", "0 or more",
  "at least 1", "greater than 1", "at most 100", "positive", "a multiple
  of 512", with "0 means ..." (or "0:", "0 removes", "0 or unset") when 0
  is also accepted; "at most <field>" bounds it by a sibling's value;
* a sentence "<VALUE> only" (``REPLICATE only: ...``) says the field is
  empty unless the enum field with that value, in the message or in a
  sibling message field (``durability.type`` for ``placement.tail_pool_id``),
  takes it;
* an enum field's comment that begins with the values it takes ("ONLINE or
  OFFLINE.") lists them;
* a message comment with "At least one of `a`, `b` and `c` is required.",
  "At most one of `a`, `b` and `c`." or "`a` requires `b`." (``a`` given,
  ``b`` is not cleared) relates its fields;
* a list's comment with "no duplicates" makes its items unique;
* an update_mask comment lists the paths an update takes ("paths among
  "name", "labels"").

**The contract's conventions**, which common.proto states once for every
service and which the daemon enforces the same way everywhere
(osd/engine/shared/validation.py and its neighbours), keyed by field name:

* ``id``, ``*_id`` and the items of ``*_ids``: 32 lowercase hex characters;
  "" only where it means "none" (a field that is not required);
* ``name``, ``*_name``, ``zone``, ``manager``, ``datastore``: the name rule;
* ``labels`` and ``*_selector`` maps: the label key and value rules;
* ``page_size``: 0 to 1000; ``*_regex``: an RE2 pattern of at most 256
  characters; ``page_token``: opaque, issued by the server;
* ``size``, ``size_add``: a size with a unit; ``device_path``; drive ``description``;
  ``*_addresses``; ``packages``; ``mount_path`` and ``mount_options``.

The constants below repeat the daemon's (the gateway does not import the
daemon); tests/gateway/test_openapi.py checks that they agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor

Schema = dict[str, Any]

INT64_MAX = 2**63 - 1
MAX_PAGE_SIZE = 1000
NAME_MAX = 200
NAME_CHARS = "A-Za-z0-9_.:-"
RESERVED_NAMES = ("list", "status", ".", "..")
ID_PATTERN = "^[0-9a-f]{32}$"
OPTIONAL_ID_PATTERN = "^([0-9a-f]{32})?$"
NAME_PATTERN = f"^[{NAME_CHARS}]{{1,{NAME_MAX}}}$"
OPTIONAL_NAME_PATTERN = f"^[{NAME_CHARS}]{{0,{NAME_MAX}}}$"
LABEL_KEY_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$"
LABEL_VALUE_MAX = 253
LABELS_MAX = 64
REGEX_MAX = 256
PAGE_TOKEN_MAX = 4096
DESCRIPTION_PATTERN = "^[A-Za-z0-9_\\- ]{0,30}$"
# A subject or group name (a volume's owner, an access list entry): 1 to 200
# characters, none of them a control character.
SUBJECT_PATTERN = "^[^\\x00-\\x1f\\x7f]{1,200}$"
OPTIONAL_SUBJECT_PATTERN = "^[^\\x00-\\x1f\\x7f]{0,200}$"
DEVICE_PATH_MAX = 255
_DEVICE_CHARS = "A-Za-z0-9._+:@,=-"
_DEVICE_SEGMENT = (  # a path segment other than "." and ".."
    f"(?:[A-Za-z0-9_+:@,=-][{_DEVICE_CHARS}]*"
    f"|\\.[A-Za-z0-9_+:@,=-][{_DEVICE_CHARS}]*"
    f"|\\.\\.[{_DEVICE_CHARS}]+)"
)
DEVICE_PATH_PATTERN = f"^/dev(?:/{_DEVICE_SEGMENT})+$"
MOUNT_PATH_MAX = 4096
MOUNT_PATH_PATTERN = f"^(?:/{_DEVICE_SEGMENT})+$"
OPTIONAL_MOUNT_PATH_PATTERN = f"^(?:(?:/{_DEVICE_SEGMENT})+)?$"
MOUNT_OPTION_PATTERN = "^[A-Za-z0-9_=.:/-]{1,255}$"
MOUNT_OPTIONS_MAX = 32
PACKAGE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._+:~-]{0,199}$"
PACKAGES_MAX = 100
ADDRESS_MAX = 253
ADDRESSES_MAX = 16
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}

REQUIRED_RE = re.compile(r"^Required(?:[.,:;]| \(|$)")
_MASK_PATHS_RE = re.compile(r"paths among ((?:\"[a-z_.]+\"(?:,\s*|\s+and\s+|\s+or\s+)?)+)")
_AT_LEAST_ONE_OF_RE = re.compile(r"At least one of ((?:`\w+`(?:,\s*|\s+and\s+|\s+or\s+)?)+)")
_AT_MOST_ONE_OF_RE = re.compile(r"At most one of ((?:`\w+`(?:,\s*|\s+and\s+|\s+or\s+)?)+)")
_REQUIRES_RE = re.compile(r"`(\w+)` requires `(\w+)`")
_ONLY_RE = re.compile(r"(?:^|[.;:]\s)([A-Z][A-Z0-9_]*) only\b")
_VALUES_RE = re.compile(r"^([A-Z][A-Z0-9_]*(?:(?:, | or )[A-Z][A-Z0-9_]*)*)\.")


def is_required(comment: str) -> bool:
    """Whether a field or oneof comment marks it required."""
    return bool(REQUIRED_RE.match(comment))


def real_oneofs(message: Descriptor) -> list[OneofDescriptor]:
    """The oneofs of ``message`` that group fields (not proto3 ``optional``'s synthetic ones)."""
    return [
        o for o in message.oneofs if not (len(o.fields) == 1 and o.name == "_" + o.fields[0].name)
    ]


def in_real_oneof(f: FieldDescriptor) -> bool:
    o = f.containing_oneof
    return o is not None and not (len(o.fields) == 1 and o.name == "_" + f.name)


def json_path(path: str) -> str:
    """A field path in the camelCase form FieldMask's JSON string uses."""
    return ".".join(
        head + "".join(p[:1].upper() + p[1:] for p in rest)
        for head, *rest in (part.split("_") for part in path.split("."))
    )


def mask_paths(comment: str) -> list[str]:
    """The paths an update_mask comment lists ("paths among "name", "labels"")."""
    found = _MASK_PATHS_RE.search(" ".join(comment.split()))
    return re.findall(r"\"([a-z_.]+)\"", found.group(1)) if found else []


def required_unless(comment: str) -> list[str]:
    """The fields a oneof comment "required unless `a` or `b` gives one" names."""
    text = " ".join(comment.split())
    found = re.search(r"\brequired unless ((?:`\w+`(?:,\s*|\s+and\s+|\s+or\s+)?)+)", text)
    return re.findall(r"`(\w+)`", found.group(1)) if found else []


def requirements(comment: str, message: Descriptor) -> list[tuple[str, str]]:
    """The "`a` requires `b`" pairs of a message comment: ``a`` given, ``b`` is not cleared."""
    text = " ".join(comment.split())
    return [
        (a, b)
        for a, b in _REQUIRES_RE.findall(text)
        if a in message.fields_by_name and b in message.fields_by_name
    ]


def related_fields(comment: str, message: Descriptor) -> tuple[list[list[str]], list[list[str]]]:
    """The "At least one of" and "At most one of" groups of a message comment."""
    text = " ".join(comment.split())

    def groups(pattern: re.Pattern[str]) -> list[list[str]]:
        out = []
        for found in pattern.finditer(text):
            names = [
                n for n in re.findall(r"`(\w+)`", found.group(1)) if n in message.fields_by_name
            ]
            if len(names) > 1:
                out.append(names)
        return out

    return groups(_AT_LEAST_ONE_OF_RE), groups(_AT_MOST_ONE_OF_RE)


def only_when(comment: str) -> str | None:
    """``X`` when the comment says "X only": the field is empty unless the enum is X."""
    found = _ONLY_RE.search(" ".join(comment.split()))
    return found.group(1) if found else None


def listed_values(comment: str, values: list[str]) -> list[str] | None:
    """The enum values an enum field's comment begins by naming ("ONLINE or OFFLINE.",
    or after "Required: ")."""
    found = _VALUES_RE.match(comment.removeprefix("Required: "))
    if not found:
        return None
    words = re.split(r", | or ", found.group(1))
    chosen = [v for v in values if any(v == w or v.endswith("_" + w) for w in words)]
    return chosen if len(chosen) == len(words) else None


# -- numbers ----------------------------------------------------------------------


@dataclass
class Bounds:
    """A numeric field's range as its comment states it."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    multiple_of: int | None = None
    zero: bool = False  # 0 is accepted besides the range ("0 means ...")
    at_most_field: str | None = None  # at most this sibling's value
    default: int | None = None  # what 0 means, when it names a number

    def __bool__(self) -> bool:
        return any(
            x is not None
            for x in (self.minimum, self.maximum, self.exclusive_minimum, self.multiple_of)
        )

    def admits_zero(self) -> bool:
        if self.zero:
            return True
        if self.exclusive_minimum is not None and self.exclusive_minimum >= 0:
            return False
        if self.minimum is not None and self.minimum > 0:
            return False
        return not (self.maximum is not None and self.maximum < 0)


_NUMBER = r"(\d+(?:\.\d+)?)"


def _num(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() else value


def bounds(comment: str, siblings: set[str] | None = None) -> Bounds:
    """The range a numeric field's comment states."""
    text = " ".join(comment.split())
    out = Bounds()
    if found := re.search(rf"\b{_NUMBER} to {_NUMBER}\b", text):
        out.minimum, out.maximum = _num(found.group(1)), _num(found.group(2))
    if found := re.search(rf"\b{_NUMBER} or more\b", text):
        out.minimum = _num(found.group(1))
    if found := re.search(rf"\bat least {_NUMBER}\b", text):
        out.minimum = _num(found.group(1))
    if found := re.search(rf"\bgreater than {_NUMBER}\b", text, re.I):
        out.exclusive_minimum = _num(found.group(1))
    if re.search(r"\bpositive\b", text, re.I):
        out.exclusive_minimum = 0
    for found in re.finditer(r"\bat most (\w+)", text):
        word = found.group(1)
        if word.isdigit():
            out.maximum = int(word)
        elif siblings and word in siblings:
            out.at_most_field = word
    if found := re.search(r"\bmultiple of (\d+)\b", text):
        out.multiple_of = int(found.group(1))
    if found := re.search(r"(?:^|[;(,.] ?)0 (?:means|removes|or unset)\b|(?:^|[;(] ?)0:", text):
        out.zero = True
        if number := re.search(r"\b0 means (\d+)\b", text):
            out.default = int(number.group(1))
    return out


def _digits_upto(n: int, positive: bool = False) -> str:
    """A regex (no anchors) for the decimal integers 0 (or 1) to ``n``, without leading zeros."""
    text = str(n)
    alternatives = []
    if len(text) > 1:
        alternatives.append(f"[1-9][0-9]{{0,{len(text) - 2}}}" if len(text) > 2 else "[1-9]")
    for i, char in enumerate(text):
        low = 1 if i == 0 else 0
        digit = int(char)
        if digit > low:
            rest = len(text) - i - 1
            span = f"[{low}-{digit - 1}]" if digit - 1 > low else str(low)
            alternatives.append(
                text[:i] + span + (f"[0-9]{{{rest}}}" if rest > 1 else "[0-9]" if rest else "")
            )
    alternatives.append(text)
    if not positive:
        alternatives.insert(0, "0")
    return "(?:" + "|".join(dict.fromkeys(alternatives)) + ")"


def int64_pattern(low: int | None, unsigned: bool = False) -> str:
    """The decimal string form of a 64-bit integer of at least ``low`` (0 or 1), as a pattern."""
    if unsigned:
        return f"^{_digits_upto(2**64 - 1, positive=low == 1)}$"
    if low is None:
        return f"^(?:-{_digits_upto(2**63, positive=True)}|{_digits_upto(INT64_MAX)})$"
    return f"^{_digits_upto(INT64_MAX, positive=low >= 1)}$"


def size_text_pattern(zero: bool) -> str:
    """A size as text with a unit, at most INT64_MAX bytes ("20G", "4096m"); "0" when ``zero``.

    A bare byte count must be a multiple of 512, which a pattern cannot say:
    the pattern admits only "0" of them, and size_bytes carries the rest.
    """
    units = "|".join(
        f"{_digits_upto(INT64_MAX // scale, positive=True)}[{unit}{unit.lower()}]"
        for unit, scale in SIZE_UNITS.items()
    )
    return f"^(?:{'0|' if zero else ''}{units})$"


# -- text -------------------------------------------------------------------------


# Printable text (Python's str.isprintable) is a format: as a pattern it is a
# class of some 700 ranges of code points, which generators take seconds to
# compile per use; NO_CONTROL_PATTERN is the part a short pattern can say.
PRINTABLE_FORMAT = "printable"
NO_CONTROL_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"


_HOST_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_NAMED_LABEL = "[A-Za-z](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"(?:{_OCTET}\\.){{3}}{_OCTET}"
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    "(?:"
    f"(?:{_H16}:){{7}}{_H16}"
    f"|(?:{_H16}:){{1,7}}:"
    f"|(?:{_H16}:){{1,6}}:{_H16}"
    f"|(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}"
    f"|(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}"
    f"|(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}"
    f"|(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}"
    f"|{_H16}:(?::{_H16}){{1,6}}"
    f"|:(?:(?::{_H16}){{1,7}}|:)"
    ")"
)
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
# A host name has a label that is not all digits (those must be an IPv4
# address); this pattern asks for one that starts with a letter.
_HOST = f"(?:{_HOST_LABEL}\\.)*{_NAMED_LABEL}(?:\\.{_HOST_LABEL})*"
ADDRESS_PATTERN = f"^(?:(?:{_HOST}|{_IPV4})(?::{_PORT})?|{_IPV6}|\\[{_IPV6}\\](?::{_PORT})?)$"


@dataclass
class TextRule:
    """What a string field's name says about its values."""

    pattern: str
    optional_pattern: str | None = None  # the pattern when "" means "none"
    extra: Schema = field(default_factory=dict)
    exact: bool = True  # False: the pattern is narrower than the daemon's rule


def text_rule(name: str) -> TextRule | None:
    """The rule of a string field by its name (see the module comment)."""
    if name == "id" or name.endswith("_id"):
        return TextRule(ID_PATTERN, OPTIONAL_ID_PATTERN)
    if name in ("name", "zone", "manager", "datastore") or name.endswith("_name"):
        return TextRule(
            NAME_PATTERN, OPTIONAL_NAME_PATTERN, {"not": {"enum": list(RESERVED_NAMES)}}
        )
    if name == "device_path" or name.endswith("_device_path"):
        return TextRule(DEVICE_PATH_PATTERN, None, {"maxLength": DEVICE_PATH_MAX})
    if name == "mount_path":
        return TextRule(
            MOUNT_PATH_PATTERN, OPTIONAL_MOUNT_PATH_PATTERN, {"maxLength": MOUNT_PATH_MAX}
        )
    if name == "description":
        return TextRule(DESCRIPTION_PATTERN)
    if name in ("owner", "user", "group"):
        return TextRule(SUBJECT_PATTERN, OPTIONAL_SUBJECT_PATTERN)
    if name.endswith("_regex"):
        return TextRule("", None, {"format": "regex", "maxLength": REGEX_MAX})
    if name == "page_token":
        return TextRule("", None, {"maxLength": PAGE_TOKEN_MAX})
    return None


def item_rule(name: str) -> tuple[TextRule, Schema] | None:
    """The rule of a repeated string field's items, and of the list, by its name."""
    if name.endswith("_ids"):
        return TextRule(ID_PATTERN), {}
    if name.endswith("_addresses"):
        return (
            TextRule(ADDRESS_PATTERN, None, {"maxLength": ADDRESS_MAX}, exact=False),
            {"maxItems": ADDRESSES_MAX, "uniqueItems": True},
        )
    if name == "mount_options":
        return TextRule(MOUNT_OPTION_PATTERN), {"maxItems": MOUNT_OPTIONS_MAX}
    if name == "packages":
        return TextRule(PACKAGE_PATTERN), {"maxItems": PACKAGES_MAX, "uniqueItems": True}
    return None


def is_label_map(name: str) -> bool:
    return name == "labels" or name.endswith("_selector")
