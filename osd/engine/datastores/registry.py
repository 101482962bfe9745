"""The datastore registry: database engines, their versions and the images they boot from.

A datastore (e.g. "mysql") is created implicitly by registering its first
version. Each version names an image: a snapshot marked as an image. At most
one version of a datastore is its default, and the default is always active;
both rules are checked inside the write transaction that changes them.

For the volume code, :func:`provisioning_source` resolves a version into the
image to clone and the labels to put on the new volume.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from sqlalchemy.orm import Session

from osd.engine.datastores.models import (
    CreateDatastoreVersion,
    Datastore,
    DatastoreVersion,
    ListVersionsQuery,
    ProvisioningSource,
    UpdateDatastoreVersion,
    VersionRegistered,
)
from osd.engine.shared import paging
from osd.engine.shared import validation as v
from osd.engine.shared.models import Changed, ListQuery, Page
from osd.engine.shared.rows import require, stamp
from osd.enums import SnapshotState
from osd.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from osd.store import datastores as repo
from osd.store.db import Store
from osd.store.models import DatastoreRow, DatastoreVersionRow, utcnow
from osd.store.state import bump_generation

__all__ = ["DatastoreEngine", "ProvisioningSource", "provisioning_source"]

PACKAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:~-]{0,199}")
PACKAGES_MAX = 100

VERSION_LIST = "datastore version"
DATASTORE_LIST = "datastore"


# -- input rules ----------------------------------------------------------------


def _id_violation(value: str, field: str) -> FieldViolation | None:
    try:
        v.check_id(value, field)
    except InvalidArgument as exc:
        return exc.violations[0]
    return None


def _package_violations(packages: Sequence[str], field: str = "packages") -> list[FieldViolation]:
    """Why ``packages`` is not a list of package names; empty when it is one."""
    out: list[FieldViolation] = []
    if len(packages) > PACKAGES_MAX:
        out.append(FieldViolation(field, f"has {len(packages)} packages; at most {PACKAGES_MAX}"))
    first: dict[str, int] = {}
    for i, package in enumerate(packages):
        where = f"{field}[{i}]"
        if not PACKAGE_RE.fullmatch(package):
            out.append(
                FieldViolation(
                    where,
                    f"{package[:80]!r} is not a package name: 1 to 200 characters from "
                    "[A-Za-z0-9._+:~-], starting with a letter or digit",
                )
            )
        elif package in first:
            out.append(FieldViolation(where, f"{package!r} repeats {field}[{first[package]}]"))
        else:
            first[package] = i
    return out


def _raise_if(violations: Sequence[FieldViolation | None]) -> None:
    found = [x for x in violations if x is not None]
    if found:
        raise InvalidArgument.fields(found)


# -- errors the rules answer ----------------------------------------------------


def _image_not_found(snapshot_id: str, why: str) -> NotFound:
    return NotFound(
        "image not found",
        reason="IMAGE_NOT_FOUND",
        metadata={"kind": "image", "field": "image_snapshot_id", "id": snapshot_id},
        violations=(FieldViolation("image_snapshot_id", why),),
    )


def _check_image(s: Session, snapshot_id: str) -> None:
    """The snapshot exists, is marked as an image and is not being deleted."""
    snap = repo.get_snapshot(s, snapshot_id)
    if snap is None:
        raise _image_not_found(snapshot_id, f"snapshot {snapshot_id!r} does not exist")
    if not snap.image:
        raise _image_not_found(snapshot_id, f"snapshot {snapshot_id!r} is not marked as an image")
    if snap.state == SnapshotState.DELETING:
        raise _image_not_found(snapshot_id, f"snapshot {snapshot_id!r} is being deleted")


def _inactive_default() -> InvalidArgument:
    return InvalidArgument.field("default", "cannot be set on an inactive version")


# -- conversions ----------------------------------------------------------------


def _version(row: DatastoreVersionRow, datastore: DatastoreRow, volumes: int) -> DatastoreVersion:
    return DatastoreVersion(
        id=row.id,
        datastore_id=row.datastore_id,
        datastore_name=datastore.name,
        name=row.name,
        manager=row.manager,
        image_snapshot_id=row.image_snapshot_id,
        packages=list(row.packages),
        active=row.active,
        default=row.is_default,
        volume_count=volumes,
        create_time=row.create_time,
        update_time=row.update_time,
        generation=row.generation,
    )


def _datastore(row: DatastoreRow, default: DatastoreVersionRow | None, versions: int) -> Datastore:
    return Datastore(
        id=row.id,
        name=row.name,
        default_version_id=default.id if default is not None else "",
        default_version_name=default.name if default is not None else "",
        version_count=versions,
        create_time=row.create_time,
        update_time=row.update_time,
        generation=row.generation,
    )


def _version_view(s: Session, row: DatastoreVersionRow) -> DatastoreVersion:
    datastore = s.get_one(DatastoreRow, row.datastore_id)
    return _version(row, datastore, repo.volume_counts(s, [row.id]).get(row.id, 0))


def _datastore_view(s: Session, row: DatastoreRow) -> Datastore:
    default = repo.defaults(s, [row.id]).get(row.id)
    return _datastore(row, default, repo.version_counts(s, [row.id]).get(row.id, 0))


# -- for the volume code --------------------------------------------------------


def provisioning_source(session: Session, datastore_version_id: str) -> ProvisioningSource:
    """Resolves CreateVolume's ``source.datastore_version_id``.

    Call it in the write transaction that inserts the volume row, after
    ``bump_generation``: writers are serialised, so the version cannot be
    deleted or deactivated before the volume row commits, and the volume
    then keeps it from being deleted (DeleteDatastoreVersion answers
    INSTANCES_EXIST while a volume names it).

    The volume must then be created as a clone of ``image_snapshot_id``
    (``parent_snapshot_id``), with ``datastore_version_id`` set to the
    version's id, ``source_kind`` SourceKind.DATASTORE_VERSION and
    ``source_id`` the version's id, and carry the result's ``labels``
    ("osd.dev/datastore" and "osd.dev/datastore-version", the names) on top
    of the labels the request asked for.

    Args:
        session: the caller's open transaction.
        datastore_version_id: the id the request named.

    Returns:
        The image to clone, the datastore's and the version's names, and the
        labels the volume carries.

    Raises:
        InvalidArgument: the id is empty or malformed (field
            ``source.datastore_version_id``).
        NotFound: no such version (field ``source.datastore_version_id``).
        FailedPrecondition: reason DATASTORE_VERSION_INACTIVE, the version is
            not active (ErrorInfo metadata ``datastore_version_id``).
    """
    field = "source.datastore_version_id"
    v.check_id(datastore_version_id, field)
    row = require(session, DatastoreVersionRow, datastore_version_id, field)
    datastore = session.get_one(DatastoreRow, row.datastore_id)
    if not row.active:
        raise FailedPrecondition(
            f"datastore version {datastore.name} {row.name} ({row.id}) is inactive: "
            "no new volumes may be provisioned from it",
            reason="DATASTORE_VERSION_INACTIVE",
            metadata={"datastore_version_id": row.id},
        )
    return ProvisioningSource(
        datastore_version_id=row.id,
        image_snapshot_id=row.image_snapshot_id,
        datastore_name=datastore.name,
        version_name=row.name,
    )


# -- the engine -----------------------------------------------------------------


class DatastoreEngine:
    """DatastoreService's operations. Every one of them is for admins."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # versions

    def create_version(self, spec: CreateDatastoreVersion) -> VersionRegistered:
        """Registers a version, creating its datastore when absent (not idempotent)."""
        manager = spec.manager or spec.datastore
        violations: list[FieldViolation | None] = [
            v.name_violation(spec.datastore, "datastore"),
            v.name_violation(spec.name, "name"),
            v.name_violation(manager, "manager") if spec.manager else None,
            _id_violation(spec.image_snapshot_id, "image_snapshot_id"),
            *_package_violations(spec.packages),
        ]
        active = True if spec.active is None else spec.active
        if spec.default and not active:
            violations.append(FieldViolation("default", "cannot be set on an inactive version"))
        _raise_if(violations)
        with self._store.write() as s:
            generation = bump_generation(s)
            now = utcnow()
            datastore = repo.get_by_name(s, spec.datastore)
            created = datastore is None
            if datastore is None:
                datastore = DatastoreRow(
                    id=uuid.uuid4().hex,
                    name=spec.datastore,
                    create_time=now,
                    update_time=now,
                    generation=generation,
                )
                repo.add(s, datastore)
            else:
                existing = repo.get_version_by_name(s, datastore.id, spec.name)
                if existing is not None:
                    raise AlreadyExists(
                        f"datastore version {spec.datastore} {spec.name} already exists",
                        reason="DATASTORE_VERSION_EXISTS",
                        metadata={
                            "datastore_id": datastore.id,
                            "datastore_version_id": existing.id,
                        },
                    )
            _check_image(s, spec.image_snapshot_id)
            if spec.default:
                repo.clear_default(s, datastore.id, keep=None, generation=generation)
            row = DatastoreVersionRow(
                id=uuid.uuid4().hex,
                datastore_id=datastore.id,
                name=spec.name,
                manager=manager,
                image_snapshot_id=spec.image_snapshot_id,
                packages=list(spec.packages),
                active=active,
                is_default=spec.default,
                create_time=now,
                update_time=now,
                generation=generation,
            )
            repo.add_version(s, row)
            stamp(datastore, generation)
            s.flush()
            return VersionRegistered(_version(row, datastore, 0), created, generation)

    def inspect_version(self, datastore_version_id: str) -> DatastoreVersion:
        v.check_id(datastore_version_id, "datastore_version_id")
        with self._store.read() as s:
            row = require(s, DatastoreVersionRow, datastore_version_id, "datastore_version_id")
            return _version_view(s, row)

    def list_versions(self, query: ListVersionsQuery) -> Page[DatastoreVersion]:
        """Versions in (datastore name, version name) order, one page at a time."""
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, VERSION_LIST, query)
        after = pages.after_pair(query.page_token, "d", "v")
        if query.datastore_id and query.datastore_name:
            why = "give datastore_id or datastore_name, not both"
            raise InvalidArgument.fields(
                [FieldViolation("datastore_id", why), FieldViolation("datastore_name", why)]
            )
        if query.datastore_id:
            v.check_id(query.datastore_id, "datastore_id")
        if query.datastore_name:
            v.check_name(query.datastore_name, "datastore_name")
        with self._store.read() as s:
            datastore_id: str | None = None
            if query.datastore_id:
                datastore_id = require(s, DatastoreRow, query.datastore_id, "datastore_id").id
            elif query.datastore_name:
                named = repo.get_by_name(s, query.datastore_name)
                if named is None:
                    raise NotFound.object("datastore", "datastore_name", query.datastore_name)
                datastore_id = named.id
            pairs, token = pages.take(
                repo.scan_versions(
                    s, after, size + 1, datastore_id=datastore_id, active_only=query.active_only
                ),
                size,
                lambda _: True,
                lambda p: {"d": p[1].name, "v": p[0].name},
            )
            counts = repo.volume_counts(s, [row.id for row, _ in pairs])
            return Page([_version(row, ds, counts.get(row.id, 0)) for row, ds in pairs], token)

    def update_version(self, change: UpdateDatastoreVersion) -> Changed[DatastoreVersion]:
        """Changes the fields given; keeps one active default per datastore at most."""
        violations: list[FieldViolation | None] = [
            _id_violation(change.datastore_version_id, "datastore_version_id")
        ]
        if change.manager is not None:
            violations.append(v.name_violation(change.manager, "manager"))
        if change.packages is not None:
            violations.extend(_package_violations(change.packages))
        if change.image_snapshot_id is not None:
            violations.append(_id_violation(change.image_snapshot_id, "image_snapshot_id"))
        if change.default is True and change.active is False:
            violations.append(_inactive_default().violations[0])
        _raise_if(violations)
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(
                s, DatastoreVersionRow, change.datastore_version_id, "datastore_version_id"
            )
            if change.expected_generation and change.expected_generation != row.generation:
                raise Aborted(
                    f"datastore version {row.id} is at generation {row.generation}, "
                    f"not {change.expected_generation}",
                    reason="GENERATION_MISMATCH",
                    metadata={"generation": str(row.generation)},
                )
            active = row.active if change.active is None else change.active
            default = row.is_default if change.default is None else change.default
            if default and not active:
                if change.default:
                    raise _inactive_default()
                raise InvalidArgument.field(
                    "active",
                    "cannot be cleared on the default version; clear default in the same update",
                )
            if change.image_snapshot_id is not None:
                _check_image(s, change.image_snapshot_id)
                row.image_snapshot_id = change.image_snapshot_id
            if change.manager is not None:
                row.manager = change.manager
            if change.packages is not None:
                row.packages = list(change.packages)
            datastore = s.get_one(DatastoreRow, row.datastore_id)
            if default != row.is_default:
                if default:
                    repo.clear_default(s, row.datastore_id, keep=row.id, generation=generation)
                stamp(datastore, generation)
            row.active = active
            row.is_default = default
            row.update_time = utcnow()
            row.generation = generation
            s.flush()
            counts = repo.volume_counts(s, [row.id])
            return Changed(_version(row, datastore, counts.get(row.id, 0)), generation)

    def delete_version(self, datastore_version_id: str) -> int:
        """Deletes a version no existing volume was provisioned from; the datastore stays."""
        v.check_id(datastore_version_id, "datastore_version_id")
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(s, DatastoreVersionRow, datastore_version_id, "datastore_version_id")
            volumes = repo.volume_counts(s, [row.id]).get(row.id, 0)
            if volumes:
                raise FailedPrecondition(
                    "instances exist",
                    reason="INSTANCES_EXIST",
                    metadata={"count": str(volumes), "datastore_version_id": row.id},
                )
            stamp(s.get_one(DatastoreRow, row.datastore_id), generation)
            repo.remove_version(s, row.id)
            return generation

    # datastores

    def inspect(self, datastore_id: str) -> Datastore:
        v.check_id(datastore_id, "datastore_id")
        with self._store.read() as s:
            return _datastore_view(s, require(s, DatastoreRow, datastore_id, "datastore_id"))

    def list(self, query: ListQuery) -> Page[Datastore]:
        """Datastores in name order, each with its default version, one page at a time."""
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, DATASTORE_LIST, query)
        after = pages.after_str(query.page_token, "name")
        with self._store.read() as s:
            rows, token = pages.take(
                repo.scan_by_name(s, after, size + 1),
                size,
                lambda _: True,
                lambda r: {"name": r.name},
            )
            ids = [r.id for r in rows]
            defaults = repo.defaults(s, ids)
            counts = repo.version_counts(s, ids)
            return Page(
                [_datastore(r, defaults.get(r.id), counts.get(r.id, 0)) for r in rows], token
            )

    def delete(self, datastore_id: str) -> int:
        """Deletes a datastore that has no versions left."""
        v.check_id(datastore_id, "datastore_id")
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(s, DatastoreRow, datastore_id, "datastore_id")
            versions = repo.version_counts(s, [row.id]).get(row.id, 0)
            if versions:
                raise FailedPrecondition(
                    f"datastore {row.name} still has {versions} versions: delete them first",
                    reason="DATASTORE_NOT_EMPTY",
                    metadata={"count": str(versions)},
                )
            repo.remove(s, row.id)
            return generation
