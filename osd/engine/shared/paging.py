"""Pagination: page sizes, signed page tokens, filtered keyset pages.

A page token carries the key of the last row of the page, the list it
belongs to, a digest of the call's filters and when it was issued, signed
with HMAC-SHA256 under the store's key (``Store.page_key``). A token that was
edited or forged, that belongs to another list or to other filters, or that
is older than TOKEN_TTL_SECONDS answers INVALID_ARGUMENT naming
``page_token``. The page size may change from page to page. A page of a
filtered list may hold fewer rows than asked, even none, and still a token:
see :meth:`Pager.take`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from osd.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Rows a filtered page may turn down before it ends early (see Pager.take).
SCAN_BUDGET = 1000
# How long a page token stays good: long enough to page through any list.
TOKEN_TTL_SECONDS = 24 * 3600
# Bytes of the HMAC kept in a token.
MAC_BYTES = 16
# The query fields that are not filters: they may change from page to page.
NOT_FILTERS = frozenset({"page_token", "page_size"})

R = TypeVar("R")


def page_size(value: int, field: str = "page_size") -> int:
    """The page size to use: 0 means the default; negative or too large is refused."""
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative")
    if value > MAX_PAGE_SIZE:
        raise InvalidArgument.field(field, f"is {value}; at most {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _article(kind: str) -> str:
    return "an" if kind[:1] in "aeiou" else "a"


def filters_digest(query: object) -> str:
    """A digest of a list call's filters: every field of the query dataclass
    but the page token and the page size."""
    if not dataclasses.is_dataclass(query) or isinstance(query, type):
        raise TypeError(f"{query!r} is not a query dataclass")
    filters = {
        f.name: getattr(query, f.name)
        for f in dataclasses.fields(query)
        if f.name not in NOT_FILTERS
    }
    text = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, tuple):
        return list(value)
    return repr(value)


@dataclass(frozen=True)
class Pager:
    """Issues and checks the page tokens of one list call: of the ``kind``
    list, under the filters whose digest is ``filters``, signed with ``key``."""

    key: bytes
    kind: str
    filters: str
    now: Callable[[], float] = time.time

    def token(self, after: Mapping[str, Any]) -> str:
        """A token for the page after the row whose key is ``after``."""
        body = {"k": self.kind, "f": self.filters, "t": int(self.now()), "a": dict(after)}
        payload = json.dumps(body, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def after(self, token: str, field: str = "page_token") -> dict[str, Any] | None:
        """The key a token continues after; None for the first page."""
        if not token:
            return None
        body = self._verified(token, field)
        kind = body.get("k")
        if kind != self.kind:
            other = f"{_article(str(kind))} {kind}" if isinstance(kind, str) else "another"
            raise InvalidArgument.field(
                field,
                f"is the page token of {other} list, not of {_article(self.kind)} {self.kind} list",
            )
        if body.get("f") != self.filters:
            raise InvalidArgument.field(
                field,
                "was issued for a list with other filters; repeat the first call's "
                "filters, or start again without a page token",
            )
        issued = body.get("t")
        if not isinstance(issued, int) or self.now() - issued > TOKEN_TTL_SECONDS:
            raise InvalidArgument.field(
                field,
                f"has expired (page tokens last {TOKEN_TTL_SECONDS // 3600} hours); "
                "start the list again without one",
            )
        after = body.get("a")
        if not isinstance(after, dict):
            raise self._not_ours(field)
        return after

    def after_str(self, token: str, name: str, field: str = "page_token") -> str | None:
        """The key of a token made of one string, such as the last name of the page."""
        after = self.after(token, field)
        if after is None:
            return None
        value = after.get(name)
        if not isinstance(value, str):
            raise self._not_ours(field)
        return value

    def after_pair(self, token: str, first: str, second: str) -> tuple[str, str] | None:
        """The key of a token made of two strings (e.g. cluster id and name)."""
        after = self.after(token)
        if after is None:
            return None
        a, b = after.get(first), after.get(second)
        if not isinstance(a, str) or not isinstance(b, str):
            raise self._not_ours("page_token")
        return a, b

    def take(
        self,
        rows: Iterable[R],
        size: int,
        keep: Callable[[R], bool],
        key: Callable[[R], Mapping[str, Any]],
    ) -> tuple[list[R], str]:
        """Up to ``size`` rows that ``keep`` accepts, in scan order, and the next token.

        ``rows`` is a lazy keyset scan; the token is issued only when another
        accepted row follows the page, so the last page has an empty token.
        A page ends early, with a token after the last row looked at, once
        SCAN_BUDGET rows were turned down: a filter that matches few rows (or
        none) costs at most that much per call, however large the store, and
        the caller follows the token as for any page.
        """
        out: list[R] = []
        refused = 0
        for row in rows:
            if not keep(row):
                refused += 1
                if refused >= SCAN_BUDGET:
                    return out, self.token(key(row))
                continue
            if len(out) == size:
                return out, self.token(key(out[-1]))
            out.append(row)
        return out, ""

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def _verified(self, token: str, field: str) -> dict[str, Any]:
        """The token's body, if this store signed it."""
        head, dot, tail = token.partition(".")
        if not dot or len(token) > 4096:
            raise self._not_ours(field)
        try:
            payload, mac = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError):
            raise self._not_ours(field) from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise self._not_ours(field)
        try:
            body = json.loads(payload)
        except ValueError:
            raise self._not_ours(field) from None
        if not isinstance(body, dict):
            raise self._not_ours(field)
        return body

    @staticmethod
    def _not_ours(field: str) -> InvalidArgument:
        return InvalidArgument.field(field, "is not a page token this server issued")


def pager(key: bytes, kind: str, query: object) -> Pager:
    """The pager of one call listing ``kind`` with the filters of ``query``."""
    return Pager(key, kind, filters_digest(query))
