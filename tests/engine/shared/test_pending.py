"""Waiting for an operation in progress, bounded by the call's deadline."""

from __future__ import annotations

import time

import pytest

from osd import deadline
from osd.engine.shared import pending
from osd.errors import Aborted


def test_the_first_value_that_is_not_none_is_the_answer() -> None:
    answers = iter([None, None, "done"])
    token = deadline.start(5.0)
    try:
        assert pending.wait_for(lambda: next(answers), "volume", "v1") == "done"
    finally:
        deadline.end(token)


def test_the_call_deadline_ends_the_wait_with_operation_pending() -> None:
    token = deadline.start(0.5)
    started = time.monotonic()
    try:
        with pytest.raises(Aborted) as info:
            pending.wait_for(lambda: None, "volume", "v1")
    finally:
        deadline.end(token)
    # Before the caller's deadline, by the margin.
    assert time.monotonic() - started < 0.5
    assert info.value.reason == "OPERATION_PENDING"
    assert info.value.metadata == {"kind": "volume", "id": "v1"}


@pytest.mark.parametrize("reported", [None, 9.223372036854776e18])
def test_a_call_without_a_deadline_waits_the_default_not_forever(
    reported: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # grpcio reports "no deadline" as a deadline some 2**63 ns away.
    monkeypatch.setattr(pending, "NO_DEADLINE_WAIT_SECONDS", 0.6)
    token = deadline.start(reported)
    started = time.monotonic()
    try:
        with pytest.raises(Aborted):
            pending.wait_for(lambda: None, "snapshot", "s1")
    finally:
        deadline.end(token)
    assert time.monotonic() - started < 5


def test_a_create_is_asked_again_until_what_it_finds_is_settled() -> None:
    # The first call finds another call's object CREATING; that one is rolled
    # back and a third call starts it again (CREATING once more): the answer
    # waits for an object that is settled, never answers one still CREATING.
    answers = iter(["creating", "creating", "creating", "up"])
    token = deadline.start(5.0)
    try:
        got = pending.create_settled(
            lambda: next(answers), lambda r: r != "creating", "volume", lambda r: "v1"
        )
    finally:
        deadline.end(token)
    assert got == "up"


def test_a_settled_first_answer_is_returned_without_waiting() -> None:
    calls: list[int] = []

    def create() -> str:
        calls.append(1)
        return "made"

    assert pending.create_settled(create, lambda r: True, "volume", lambda r: "v1") == "made"
    assert calls == [1]


@pytest.mark.parametrize(("seconds", "margin"), [(0.5, 0.25), (1.0, 0.25), (5.0, 1.0), (60.0, 2.0)])
def test_the_margin_is_a_fifth_of_the_call_within_bounds(seconds: float, margin: float) -> None:
    assert deadline.margin(seconds) == pytest.approx(margin)
    token = deadline.start(seconds)
    try:
        assert deadline.remaining(99) == pytest.approx(seconds - margin, abs=0.05)
    finally:
        deadline.end(token)
