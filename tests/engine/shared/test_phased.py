"""The phased-change helper: steps, their undo, the rollback and the finish."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from osd.engine.drivers import DriverError
from osd.engine.shared import phased
from osd.errors import Unavailable
from osd.store.db import Store
from osd.store.state import current_generation


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'osd.db'}")
    s.upgrade()
    try:
        yield s
    finally:
        s.close()


def _steps(log: list[str], fail_at: int | None = None, n: int = 3) -> list[phased.Step]:
    def do(i: int) -> None:
        if i == fail_at:
            raise DriverError(f"step {i} broke", retryable=True)
        log.append(f"do {i}")

    return [
        phased.Step(f"step {i}", lambda i=i: do(i), lambda i=i: log.append(f"undo {i}"))
        for i in range(n)
    ]


def test_every_step_then_the_finish_in_one_write(store: Store) -> None:
    log: list[str] = []
    with store.read() as s:
        before = current_generation(s)

    def finish(s: Session, generation: int) -> int:
        log.append("finish")
        return generation

    generation = phased.run(store, _steps(log), finish=finish, failed=phased.failing("x"))
    assert log == ["do 0", "do 1", "do 2", "finish"]
    assert generation == before + 1


def test_a_failed_step_undoes_the_done_ones_in_reverse_then_rolls_back(store: Store) -> None:
    log: list[str] = []
    with pytest.raises(Unavailable) as info:
        phased.run(
            store,
            _steps(log, fail_at=2),
            finish=lambda s, g: log.append("finish"),
            rollback=lambda: log.append("rollback"),
            failed=phased.failing("making it failed and was rolled back"),
        )
    assert log == ["do 0", "do 1", "undo 1", "undo 0", "rollback"]
    err = info.value
    assert err.reason == "DRIVER_ERROR"
    assert (
        err.message
        == "making it failed and was rolled back: the storage driver failed: step 2 broke"
    )
    assert err.metadata == {"retryable": "true"}
    assert isinstance(info.value.__cause__, DriverError)


def test_an_undo_that_fails_is_logged_and_the_rest_still_run(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []

    def broken_undo() -> None:
        raise DriverError("undo broke")

    steps = [
        phased.Step("first", lambda: log.append("do 0"), lambda: log.append("undo 0")),
        phased.Step("second", lambda: log.append("do 1"), broken_undo),
        phased.Step("third", lambda: (_ for _ in ()).throw(DriverError("third broke"))),
    ]
    with pytest.raises(Unavailable):
        phased.run(
            store,
            steps,
            finish=lambda s, g: None,
            rollback=lambda: log.append("rollback"),
            failed=phased.failing("x"),
        )
    assert log == ["do 0", "do 1", "undo 0", "rollback"]
    assert "undoing second failed (left for the operator): undo broke" in caplog.text


def test_only_the_caught_errors_are_rolled_back(store: Store) -> None:
    log: list[str] = []

    def bug() -> None:
        raise KeyError("a bug, not a driver failure")

    steps = [phased.Step("ok", lambda: log.append("do"), lambda: log.append("undo"))]
    steps.append(phased.Step("bug", bug))
    with pytest.raises(KeyError):
        phased.run(
            store,
            steps,
            finish=lambda s, g: None,
            rollback=lambda: log.append("rollback"),
            failed=phased.failing("x"),
        )
    # Left for recovery, as a crash would leave it: nothing undone here.
    assert log == ["do"]


def test_failed_may_re_raise_the_error_itself(store: Store) -> None:
    def bug() -> None:
        raise ValueError("kept")

    with pytest.raises(ValueError, match="kept"):
        phased.run(
            store,
            [phased.Step("bug", bug)],
            finish=lambda s, g: None,
            failed=lambda exc: exc,
            catch=(Exception,),
        )
