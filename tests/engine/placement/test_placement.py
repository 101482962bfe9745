"""The placement function and size parsing: pure, no store."""

from __future__ import annotations

import pytest

from osd.engine.placement.place import Candidate, Request, place
from osd.engine.shared.sizes import SizeSpec, parse, parse_text
from osd.enums import FailureDomain
from osd.errors import FailedPrecondition, InvalidArgument

GIB = 1 << 30


def drives(
    zones: int, nodes_per_zone: int, per_node: int, free: int = 100 * GIB
) -> list[Candidate]:
    out = []
    for z in range(zones):
        for n in range(nodes_per_zone):
            for d in range(per_node):
                out.append(
                    Candidate(
                        drive_id=f"z{z}n{n}d{d}",
                        node_id=f"z{z}n{n}",
                        zone=f"z{z}",
                        free_bytes=free,
                        labels={"media": "ssd" if d == 0 else "hdd"},
                        node_labels={"rack": f"r{n}"},
                    )
                )
    return out


def test_copies_go_to_distinct_zones_preferring_the_emptiest() -> None:
    cands = drives(4, 2, 2)
    emptiest = {"z0n1d1": 500, "z1n0d0": 400, "z3n1d0": 300}
    cands = [
        Candidate(c.drive_id, c.node_id, c.zone, emptiest.get(c.drive_id, 100) * GIB) for c in cands
    ]
    picked = place(cands, Request([GIB] * 3))
    assert [c.drive_id for c in picked] == ["z0n1d1", "z1n0d0", "z3n1d0"]


@pytest.mark.parametrize(
    ("domain", "copies", "distinct"),
    [
        (FailureDomain.ZONE, 3, lambda c: c.zone),
        (FailureDomain.NODE, 6, lambda c: c.node_id),
        (FailureDomain.DRIVE, 12, lambda c: c.drive_id),
    ],
)
def test_failure_domains(domain: FailureDomain, copies: int, distinct: object) -> None:
    picked = place(drives(3, 2, 2), Request([GIB] * copies, domain))
    assert len(picked) == copies
    assert len({distinct(c) for c in picked}) == copies  # type: ignore[operator]


def test_too_few_domains_is_impossible_naming_the_field() -> None:
    with pytest.raises(FailedPrecondition) as info:
        place(drives(2, 3, 3), Request([GIB] * 3, copies_field="durability.replicas"))
    err = info.value
    assert err.reason == "PLACEMENT_IMPOSSIBLE"
    assert err.metadata == {
        "field": "durability.replicas",
        "needed": "3",
        "available": "2",
        "failure_domain": "ZONE",
    }


def test_domains_without_room_are_a_capacity_problem() -> None:
    cands = drives(3, 1, 2, free=GIB)
    with pytest.raises(FailedPrecondition) as info:
        place(cands, Request([2 * GIB] * 3))
    assert info.value.reason == "INSUFFICIENT_CAPACITY"
    assert info.value.metadata["fitting"] == "0"
    # One zone with room is not enough either.
    cands[0] = Candidate("big", cands[0].node_id, cands[0].zone, 10 * GIB)
    with pytest.raises(FailedPrecondition) as info:
        place(cands, Request([2 * GIB] * 3))
    assert (info.value.reason, info.value.metadata["fitting"]) == ("INSUFFICIENT_CAPACITY", "1")


def test_pool_tail_pool_and_selectors() -> None:
    cands = drives(3, 2, 2)
    ssd = {c.drive_id for c in cands if c.labels["media"] == "ssd"}
    hdd = {c.drive_id for c in cands} - ssd
    picked = place(cands, Request([GIB] * 3, pool=hdd, tail_pool=ssd))
    assert [c.drive_id in hdd for c in picked] == [True, True, False]
    assert len({c.zone for c in picked}) == 3
    picked = place(cands, Request([GIB] * 2, node_selector={"rack": "r1"}))
    assert {c.node_id[-2:] for c in picked} == {"n1"}
    picked = place(cands, Request([GIB] * 3, drive_selector={"media": "ssd"}))
    assert {c.drive_id for c in picked} <= ssd


def test_the_tail_avoids_the_domains_the_other_copies_need() -> None:
    # The tail pool is only in z0 and z1; the main pool everywhere: the tail
    # copy must take z0 or z1 and leave two zones for the others.
    cands = drives(3, 1, 1)
    tail = {"z0n0d0", "z1n0d0"}
    picked = place(cands, Request([GIB] * 3, pool=None, tail_pool=tail))
    assert picked[-1].drive_id in tail
    assert len({c.zone for c in picked}) == 3


def test_an_empty_tail_pool_is_impossible() -> None:
    with pytest.raises(FailedPrecondition) as info:
        place(drives(3, 1, 1), Request([GIB] * 3, tail_pool=set()))
    assert info.value.metadata["field"] == "placement.tail_pool_id"


def test_a_tail_inside_the_only_main_domains_is_impossible() -> None:
    cands = drives(2, 1, 1)
    with pytest.raises(FailedPrecondition) as info:
        place(cands, Request([GIB] * 3, tail_pool={"z0n0d0"}))
    assert (info.value.reason, info.value.metadata["available"]) == ("PLACEMENT_IMPOSSIBLE", "2")


def test_equal_inputs_place_alike() -> None:
    cands = drives(5, 3, 4)
    first = place(cands, Request([GIB] * 3))
    assert all(place(cands, Request([GIB] * 3)) == first for _ in range(5))


# -- sizes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [("20G", 20 * GIB), ("4096M", 4 * GIB), ("512", 512), ("1k", 1024), ("2P", 2 << 50)],
)
def test_size_text(text: str, nbytes: int) -> None:
    assert parse_text(text) == nbytes
    assert parse(SizeSpec(text=text)) == nbytes


@pytest.mark.parametrize("text", ["", "G", "1.5G", "20GiB", " 20G", "-1G", "0", "1000", "1E"])
def test_bad_size_text(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(SizeSpec(text=text))
    assert [v.field for v in info.value.violations] == ["size"]


@pytest.mark.parametrize("nbytes", [0, -512, 513, 1 << 63])
def test_bad_size_bytes(nbytes: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(SizeSpec(nbytes=nbytes))
    assert [v.field for v in info.value.violations] == ["size_bytes"]
