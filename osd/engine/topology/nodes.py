"""Node operations: the servers of a cluster, their zones, addresses and states."""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osd.engine.jobs.models import Started
from osd.engine.shared import paging
from osd.engine.shared import validation as v
from osd.engine.shared.models import Changed, Created, Page
from osd.engine.shared.refusals import job_in_progress
from osd.engine.shared.rows import Unchanged, check_generation
from osd.engine.shared.validation import enum_value, id_violations, raise_if
from osd.engine.topology.availability import Availability, AvailabilityListener
from osd.engine.topology.labels import apply_labels, check_label_change
from osd.engine.topology.models import (
    ChangeLabels,
    CreateNode,
    Draining,
    ListNodes,
    Node,
    NodeDetail,
    SetNodeState,
    UpdateNode,
)
from osd.engine.topology.views import drives_from_rows, nodes_from_rows
from osd.enums import CoordinatorRole, DomainState, NodeState
from osd.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from osd.store import attachments as attachment_repo
from osd.store import clusters as cluster_repo
from osd.store import drives as drive_repo
from osd.store import nodes as repo
from osd.store import pools as pool_repo
from osd.store.db import Store
from osd.store.models import NodeRow, utcnow
from osd.store.state import bump_generation, current_generation

log = logging.getLogger("osd.engine")

ADDRESS_MAX = 253
ADDRESSES_MAX = 16
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_IPV4_LIKE = re.compile(r"[0-9.]+")


def _host_is_valid(host: str) -> bool:
    if _IPV4_LIKE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOST_RE.fullmatch(host))


def address_problem(address: str) -> str | None:
    """Why ``address`` is not a host name or IP address with an optional port."""
    if not address:
        return "is empty"
    if len(address) > ADDRESS_MAX:
        return f"is {len(address)} characters long; at most {ADDRESS_MAX}"
    port = ""
    if address.startswith("["):  # [IPv6] or [IPv6]:port
        end = address.find("]")
        host, rest = address[1:end], address[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return "is not a host name or an IP address with an optional :port"
        port = rest[1:] if rest else ""
        if rest and not port:
            return "has an empty port"
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
    elif address.count(":") > 1:  # a bare IPv6 address, no port
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return "is not a host name or an IP address with an optional :port"
    else:
        host, _, port = address.partition(":")
        if ":" in address and not port:
            return "has an empty port"
        if not _host_is_valid(host):
            return "is not a host name or an IP address with an optional :port"
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port[:20]!r} is not a number from 1 to 65535"
    return None


def address_violations(addresses: list[str], field: str, *, required: bool) -> list[FieldViolation]:
    if not addresses:
        return [FieldViolation(field, "at least one address is required")] if required else []
    if len(addresses) > ADDRESSES_MAX:
        return [FieldViolation(field, f"has {len(addresses)} addresses; at most {ADDRESSES_MAX}")]
    out: list[FieldViolation] = []
    seen: set[str] = set()
    for i, address in enumerate(addresses):
        problem = address_problem(address)
        if problem is None and address.lower() in seen:
            problem = f"{address!r} is given twice"
        if problem is not None:
            out.append(FieldViolation(f"{field}[{i}]", problem))
        seen.add(address.lower())
    return out


class NodeEngine:
    """Nodes: create, inspect, list, update, labels, states, delete.

    ``availability`` is told, inside the same transaction, which volumes and
    snapshots had allocations turn UNAVAILABLE or ACTIVE (node OFFLINE or
    ONLINE), so whoever keeps volume states can update them.
    """

    def __init__(
        self,
        store: Store,
        availability: AvailabilityListener,
        drain: Callable[[str], Started],
    ) -> None:
        self._store = store
        self._availability = availability
        self._drain = drain

    def drain(self, node_id: str) -> Draining:
        """Starts a NODE_DRAIN job (the job kind owns its rules), and answers
        with the node as the job left it."""
        started = self._drain(node_id)
        return Draining(self.inspect(node_id).node, started.job, started.generation)

    # -- create ----------------------------------------------------------

    def create(self, spec: CreateNode) -> Created[Node]:
        violations = id_violations(spec.cluster_id, "cluster_id")
        for value, field in ((spec.name, "name"), (spec.zone, "zone")):
            problem = v.name_violation(value, field)
            if problem:
                violations.append(problem)
        violations += address_violations(
            spec.management_addresses, "management_addresses", required=True
        )
        violations += address_violations(
            spec.storage_addresses, "storage_addresses", required=False
        )
        violations += v.label_violations(spec.labels)
        raise_if(violations)
        spec = CreateNode(
            cluster_id=spec.cluster_id,
            name=spec.name,
            zone=spec.zone,
            management_addresses=list(spec.management_addresses),
            storage_addresses=list(spec.storage_addresses or spec.management_addresses),
            labels=dict(spec.labels),
        )
        try:
            with self._store.write() as s:
                if cluster_repo.get(s, spec.cluster_id) is None:
                    raise NotFound.object("cluster", "cluster_id", spec.cluster_id)
                existing = repo.get_by_name(s, spec.cluster_id, spec.name)
                if existing is not None:
                    return self._existing(s, existing, spec)
                generation = bump_generation(s)
                # Writers are serialised from here: look again, a concurrent create of
                # the same node may have committed since.
                existing = repo.get_by_name(s, spec.cluster_id, spec.name)
                if existing is not None:
                    raise Unchanged(self._existing(s, existing, spec), generation - 1)
                self._check_addresses(s, spec.cluster_id, spec.management_addresses, None)
                now = utcnow()
                row = NodeRow(
                    id=uuid.uuid4().hex,
                    cluster_id=spec.cluster_id,
                    name=spec.name,
                    zone=spec.zone,
                    management_addresses=spec.management_addresses,
                    storage_addresses=spec.storage_addresses,
                    labels=spec.labels,
                    state=NodeState.ONLINE,
                    coordinator_role=CoordinatorRole.NONE,
                    domain_state=DomainState.READY,
                    active_job_id=None,
                    create_time=now,
                    update_time=now,
                    generation=generation,
                )
                repo.add(s, row)
                return Created(nodes_from_rows(s, [row])[0], True, generation)
        except Unchanged as same:
            found: Created[Node] = same.value
            return found
        except IntegrityError:
            # Another daemon sharing the store added the same name meanwhile.
            with self._store.read() as s:
                existing = repo.get_by_name(s, spec.cluster_id, spec.name)
                if existing is None:
                    raise
                return self._existing(s, existing, spec)

    @staticmethod
    def _existing(s: Session, row: NodeRow, spec: CreateNode) -> Created[Node]:
        same = (
            row.zone == spec.zone
            and list(row.management_addresses) == spec.management_addresses
            and list(row.storage_addresses) == spec.storage_addresses
            and row.labels == spec.labels
        )
        if not same:
            raise AlreadyExists(
                f"node {spec.name!r} already exists in cluster {spec.cluster_id} with another spec",
                reason="NODE_EXISTS",
                metadata={"name": spec.name, "node_id": row.id},
            )
        return Created(nodes_from_rows(s, [row])[0], False, current_generation(s))

    @staticmethod
    def _check_addresses(
        s: Session, cluster_id: str, addresses: list[str], node_id: str | None
    ) -> None:
        wanted = {a.lower(): a for a in addresses}
        for other in repo.of_cluster(s, cluster_id):
            if other.id == node_id:
                continue
            for address in other.management_addresses:
                if address.lower() in wanted:
                    raise AlreadyExists(
                        f"node {other.name!r} of the cluster already has management "
                        f"address {address!r}",
                        reason="NODE_ADDRESS_EXISTS",
                        metadata={"address": wanted[address.lower()], "node_id": other.id},
                    )

    # -- read ------------------------------------------------------------

    def inspect(self, node_id: str) -> NodeDetail:
        v.check_id(node_id, "node_id")
        with self._store.read() as s:
            row = self._get(s, node_id)
            return NodeDetail(
                nodes_from_rows(s, [row])[0], drives_from_rows(s, drive_repo.of_node(s, node_id))
            )

    def list(self, query: ListNodes) -> Page[Node]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self._store.page_key, "node", query)
        after = pages.after_pair(query.page_token, "c", "n")
        violations = id_violations(query.cluster_id, "cluster_id") if query.cluster_id else []
        if query.zone:
            problem = v.name_violation(query.zone, "zone")
            if problem:
                violations.append(problem)
        violations += v.label_violations(query.labels)
        raise_if(violations)
        states = {enum_value(NodeState, s, "states") for s in query.states}
        pattern = v.compile_regex(query.name_regex, "name_regex")
        wanted = dict(query.labels)

        def keep(row: NodeRow) -> bool:
            if states and row.state not in states:
                return False
            if query.zone and row.zone != query.zone:
                return False
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
            return Page(nodes_from_rows(s, rows), token)

    # -- update ----------------------------------------------------------

    def update(self, change: UpdateNode) -> Changed[Node]:
        violations = id_violations(change.node_id, "node_id")
        for value, field in ((change.name, "name"), (change.zone, "zone")):
            if value is not None:
                problem = v.name_violation(value, field)
                if problem:
                    violations.append(problem)
        if change.management_addresses is not None:
            violations += address_violations(
                change.management_addresses, "management_addresses", required=True
            )
        if change.storage_addresses is not None:
            violations += address_violations(
                change.storage_addresses, "storage_addresses", required=False
            )
        if change.labels is not None:
            violations += v.label_violations(change.labels)
        raise_if(violations)
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = self._get(s, change.node_id)
                check_generation("node", row.id, row.generation, change.expected_generation)
                if change.name is not None and change.name != row.name:
                    other = repo.get_by_name(s, row.cluster_id, change.name)
                    if other is not None:
                        raise _name_taken(change.name, other.id)
                    row.name = change.name
                if change.zone is not None and change.zone != row.zone:
                    held = repo.allocation_count(s, row.id)
                    if held:
                        raise FailedPrecondition(
                            f"node {row.id} holds {held} allocations: its zone cannot change "
                            "without breaking the zone spread of the volumes on it",
                            reason="NODE_HAS_ALLOCATIONS",
                            metadata={"allocations": str(held)},
                        )
                    row.zone = change.zone
                if change.management_addresses is not None:
                    self._check_addresses(s, row.cluster_id, change.management_addresses, row.id)
                    row.management_addresses = list(change.management_addresses)
                if change.storage_addresses is not None:
                    row.storage_addresses = list(
                        change.storage_addresses or row.management_addresses
                    )
                if change.labels is not None:
                    row.labels = dict(change.labels)
                return self._stamp(s, row, generation)
        except IntegrityError:
            raise _name_taken(change.name or "", "") from None

    def update_labels(self, change: ChangeLabels) -> Changed[Node]:
        v.check_id(change.object_id, "node_id")
        labels = check_label_change(change)
        assert change.operation is not None
        with self._store.write() as s:
            generation = bump_generation(s)
            row = self._get(s, change.object_id)
            check_generation("node", row.id, row.generation, change.expected_generation)
            row.labels = apply_labels(row.labels, change.operation, labels)
            return self._stamp(s, row, generation)

    def set_state(self, change: SetNodeState) -> Changed[Node]:
        v.check_id(change.node_id, "node_id")
        if change.state is None and change.coordinator_role is None and change.domain_state is None:
            why = "one of state, coordinator_role and domain_state is required"
            raise InvalidArgument.fields(
                [FieldViolation(f, why) for f in ("state", "coordinator_role", "domain_state")]
            )
        state = None
        if change.state is not None:
            state = enum_value(NodeState, change.state, "state")
            if state not in (NodeState.ONLINE, NodeState.OFFLINE):
                raise InvalidArgument.field(
                    "state",
                    f"only ONLINE or OFFLINE can be set here, not {state.name}: maintenance "
                    "goes through Service.EnterMaintenance, draining through DrainNode",
                )
        role = (
            enum_value(CoordinatorRole, change.coordinator_role, "coordinator_role")
            if change.coordinator_role is not None
            else None
        )
        domain = (
            enum_value(DomainState, change.domain_state, "domain_state")
            if change.domain_state is not None
            else None
        )
        try:
            with self._store.write() as s:
                generation = bump_generation(s)
                row = self._get(s, change.node_id)
                check_generation("node", row.id, row.generation, change.expected_generation)
                if state is not None and row.state in (NodeState.MAINTENANCE, NodeState.DRAINING):
                    current = row.state.name
                    raise FailedPrecondition(
                        f"node {row.id} is in {current}: its state changes through "
                        "Service.ExitMaintenance or the drain job",
                        reason="NODE_STATE_CONFLICT",
                        metadata={"state": current},
                    )
                changed = False
                if state is not None and row.agent_offline:
                    # Set by hand: an agent's coming no longer changes it.
                    changed = True
                    row.agent_offline = False
                if state is not None and row.state != state:
                    changed = True
                    row.state = state
                    volumes, snapshots = repo.set_availability(
                        s, row.id, available=state is NodeState.ONLINE
                    )
                    # Told even when no copy is on the node: a node back ONLINE
                    # is room a repair that fell short may have lacked.
                    self._availability(s, Availability(frozenset(volumes), frozenset(snapshots)))
                if role is not None and row.coordinator_role != role:
                    changed = True
                    row.coordinator_role = role
                    if role is CoordinatorRole.PRIMARY:
                        self._demote_other_primaries(s, row, generation)
                if domain is not None and row.domain_state != domain:
                    changed = True
                    row.domain_state = domain
                if not changed:
                    raise Unchanged(nodes_from_rows(s, [row])[0], generation - 1)
                return self._stamp(s, row, generation)
        except Unchanged as nothing:
            node: Node = nothing.value
            return Changed(node, nothing.generation)

    def follow_agent(self, node_id: str, present: bool) -> bool:
        """Keeps a node's state in step with its agent: OFFLINE (marked as the
        agent's doing) when no agent of it runs, ONLINE again when one does,
        if it was the agent's going that took it OFFLINE. A node OFFLINE by
        hand, or in maintenance or draining, is left as it is. True when the
        state changed."""
        with self._store.read() as s:
            row = repo.get(s, node_id)
            if row is None or not _follows(row, present):
                return False
        with self._store.write() as s:
            generation = bump_generation(s)
            row = repo.get(s, node_id)
            if row is None or not _follows(row, present):
                return False
            row.state = NodeState.ONLINE if present else NodeState.OFFLINE
            row.agent_offline = not present
            volumes, snapshots = repo.set_availability(s, row.id, available=present)
            self._availability(s, Availability(frozenset(volumes), frozenset(snapshots)))
            self._stamp(s, row, generation)
        log.warning(
            "node %s is %s: its agent %s",
            node_id,
            "ONLINE" if present else "OFFLINE",
            "is back" if present else "is gone",
        )
        return True

    # -- delete ----------------------------------------------------------

    def delete(self, node_id: str) -> int:
        v.check_id(node_id, "node_id")
        with self._store.write() as s:
            generation = bump_generation(s)
            row = self._get(s, node_id)
            job_id = repo.unfinished_job_id(s, row.id, row.active_job_id)
            if job_id:
                raise job_in_progress("node", row.id, job_id)
            remaining = {k: n for k, n in repo.belongings(s, node_id).items() if n}
            if remaining:
                what = ", ".join(f"{n} {k}" for k, n in remaining.items())
                raise FailedPrecondition(
                    f"node {node_id} is not empty: it still has {what}",
                    reason="NODE_NOT_EMPTY",
                    metadata={k: str(n) for k, n in remaining.items()},
                )
            pool_repo.drop_node(s, node_id)
            attachment_repo.forget_flush_moves_of_node(s, node_id)
            repo.remove(s, node_id)
            return generation

    # -- helpers ---------------------------------------------------------

    @staticmethod
    def _demote_other_primaries(s: Session, primary: NodeRow, generation: int) -> None:
        """One PRIMARY coordinator per cluster: the other PRIMARY nodes of
        ``primary``'s cluster become SECONDARY, stamped with ``generation``."""
        now = utcnow()
        for other in repo.with_role(s, primary.cluster_id, CoordinatorRole.PRIMARY):
            if other.id != primary.id:
                other.coordinator_role = CoordinatorRole.SECONDARY
                other.generation = generation
                other.update_time = now
        s.flush()

    @staticmethod
    def _stamp(s: Session, row: NodeRow, generation: int) -> Changed[Node]:
        row.update_time = utcnow()
        row.generation = generation
        s.flush()
        return Changed(nodes_from_rows(s, [row])[0], generation)

    @staticmethod
    def _get(s: Session, node_id: str) -> NodeRow:
        row = repo.get(s, node_id)
        if row is None:
            raise NotFound.object("node", "node_id", node_id)
        return row


def _follows(row: NodeRow, present: bool) -> bool:
    """Whether an agent's coming or going changes the node's state."""
    if present:
        return row.state == NodeState.OFFLINE and row.agent_offline
    return row.state == NodeState.ONLINE


def _name_taken(name: str, node_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"node {name!r} already exists in the cluster",
        reason="NODE_EXISTS",
        metadata={"name": name, "node_id": node_id} if node_id else {"name": name},
    )
