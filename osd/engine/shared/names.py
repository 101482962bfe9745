"""Objects by name: the id of the cluster, node, pool, template, volume,
snapshot or datastore a request names instead of giving its id.

Clusters and datastores are named across the store; the others within their
cluster. A name the caller may not see (a volume or snapshot it has no
access to) is NOT_FOUND, as if it did not exist, so a name lookup tells no
more than a read by id would.
"""

from __future__ import annotations

from sqlalchemy import select

from osd.engine.access.principal import current
from osd.engine.shared import validation as v
from osd.engine.volumes.access import Visibility
from osd.errors import FieldViolation, InvalidArgument, NotFound
from osd.store.db import Store
from osd.store.models import (
    Base,
    ClusterRow,
    DatastoreRow,
    NodeRow,
    PoolRow,
    SnapshotRow,
    TemplateRow,
    VolumeRow,
)

ROWS: dict[str, type[Base]] = {
    "cluster": ClusterRow,
    "datastore": DatastoreRow,
    "node": NodeRow,
    "pool": PoolRow,
    "template": TemplateRow,
    "volume": VolumeRow,
    "snapshot": SnapshotRow,
}
# Kinds named within their cluster (the others across the store).
IN_CLUSTER = frozenset({"node", "pool", "template", "volume", "snapshot"})


class Names:
    """Resolves names to ids, for whoever serves a request by name."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def resolve(self, kind: str, name: str, cluster_id: str = "") -> str:
        """The id of the ``kind`` named ``name`` (in ``cluster_id`` for the kinds
        named within a cluster). INVALID_ARGUMENT names ``cluster_id`` when it
        is missing or malformed; NOT_FOUND names ``<kind>_name``."""
        row_type = ROWS[kind]
        field = f"{kind}_name"
        # No object has a name outside the name rule, and a store may refuse
        # to compare with one (PostgreSQL takes no NUL in text).
        v.check_name(name, field)
        scoped = kind in IN_CLUSTER
        if scoped:
            if not cluster_id:
                raise InvalidArgument.field("cluster_id", f"required with {field}")
            v.check_id(cluster_id, "cluster_id")
        table = row_type.__table__
        query = select(table.c.id).where(table.c.name == name)
        if scoped:
            query = query.where(table.c.cluster_id == cluster_id)
        # Which id has the name is the same for every caller: kept while the
        # store's generation stands still. Whether this caller may see it is
        # asked after (no query for an admin).
        found = self._store.kept((f"{kind} named", cluster_id, name), lambda s, _: s.scalar(query))
        if found is not None and kind in ("volume", "snapshot") and not current().is_admin:
            with self._store.read() as s:
                seen = Visibility(s)
                if not (seen.volume(found) if kind == "volume" else seen.snapshot(found)):
                    found = None
        if found is None:
            where = f" in cluster {cluster_id}" if scoped else ""
            raise NotFound(
                f"no {kind} is named {name!r}{where}",
                metadata={"kind": kind, "field": field, "name": name},
                violations=(FieldViolation(field, f"no {kind} is named {name!r}{where}"),),
            )
        return str(found)
