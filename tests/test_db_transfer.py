"""`osd db export`, `import` and `backup`: a store with volumes, snapshots,
attachments and jobs goes from SQLite to PostgreSQL and back with no
difference, a bad document or a store that is not empty is refused with a
clear error, and a backup holds what the store held."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from osd.store.clusters import volume_layout_counts
from osd.store.db import Store
from osd.store.models import VolumeLabelRow
from osd.v1 import volume_pb2
from tests.conftest import Database, _pg_admin_url, running_daemon
from tests.factories import make_topology
from tests.test_jobs import wait_job
from tests.volume_helpers import create, volumes


def osd_db(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osd.cli", "db", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def sqlite_url(folder: Path, name: str) -> str:
    return f"sqlite:///{folder / name}"


@pytest.fixture
def new_postgres() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    admin_url = _pg_admin_url()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"osd_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable: {exc}")
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def populate(url: str) -> None:
    """A store with something of every kind a user makes."""
    store = Store(url)
    store.upgrade()
    store.close()
    with running_daemon(Database("sqlite", url)) as d:
        cluster_id = make_topology(d.store)[0]
        stub = volumes(d)
        first = create(stub, cluster_id, "data", replicas=2, labels={"team": "db"})
        create(stub, cluster_id, "logs", replicas=None)
        stub.CreateSnapshot(volume_pb2.CreateSnapshotRequest(volume_id=first.id, name="s1"))
        node_id = (
            stub.InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=first.id))
            .allocations[0]
            .node_id
        )
        stub.AttachVolume(
            volume_pb2.AttachVolumeRequest(
                volume_id=first.id, node_id=node_id, mode=volume_pb2.ATTACH_MODE_READ_WRITE
            )
        )
        copied = stub.CreateVolume(
            volume_pb2.CreateVolumeRequest(
                cluster_id=cluster_id,
                name="copy",
                size="1G",
                source=volume_pb2.VolumeSource(volume_id=first.id),
            )
        )
        wait_job(d, copied.job.id)


def exported(url: str, folder: Path, name: str) -> dict[str, Any]:
    out = folder / name
    done = osd_db("export", "--database-url", url, "-o", str(out))
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(out.read_text())
    document.pop("exported_at")
    return document


def test_a_store_goes_to_postgresql_and_back_unchanged(tmp_path: Path, new_postgres: str) -> None:
    first = sqlite_url(tmp_path, "first.db")
    populate(first)
    original = exported(first, tmp_path, "first.json")
    counts = {k: len(v) for k, v in original["tables"].items()}
    assert counts["volumes"] == 3 and counts["snapshots"] == 1 and counts["attachments"] == 1
    assert counts["jobs"] == 1 and counts["allocations"] >= 5

    done = osd_db("import", "--database-url", new_postgres, str(tmp_path / "first.json"))
    assert done.returncode == 0, done.stderr
    assert "3 volumes" in done.stdout
    assert exported(new_postgres, tmp_path, "postgres.json") == original

    back = sqlite_url(tmp_path, "back.db")
    done = osd_db("import", "--database-url", back, str(tmp_path / "postgres.json"))
    assert done.returncode == 0, done.stderr
    assert exported(back, tmp_path, "back.json") == original
    # The counts the store derives are not moved, but made again by the import.
    assert "volume_layout_counts" not in original["tables"]
    assert "volume_labels" not in original["tables"]
    labelled = sorted(
        (v["id"], key, value, v["cluster_id"], v["name"])
        for v in original["tables"]["volumes"]
        for key, value in v["labels"].items()
    )
    for url in (first, new_postgres, back):
        store = Store(url)
        try:
            with store.read() as s:
                kept = volume_layout_counts(s)
                indexed = sorted(tuple(r) for r in s.execute(select(VolumeLabelRow.__table__)))
        finally:
            store.close()
        assert sum(n for layouts in kept.values() for _layout, n in layouts) == 3
        assert indexed == labelled != []

    # The imported store serves: the daemon reads it as its own.
    with running_daemon(Database("sqlite", back)) as d:
        listed = volumes(d).ListVolumes(volume_pb2.ListVolumesRequest()).volumes
        assert sorted(v.name for v in listed) == ["copy", "data", "logs"]


def test_bad_documents_and_full_stores_are_refused(tmp_path: Path) -> None:
    source = sqlite_url(tmp_path, "source.db")
    populate(source)
    document = exported(source, tmp_path, "doc.json")
    # Into a store that is not empty.
    done = osd_db("import", "--database-url", source, str(tmp_path / "doc.json"))
    assert done.returncode == 2 and "not empty" in done.stderr
    target = sqlite_url(tmp_path, "target.db")
    for change, word in (
        ({"format": "something"}, "not an osd-export"),
        ({"version": 99}, "version 99"),
        ({"schema_revision": "0001"}, "schema revision"),
        ({"tables": {"volumes": [{"colour": "red"}]}}, "colour"),
    ):
        bad = tmp_path / "bad.json"
        tables = change.pop("tables", None)
        body = {**document, **change, "exported_at": "now"}
        if tables is not None:
            body["tables"] = {**document["tables"], **tables}
        bad.write_text(json.dumps(body))
        done = osd_db("import", "--database-url", target, str(bad))
        assert done.returncode == 2 and word in done.stderr, done.stderr
        # Nothing half-written: the store is still empty.
        check = Store(target)
        try:
            with check.read() as s:
                assert s.execute(text("SELECT count(*) FROM volumes")).scalar() == 0
        finally:
            check.close()
    bad = tmp_path / "garbage.json"
    bad.write_text("{not json")
    done = osd_db("import", "--database-url", target, str(bad))
    assert done.returncode == 2 and "not JSON" in done.stderr


def test_backups_hold_what_the_store_held(tmp_path: Path, new_postgres: str) -> None:
    source = sqlite_url(tmp_path, "source.db")
    populate(source)
    original = exported(source, tmp_path, "source.json")
    done = osd_db("backup", "--database-url", source, "-o", str(tmp_path / "copy.db"))
    assert done.returncode == 0, done.stderr
    assert exported(sqlite_url(tmp_path, "copy.db"), tmp_path, "copy.json") == original

    done = osd_db("import", "--database-url", new_postgres, str(tmp_path / "source.json"))
    assert done.returncode == 0, done.stderr
    dump = tmp_path / "pg.dump"
    done = osd_db("backup", "--database-url", new_postgres, "-o", str(dump))
    assert done.returncode == 0, done.stderr
    assert "pg_dump" in done.stdout
    listed = subprocess.run(
        ["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE DATA public volumes" in listed and "TABLE DATA public jobs" in listed
