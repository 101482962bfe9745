"""Paging: page sizes, signed page tokens and keyset pages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from osd.engine.shared.paging import (
    DEFAULT_PAGE_SIZE,
    MAC_BYTES,
    MAX_PAGE_SIZE,
    TOKEN_TTL_SECONDS,
    Pager,
    filters_digest,
    page_size,
    pager,
)
from osd.errors import FieldViolation, InvalidArgument

KEY = bytes(range(32))
NOW = 1_800_000_000.0


def only_violation(exc: pytest.ExceptionInfo[InvalidArgument]) -> FieldViolation:
    assert len(exc.value.violations) == 1, exc.value.violations
    return exc.value.violations[0]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed(body: Any, key: bytes = KEY) -> str:
    """A token built by hand with a key: what a forger with the key could make."""
    data = json.dumps(body).encode()
    return f"{b64(data)}.{b64(hmac.new(key, data, hashlib.sha256).digest()[:MAC_BYTES])}"


def body_of(token: str) -> Any:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


@dataclass(frozen=True)
class Query:
    page_size: int = 0
    page_token: str = ""
    name_regex: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    states: tuple[int, ...] = ()


def volumes(query: Query | None = None, now: float = NOW, key: bytes = KEY) -> Pager:
    return Pager(key, "volume", filters_digest(query or Query()), now=lambda: now)


def refused(pages: Pager, token: str, field: str = "page_token") -> str:
    """The description of the one violation a token gets."""
    with pytest.raises(InvalidArgument) as exc:
        pages.after(token, field)
    violation = only_violation(exc)
    assert violation.field == field
    assert exc.value.code.name == "INVALID_ARGUMENT"
    return violation.description


# -- page size -----------------------------------------------------------------


def test_limits() -> None:
    assert DEFAULT_PAGE_SIZE == 100
    assert MAX_PAGE_SIZE == 1000


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 100), (1, 1), (2, 2), (99, 99), (100, 100), (999, 999), (1000, 1000)],
)
def test_page_size(value: int, expected: int) -> None:
    assert page_size(value) == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (-1, "must not be negative"),
        (-1000, "must not be negative"),
        (1001, "is 1001; at most 1000"),
        (1 << 31, "at most 1000"),
    ],
)
def test_page_size_out_of_range(value: int, words: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        page_size(value)
    violation = only_violation(exc)
    assert violation.field == "page_size"
    assert words in violation.description


def test_page_size_names_the_field_it_is_given() -> None:
    with pytest.raises(InvalidArgument) as exc:
        page_size(-5, "list.page_size")
    assert only_violation(exc).field == "list.page_size"


# -- tokens --------------------------------------------------------------------


KEYS: list[dict[str, Any]] = [
    {},
    {"name": "vol-1"},
    {"name": ""},
    {"cluster_id": "0" * 32, "name": "a.b:c-d_e"},
    {"name": "ünïcödé ✓"},
    {"name": 'with "quotes" and \\ and /+=.'},
    {"n": 42, "flag": True, "none": None, "list": [1, "x"], "nested": {"a": 1}},
    {"name": "x" * 2000},
]


@pytest.mark.parametrize("after", KEYS)
def test_round_trip(after: dict[str, Any]) -> None:
    token = volumes().token(after)
    assert volumes().after(token) == after


def test_token_is_url_safe_and_unpadded() -> None:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    for length in range(0, 60):
        after = {"name": "v" * length + "\u00ff?>"}
        token = volumes().token(after)
        assert "=" not in token and set(token) <= alphabet, token
        assert volumes().after(token) == after


def test_empty_token_is_the_first_page() -> None:
    assert volumes().after("") is None
    assert volumes().after_str("", "name") is None
    assert volumes().after_pair("", "cluster_id", "name") is None


def test_a_token_signed_with_another_key_is_refused() -> None:
    token = volumes(key=b"k" * 32).token({"name": "a"})
    assert refused(volumes(), token) == "is not a page token this server issued"


def test_any_edit_of_the_body_is_refused() -> None:
    token = volumes().token({"cluster_id": "c1", "name": "v9"})
    body = body_of(token)
    body["a"]["name"] = "v1"
    edited = f"{b64(json.dumps(body).encode())}.{token.split('.')[1]}"
    assert refused(volumes(), edited) == "is not a page token this server issued"


def test_every_single_character_change_is_refused() -> None:
    token = volumes().token({"name": "v9"})
    for i, char in enumerate(token):
        for other in {"A", "0", "_"} - {char}:
            with pytest.raises(InvalidArgument):
                volumes().after(token[:i] + other + token[i + 1 :])


def test_every_truncation_of_a_token_is_refused() -> None:
    token = volumes().token({"cluster_id": "c" * 32, "name": "volume-0042"})
    for end in range(1, len(token)):
        with pytest.raises(InvalidArgument):
            volumes().after(token[:end])


GARBAGE = [
    "x",
    "!!!!",
    "$$$",
    "é",
    "a.b",
    ".",
    "bm90IGpzb24",  # base64 of "not json", unsigned
    b64(b'{"k":"volume","a":{"name":"a"}}'),  # the old unsigned form
    "eyJrIjoidm9sdW1lIn0\x00.AAAA",  # a NUL byte
    "x" * 5000 + "." + "y" * 22,
]


@pytest.mark.parametrize("token", GARBAGE)
def test_garbage_is_not_a_token_this_server_issued(token: str) -> None:
    assert refused(volumes(), token) == "is not a page token this server issued"


def test_a_token_of_another_list_is_refused_naming_both() -> None:
    nodes = Pager(KEY, "node", filters_digest(Query()), now=lambda: NOW)
    token = nodes.token({"name": "n1"})
    assert refused(volumes(), token) == "is the page token of a node list, not of a volume list"
    attachments = Pager(KEY, "attachment", filters_digest(Query()), now=lambda: NOW)
    assert "an attachment list" in refused(volumes(), attachments.token({}))


@pytest.mark.parametrize(
    "changed",
    [
        Query(name_regex="^db"),
        Query(labels={"tier": "gold"}),
        Query(states=(1,)),
        Query(states=(1, 2)),
    ],
)
def test_a_token_of_other_filters_is_refused(changed: Query) -> None:
    token = volumes(Query(states=(2,))).token({"name": "a"})
    assert "other filters" in refused(volumes(changed), token)


def test_the_page_size_and_token_are_not_filters() -> None:
    token = volumes(Query(page_size=5, labels={"a": "b"})).token({"name": "a"})
    later = Query(page_size=50, page_token=token, labels={"a": "b"})
    assert volumes(later).after(token) == {"name": "a"}


def test_a_token_past_its_time_is_refused_and_one_just_inside_is_not() -> None:
    token = volumes(now=NOW).token({"name": "a"})
    assert volumes(now=NOW + TOKEN_TTL_SECONDS).after(token) == {"name": "a"}
    assert "expired" in refused(volumes(now=NOW + TOKEN_TTL_SECONDS + 1), token)


@pytest.mark.parametrize(
    "body",
    [
        None,
        42,
        "volume",
        ["volume", {"name": "a"}],
        {"k": "volume", "f": filters_digest(Query()), "t": int(NOW)},  # no key
        {"k": "volume", "f": filters_digest(Query()), "t": int(NOW), "a": ["a"]},
        {"k": "volume", "f": filters_digest(Query()), "t": "now", "a": {}},
        {"k": "volume", "f": filters_digest(Query()), "a": {}},  # no time
    ],
)
def test_a_signed_body_of_the_wrong_shape_is_refused(body: Any) -> None:
    with pytest.raises(InvalidArgument) as exc:
        volumes().after(signed(body))
    assert only_violation(exc).field == "page_token"


def test_token_errors_name_the_field_they_are_given() -> None:
    assert refused(volumes(), "!!!!", "request.page_token")
    with pytest.raises(InvalidArgument) as exc:
        volumes().after_str(volumes().token({"id": "x"}), "name", "cursor")
    assert only_violation(exc).field == "cursor"


def test_the_store_key_decides_the_pager() -> None:
    query = Query(name_regex="a")
    assert pager(KEY, "volume", query).filters == filters_digest(query)
    with pytest.raises(TypeError):
        filters_digest({"name_regex": "a"})


# -- one-string and two-string keys --------------------------------------------


def test_after_str() -> None:
    assert volumes().after_str(volumes().token({"name": "fast"}), "name") == "fast"
    assert volumes().after_str(volumes().token({"name": ""}), "name") == ""


@pytest.mark.parametrize(
    "after", [{}, {"id": "fast"}, {"name": 7}, {"name": None}, {"name": ["fast"]}]
)
def test_after_str_refuses_a_missing_or_non_string_key(after: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as exc:
        volumes().after_str(volumes().token(after), "name")
    assert only_violation(exc).description == "is not a page token this server issued"


def test_after_pair() -> None:
    token = volumes().token({"cluster_id": "c1", "name": "v9"})
    assert volumes().after_pair(token, "cluster_id", "name") == ("c1", "v9")
    # The order comes from the arguments, not from the token.
    assert volumes().after_pair(token, "name", "cluster_id") == ("v9", "c1")


@pytest.mark.parametrize(
    "after",
    [
        {},
        {"cluster_id": "c1"},
        {"name": "v9"},
        {"cluster_id": 1, "name": "v9"},
        {"cluster_id": "c1", "name": None},
        {"cluster_id": ["c1"], "name": "v9"},
    ],
)
def test_after_pair_refuses_a_half_or_non_string_key(after: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as exc:
        volumes().after_pair(volumes().token(after), "cluster_id", "name")
    assert only_violation(exc).field == "page_token"


# -- pages ---------------------------------------------------------------------


def key_of(row: int) -> dict[str, Any]:
    return {"n": row}


def keep_all(row: int) -> bool:
    return True


def test_take_without_a_filter() -> None:
    rows, token = volumes().take(range(10), 3, keep_all, key_of)
    assert rows == [0, 1, 2]
    assert volumes().after(token) == {"n": 2}


def test_last_page_has_no_token() -> None:
    assert volumes().take(range(3), 3, keep_all, key_of) == ([0, 1, 2], "")
    assert volumes().take(range(2), 3, keep_all, key_of) == ([0, 1], "")
    assert volumes().take([], 3, keep_all, key_of) == ([], "")


def test_token_only_when_an_accepted_row_follows() -> None:
    """Rows after the page that the filter refuses do not make another page."""

    def even(row: int) -> bool:
        return row % 2 == 0

    assert volumes().take([0, 1, 2, 3, 4, 5, 7, 9], 3, even, key_of) == ([0, 2, 4], "")
    rows, token = volumes().take([0, 1, 2, 3, 4, 5, 7, 8], 3, even, key_of)
    assert rows == [0, 2, 4]
    assert volumes().after(token) == {"n": 4}


def test_take_stops_reading_after_the_next_accepted_row() -> None:
    seen: list[int] = []

    def scan() -> Any:
        for row in range(1000):
            seen.append(row)
            yield row

    rows, token = volumes().take(scan(), 5, keep_all, key_of)
    assert rows == [0, 1, 2, 3, 4]
    assert token
    assert seen == [0, 1, 2, 3, 4, 5]


def test_walking_every_page_visits_each_accepted_row_once() -> None:
    data = list(range(1, 250))

    def keep(row: int) -> bool:
        return row % 3 != 0

    expected = [row for row in data if row % 3 != 0]
    for size in (1, 2, 7, 10, 100, 165, 166, 167, 1000):
        out: list[int] = []
        token = ""
        pages = 0
        while True:
            after = volumes().after(token)
            start = 0 if after is None else after["n"]
            rows, token = volumes().take((r for r in data if r > start), size, keep, key_of)
            pages += 1
            assert len(rows) <= size
            out += rows
            if not token:
                break
            assert len(rows) == size
        assert out == expected, size
        assert pages == max(1, -(-len(expected) // size)), size
