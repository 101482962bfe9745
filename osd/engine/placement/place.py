"""Placement: which drive holds each copy (or fragment) of a volume.

:func:`place` is a pure function over an in-memory list of candidate drives
(the ONLINE data drives of ONLINE nodes, with their free bytes). It picks one
drive per copy so that no two copies share the failure domain asked for
(drive, node or zone), every copy is in the pool (StorPool's place-all) and
the last one in the tail pool when one is given (place-tail), every drive
and node matches the label selectors, and the emptiest drives win.

It must stay fast on large topologies (a thousand nodes of 24 drives):
each filter is one comprehension over the candidates, the choice one tight
loop that keeps the emptiest drive per failure domain, and only the few
domains found are sorted. scripts/bench-placement measures it.

Refusals:
    FAILED_PRECONDITION, reason PLACEMENT_IMPOSSIBLE: fewer distinct failure
        domains match than copies asked, whatever the free space (ErrorInfo
        metadata "field", "needed", "available").
    FAILED_PRECONDITION, reason INSUFFICIENT_CAPACITY: enough domains match,
        but too few of them have a drive with room for a copy.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from osd.engine.shared.sizes import human
from osd.enums import FailureDomain
from osd.errors import FailedPrecondition

_NO_LABELS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A drive that may receive a copy, with what placement looks at."""

    drive_id: str
    node_id: str
    zone: str
    free_bytes: int
    labels: Mapping[str, str] = field(default_factory=dict)
    node_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What to place.

    Attributes:
        sizes: the room each copy needs, in copy order (the last copy is the
            tail copy when ``tail_pool`` is given).
        failure_domain: what no two copies may share.
        pool: the drive ids every copy must be on; None means any candidate.
        tail_pool: the drive ids the last copy must be on instead; None means
            the last copy follows ``pool``.
        node_selector: labels every chosen drive's node must carry.
        drive_selector: labels every chosen drive must carry.
        copies_field: the request field that asked for the copies, named in
            PLACEMENT_IMPOSSIBLE (e.g. "durability.replicas").
    """

    sizes: Sequence[int]
    failure_domain: FailureDomain = FailureDomain.ZONE
    pool: Collection[str] | None = None
    tail_pool: Collection[str] | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    drive_selector: Mapping[str, str] = field(default_factory=dict)
    copies_field: str = "durability"


_free = attrgetter("free_bytes")
_GROUP_KEY: dict[FailureDomain, Callable[[Candidate], str]] = {
    FailureDomain.DRIVE: attrgetter("drive_id"),
    FailureDomain.NODE: attrgetter("node_id"),
    FailureDomain.ZONE: attrgetter("zone"),
}
_DOMAIN_WORD = {
    FailureDomain.DRIVE: "drives",
    FailureDomain.NODE: "nodes",
    FailureDomain.ZONE: "zones",
}


def place(candidates: Sequence[Candidate], request: Request) -> list[Candidate]:
    """One drive per copy of ``request``, in copy order; see the module doc."""
    copies = len(request.sizes)
    if copies == 0:
        return []
    domain = FailureDomain(request.failure_domain)
    key = _GROUP_KEY[domain]
    main = _eligible(candidates, request.pool, request)
    if request.tail_pool is None:
        return _place_uniform(main, request, domain, key)
    tail = _eligible(candidates, request.tail_pool, request)
    return _place_with_tail(main, tail, request, domain, key)


# -- the two cases -------------------------------------------------------------


def _place_uniform(
    main: Sequence[Candidate],
    request: Request,
    domain: FailureDomain,
    key: Callable[[Candidate], str],
) -> list[Candidate]:
    copies = len(request.sizes)
    need = max(request.sizes)
    if domain is FailureDomain.DRIVE:
        picked = heapq.nlargest(copies, main, key=_free)
        if len(picked) < copies:
            raise _impossible(request, domain, copies, len(picked))
        if picked[-1].free_bytes < need:
            fitting = sum(1 for c in picked if c.free_bytes >= need)
            raise _no_room(request, need, copies, fitting, domain)
        return picked
    best = _best_by_domain(main, key, need)
    if len(best) < copies:
        matching = len(_best_by_domain(main, key, 0))
        if matching < copies:
            raise _impossible(request, domain, copies, matching)
        raise _no_room(request, need, copies, len(best), domain)
    return heapq.nlargest(copies, best.values(), key=_free)


def _place_with_tail(
    main: Sequence[Candidate],
    tail: Sequence[Candidate],
    request: Request,
    domain: FailureDomain,
    key: Callable[[Candidate], str],
) -> list[Candidate]:
    copies = len(request.sizes)
    need = max(request.sizes[:-1], default=0)
    tail_need = request.sizes[-1]
    best = _best_by_domain(main, key, need)
    tail_best = _best_by_domain(tail, key, tail_need)
    # The emptiest tail drive whose domain leaves enough others for the other copies.
    for t in sorted(tail_best.values(), key=_free, reverse=True):
        group = key(t)
        if len(best) - (group in best) >= copies - 1:
            others = heapq.nlargest(copies, best.values(), key=_free)
            picked = [c for c in others if key(c) != group][: copies - 1]
            return [*picked, t]
    # No way: tell a topology that cannot match from one that lacks room.
    all_main = _best_by_domain(main, key, 0).keys()
    all_tail = _best_by_domain(tail, key, 0).keys()
    if not all_tail:
        raise _impossible(request, domain, 1, 0, field="placement.tail_pool_id")
    matching = _matching_with_tail(len(all_main), bool(all_tail - all_main), copies)
    if matching < copies:
        raise _impossible(request, domain, copies, matching)
    fitting = _matching_with_tail(len(best), bool(tail_best.keys() - best.keys()), copies)
    raise _no_room(request, max(need, tail_need), copies, fitting if tail_best else 0, domain)


def _matching_with_tail(main_domains: int, tail_elsewhere: bool, copies: int) -> int:
    """How many copies fit in distinct domains: the others from the main
    domains, the tail copy in a tail domain (outside them if ``tail_elsewhere``)."""
    if main_domains >= copies:
        return copies
    return main_domains + 1 if tail_elsewhere else main_domains


# -- helpers -------------------------------------------------------------------


def _eligible(
    candidates: Sequence[Candidate], pool: Collection[str] | None, request: Request
) -> Sequence[Candidate]:
    """The candidates in ``pool`` that match the selectors, in their order.

    Plain comprehensions: on CPython 3.11 they beat map/compress chains here.
    """
    out: Sequence[Candidate] = candidates
    if pool is not None:
        members = pool if isinstance(pool, set | frozenset) else frozenset(pool)
        out = [c for c in out if c.drive_id in members]
    for key, value in request.node_selector.items():
        out = [c for c in out if c.node_labels.get(key) == value]
    for key, value in request.drive_selector.items():
        out = [c for c in out if c.labels.get(key) == value]
    return out


def _best_by_domain(
    candidates: Sequence[Candidate], key: Callable[[Candidate], str], need: int
) -> dict[str, Candidate]:
    """The emptiest candidate of each failure domain, among those with ``need`` free.

    Ties go to the candidate that comes first, so equal topologies place alike.
    This loop is the hot spot of placement: one specialised copy per domain
    reads the attribute directly (an attrgetter call per drive costs half as
    much again).
    """
    if key is _GROUP_KEY[FailureDomain.ZONE]:
        return _best_by_zone(candidates, need)
    if key is _GROUP_KEY[FailureDomain.NODE]:
        return _best_by_node(candidates, need)
    return _best_by_drive(candidates, need)


def _best_by_zone(candidates: Sequence[Candidate], need: int) -> dict[str, Candidate]:
    best: dict[str, Candidate] = {}
    most: dict[str, int] = {}
    get = most.get
    for c in candidates:
        free = c.free_bytes
        if free >= need and free > get(c.zone, -1):
            most[c.zone] = free
            best[c.zone] = c
    return best


def _best_by_node(candidates: Sequence[Candidate], need: int) -> dict[str, Candidate]:
    best: dict[str, Candidate] = {}
    most: dict[str, int] = {}
    get = most.get
    for c in candidates:
        free = c.free_bytes
        if free >= need and free > get(c.node_id, -1):
            most[c.node_id] = free
            best[c.node_id] = c
    return best


def _best_by_drive(candidates: Sequence[Candidate], need: int) -> dict[str, Candidate]:
    return {c.drive_id: c for c in candidates if c.free_bytes >= need}


def _impossible(
    request: Request,
    domain: FailureDomain,
    needed: int,
    available: int,
    *,
    field: str | None = None,
) -> FailedPrecondition:
    name = field or request.copies_field
    word = _DOMAIN_WORD[domain]
    where = _where(request)
    return FailedPrecondition(
        f"placement impossible: {needed} copies need {needed} distinct {word}, "
        f"but only {available} match{where}",
        reason="PLACEMENT_IMPOSSIBLE",
        metadata={
            "field": name,
            "needed": str(needed),
            "available": str(available),
            "failure_domain": domain.name,
        },
    )


def _no_room(
    request: Request, need: int, copies: int, fitting: int, domain: FailureDomain
) -> FailedPrecondition:
    word = _DOMAIN_WORD[domain]
    return FailedPrecondition(
        f"insufficient capacity: {copies} copies of {human(need)} need room in "
        f"{copies} distinct {word}, but only {fitting} have a drive with that much "
        f"free{_where(request)}",
        reason="INSUFFICIENT_CAPACITY",
        metadata={"needed_bytes": str(need), "copies": str(copies), "fitting": str(fitting)},
    )


def _where(request: Request) -> str:
    parts = []
    if request.pool is not None:
        parts.append("the pool")
    if request.tail_pool is not None:
        parts.append("the tail pool")
    if request.node_selector:
        parts.append("the node selector")
    if request.drive_selector:
        parts.append("the drive selector")
    return f" ({', '.join(parts)})" if parts else ""
