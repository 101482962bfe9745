"""Whether a daemon sharing the store is alive, as its peers see it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from osd.engine.shared.members import Members, new_name
from osd.store.db import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'osd.db'}")
    s.upgrade()
    try:
        yield s
    finally:
        s.close()


def test_a_peer_of_this_process_is_alive_while_it_beats(store: Store) -> None:
    first, second = Members(store, new_name()), Members(store, new_name())
    first.register()
    second.register()
    # The periodic sweep of the first must not take over what the second
    # does: both run in this process, and the second beats.
    assert first.alive(second.name)
    assert second.alive(first.name)
    assert first.alive(first.name)
    # Starting, a daemon takes another engine of its process for an earlier
    # run of itself.
    assert not second.alive_at_start(first.name)
    assert second.alive_at_start(second.name)
    second.stop()
    assert not first.alive(second.name)


def test_a_peer_whose_heartbeat_is_old_is_gone(store: Store) -> None:
    watcher = Members(store, new_name(), gone_seconds=0.2)
    quiet = Members(store, new_name())
    quiet.register()
    assert watcher.alive(quiet.name)
    time.sleep(0.3)
    assert not watcher.alive(quiet.name)
    quiet.beat()
    assert watcher.alive(quiet.name)


def test_a_peer_whose_process_ended_is_gone_at_once(store: Store) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    name = f"{socket.gethostname()}:{int(ended.stdout)}:0123456789ab"
    Members(store, name).register()  # its heartbeat is fresh
    assert not Members(store, new_name()).alive(name)
    assert not Members(store, new_name()).alive("unknown-host:1:0123456789ab")
