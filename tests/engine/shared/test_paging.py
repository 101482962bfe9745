"""Paging: page sizes, opaque page tokens and keyset pages."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from osd.engine.shared.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_pair,
    decode_str_key,
    decode_token,
    encode_token,
    page_size,
    take_page,
)
from osd.errors import FieldViolation, InvalidArgument


def only_violation(exc: pytest.ExceptionInfo[InvalidArgument]) -> FieldViolation:
    assert len(exc.value.violations) == 1, exc.value.violations
    return exc.value.violations[0]


def raw_token(payload: bytes) -> str:
    """A token built by hand, the way a client could forge one."""
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def payload(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


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
    {"name": 'with "quotes" and \\ and /+='},
    {"n": 42, "flag": True, "none": None, "list": [1, "x"], "nested": {"a": 1}},
    {"name": "x" * 5000},
]


@pytest.mark.parametrize("after", KEYS)
def test_round_trip(after: dict[str, Any]) -> None:
    token = encode_token("volume", after)
    assert token
    assert decode_token(token, "volume") == after


def test_token_is_url_safe_and_unpadded() -> None:
    for length in range(0, 60):
        token = encode_token("volume", {"name": "v" * length + "\u00ff?>"})
        assert "=" not in token
        assert set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        ), token
        assert decode_token(token, "volume") == {"name": "v" * length + "\u00ff?>"}


def test_token_does_not_keep_a_reference_to_the_key() -> None:
    after = {"name": "a"}
    token = encode_token("volume", after)
    after["name"] = "b"
    assert decode_token(token, "volume") == {"name": "a"}


def test_token_depends_on_the_key_and_the_kind() -> None:
    tokens = {
        encode_token("volume", {"name": "a"}),
        encode_token("volume", {"name": "b"}),
        encode_token("node", {"name": "a"}),
    }
    assert len(tokens) == 3


def test_empty_token_is_the_first_page() -> None:
    assert decode_token("", "volume") is None
    assert decode_str_key("", "volume", "name") is None
    assert decode_pair("", "volume", "cluster_id", "name") is None


def test_token_of_another_list_is_refused() -> None:
    token = encode_token("node", {"name": "n1"})
    with pytest.raises(InvalidArgument) as exc:
        decode_token(token, "volume")
    violation = only_violation(exc)
    assert violation.field == "page_token"
    assert violation.description == "is not a page token of a volume list"
    assert exc.value.code.name == "INVALID_ARGUMENT"


GARBAGE = [
    "x",  # one base64 character is never a whole byte
    "!!!!",  # no base64 at all
    "$$$",
    "é",  # not ASCII
    "bm90IGpzb24",  # base64 of "not json"
    raw_token(b"\xff\xfe\xfd"),  # not UTF-8
    raw_token(b" "),  # blank JSON
]


@pytest.mark.parametrize("token", GARBAGE)
def test_garbage_is_not_a_token_this_server_issued(token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        decode_token(token, "volume")
    violation = only_violation(exc)
    assert violation.field == "page_token"
    assert violation.description == "is not a page token this server issued"


@pytest.mark.parametrize(
    "data",
    [
        b"null",
        b"42",
        b'"volume"',
        b'["volume", {"name": "a"}]',
        b'{"a": {"name": "a"}}',  # no kind
        b'{"k": "volume"}',  # no key
        b'{"k": "volume", "a": null}',
        b'{"k": "volume", "a": ["a"]}',
        b'{"k": "volume", "a": "a"}',
        b'{"k": "VOLUME", "a": {}}',
        b'{"k": "volumes", "a": {}}',
        b'{"k": 1, "a": {}}',
    ],
)
def test_well_formed_json_of_the_wrong_shape_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as exc:
        decode_token(raw_token(data), "volume")
    violation = only_violation(exc)
    assert violation.field == "page_token"
    assert violation.description == "is not a page token of a volume list"


def test_every_truncation_of_a_token_is_refused() -> None:
    after = {"cluster_id": "c" * 32, "name": "volume-0042"}
    token = encode_token("volume", after)
    for end in range(1, len(token)):
        with pytest.raises(InvalidArgument) as exc:
            decode_token(token[:end], "volume")
        assert only_violation(exc).field == "page_token", token[:end]


def test_a_tampered_kind_is_refused() -> None:
    token = encode_token("snapshot", {"name": "s1"})
    data = payload(token)
    assert data["k"] == "snapshot"
    data["k"] = "volume "
    forged = raw_token(json.dumps(data).encode())
    with pytest.raises(InvalidArgument) as exc:
        decode_token(forged, "volume")
    assert only_violation(exc).description == "is not a page token of a volume list"


def test_token_errors_name_the_field_they_are_given() -> None:
    with pytest.raises(InvalidArgument) as exc:
        decode_token("!!!!", "volume", "request.page_token")
    assert only_violation(exc).field == "request.page_token"
    with pytest.raises(InvalidArgument) as exc:
        decode_token(encode_token("node", {}), "volume", "request.page_token")
    assert only_violation(exc).field == "request.page_token"


# -- one-string and two-string keys --------------------------------------------


def test_decode_str_key() -> None:
    token = encode_token("pool", {"name": "fast"})
    assert decode_str_key(token, "pool", "name") == "fast"
    assert decode_str_key(encode_token("pool", {"name": ""}), "pool", "name") == ""


@pytest.mark.parametrize(
    "after", [{}, {"id": "fast"}, {"name": 7}, {"name": None}, {"name": ["fast"]}]
)
def test_decode_str_key_refuses_a_missing_or_non_string_key(after: dict[str, Any]) -> None:
    token = encode_token("pool", after)
    with pytest.raises(InvalidArgument) as exc:
        decode_str_key(token, "pool", "name", "cursor")
    violation = only_violation(exc)
    assert violation.field == "cursor"
    assert violation.description == "is not a page token of a pool list"


def test_decode_str_key_refuses_another_list() -> None:
    with pytest.raises(InvalidArgument):
        decode_str_key(encode_token("node", {"name": "a"}), "pool", "name")


def test_decode_pair() -> None:
    token = encode_token("volume", {"cluster_id": "c1", "name": "v9"})
    assert decode_pair(token, "volume", "cluster_id", "name") == ("c1", "v9")
    # The order comes from the arguments, not from the token.
    assert decode_pair(token, "volume", "name", "cluster_id") == ("v9", "c1")


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
def test_decode_pair_refuses_a_half_or_non_string_key(after: dict[str, Any]) -> None:
    token = encode_token("volume", after)
    with pytest.raises(InvalidArgument) as exc:
        decode_pair(token, "volume", "cluster_id", "name")
    violation = only_violation(exc)
    assert violation.field == "page_token"
    assert violation.description == "is not a page token of a volume list"


def test_decode_pair_refuses_garbage_and_other_lists() -> None:
    for token in ("!!!!", encode_token("node", {"cluster_id": "c1", "name": "v9"})):
        with pytest.raises(InvalidArgument) as exc:
            decode_pair(token, "volume", "cluster_id", "name")
        assert only_violation(exc).field == "page_token"


# -- pages ---------------------------------------------------------------------


def key_of(row: int) -> dict[str, Any]:
    return {"n": row}


def keep_all(row: int) -> bool:
    return True


def test_take_page_without_a_filter() -> None:
    rows, token = take_page(range(10), 3, keep_all, key_of, "item")
    assert rows == [0, 1, 2]
    assert decode_token(token, "item") == {"n": 2}


def test_last_page_has_no_token() -> None:
    assert take_page(range(3), 3, keep_all, key_of, "item") == ([0, 1, 2], "")
    assert take_page(range(2), 3, keep_all, key_of, "item") == ([0, 1], "")
    assert take_page([], 3, keep_all, key_of, "item") == ([], "")


def test_token_only_when_an_accepted_row_follows() -> None:
    """Rows after the page that the filter refuses do not make another page."""

    def even(row: int) -> bool:
        return row % 2 == 0

    assert take_page([0, 1, 2, 3, 4, 5, 7, 9], 3, even, key_of, "item") == ([0, 2, 4], "")
    rows, token = take_page([0, 1, 2, 3, 4, 5, 7, 8], 3, even, key_of, "item")
    assert rows == [0, 2, 4]
    assert decode_token(token, "item") == {"n": 4}


def test_take_page_stops_reading_after_the_next_accepted_row() -> None:
    seen: list[int] = []

    def scan() -> Any:
        for row in range(1000):
            seen.append(row)
            yield row

    rows, token = take_page(scan(), 5, keep_all, key_of, "item")
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
            after = decode_token(token, "item")
            start = 0 if after is None else after["n"]
            rows, token = take_page((r for r in data if r > start), size, keep, key_of, "item")
            pages += 1
            assert len(rows) <= size
            out += rows
            if not token:
                break
            assert len(rows) == size
        assert out == expected, size
        assert pages == max(1, -(-len(expected) // size)), size
