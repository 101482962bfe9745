"""Sizes: "20G"-style text and byte counts, their limits, and how they read in messages."""

from __future__ import annotations

import pytest

from osd.engine.shared.sizes import (
    INT64_MAX,
    SizeSpec,
    bytes_violation,
    human,
    parse,
    parse_text,
    spec_violation,
    text_violation,
)
from osd.errors import FieldViolation, InvalidArgument

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB
PIB = 1024 * TIB

# The largest valid size: the last multiple of 512 not above 2**63 - 1.
LARGEST = 9_223_372_036_854_775_296


def only_violation(exc: pytest.ExceptionInfo[InvalidArgument]) -> FieldViolation:
    assert len(exc.value.violations) == 1, exc.value.violations
    return exc.value.violations[0]


# -- text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("1024", 1024),
        ("1K", 1024),
        ("1k", 1024),
        ("4K", 4096),
        ("1M", 1_048_576),
        ("4096M", 4_294_967_296),
        ("20G", 21_474_836_480),
        ("20g", 21_474_836_480),
        ("1T", 1_099_511_627_776),
        ("3t", 3_298_534_883_328),
        ("1P", 1_125_899_906_842_624),
        ("0020G", 21_474_836_480),
        ("8191P", 9_222_246_136_947_933_184),
        ("00000000000000000001K", 1024),  # 20 digits is the longest number
    ],
)
def test_text_sizes_are_powers_of_1024(text: str, expected: int) -> None:
    assert parse_text(text) == expected
    assert text_violation(text) == (expected, None)
    assert parse(SizeSpec(text=text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "G",
        "20GB",
        "20GiB",
        "20 G",
        " 20G",
        "20G ",
        "+20G",
        "-20G",
        "1.5G",
        "1e9",
        "0x200",
        "20E",
        "20B",
        "G20",
        "20GG",
        "123456789012345678901",  # 21 digits
        "\u0662\u0660G",  # Arabic-Indic digits are not ASCII digits
        "20\n",
    ],
)
def test_malformed_text_names_the_size_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_text(text)
    violation = only_violation(exc)
    assert violation.field == "size"
    assert "is not a size" in violation.description
    assert exc.value.reason == "INVALID_ARGUMENT"
    assert exc.value.message.startswith("size: ")


def test_kelvin_sign_is_refused_as_a_size_not_a_crash() -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_text("1\u212a")  # KELVIN SIGN, which folds to "k"
    assert only_violation(exc).field == "size"


def test_text_violation_names_the_field_it_is_given() -> None:
    nbytes, violation = text_violation("nope", "template.size")
    assert nbytes == 0
    assert violation is not None
    assert violation.field == "template.size"
    assert "'nope'" in violation.description


def test_long_bad_text_is_cut_in_the_message() -> None:
    text = "x" * 500
    with pytest.raises(InvalidArgument) as exc:
        parse_text(text)
    description = only_violation(exc).description
    assert repr("x" * 40) in description
    assert "x" * 41 not in description


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0", "must be positive"),
        ("0G", "must be positive"),
        ("000P", "must be positive"),
        ("1", "not a multiple of 512"),
        ("511", "not a multiple of 512"),
        ("513", "not a multiple of 512"),
        ("1000", "not a multiple of 512"),
        ("8192P", "larger than 9223372036854775807"),
        ("99999999999999999999P", "larger than 9223372036854775807"),
        ("9223372036854775807", "not a multiple of 512"),
    ],
)
def test_text_that_is_not_a_valid_size(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_text(text)
    violation = only_violation(exc)
    assert violation.field == "size"
    assert words in violation.description


def test_text_reports_the_bytes_even_when_they_are_invalid() -> None:
    nbytes, violation = text_violation("513")
    assert nbytes == 513
    assert violation is not None and "513 bytes" in violation.description


def test_every_unit_times_many_counts() -> None:
    units = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": TIB, "P": PIB}
    for unit, scale in units.items():
        for count in (1, 2, 3, 7, 512, 1000, 1023, 1024, 4095):
            for spelled in (unit, unit.lower()):
                text = f"{count}{spelled}"
                nbytes, violation = text_violation(text)
                assert nbytes == count * scale, text
                # Without a unit only multiples of 512 are sizes; any unit makes one.
                valid = unit != "" or count % 512 == 0
                assert (violation is None) == valid, text


# -- bytes ---------------------------------------------------------------------


@pytest.mark.parametrize("nbytes", [512, 1024, 4096, 20 * GIB, PIB, LARGEST])
def test_valid_byte_counts(nbytes: int) -> None:
    assert bytes_violation(nbytes) is None
    assert parse(SizeSpec(nbytes=nbytes)) == nbytes


@pytest.mark.parametrize(
    ("nbytes", "words"),
    [
        (0, "is 0; a size must be positive"),
        (-512, "is -512; a size must be positive"),
        (-(1 << 70), "must be positive"),
        (1, "is 1 bytes, not a multiple of 512 (the sector size)"),
        (511, "not a multiple of 512"),
        (513, "not a multiple of 512"),
        (GIB + 1, "not a multiple of 512"),
        (LARGEST + 512, "is larger than 9223372036854775807 bytes"),
        (INT64_MAX, "not a multiple of 512"),
        (1 << 64, "is larger than"),
    ],
)
def test_invalid_byte_counts_name_size_bytes(nbytes: int, words: str) -> None:
    violation = bytes_violation(nbytes)
    assert violation is not None
    assert violation.field == "size_bytes"
    assert words in violation.description
    with pytest.raises(InvalidArgument) as exc:
        parse(SizeSpec(nbytes=nbytes))
    assert only_violation(exc) == violation


def test_int64_max_is_the_documented_limit() -> None:
    assert INT64_MAX == 9_223_372_036_854_775_807
    assert LARGEST % 512 == 0
    assert INT64_MAX - LARGEST == 511


def test_multiples_of_the_sector_around_each_unit() -> None:
    for scale in (KIB, MIB, GIB, TIB, PIB):
        for nbytes in (scale - 512, scale, scale + 512, 3 * scale):
            assert bytes_violation(nbytes) is None, nbytes
        for nbytes in (scale - 1, scale + 1, scale + 256):
            assert bytes_violation(nbytes) is not None, nbytes


# -- specs ---------------------------------------------------------------------


def test_field_of_a_spec_is_where_it_came_from() -> None:
    assert SizeSpec(nbytes=512).field == "size_bytes"
    assert SizeSpec(text="1G").field == "size"
    assert SizeSpec().field == "size_bytes"


def test_unset_spec_is_none() -> None:
    assert parse(None) is None
    assert parse(SizeSpec()) is None
    assert spec_violation(None) == (None, None)
    assert spec_violation(SizeSpec()) == (None, None)


def test_a_spec_with_both_forms_is_refused_on_update_mask() -> None:
    nbytes, violation = spec_violation(SizeSpec(nbytes=GIB, text="1G"))
    assert nbytes is None
    assert violation is not None and violation.field == "update_mask"
    with pytest.raises(InvalidArgument) as exc:
        parse(SizeSpec(nbytes=GIB, text="1G"))
    assert only_violation(exc).field == "update_mask"


def test_bad_spec_names_the_field_of_its_form() -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse(SizeSpec(text="20X"))
    assert only_violation(exc).field == "size"
    with pytest.raises(InvalidArgument) as exc:
        parse(SizeSpec(nbytes=100))
    assert only_violation(exc).field == "size_bytes"
    with pytest.raises(InvalidArgument) as exc:
        parse(SizeSpec(text="100"))
    assert only_violation(exc).field == "size"


def test_empty_text_is_set_and_refused() -> None:
    """An empty string is a given (bad) text, not an unset size."""
    with pytest.raises(InvalidArgument) as exc:
        parse(SizeSpec(text=""))
    assert only_violation(exc).field == "size"


# -- human ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 bytes"),
        (512, "512 bytes"),
        (1023, "1023 bytes"),
        (1024, "1 KiB (1024 bytes)"),
        (1536, "1.50 KiB (1536 bytes)"),
        (4096, "4 KiB (4096 bytes)"),
        (MIB, "1 MiB (1048576 bytes)"),
        (MIB + 512, "1.00 MiB (1049088 bytes)"),
        (20 * GIB, "20 GiB (21474836480 bytes)"),
        (GIB + GIB // 4, "1.25 GiB (1342177280 bytes)"),
        (5 * TIB, "5 TiB (5497558138880 bytes)"),
        (PIB, "1 PiB (1125899906842624 bytes)"),
        (3 * PIB + PIB // 2, "3.50 PiB (3940649673949184 bytes)"),
        (2048 * PIB, "2048 PiB (2305843009213693952 bytes)"),
    ],
)
def test_human(nbytes: int, text: str) -> None:
    assert human(nbytes) == text


def test_human_always_shows_the_exact_bytes() -> None:
    for nbytes in range(1024, 64 * MIB, 777_777):
        assert human(nbytes).endswith(f" ({nbytes} bytes)")


def test_human_round_trips_whole_units_through_parse_text() -> None:
    for unit, scale in (("K", KIB), ("M", MIB), ("G", GIB), ("T", TIB), ("P", PIB)):
        for count in (1, 2, 5, 10, 100, 1000):
            nbytes = parse_text(f"{count}{unit}")
            assert human(nbytes) == f"{count} {unit}iB ({count * scale} bytes)"
