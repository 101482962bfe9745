"""Sizes: bytes or text with a unit ("20G", "4096M"), positive multiples of 512.

The text form is a decimal integer with an optional unit K, M, G, T or P,
each a power of 1024, case-insensitive. A bad size names the request field
it came from (``size_bytes`` for bytes, ``size`` for text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from osd.engine.shared.allocation_math import SECTOR
from osd.errors import FieldViolation, InvalidArgument

INT64_MAX = (1 << 63) - 1
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
# ASCII: in Unicode mode the Kelvin sign would fold to "k" and match.
_TEXT_RE = re.compile(r"([0-9]{1,20})([KMGTP]?)", re.IGNORECASE | re.ASCII)
_FORMAT_UNITS = (("P", 1 << 50), ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


@dataclass(frozen=True)
class SizeSpec:
    """A size as a request gave it: in bytes, or as text. At most one is set."""

    nbytes: int | None = None
    text: str | None = None

    @property
    def field(self) -> str:
        """The request field the size came from."""
        return "size" if self.text is not None else "size_bytes"


def text_violation(text: str, field: str = "size") -> tuple[int, FieldViolation | None]:
    """The bytes ``text`` stands for, or a violation naming ``field``."""
    match = _TEXT_RE.fullmatch(text)
    if match is None:
        return 0, FieldViolation(
            field,
            f"{text[:40]!r} is not a size: a whole number with an optional unit "
            "K, M, G, T or P (powers of 1024), e.g. 20G",
        )
    nbytes = int(match[1]) * UNITS[match[2].upper()]
    return nbytes, bytes_violation(nbytes, field)


def bytes_violation(nbytes: int, field: str = "size_bytes") -> FieldViolation | None:
    """Why ``nbytes`` is not a valid size, or None."""
    if nbytes <= 0:
        return FieldViolation(field, f"is {nbytes}; a size must be positive")
    if nbytes > INT64_MAX:
        return FieldViolation(field, f"is larger than {INT64_MAX} bytes")
    if nbytes % SECTOR:
        return FieldViolation(
            field, f"is {nbytes} bytes, not a multiple of {SECTOR} (the sector size)"
        )
    return None


def spec_violation(spec: SizeSpec | None) -> tuple[int | None, FieldViolation | None]:
    """The bytes of ``spec`` (None when unset) and what is wrong with it, if anything."""
    if spec is None:
        return None, None
    if spec.nbytes is not None and spec.text is not None:
        return None, FieldViolation("update_mask", "name either size_bytes or size, not both")
    if spec.text is not None:
        return text_violation(spec.text, "size")
    if spec.nbytes is not None:
        return spec.nbytes, bytes_violation(spec.nbytes, "size_bytes")
    return None, None


def parse(spec: SizeSpec | None) -> int | None:
    """The bytes of ``spec``, None when unset; InvalidArgument naming its field."""
    nbytes, violation = spec_violation(spec)
    if violation is not None:
        raise InvalidArgument.fields([violation])
    return nbytes


def parse_text(text: str, field: str = "size") -> int:
    nbytes, violation = text_violation(text, field)
    if violation is not None:
        raise InvalidArgument.fields([violation])
    return nbytes


def human(nbytes: int) -> str:
    """``nbytes`` for messages, e.g. "20 GiB (21474836480 bytes)"."""
    for unit, scale in _FORMAT_UNITS:
        if nbytes >= scale:
            value = nbytes / scale
            text = f"{value:.0f}" if nbytes % scale == 0 else f"{value:.2f}"
            return f"{text} {unit}iB ({nbytes} bytes)"
    return f"{nbytes} bytes"
