"""place(): one drive per copy, in distinct failure domains, emptiest first.

The hand-built cases pin the contract; the random topologies check place()
against a brute-force search over every combination of drives.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from osd.engine.placement.place import Candidate, Request, place
from osd.enums import FailureDomain
from osd.errors import FailedPrecondition

GIB = 1 << 30
DRIVE, NODE, ZONE = FailureDomain.DRIVE, FailureDomain.NODE, FailureDomain.ZONE


def c(
    drive: str,
    node: str,
    zone: str,
    free: int,
    labels: dict[str, str] | None = None,
    node_labels: dict[str, str] | None = None,
) -> Candidate:
    return Candidate(drive, node, zone, free, labels or {}, node_labels or {})


def ids(picked: Sequence[Candidate]) -> list[str]:
    return [p.drive_id for p in picked]


def refusal(candidates: Sequence[Candidate], request: Request) -> FailedPrecondition:
    with pytest.raises(FailedPrecondition) as exc:
        place(candidates, request)
    return exc.value


# Three zones of two nodes of two drives; free space in GiB.
#   z1: n1 (d1 10, d2 40)  n2 (d3 30, d4 5)
#   z2: n3 (d5 20, d6 25)  n4 (d7 50, d8 1)
#   z3: n5 (d9 15, d10 0)  n6 (d11 12, d12 14)
TOPOLOGY = [
    c("d1", "n1", "z1", 10 * GIB),
    c("d2", "n1", "z1", 40 * GIB),
    c("d3", "n2", "z1", 30 * GIB),
    c("d4", "n2", "z1", 5 * GIB),
    c("d5", "n3", "z2", 20 * GIB),
    c("d6", "n3", "z2", 25 * GIB),
    c("d7", "n4", "z2", 50 * GIB),
    c("d8", "n4", "z2", 1 * GIB),
    c("d9", "n5", "z3", 15 * GIB),
    c("d10", "n5", "z3", 0),
    c("d11", "n6", "z3", 12 * GIB),
    c("d12", "n6", "z3", 14 * GIB),
]


# -- the hand-built topology ---------------------------------------------------


def test_no_copies_places_nothing() -> None:
    assert place(TOPOLOGY, Request(sizes=[])) == []
    assert place([], Request(sizes=[])) == []


def test_zone_spread_takes_the_emptiest_drive_of_each_zone() -> None:
    picked = place(TOPOLOGY, Request(sizes=[GIB] * 3, failure_domain=ZONE))
    assert ids(picked) == ["d7", "d2", "d9"]


def test_default_failure_domain_is_the_zone() -> None:
    assert ids(place(TOPOLOGY, Request(sizes=[GIB] * 3))) == ["d7", "d2", "d9"]


def test_fewer_copies_than_zones_take_the_emptiest_zones() -> None:
    assert ids(place(TOPOLOGY, Request(sizes=[GIB] * 2))) == ["d7", "d2"]
    assert ids(place(TOPOLOGY, Request(sizes=[GIB]))) == ["d7"]


def test_node_spread() -> None:
    picked = place(TOPOLOGY, Request(sizes=[GIB] * 4, failure_domain=NODE))
    # best per node: n1 d2 40, n2 d3 30, n3 d6 25, n4 d7 50, n5 d9 15, n6 d12 14
    assert ids(picked) == ["d7", "d2", "d3", "d6"]
    picked = place(TOPOLOGY, Request(sizes=[GIB] * 6, failure_domain=NODE))
    assert ids(picked) == ["d7", "d2", "d3", "d6", "d9", "d12"]


def test_drive_spread_may_share_nodes_and_zones() -> None:
    picked = place(TOPOLOGY, Request(sizes=[GIB] * 3, failure_domain=DRIVE))
    assert ids(picked) == ["d7", "d2", "d3"]
    assert picked[1].node_id == "n1" and picked[2].node_id == "n2"
    assert picked[1].zone == picked[2].zone == "z1"


def test_a_drive_without_room_gives_way_to_a_smaller_one_of_its_zone() -> None:
    # 18 GiB: z3's best drive has only 15, so z3 cannot take a copy; zones z1
    # and z2 can, with their emptiest drives.
    assert ids(place(TOPOLOGY, Request(sizes=[18 * GIB] * 2))) == ["d7", "d2"]
    # Node spread at 26 GiB: n1 (40), n2 (30) and n4 (50) have room, n3 (25) not.
    picked = place(TOPOLOGY, Request(sizes=[26 * GIB] * 3, failure_domain=NODE))
    assert ids(picked) == ["d7", "d2", "d3"]


def test_exact_fit_is_enough() -> None:
    picked = place(TOPOLOGY, Request(sizes=[15 * GIB] * 3))
    assert ids(picked) == ["d7", "d2", "d9"]


def test_one_byte_short_is_not() -> None:
    error = refusal(TOPOLOGY, Request(sizes=[15 * GIB + 1] * 3))
    assert error.reason == "INSUFFICIENT_CAPACITY"
    assert error.metadata == {
        "needed_bytes": str(15 * GIB + 1),
        "copies": "3",
        "fitting": "2",
    }


def test_too_few_zones_is_impossible_whatever_the_room() -> None:
    error = refusal(TOPOLOGY, Request(sizes=[512] * 4, copies_field="durability.replicas"))
    assert isinstance(error, FailedPrecondition)
    assert error.code.name == "FAILED_PRECONDITION"
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert error.metadata == {
        "field": "durability.replicas",
        "needed": "4",
        "available": "3",
        "failure_domain": "ZONE",
    }
    assert error.message == (
        "placement impossible: 4 copies need 4 distinct zones, but only 3 match"
    )


def test_too_few_nodes_and_drives_are_impossible() -> None:
    error = refusal(TOPOLOGY, Request(sizes=[512] * 7, failure_domain=NODE))
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert error.metadata["field"] == "durability"
    assert (error.metadata["needed"], error.metadata["available"]) == ("7", "6")
    assert error.metadata["failure_domain"] == "NODE"
    error = refusal(TOPOLOGY, Request(sizes=[512] * 13, failure_domain=DRIVE))
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert (error.metadata["needed"], error.metadata["available"]) == ("13", "12")
    assert "13 distinct drives, but only 12 match" in error.message


def test_no_candidates_at_all() -> None:
    error = refusal([], Request(sizes=[GIB] * 2))
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert error.metadata["available"] == "0"


def test_enough_zones_but_too_little_room() -> None:
    # 35 GiB fits only z1 (d2 40) and z2 (d7 50).
    error = refusal(TOPOLOGY, Request(sizes=[35 * GIB] * 3))
    assert error.reason == "INSUFFICIENT_CAPACITY"
    assert error.metadata == {"needed_bytes": str(35 * GIB), "copies": "3", "fitting": "2"}
    assert error.message == (
        "insufficient capacity: 3 copies of 35 GiB (37580963840 bytes) need room in "
        "3 distinct zones, but only 2 have a drive with that much free"
    )


def test_drive_spread_without_room() -> None:
    # 30 GiB fits d7 50, d2 40, d3 30: three drives, not four.
    error = refusal(TOPOLOGY, Request(sizes=[30 * GIB] * 4, failure_domain=DRIVE))
    assert error.reason == "INSUFFICIENT_CAPACITY"
    assert error.metadata == {"needed_bytes": str(30 * GIB), "copies": "4", "fitting": "3"}


def test_the_largest_size_decides_the_room_of_every_copy() -> None:
    # 16 GiB leaves z3 (15) out even though only one copy asks for it.
    error = refusal(TOPOLOGY, Request(sizes=[GIB, GIB, 16 * GIB]))
    assert error.reason == "INSUFFICIENT_CAPACITY"
    assert error.metadata["needed_bytes"] == str(16 * GIB)


# -- pools and selectors -------------------------------------------------------


def test_pool_limits_the_drives() -> None:
    pool = {"d1", "d4", "d5", "d11"}
    assert ids(place(TOPOLOGY, Request(sizes=[GIB] * 3, pool=pool))) == ["d5", "d11", "d1"]


def test_pool_may_be_any_collection() -> None:
    for pool in (["d1", "d5", "d11"], ("d1", "d5", "d11"), frozenset({"d1", "d5", "d11"})):
        assert ids(place(TOPOLOGY, Request(sizes=[GIB] * 3, pool=pool))) == ["d5", "d11", "d1"]


def test_an_empty_pool_matches_nothing() -> None:
    error = refusal(TOPOLOGY, Request(sizes=[GIB], pool=set()))
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert error.metadata["available"] == "0"
    assert error.message.endswith("but only 0 match (the pool)")


def test_pool_with_too_few_zones() -> None:
    error = refusal(TOPOLOGY, Request(sizes=[GIB] * 3, pool={"d1", "d2", "d5"}))
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert (error.metadata["needed"], error.metadata["available"]) == ("3", "2")


LABELLED = [
    c("a", "n1", "z1", 10, {"media": "ssd"}, {"rack": "r1"}),
    c("b", "n2", "z2", 90, {"media": "hdd"}, {"rack": "r1"}),
    c("e", "n3", "z3", 50, {"media": "ssd"}, {"rack": "r2"}),
    c("f", "n4", "z4", 70, {"media": "ssd", "fast": "yes"}, {"rack": "r1", "pdu": "p1"}),
    c("g", "n5", "z5", 60, {}, {}),
]


def test_drive_selector() -> None:
    picked = place(LABELLED, Request(sizes=[1] * 3, drive_selector={"media": "ssd"}))
    assert ids(picked) == ["f", "e", "a"]


def test_node_selector() -> None:
    picked = place(LABELLED, Request(sizes=[1] * 3, node_selector={"rack": "r1"}))
    assert ids(picked) == ["b", "f", "a"]


def test_every_selector_label_must_match() -> None:
    request = Request(sizes=[1], node_selector={"rack": "r1", "pdu": "p1"})
    assert ids(place(LABELLED, request)) == ["f"]
    request = Request(sizes=[1] * 2, node_selector={"rack": "r1"}, drive_selector={"media": "ssd"})
    assert ids(place(LABELLED, request)) == ["f", "a"]


def test_a_selector_value_must_be_equal_not_just_present() -> None:
    error = refusal(LABELLED, Request(sizes=[1], drive_selector={"fast": "no"}))
    assert error.reason == "PLACEMENT_IMPOSSIBLE"


def test_refusals_say_what_narrowed_the_drives() -> None:
    error = refusal(
        LABELLED,
        Request(
            sizes=[1] * 3,
            pool={"a", "b", "e", "f"},
            tail_pool={"g"},
            node_selector={"rack": "r1"},
            drive_selector={"media": "ssd"},
        ),
    )
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert error.message.endswith(
        "(the pool, the tail pool, the node selector, the drive selector)"
    )


# -- tail pool -----------------------------------------------------------------


def test_the_last_copy_goes_to_the_tail_pool() -> None:
    picked = place(
        TOPOLOGY, Request(sizes=[GIB] * 3, pool={"d1", "d5", "d9"}, tail_pool={"d3", "d12"})
    )
    # The tail takes z1's d3 (30), so z1 is not used again; the others go to z2 and z3.
    assert ids(picked) == ["d5", "d9", "d3"]


def test_the_tail_copy_avoids_a_domain_the_others_need() -> None:
    # Main pool covers only z1 and z2; the emptiest tail drive (d7, z2) would
    # leave one main zone, so the tail goes to z3.
    picked = place(TOPOLOGY, Request(sizes=[GIB] * 3, pool={"d2", "d5"}, tail_pool={"d7", "d9"}))
    assert ids(picked) == ["d2", "d5", "d9"]


def test_the_tail_shares_no_domain_with_the_others() -> None:
    picked = place(
        TOPOLOGY,
        Request(sizes=[GIB] * 2, failure_domain=NODE, pool={"d1", "d2"}, tail_pool={"d2", "d3"}),
    )
    assert ids(picked) == ["d2", "d3"]


def test_the_tail_copy_has_its_own_size() -> None:
    # The tail drive only has to hold the last size.
    picked = place(
        TOPOLOGY,
        Request(sizes=[20 * GIB, 20 * GIB, 14 * GIB], pool={"d2", "d7"}, tail_pool={"d12"}),
    )
    assert ids(picked) == ["d7", "d2", "d12"]


def test_an_empty_tail_pool_names_the_tail_pool_field() -> None:
    error = refusal(TOPOLOGY, Request(sizes=[GIB] * 2, tail_pool=set()))
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert error.metadata["field"] == "placement.tail_pool_id"
    assert (error.metadata["needed"], error.metadata["available"]) == ("1", "0")


def test_a_tail_pool_the_selectors_rule_out_names_the_tail_pool_field() -> None:
    error = refusal(
        LABELLED, Request(sizes=[1] * 2, tail_pool={"g"}, drive_selector={"media": "ssd"})
    )
    assert error.metadata["field"] == "placement.tail_pool_id"


def test_tail_pool_in_the_only_other_zone_is_impossible() -> None:
    # Main pool: z1 only; tail: z1 only. Two copies need two zones.
    error = refusal(TOPOLOGY, Request(sizes=[GIB] * 2, pool={"d1", "d2"}, tail_pool={"d3"}))
    assert error.reason == "PLACEMENT_IMPOSSIBLE"
    assert (error.metadata["needed"], error.metadata["available"]) == ("2", "1")
    assert error.metadata["field"] == "durability"


def test_tail_pool_without_room() -> None:
    error = refusal(
        TOPOLOGY, Request(sizes=[GIB, GIB, 20 * GIB], pool={"d2", "d7"}, tail_pool={"d9"})
    )
    assert error.reason == "INSUFFICIENT_CAPACITY"
    assert error.metadata["needed_bytes"] == str(20 * GIB)
    assert error.metadata["fitting"] == "0"


# -- ties and determinism ------------------------------------------------------


def test_ties_within_a_domain_go_to_the_first_candidate() -> None:
    drives = [c("x1", "n1", "z1", 100), c("x2", "n2", "z1", 100), c("y1", "n3", "z2", 100)]
    assert ids(place(drives, Request(sizes=[1] * 2))) == ["x1", "y1"]
    assert ids(place(drives[::-1], Request(sizes=[1] * 2))) == ["y1", "x2"]


def test_ties_between_domains_keep_the_first_seen_domain_first() -> None:
    drives = [c("a", "n1", "z1", 100), c("b", "n2", "z2", 100), c("c", "n3", "z3", 100)]
    assert ids(place(drives, Request(sizes=[1] * 2))) == ["a", "b"]
    assert ids(place(drives[::-1], Request(sizes=[1] * 2))) == ["c", "b"]
    assert ids(place(drives, Request(sizes=[1] * 2, failure_domain=DRIVE))) == ["a", "b"]


def test_same_topology_places_alike() -> None:
    rng = random.Random(7)
    drives = [
        c(f"d{i}", f"n{i // 4}", f"z{i // 16}", rng.choice([0, 100, 200, 300])) for i in range(200)
    ]
    for domain in FailureDomain:
        request = Request(sizes=[50] * 3, failure_domain=domain)
        first = ids(place(drives, request))
        for _ in range(5):
            assert ids(place(list(drives), request)) == first


def test_with_distinct_free_space_the_order_of_candidates_does_not_matter() -> None:
    rng = random.Random(11)
    frees = rng.sample(range(1, 10_000), 60)
    drives = [c(f"d{i}", f"n{i // 3}", f"z{i // 12}", free) for i, free in enumerate(frees)]
    for domain in FailureDomain:
        request = Request(sizes=[100] * 4, failure_domain=domain)
        expected = ids(place(drives, request))
        for _ in range(10):
            shuffled = drives[:]
            rng.shuffle(shuffled)
            assert ids(place(shuffled, request)) == expected


def test_copies_come_emptiest_first() -> None:
    picked = place(TOPOLOGY, Request(sizes=[GIB] * 6, failure_domain=NODE))
    frees = [p.free_bytes for p in picked]
    assert frees == sorted(frees, reverse=True)


# -- against a brute-force search ----------------------------------------------


def domain_of(candidate: Candidate, domain: FailureDomain) -> str:
    if domain is DRIVE:
        return candidate.drive_id
    if domain is NODE:
        return candidate.node_id
    return candidate.zone


def matches(candidate: Candidate, request: Request) -> bool:
    return all(candidate.node_labels.get(k) == v for k, v in request.node_selector.items()) and all(
        candidate.labels.get(k) == v for k, v in request.drive_selector.items()
    )


def valid(picked: Sequence[Candidate], request: Request, sizes: Sequence[int]) -> bool:
    """Whether ``picked`` honours ``request`` with room ``sizes`` for each copy."""
    domain = FailureDomain(request.failure_domain)
    if len(picked) != len(request.sizes):
        return False
    if len({domain_of(p, domain) for p in picked}) != len(picked):
        return False
    for i, (p, size) in enumerate(zip(picked, sizes, strict=True)):
        is_tail = request.tail_pool is not None and i == len(picked) - 1
        pool = request.tail_pool if is_tail else request.pool
        if pool is not None and p.drive_id not in pool:
            return False
        if not matches(p, request) or p.free_bytes < size:
            return False
    return True


def room(request: Request) -> list[int]:
    """The room each copy must find: the largest size, the tail its own."""
    sizes = list(request.sizes)
    if request.tail_pool is None:
        return [max(sizes)] * len(sizes)
    return [max(sizes[:-1], default=0)] * (len(sizes) - 1) + [sizes[-1]]


def feasible(candidates: Sequence[Candidate], request: Request, sizes: Sequence[int]) -> bool:
    return any(
        valid(combo, request, sizes)
        for combo in itertools.permutations(candidates, len(request.sizes))
    )


def random_topology(rng: random.Random) -> list[Candidate]:
    out = []
    zones = rng.randint(1, 4)
    for z in range(zones):
        for n in range(rng.randint(1, 2)):
            for d in range(rng.randint(1, 2)):
                out.append(
                    c(
                        f"d{z}{n}{d}",
                        f"n{z}{n}",
                        f"z{z}",
                        rng.choice([0, 10, 20, 30, 40, 50, 60]),
                        {"media": rng.choice(["ssd", "hdd"])},
                        {"rack": rng.choice(["r1", "r2"])},
                    )
                )
    return out


def random_request(rng: random.Random, drive_ids: list[str]) -> Request:
    copies = rng.randint(1, 3)
    size = rng.choice([1, 10, 25, 40, 55])
    pool = None
    tail_pool = None
    if rng.random() < 0.4:
        pool = set(rng.sample(drive_ids, rng.randint(0, len(drive_ids))))
    if rng.random() < 0.4:
        tail_pool = set(rng.sample(drive_ids, rng.randint(0, len(drive_ids))))
    sizes = [size] * copies
    if tail_pool is not None and rng.random() < 0.5:
        sizes[-1] = rng.choice([1, 10, 25, 40, 55])
    return Request(
        sizes=sizes,
        failure_domain=rng.choice(list(FailureDomain)),
        pool=pool,
        tail_pool=tail_pool,
        node_selector={"rack": "r1"} if rng.random() < 0.2 else {},
        drive_selector={"media": "ssd"} if rng.random() < 0.2 else {},
    )


def test_place_agrees_with_a_brute_force_search() -> None:
    rng = random.Random(20240601)
    outcomes = {"placed": 0, "PLACEMENT_IMPOSSIBLE": 0, "INSUFFICIENT_CAPACITY": 0}
    for _ in range(1500):
        candidates = random_topology(rng)
        request = random_request(rng, [x.drive_id for x in candidates])
        sizes = room(request)
        context = (candidates, request)
        if feasible(candidates, request, sizes):
            picked = place(candidates, request)
            assert valid(picked, request, sizes), context
            if request.tail_pool is None:
                # Emptiest first: no valid choice has a larger sorted free vector.
                best = max(
                    sorted((p.free_bytes for p in combo), reverse=True)
                    for combo in itertools.combinations(candidates, len(sizes))
                    if valid(combo, request, sizes)
                )
                assert [p.free_bytes for p in picked] == best, context
            outcomes["placed"] += 1
            continue
        with pytest.raises(FailedPrecondition) as exc:
            place(candidates, request)
        # Impossible when even empty copies find no place; otherwise it is room.
        topology_fits = feasible(candidates, request, [0] * len(sizes))
        expected = "INSUFFICIENT_CAPACITY" if topology_fits else "PLACEMENT_IMPOSSIBLE"
        assert exc.value.reason == expected, context
        outcomes[expected] += 1
    # The random cases reach each outcome often enough to mean something.
    assert min(outcomes.values()) >= 100, outcomes


def test_large_topology_spreads_over_zones_with_room() -> None:
    rng = random.Random(3)
    drives = [
        c(f"d{i}", f"n{i // 24}", f"z{i // 240}", rng.randrange(0, 1000) * GIB)
        for i in range(24 * 100)
    ]
    need = 900 * GIB
    picked = place(drives, Request(sizes=[need] * 5))
    assert len({p.zone for p in picked}) == 5
    assert all(p.free_bytes >= need for p in picked)
    for p in picked:
        # each is the emptiest drive of its zone
        assert p.free_bytes == max(d.free_bytes for d in drives if d.zone == p.zone)
