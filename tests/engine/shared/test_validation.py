"""Input rules shared by every object: names, ids, labels, regexes, enums."""

from __future__ import annotations

import pytest

from osd.engine.shared.validation import (
    check_id,
    check_labels,
    check_name,
    compile_regex,
    enum_value,
    id_violations,
    label_violations,
    name_violation,
    raise_if,
)
from osd.enums import CoordinatorRole, DomainState, DriveState, NodeState
from osd.errors import FieldViolation, InvalidArgument

ID = "0123456789abcdef0123456789abcdef"


def violations_of(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[FieldViolation]:
    return list(exc.value.violations)


# -- names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "A",
        "0",
        "vol-1",
        "vol_1",
        "vol.1",
        "ns:vol",
        "-leading-dash",
        "...",  # three dots is not reserved
        "List",  # reserved words are case-sensitive
        "lists",
        "x" * 200,
    ],
)
def test_valid_names(name: str) -> None:
    assert name_violation(name) is None
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("", "is required"),
        ("x" * 201, "is 201 characters long; at most 200"),
        ("x" * 10_000, "is 10000 characters long; at most 200"),
        ("a b", "may contain only letters, digits and _ . : -"),
        ("a/b", "may contain only letters, digits and _ . : -"),
        ("a\nb", "may contain only letters, digits and _ . : -"),
        ("caf\u00e9", "may contain only letters, digits and _ . : -"),
        ("vol\u0661", "may contain only letters, digits and _ . : -"),  # Arabic-Indic one
        ("a*", "may contain only letters, digits and _ . : -"),
        ("list", "'list' is a reserved word"),
        ("status", "'status' is a reserved word"),
        (".", "'.' is a reserved word"),
        ("..", "'..' is a reserved word"),
    ],
)
def test_invalid_names(name: str, description: str) -> None:
    assert name_violation(name) == FieldViolation("name", description)
    with pytest.raises(InvalidArgument) as exc:
        check_name(name, "volume.name")
    assert violations_of(exc) == [FieldViolation("volume.name", description)]
    assert exc.value.message == f"volume.name: {description}"


def test_name_lengths_around_the_limit() -> None:
    for length in range(1, 205):
        assert (name_violation("n" * length) is None) == (length <= 200), length


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    assert name_violation("vol\n") is not None


# -- ids -----------------------------------------------------------------------


def test_valid_id() -> None:
    assert check_id(ID, "volume_id") == ID
    assert id_violations(ID, "volume_id") == []


@pytest.mark.parametrize(
    ("value", "description"),
    [
        ("", "is required"),
        (ID.upper(), f"{ID.upper()!r} is not an id (32 hex characters)"),
        (ID[:-1], f"{ID[:-1]!r} is not an id (32 hex characters)"),
        (ID + "0", f"{ID + '0'!r} is not an id (32 hex characters)"),
        ("g" * 32, f"{'g' * 32!r} is not an id (32 hex characters)"),
        (
            "01234567-89ab-cdef-0123-456789abcdef",
            "'01234567-89ab-cdef-0123-456789abcdef' is not an id (32 hex characters)",
        ),
        (ID + "\n", f"{ID + chr(10)!r} is not an id (32 hex characters)"),
    ],
)
def test_invalid_ids(value: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_id(value, "volume_id")
    assert violations_of(exc) == [FieldViolation("volume_id", description)]
    assert id_violations(value, "volume_id") == [FieldViolation("volume_id", description)]


def test_a_long_bad_id_is_cut_in_the_message() -> None:
    (violation,) = id_violations("z" * 1000, "node_id")
    assert violation.description == f"{'z' * 80!r} is not an id (32 hex characters)"


# -- labels --------------------------------------------------------------------


def test_valid_labels() -> None:
    labels = {
        "a": "",
        "zone": "eu-1",
        "0": "x",
        "k" * 63: "v" * 253,
        "example.com/role": "db",
        "a:b_c.d-e/f": "any printable text, even spaces & ünïcödé",
    }
    assert label_violations(labels) == []
    assert check_labels(labels) == labels


def test_check_labels_returns_a_copy() -> None:
    labels = {"a": "1"}
    out = check_labels(labels)
    out["b"] = "2"
    assert labels == {"a": "1"}


def test_no_labels_is_fine() -> None:
    assert label_violations({}) == []
    assert check_labels({}) == {}


KEY_RULE = "key must be 1 to 63 characters from [A-Za-z0-9_.:/-], starting with a letter or digit"


@pytest.mark.parametrize(
    "key",
    ["", "-a", "_a", ".a", "/a", ":a", "k" * 64, "a b", "a=b", "caf\u00e9", "a\n"],
)
def test_bad_label_keys(key: str) -> None:
    assert label_violations({key: "v"}) == [FieldViolation(f"labels[{key!r}]", KEY_RULE)]


def test_bad_label_values() -> None:
    assert label_violations({"k": "v" * 254}) == [
        FieldViolation("labels['k']", "value is longer than 253")
    ]
    for value in ("a\nb", "\t", "\x00", "bell\x07", "\u200b"):
        assert label_violations({"k": value}) == [
            FieldViolation("labels['k']", "value has unprintable characters")
        ], value


def test_a_bad_key_is_reported_once_even_with_a_bad_value() -> None:
    assert label_violations({"-k": "\n" * 300}) == [FieldViolation("labels['-k']", KEY_RULE)]


def test_long_bad_key_is_cut_in_the_field() -> None:
    key = "-" + "k" * 200
    (violation,) = label_violations({key: "v"})
    assert violation.field == f"labels[{key[:80]!r}]"


def test_label_count_limit() -> None:
    assert label_violations({f"k{i}": "v" for i in range(64)}) == []
    assert label_violations({f"k{i}": "v" for i in range(65)}) == [
        FieldViolation("labels", "has 65 labels; at most 64")
    ]


def test_every_wrong_label_is_reported_under_the_given_field() -> None:
    labels = {f"k{i}": "v" for i in range(70)}
    labels["-bad"] = "v"
    labels["long"] = "v" * 300
    labels["ok"] = "fine"
    violations = label_violations(labels, "placement.node_selector")
    assert violations == [
        FieldViolation("placement.node_selector", "has 73 labels; at most 64"),
        FieldViolation("placement.node_selector['-bad']", KEY_RULE),
        FieldViolation("placement.node_selector['long']", "value is longer than 253"),
    ]
    with pytest.raises(InvalidArgument) as exc:
        check_labels(labels, "placement.node_selector")
    assert violations_of(exc) == violations


# -- regexes -------------------------------------------------------------------


def test_empty_regex_is_no_filter() -> None:
    assert compile_regex("", "filter") is None


def test_regex_compiles() -> None:
    pattern = compile_regex("^vol-[0-9]+$", "name_regex")
    assert pattern is not None
    assert pattern.search("vol-12")
    assert not pattern.search("vol-x")


def test_regex_length_limit() -> None:
    assert compile_regex("a" * 256, "name_regex") is not None
    with pytest.raises(InvalidArgument) as exc:
        compile_regex("a" * 257, "name_regex")
    assert violations_of(exc) == [FieldViolation("name_regex", "is longer than 256 characters")]


# Syntax errors, and what RE2 refuses to keep matching linear: backreferences
# and lookaround.
@pytest.mark.parametrize(
    "pattern",
    ["(", "[a-", "*", "a{2,1}", r"(a)\1", "a(?=b)", "(?<!a)b"],
)
def test_invalid_regex(pattern: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        compile_regex(pattern, "name_regex")
    (violation,) = violations_of(exc)
    assert violation.field == "name_regex"
    assert violation.description.startswith("is not a regular expression RE2 accepts: ")


def test_a_pattern_that_backtracks_in_python_is_matched_without_backtracking() -> None:
    pattern = compile_regex("^(a+)+$", "name_regex")
    assert pattern is not None
    # Python's re takes many seconds on this text; RE2 answers at once.
    assert not pattern.search("a" * 40 + "!")
    assert pattern.search("a" * 40)


# -- enums ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enum", "value", "member"),
    [
        (NodeState, 1, NodeState.ONLINE),
        (NodeState, 4, NodeState.DRAINING),
        (CoordinatorRole, 2, CoordinatorRole.PRIMARY),
        (DomainState, 2, DomainState.FLUSH),
        (DriveState, 6, DriveState.REPLACING),
        (DriveState, 7, DriveState.OFFLINE),
    ],
)
def test_enum_value(enum: type, value: int, member: object) -> None:
    got = enum_value(enum, value, "state")
    assert got is member


@pytest.mark.parametrize(
    ("enum", "value", "description"),
    [
        (NodeState, 0, "0 is not one of ONLINE, OFFLINE, MAINTENANCE, DRAINING"),
        (NodeState, 5, "5 is not one of ONLINE, OFFLINE, MAINTENANCE, DRAINING"),
        (NodeState, -1, "-1 is not one of ONLINE, OFFLINE, MAINTENANCE, DRAINING"),
        (CoordinatorRole, 0, "0 is not one of NONE, PRIMARY, SECONDARY"),
        (DomainState, 3, "3 is not one of READY, FLUSH"),
        (
            DriveState,
            8,
            "8 is not one of ADDING, ONLINE, SOFT_EJECTING, EJECTED, FAILED, REPLACING, OFFLINE",
        ),
    ],
)
def test_enum_value_refuses_unspecified_and_unknown(
    enum: type, value: int, description: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        enum_value(enum, value, "node.state")
    assert violations_of(exc) == [FieldViolation("node.state", description)]


# -- raise_if ------------------------------------------------------------------


def test_raise_if_nothing_is_wrong() -> None:
    raise_if([])


def test_raise_if_reports_every_violation_in_order() -> None:
    violations = [FieldViolation("name", "is required"), FieldViolation("labels", "bad")]
    with pytest.raises(InvalidArgument) as exc:
        raise_if(violations)
    assert violations_of(exc) == violations
    assert exc.value.message == "name: is required; labels: bad"
    assert exc.value.reason == "INVALID_ARGUMENT"
