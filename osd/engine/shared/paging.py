"""Pagination: page sizes, opaque page tokens, filtered keyset pages."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from osd.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

R = TypeVar("R")


def page_size(value: int, field: str = "page_size") -> int:
    """The page size to use: 0 means the default; negative or too large is refused."""
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative")
    if value > MAX_PAGE_SIZE:
        raise InvalidArgument.field(field, f"is {value}; at most {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def encode_token(kind: str, after: Mapping[str, Any]) -> str:
    """An opaque token for the page after the key ``after`` of a ``kind`` list."""
    raw = json.dumps({"k": kind, "a": dict(after)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, kind: str, field: str = "page_token") -> dict[str, Any] | None:
    """The key a page token continues after; None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidArgument.field(field, "is not a page token this server issued") from None
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("a"), dict):
        raise InvalidArgument.field(field, f"is not a page token of a {kind} list")
    after: dict[str, Any] = data["a"]
    return after


def decode_str_key(token: str, kind: str, key: str, field: str = "page_token") -> str | None:
    """A token whose key is one string, such as the last name of the page."""
    after = decode_token(token, kind, field)
    if after is None:
        return None
    value = after.get(key)
    if not isinstance(value, str):
        raise InvalidArgument.field(field, f"is not a page token of a {kind} list")
    return value


def take_page(
    rows: Iterable[R],
    size: int,
    keep: Callable[[R], bool],
    key: Callable[[R], Mapping[str, Any]],
    kind: str,
) -> tuple[list[R], str]:
    """Up to ``size`` rows that ``keep`` accepts, in scan order, and the next token.

    ``rows`` is a lazy keyset scan; the token is issued only when another
    accepted row follows the page, so the last page has an empty token.
    """
    out: list[R] = []
    it = iter(rows)
    for row in it:
        if not keep(row):
            continue
        if len(out) == size:
            return out, encode_token(kind, key(out[-1]))
        out.append(row)
    return out, ""


def decode_pair(token: str, kind: str, first: str, second: str) -> tuple[str, str] | None:
    """The key of a page token made of two strings (e.g. cluster id and name)."""
    after = decode_token(token, kind)
    if after is None:
        return None
    a, b = after.get(first), after.get(second)
    if not isinstance(a, str) or not isinstance(b, str):
        article = "an" if kind[:1] in "aeiou" else "a"
        raise InvalidArgument.field("page_token", f"is not a page token of {article} {kind} list")
    return a, b
