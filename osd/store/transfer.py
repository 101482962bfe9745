"""The store as one portable document, and back: ``osd db export`` and
``osd db import``; and ``osd db backup``.

The document is JSON: a header (``format``, its ``version``, the schema
revision it was written at, when) and every table's rows, parents before
children, each row a mapping of column to value (but the counts the store
derives from them, which an import makes again). Values are as JSON holds
them: timestamps as ISO 8601 in UTC, enums as their numbers, JSON columns as
they are. It moves a store between backends (SQLite to PostgreSQL and
back) or between hosts; an import goes into an empty store at the same
schema revision, in one transaction, so a failed import leaves nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, func, insert, select

from osd.store import migrate
from osd.store.db import Store
from osd.store.models import Base, UTCDateTime

FORMAT = "osd-export"
VERSION = 1


class TransferError(Exception):
    """A document that cannot be imported here, or a store that cannot take it."""


# Tables the store derives from others as it writes them (by triggers): not
# moved, but made again as the rows they count are imported.
DERIVED = frozenset({"volume_layout_counts", "volume_labels", "snapshot_counts"})


def _tables() -> list[Table]:
    return [t for t in Base.metadata.sorted_tables if t.name not in DERIVED]


def _dump(column: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, UTCDateTime) or isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, int | float | str | bool | list | dict):
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else value
    raise TransferError(f"column {column.table.name}.{column.name}: cannot write {value!r}")


def _load(column: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, UTCDateTime):
        return datetime.fromisoformat(value).astimezone(UTC)
    return value


def export(store: Store) -> dict[str, Any]:
    """Every table's rows, as one document, read in one transaction."""
    revision = migrate.current_revision(store.engine)
    tables: dict[str, list[dict[str, Any]]] = {}
    with store.read() as s:
        for table in _tables():
            order = list(table.primary_key.columns) or list(table.columns)
            rows = s.execute(select(table).order_by(*order)).mappings()
            tables[table.name] = [
                {c.name: _dump(c, row[c.name]) for c in table.columns} for row in rows
            ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "schema_revision": revision,
        "exported_at": datetime.now(UTC).isoformat(),
        "tables": tables,
    }


def import_(store: Store, document: dict[str, Any]) -> dict[str, int]:
    """Writes the document's rows into ``store`` (migrated to the same
    revision, and empty); answers the rows written per table."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TransferError(f"not an {FORMAT} document")
    if document.get("version") != VERSION:
        raise TransferError(
            f"document version {document.get('version')!r}: this osd reads version {VERSION}"
        )
    revision = migrate.current_revision(store.engine)
    if document.get("schema_revision") != revision:
        raise TransferError(
            f"the document is at schema revision {document.get('schema_revision')!r} and the "
            f"store at {revision!r}: import into a store at the document's revision, then "
            "run osd db upgrade"
        )
    given = document.get("tables")
    if not isinstance(given, dict):
        raise TransferError("the document has no tables")
    known = {t.name for t in _tables()}
    unknown = sorted(set(given) - known - DERIVED)
    if unknown:
        raise TransferError(f"the document has tables this schema lacks: {', '.join(unknown)}")
    written: dict[str, int] = {}
    with store.write() as s:
        for table in _tables():
            if table.name == "osd_state":
                continue
            if s.execute(select(func.count()).select_from(table)).scalar():
                raise TransferError(
                    f"the store is not empty (table {table.name} has rows): import into a new store"
                )
        for table in _tables():
            rows = given.get(table.name, [])
            columns = {c.name: c for c in table.columns}
            loaded = []
            for row in rows:
                extra = set(row) - set(columns)
                if extra:
                    raise TransferError(
                        f"table {table.name}: columns this schema lacks: {', '.join(sorted(extra))}"
                    )
                loaded.append({name: _load(columns[name], value) for name, value in row.items()})
            if table.name == "osd_state":
                s.execute(delete(table))
            if loaded:
                s.execute(insert(table), loaded)
            written[table.name] = len(loaded)
    store.cache.clear()
    store.page_cache.clear()
    return written


def backup(store: Store, target: Path) -> str:
    """A consistent copy of the store at ``target``: SQLite's online backup,
    or pg_dump's custom format for PostgreSQL. Answers how it was made."""
    url = store.engine.url
    if store.dialect == "sqlite":
        source = sqlite3.connect(url.database or ":memory:")
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
            finally:
                copy.close()
        finally:
            source.close()
        return "SQLite online backup"
    tool = shutil.which("pg_dump")
    if tool is None:
        raise TransferError(
            "pg_dump is not installed (Debian: postgresql-client); osd db export writes a "
            "portable copy without it"
        )
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run(
        [tool, "--format=custom", "--no-owner", f"--file={target}", dsn],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise TransferError(f"pg_dump failed: {done.stderr.strip()[-500:]}")
    return "pg_dump, custom format (restore with pg_restore)"
