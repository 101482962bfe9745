"""Pool operations: named sets of drives that volumes are placed in.

A pool's members are drives added alone and nodes added whole; a whole node
brings every data drive it has, now and later (see osd.store.pools).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osd.engine.shared import paging
from osd.engine.shared import validation as v
from osd.engine.shared.models import Capacity, Changed, Created, Page
from osd.engine.shared.refusals import job_in_progress
from osd.engine.shared.rows import Unchanged, check_generation, require
from osd.engine.shared.validation import id_violations, raise_if
from osd.engine.topology.models import (
    CreatePool,
    ListPools,
    Pool,
    PoolDetail,
    PoolMembers,
    UpdatePool,
)
from osd.engine.topology.views import drives_from_rows
from osd.errors import AlreadyExists, FailedPrecondition, FieldViolation, NotFound
from osd.store import clusters as cluster_repo
from osd.store import drives as drive_repo
from osd.store import nodes as node_repo
from osd.store import pools as repo
from osd.store.db import Store
from osd.store.models import PoolRow, utcnow
from osd.store.state import bump_generation, current_generation


def pools_from_rows(s: Session, rows: Sequence[PoolRow]) -> list[Pool]:
    out: list[Pool] = []
    for row in rows:
        members = drive_repo.by_ids(s, repo.effective_drive_ids(s, row.id))
        total, used = repo.capacity(s, row.id)
        out.append(
            Pool(
                id=row.id,
                cluster_id=row.cluster_id,
                name=row.name,
                labels=dict(row.labels),
                drive_ids=[d.id for d in members],
                node_ids=sorted(repo.member_node_ids(s, row.id)),
                capacity=Capacity(total, used),
                volume_count=repo.volume_count(s, row.id),
                active_job_id=row.active_job_id or "",
                create_time=row.create_time,
                update_time=row.update_time,
                generation=row.generation,
                auto_balance=row.auto_balance,
                auto_balance_threshold_percent=row.auto_balance_threshold_percent,
            )
        )
    return out


def _list_violations(
    values: Sequence[str], field: str, *, duplicates: bool
) -> list[FieldViolation]:
    """Malformed (and, unless ``duplicates`` is allowed, repeated) ids of a list field."""
    out: list[FieldViolation] = []
    seen: set[str] = set()
    for i, value in enumerate(values):
        path = f"{field}[{i}]"
        problems = id_violations(value, path)
        if problems:
            out += problems
        elif value in seen and not duplicates:
            out.append(FieldViolation(path, f"{value} is given twice"))
        seen.add(value)
    return out


@dataclass(frozen=True)
class _Members:
    drive_ids: list[str]
    node_ids: list[str]


def _resolve(
    s: Session, cluster_id: str, drive_ids: Sequence[str], node_ids: Sequence[str]
) -> _Members:
    """Checks that the drives and nodes exist, are of the cluster and (drives) hold data.

    NOT_FOUND names the first unknown entry; INVALID_ARGUMENT names every entry
    of another cluster and every journal drive.
    """
    violations: list[FieldViolation] = []
    for i, drive_id in enumerate(drive_ids):
        path = f"drive_ids[{i}]"
        drive = drive_repo.get(s, drive_id)
        if drive is None:
            raise NotFound.object("drive", path, drive_id)
        if drive.cluster_id != cluster_id:
            violations.append(
                FieldViolation(
                    path,
                    f"drive {drive_id} belongs to cluster {drive.cluster_id}, "
                    f"not to the pool's cluster {cluster_id}",
                )
            )
        elif drive.journal:
            violations.append(
                FieldViolation(path, f"drive {drive_id} is a journal drive: it holds no data")
            )
    for i, node_id in enumerate(node_ids):
        path = f"node_ids[{i}]"
        node = node_repo.get(s, node_id)
        if node is None:
            raise NotFound.object("node", path, node_id)
        if node.cluster_id != cluster_id:
            violations.append(
                FieldViolation(
                    path,
                    f"node {node_id} belongs to cluster {node.cluster_id}, "
                    f"not to the pool's cluster {cluster_id}",
                )
            )
    raise_if(violations)
    return _Members(list(dict.fromkeys(drive_ids)), list(dict.fromkeys(node_ids)))


def _both_empty() -> list[FieldViolation]:
    why = "give at least one drive or node"
    return [FieldViolation("drive_ids", why), FieldViolation("node_ids", why)]


class PoolEngine:
    def __init__(self, store: Store) -> None:
        self._store = store
        # Told when a pool's auto-balance was turned on or its threshold set
        # (the auto-balancer looks at once).
        self.balance_changed: Callable[[], None] = lambda: None

    # -- create ----------------------------------------------------------

    def create(self, spec: CreatePool) -> Created[Pool]:
        violations = id_violations(spec.cluster_id, "cluster_id")
        problem = v.name_violation(spec.name)
        if problem:
            violations.append(problem)
        violations += v.label_violations(spec.labels)
        violations += _list_violations(spec.drive_ids, "drive_ids", duplicates=False)
        violations += _list_violations(spec.node_ids, "node_ids", duplicates=False)
        raise_if(violations)
        try:
            with self._store.write() as s:
                if cluster_repo.get(s, spec.cluster_id) is None:
                    raise NotFound.object("cluster", "cluster_id", spec.cluster_id)
                existing = repo.get_by_name(s, spec.cluster_id, spec.name)
                if existing is not None:
                    return self._existing(s, existing, spec)
                members = _resolve(s, spec.cluster_id, spec.drive_ids, spec.node_ids)
                generation = bump_generation(s)
                now = utcnow()
                row = PoolRow(
                    id=uuid.uuid4().hex,
                    cluster_id=spec.cluster_id,
                    name=spec.name,
                    labels=dict(spec.labels),
                    active_job_id=None,
                    create_time=now,
                    update_time=now,
                    generation=generation,
                )
                repo.add(s, row)
                repo.add_drives(s, row.id, members.drive_ids)
                repo.add_nodes(s, row.id, members.node_ids)
                return Created(pools_from_rows(s, [row])[0], True, generation)
        except IntegrityError:
            with self._store.read() as s:
                existing = repo.get_by_name(s, spec.cluster_id, spec.name)
                if existing is None:
                    raise
                return self._existing(s, existing, spec)

    @staticmethod
    def _existing(s: Session, row: PoolRow, spec: CreatePool) -> Created[Pool]:
        same = (
            row.labels == spec.labels
            and repo.member_drive_ids(s, row.id) == set(spec.drive_ids)
            and repo.member_node_ids(s, row.id) == set(spec.node_ids)
        )
        if not same:
            raise AlreadyExists(
                f"pool {spec.name!r} already exists in cluster {spec.cluster_id} with another spec",
                reason="POOL_EXISTS",
                metadata={"name": spec.name, "pool_id": row.id},
            )
        return Created(pools_from_rows(s, [row])[0], False, current_generation(s))

    # -- read ------------------------------------------------------------

    def inspect(self, pool_id: str) -> PoolDetail:
        v.check_id(pool_id, "pool_id")
        with self._store.read() as s:
            row = require(s, PoolRow, pool_id)
            members = drive_repo.by_ids(s, repo.effective_drive_ids(s, row.id))
            return PoolDetail(pools_from_rows(s, [row])[0], drives_from_rows(s, members))

    def list(self, query: ListPools) -> Page[Pool]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "pool", query)
        after = pages.after_pair(query.page_token, "c", "n")
        violations = id_violations(query.cluster_id, "cluster_id") if query.cluster_id else []
        violations += v.label_violations(query.labels)
        raise_if(violations)
        pattern = v.compile_regex(query.name_regex, "name_regex")
        wanted = dict(query.labels)

        def keep(row: PoolRow) -> bool:
            if pattern is not None and not pattern.search(row.name):
                return False
            return all(row.labels.get(k) == val for k, val in wanted.items())

        with self._store.read() as s:
            rows, token = pages.take(
                repo.scan(s, query.cluster_id or None, after, size + 1),
                size,
                keep,
                lambda r: {"c": r.cluster_id, "n": r.name},
            )
            return Page(pools_from_rows(s, rows), token)

    # -- change ----------------------------------------------------------

    def update(self, change: UpdatePool) -> Changed[Pool]:
        violations = id_violations(change.pool_id, "pool_id")
        if change.name is not None:
            problem = v.name_violation(change.name)
            if problem:
                violations.append(problem)
        if change.labels is not None:
            violations += v.label_violations(change.labels)
        threshold = change.auto_balance_threshold_percent
        if threshold is not None and not (0 < threshold <= 100):  # NaN fails both
            violations.append(
                FieldViolation(
                    "auto_balance_threshold_percent",
                    f"is {threshold}; greater than 0 and at most 100",
                )
            )
        raise_if(violations)
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = require(s, PoolRow, change.pool_id)
                check_generation("pool", row.id, row.generation, change.expected_generation)
                if change.name is not None and change.name != row.name:
                    other = repo.get_by_name(s, row.cluster_id, change.name)
                    if other is not None:
                        raise _name_taken(change.name, other.id)
                    row.name = change.name
                if change.labels is not None:
                    row.labels = dict(change.labels)
                if change.auto_balance is not None:
                    row.auto_balance = change.auto_balance
                if threshold is not None:
                    row.auto_balance_threshold_percent = threshold
                changed = self._stamp(s, row, generation)
        except IntegrityError:
            raise _name_taken(change.name or "", "") from None
        if change.auto_balance or threshold is not None:
            self.balance_changed()
        return changed

    def add_members(self, change: PoolMembers) -> Changed[Pool]:
        """Adds drives and whole nodes; members already present stay as they are."""
        _check_members(change)
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = require(s, PoolRow, change.pool_id)
                check_generation("pool", row.id, row.generation, change.expected_generation)
                members = _resolve(s, row.cluster_id, change.drive_ids, change.node_ids)
                whole = repo.member_node_ids(s, row.id)
                new_nodes = [n for n in members.node_ids if n not in whole]
                repo.add_nodes(s, row.id, new_nodes)
                # A drive that is a member already (alone or through its node) stays as is.
                effective = repo.effective_drive_ids(s, row.id)
                new_drives = [d for d in members.drive_ids if d not in effective]
                repo.add_drives(s, row.id, new_drives)
                if not new_nodes and not new_drives:
                    raise Unchanged(pools_from_rows(s, [row])[0], generation - 1)
                return self._stamp(s, row, generation)
        except Unchanged as same:
            pool: Pool = same.value
            return Changed(pool, same.generation)

    def remove_members(self, change: PoolMembers) -> Changed[Pool]:
        """Removes drives and whole nodes; entries that are not members are ignored.

        Removing a node removes its whole membership and every drive of it
        that is a member alone. Removing one drive of a whole member node
        turns the node's membership into memberships of its other data drives.
        A drive that would leave the pool while it holds allocations of
        volumes (or their snapshots) placed in the pool is refused.
        """
        _check_members(change)
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = require(s, PoolRow, change.pool_id)
                check_generation("pool", row.id, row.generation, change.expected_generation)
                for i, drive_id in enumerate(change.drive_ids):
                    if drive_repo.get(s, drive_id) is None:
                        raise NotFound.object("drive", f"drive_ids[{i}]", drive_id)
                for i, node_id in enumerate(change.node_ids):
                    if node_repo.get(s, node_id) is None:
                        raise NotFound.object("node", f"node_ids[{i}]", node_id)
                before = repo.effective_drive_ids(s, row.id)
                membership = (repo.member_drive_ids(s, row.id), repo.member_node_ids(s, row.id))
                self._remove(s, row.id, set(change.drive_ids), set(change.node_ids))
                if membership == (
                    repo.member_drive_ids(s, row.id),
                    repo.member_node_ids(s, row.id),
                ):
                    raise Unchanged(pools_from_rows(s, [row])[0], generation - 1)
                leaving = before - repo.effective_drive_ids(s, row.id)
                in_use = repo.allocations_placed_through(s, row.id, leaving)
                if in_use:
                    drive_id = min(in_use)
                    raise FailedPrecondition(
                        f"drive {drive_id} holds {in_use[drive_id]} allocations of volumes "
                        "placed in the pool: soft-eject the drive or move the volumes first",
                        reason="POOL_MEMBER_IN_USE",
                        metadata={"drive_id": drive_id, "allocations": str(in_use[drive_id])},
                    )
                return self._stamp(s, row, generation)
        except Unchanged as same:
            pool: Pool = same.value
            return Changed(pool, same.generation)

    @staticmethod
    def _remove(s: Session, pool_id: str, drive_ids: set[str], node_ids: set[str]) -> None:
        alone = repo.member_drive_ids(s, pool_id)
        whole = repo.member_node_ids(s, pool_id)
        # Whole nodes: the membership and every drive of the node that is a member alone.
        gone_nodes = node_ids & whole
        repo.remove_nodes(s, pool_id, gone_nodes)
        node_drives = {d.id for n in node_ids for d in drive_repo.of_node(s, n)}
        repo.remove_drives(s, pool_id, alone & node_drives)
        # Single drives.
        repo.remove_drives(s, pool_id, alone & drive_ids)
        for node_id in sorted(whole - gone_nodes):
            drives = [d for d in drive_repo.of_node(s, node_id) if not d.journal]
            if not any(d.id in drive_ids for d in drives):
                continue
            # One drive of a whole member node leaves: the node's other data drives
            # stay, as members of their own.
            repo.remove_nodes(s, pool_id, [node_id])
            repo.add_drives(s, pool_id, [d.id for d in drives if d.id not in drive_ids])

    def delete(self, pool_id: str) -> int:
        v.check_id(pool_id, "pool_id")
        with self._store.write() as s:
            generation = bump_generation(s)
            row = require(s, PoolRow, pool_id)
            job_id = node_repo.unfinished_job_id(s, row.id, row.active_job_id)
            if job_id:
                raise job_in_progress("pool", row.id, job_id)
            users = {
                "volumes": repo.volume_count(s, row.id),
                "snapshots": repo.snapshot_count(s, row.id),
                "templates": len(repo.template_ids_using(s, row.cluster_id, row.id)),
            }
            remaining = {k: n for k, n in users.items() if n}
            if remaining:
                what = ", ".join(f"{n} {k}" for k, n in remaining.items())
                raise FailedPrecondition(
                    f"pool {row.id} is in use: {what} place data in it",
                    reason="POOL_IN_USE",
                    metadata={k: str(n) for k, n in users.items()},
                )
            repo.remove(s, row.id)
            return generation

    # -- helpers ---------------------------------------------------------

    @staticmethod
    def _stamp(s: Session, row: PoolRow, generation: int) -> Changed[Pool]:
        row.update_time = utcnow()
        row.generation = generation
        s.flush()
        return Changed(pools_from_rows(s, [row])[0], generation)


def _name_taken(name: str, pool_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"pool {name!r} already exists in the cluster",
        reason="POOL_EXISTS",
        metadata={"name": name, "pool_id": pool_id} if pool_id else {"name": name},
    )


def _check_members(change: PoolMembers) -> None:
    """The syntax of a members change: a pool, and drives or nodes, each once."""
    violations = id_violations(change.pool_id, "pool_id")
    if not change.drive_ids and not change.node_ids:
        violations += _both_empty()
    violations += _list_violations(change.drive_ids, "drive_ids", duplicates=True)
    violations += _list_violations(change.node_ids, "node_ids", duplicates=True)
    raise_if(violations)
