"""The rules of a volume's shape: durability, placement, QoS, factor, kind, provisioning."""

from __future__ import annotations

import math

import pytest

from osd.engine.volumes.models import Durability, Placement, Qos
from osd.engine.volumes.specs import (
    copies,
    copies_field,
    durability_violations,
    enum_violation,
    factor_violation,
    is_unset,
    kind_violation,
    normalize_durability,
    normalize_placement,
    placement_from_json,
    placement_to_json,
    placement_violations,
    provisioning_violation,
    qos_violations,
    replicas_violation,
    reserved_sizes,
    room_sizes,
    share_sizes,
)
from osd.enums import DurabilityType, FailureDomain, Provisioning, VolumeKind
from osd.errors import FieldViolation

MIB = 1 << 20
GIB = 1 << 30
ID = "0123456789abcdef0123456789abcdef"
ID2 = "fedcba9876543210fedcba9876543210"

NONE = int(DurabilityType.NONE)
REPLICATE = int(DurabilityType.REPLICATE)
ERASURE = int(DurabilityType.ERASURE)
THIN = int(Provisioning.THIN)
THICK = int(Provisioning.THICK)


def fields(violations: list[FieldViolation]) -> list[str]:
    return [v.field for v in violations]


# -- enums ---------------------------------------------------------------------


def test_enum_violation_accepts_unset_and_members() -> None:
    assert enum_violation(0, VolumeKind, "kind") is None
    assert enum_violation(1, VolumeKind, "kind") is None
    assert enum_violation(2, VolumeKind, "kind") is None


@pytest.mark.parametrize("value", [3, -1, 99])
def test_enum_violation_lists_the_members(value: int) -> None:
    assert enum_violation(value, VolumeKind, "spec.kind") == FieldViolation(
        "spec.kind", f"{value} is not one of BLOCK, FILE"
    )


def test_kind_and_provisioning() -> None:
    assert kind_violation(0) is None
    assert kind_violation(int(VolumeKind.FILE)) is None
    assert kind_violation(3) == FieldViolation("kind", "3 is not one of BLOCK, FILE")
    assert provisioning_violation(0) is None
    assert provisioning_violation(THICK) is None
    assert provisioning_violation(3, "template.provisioning") == FieldViolation(
        "template.provisioning", "3 is not one of THIN, THICK"
    )


# -- durability ----------------------------------------------------------------


def test_is_unset() -> None:
    assert is_unset(None)
    assert is_unset(Durability())
    assert not is_unset(Durability(type=NONE))
    assert not is_unset(Durability(replicas=3))


@pytest.mark.parametrize(
    "d",
    [
        Durability(),
        Durability(NONE),
        Durability(REPLICATE),
        Durability(REPLICATE, 2),
        Durability(REPLICATE, 5),
        Durability(ERASURE),
        Durability(ERASURE, 0, 2, 1),
        Durability(ERASURE, 0, 2, 2),
        Durability(ERASURE, 0, 16, 4),
        Durability(ERASURE, 0, 4, 0),  # redundancy defaults to 2
        Durability(ERASURE, 0, 0, 4),  # data defaults to 4
    ],
)
def test_valid_durability(d: Durability) -> None:
    assert durability_violations(d) == []


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (Durability(0, 3), [("durability.type", "is required with replicas or fragments")]),
        (Durability(0, 0, 4), [("durability.type", "is required with replicas or fragments")]),
        (Durability(4), [("durability.type", "4 is not one of NONE, REPLICATE, ERASURE")]),
        # An unknown type hides every other problem.
        (
            Durability(9, 1, 99, 99),
            [("durability.type", "9 is not one of NONE, REPLICATE, ERASURE")],
        ),
        (Durability(NONE, 2), [("durability.replicas", "only REPLICATE volumes have replicas")]),
        (
            Durability(NONE, 0, 4, 2),
            [
                ("durability.data_fragments", "only ERASURE volumes have fragments"),
                ("durability.redundancy_fragments", "only ERASURE volumes have fragments"),
            ],
        ),
        (Durability(REPLICATE, 1), [("durability.replicas", "is 1; from 2 to 5")]),
        (Durability(REPLICATE, 6), [("durability.replicas", "is 6; from 2 to 5")]),
        (Durability(REPLICATE, -1), [("durability.replicas", "is -1; from 2 to 5")]),
        (
            Durability(REPLICATE, 3, 0, 2),
            [("durability.redundancy_fragments", "only ERASURE volumes have fragments")],
        ),
        (
            Durability(ERASURE, 3),
            [("durability.replicas", "only REPLICATE volumes have replicas")],
        ),
        (Durability(ERASURE, 0, 1, 1), [("durability.data_fragments", "is 1; from 2 to 16")]),
        (Durability(ERASURE, 0, 17, 2), [("durability.data_fragments", "is 17; from 2 to 16")]),
        (Durability(ERASURE, 0, -4, 1), [("durability.data_fragments", "is -4; from 2 to 16")]),
        # 2 data fragments leave room for 2 redundancy fragments, not 3.
        (
            Durability(ERASURE, 0, 2, 3),
            [
                (
                    "durability.redundancy_fragments",
                    "is 3; from 1 to 4, and at most data_fragments",
                )
            ],
        ),
        (
            Durability(ERASURE, 0, 8, 5),
            [
                (
                    "durability.redundancy_fragments",
                    "is 5; from 1 to 4, and at most data_fragments",
                )
            ],
        ),
        (
            Durability(ERASURE, 0, 4, -1),
            [
                (
                    "durability.redundancy_fragments",
                    "is -1; from 1 to 4, and at most data_fragments",
                )
            ],
        ),
        (
            Durability(ERASURE, 0, 20, 6),
            [
                ("durability.data_fragments", "is 20; from 2 to 16"),
                (
                    "durability.redundancy_fragments",
                    "is 6; from 1 to 4, and at most data_fragments",
                ),
            ],
        ),
    ],
)
def test_invalid_durability(d: Durability, expected: list[tuple[str, str]]) -> None:
    assert durability_violations(d) == [FieldViolation(f, text) for f, text in expected]


def test_durability_violations_use_the_prefix() -> None:
    # 1 data fragment also leaves no room for the default 2 redundancy fragments.
    got = durability_violations(Durability(ERASURE, 2, 1, 0), "template.durability")
    assert fields(got) == [
        "template.durability.replicas",
        "template.durability.data_fragments",
        "template.durability.redundancy_fragments",
    ]


def test_erasure_redundancy_is_bounded_by_data_and_four() -> None:
    for data in range(2, 17):
        for redundancy in range(1, 8):
            ok = redundancy <= min(4, data)
            got = durability_violations(Durability(ERASURE, 0, data, redundancy))
            assert (got == []) == ok, (data, redundancy, got)


@pytest.mark.parametrize(
    ("replicas", "ok"), [(0, True), (1, False), (2, True), (3, True), (5, True), (6, False)]
)
def test_replicas_violation(replicas: int, ok: bool) -> None:
    got = replicas_violation(replicas)
    if ok:
        assert got is None
    else:
        assert got == FieldViolation("durability.replicas", f"is {replicas}; from 2 to 5")


def test_replicas_violation_names_the_field_it_is_given() -> None:
    assert replicas_violation(9, "replicas") == FieldViolation("replicas", "is 9; from 2 to 5")


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (Durability(REPLICATE), Durability(REPLICATE, 3, 0, 0)),
        (Durability(REPLICATE, 2), Durability(REPLICATE, 2, 0, 0)),
        (Durability(ERASURE), Durability(ERASURE, 0, 4, 2)),
        (Durability(ERASURE, 0, 8), Durability(ERASURE, 0, 8, 2)),
        (Durability(ERASURE, 0, 0, 1), Durability(ERASURE, 0, 4, 1)),
        (Durability(ERASURE, 0, 6, 3), Durability(ERASURE, 0, 6, 3)),
        (Durability(NONE), Durability(NONE, 0, 0, 0)),
    ],
)
def test_normalize_durability(d: Durability, expected: Durability) -> None:
    assert normalize_durability(d) == expected
    assert normalize_durability(expected) == expected


@pytest.mark.parametrize(
    ("d", "count", "field"),
    [
        (Durability(NONE), 1, "placement"),
        (Durability(REPLICATE, 2), 2, "durability.replicas"),
        (Durability(REPLICATE, 5), 5, "durability.replicas"),
        (Durability(ERASURE, 0, 4, 2), 6, "durability"),
        (Durability(ERASURE, 0, 16, 4), 20, "durability"),
    ],
)
def test_copies_and_their_field(d: Durability, count: int, field: str) -> None:
    assert copies(d) == count
    assert copies_field(d) == field


def test_copies_of_every_valid_layout_match_the_allocations() -> None:
    layouts = [Durability(NONE)]
    layouts += [Durability(REPLICATE, r) for r in range(2, 6)]
    layouts += [Durability(ERASURE, 0, d, r) for d in range(2, 17) for r in range(1, min(4, d) + 1)]
    for d in layouts:
        assert durability_violations(d) == []
        assert len(share_sizes(GIB, d)) == copies(d), d
        assert len(reserved_sizes(GIB, d, 0.0, THICK)) == copies(d), d


# -- sizes ---------------------------------------------------------------------


R3 = Durability(REPLICATE, 3)
EC42 = Durability(ERASURE, 0, 4, 2)


@pytest.mark.parametrize(
    ("size", "d", "shares"),
    [
        (GIB, Durability(NONE), [GIB]),
        (GIB, R3, [GIB] * 3),
        (GIB, EC42, [256 * MIB] * 6),
        (10 * GIB, Durability(ERASURE, 0, 8, 3), [1280 * MIB] * 11),
        # 1536 / 4 = 384 bytes -> one sector per fragment
        (1536, EC42, [512] * 6),
        # 3 GiB / 16 = 192 MiB
        (3 * GIB, Durability(ERASURE, 0, 16, 4), [192 * MIB] * 20),
    ],
)
def test_share_sizes(size: int, d: Durability, shares: list[int]) -> None:
    assert share_sizes(size, d) == shares


def test_share_sizes_ignore_the_snapshot_reserve() -> None:
    assert share_sizes(GIB, R3) == reserved_sizes(GIB, R3, 1.0, THICK)
    assert share_sizes(GIB, R3) != reserved_sizes(GIB, R3, 2.0, THICK)


@pytest.mark.parametrize(
    ("size", "d", "factor", "provisioning", "expected"),
    [
        (GIB, R3, 0.0, THICK, [GIB] * 3),
        (GIB, R3, 1.5, THICK, [1536 * MIB] * 3),
        (GIB, R3, 2.0, THICK, [2 * GIB] * 3),
        (GIB, R3, 2.0, THIN, [0, 0, 0]),
        (GIB, R3, 0.0, THIN, [0, 0, 0]),
        (GIB, EC42, 1.5, THICK, [384 * MIB] * 6),
        (GIB, EC42, 1.5, THIN, [0] * 6),
        (GIB, Durability(NONE), 3.0, THICK, [3 * GIB]),
        (GIB, Durability(NONE), 3.0, THIN, [0]),
        # provisioning 0 (unset) is not THIN: it reserves
        (GIB, Durability(NONE), 0.0, 0, [GIB]),
    ],
)
def test_reserved_sizes(
    size: int, d: Durability, factor: float, provisioning: int, expected: list[int]
) -> None:
    assert reserved_sizes(size, d, factor, provisioning) == expected


def test_room_sizes_are_the_full_share_thin_or_thick() -> None:
    assert room_sizes(GIB, R3, 1.5) == [1536 * MIB] * 3
    assert room_sizes(GIB, EC42, 0.0) == [256 * MIB] * 6
    # A THIN volume reserves nothing yet, but placement still needs the room.
    assert reserved_sizes(GIB, EC42, 2.0, THIN) == [0] * 6
    assert room_sizes(GIB, EC42, 2.0) == [512 * MIB] * 6


def test_shares_hold_the_volume_for_many_sizes() -> None:
    """Each copy holds the whole volume; the data fragments together hold it,
    wasting less than a sector each."""
    layouts = [Durability(NONE), R3, Durability(REPLICATE, 5), EC42]
    layouts += [Durability(ERASURE, 0, d, 1) for d in (2, 3, 5, 7, 11, 13, 16)]
    sizes = [512 * k for k in (1, 2, 3, 5, 7, 11, 100, 333, 1001, 4099, 65537)]
    sizes += [GIB, 10 * GIB + 512, (1 << 40) - 512]
    for d in layouts:
        data = d.data_fragments if d.type == ERASURE else 1
        for size in sizes:
            shares = share_sizes(size, d)
            assert len(shares) == copies(d)
            for share in shares:
                assert share % 512 == 0
                assert size <= share * data < size + 512 * data, (d, size)
            if d.type == ERASURE:
                # The whole layout costs (data + redundancy) / data of the size, give or
                # take the rounding of each fragment.
                total = sum(shares)
                expected = size * copies(d) / data
                assert expected <= total < expected + 512 * copies(d), (d, size)
            else:
                assert sum(shares) == size * copies(d)


def test_reserve_grows_with_the_factor() -> None:
    for d in (R3, EC42):
        previous = share_sizes(100 * MIB, d)
        for factor in (1.25, 1.5, 2.0, 4.0, 8.0):
            reserved = reserved_sizes(100 * MIB, d, factor, THICK)
            assert all(r > p for r, p in zip(reserved, previous, strict=True)), (d, factor)
            previous = reserved


# -- placement -----------------------------------------------------------------


def test_empty_placement_is_valid() -> None:
    assert placement_violations(Placement()) == []


def test_full_placement_is_valid() -> None:
    p = Placement(ID, ID2, int(FailureDomain.NODE), {"rack": "r1"}, {"media": "ssd"})
    assert placement_violations(p) == []


def test_every_bad_placement_field_is_reported() -> None:
    p = Placement(
        pool_id="pool-1",
        tail_pool_id=ID.upper(),
        failure_domain=7,
        node_selector={"-rack": "r1"},
        drive_selector={"media": "x" * 300},
    )
    assert placement_violations(p, "spec.placement") == [
        FieldViolation("spec.placement.pool_id", "'pool-1' is not an id (32 hex characters)"),
        FieldViolation(
            "spec.placement.tail_pool_id",
            f"{ID.upper()!r} is not an id (32 hex characters)",
        ),
        FieldViolation("spec.placement.failure_domain", "7 is not one of DRIVE, NODE, ZONE"),
        FieldViolation(
            "spec.placement.node_selector['-rack']",
            "key must be 1 to 63 characters from [A-Za-z0-9_.:/-], starting with a letter or digit",
        ),
        FieldViolation("spec.placement.drive_selector['media']", "value is longer than 253"),
    ]


@pytest.mark.parametrize("bad", [ID[:-1], ID + "0", " " + ID[1:], "g" * 32])
def test_placement_pool_ids(bad: str) -> None:
    assert fields(placement_violations(Placement(pool_id=bad))) == ["placement.pool_id"]
    assert fields(placement_violations(Placement(tail_pool_id=bad))) == ["placement.tail_pool_id"]


def test_normalize_placement_defaults_the_failure_domain_to_zone() -> None:
    assert normalize_placement(Placement()) == Placement(failure_domain=int(FailureDomain.ZONE))
    p = Placement(failure_domain=int(FailureDomain.DRIVE))
    assert normalize_placement(p).failure_domain == FailureDomain.DRIVE


def test_normalize_placement_drops_a_tail_pool_equal_to_the_pool() -> None:
    assert normalize_placement(Placement(ID, ID)).tail_pool_id == ""
    assert normalize_placement(Placement(ID, ID2)).tail_pool_id == ID2
    assert normalize_placement(Placement("", ID2)).tail_pool_id == ID2


def test_normalize_placement_copies_the_selectors() -> None:
    selector = {"rack": "r1"}
    normal = normalize_placement(Placement(node_selector=selector))
    assert normal.node_selector == {"rack": "r1"}
    selector["rack"] = "r2"
    assert normal.node_selector == {"rack": "r1"}


def test_placement_json_round_trip() -> None:
    for p in (
        Placement(failure_domain=1),
        Placement(ID, ID2, int(FailureDomain.NODE), {"rack": "r1"}, {"media": "ssd"}),
        Placement("", ID2, 3, {}, {"a": "", "b": "c"}),
    ):
        data = placement_to_json(p)
        assert placement_from_json(data) == p


def test_placement_json_form() -> None:
    assert placement_to_json(Placement(ID, "", 2, {"a": "b"}, {})) == {
        "pool_id": ID,
        "tail_pool_id": "",
        "failure_domain": 2,
        "node_selector": {"a": "b"},
        "drive_selector": {},
    }


def test_no_placement_in_json() -> None:
    assert placement_to_json(None) == {}
    assert placement_from_json(None) is None
    assert placement_from_json({}) is None


def test_placement_from_partial_json_fills_the_gaps() -> None:
    assert placement_from_json({"pool_id": ID}) == Placement(pool_id=ID)
    assert placement_from_json(
        {"pool_id": None, "failure_domain": None, "node_selector": None, "tail_pool_id": ID2}
    ) == Placement(tail_pool_id=ID2)


# -- qos and factor ------------------------------------------------------------


def test_qos() -> None:
    assert qos_violations(Qos()) == []
    assert qos_violations(Qos(1000, 100 * MIB)) == []
    assert qos_violations(Qos(-1, -2), "spec.qos") == [
        FieldViolation("spec.qos.iops_limit", "is -1; 0 (unlimited) or more"),
        FieldViolation("spec.qos.bandwidth_limit_bytes", "is -2; 0 (unlimited) or more"),
    ]
    assert fields(qos_violations(Qos(0, -1))) == ["qos.bandwidth_limit_bytes"]


@pytest.mark.parametrize("factor", [None, 1.0000001, 1.1, 1.5, 2.0, 99.9, 100.0])
def test_valid_factor(factor: float | None) -> None:
    assert factor_violation(factor) is None


@pytest.mark.parametrize(
    ("factor", "shown"),
    [
        (1.0, "1.0"),
        (0.0, "0.0"),
        (0.5, "0.5"),
        (-2.0, "-2.0"),
        (100.0001, "100.0001"),
        (1e9, "1000000000.0"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (math.nan, "nan"),
    ],
)
def test_invalid_factor(factor: float, shown: str) -> None:
    assert factor_violation(factor, "template.snapshot_factor") == FieldViolation(
        "template.snapshot_factor", f"is {shown}; greater than 1 and at most 100 when set"
    )
