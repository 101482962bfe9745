"""Stored node and drive rows as domain objects, with their usage and pools."""

from __future__ import annotations

from sqlalchemy.orm import Session

from osd.engine.shared.models import Capacity
from osd.engine.topology.models import Drive, Node
from osd.enums import CoordinatorRole, DomainState, DriveState, NodeState
from osd.store import drives as drive_repo
from osd.store import nodes as node_repo
from osd.store import pools as pool_repo
from osd.store.models import DriveRow, NodeRow


def node_from_row(row: NodeRow, usage: node_repo.NodeUsage) -> Node:
    return Node(
        id=row.id,
        cluster_id=row.cluster_id,
        name=row.name,
        zone=row.zone,
        management_addresses=list(row.management_addresses),
        storage_addresses=list(row.storage_addresses),
        labels=dict(row.labels),
        state=NodeState(row.state),
        coordinator_role=CoordinatorRole(row.coordinator_role),
        domain_state=DomainState(row.domain_state),
        capacity=Capacity(usage.total_bytes, usage.used_bytes),
        drive_count=usage.drive_count,
        active_job_id=row.active_job_id or "",
        create_time=row.create_time,
        update_time=row.update_time,
        generation=row.generation,
    )


def nodes_from_rows(session: Session, rows: list[NodeRow]) -> list[Node]:
    usage = node_repo.usage(session, [r.id for r in rows])
    return [node_from_row(r, usage[r.id]) for r in rows]


def drives_from_rows(session: Session, rows: list[DriveRow]) -> list[Drive]:
    """Drive objects for rows, with their allocation counts and pools, in row order."""
    ids = [r.id for r in rows]
    counts = drive_repo.allocation_counts(session, ids)
    pools = pool_repo.pools_of_drives(session, ids)
    return [
        Drive(
            id=r.id,
            node_id=r.node_id,
            cluster_id=r.cluster_id,
            device_path=r.device_path,
            description=r.description,
            labels=dict(r.labels),
            journal=r.journal,
            state=DriveState(r.state),
            capacity=Capacity(r.total_bytes, r.used_bytes),
            allocation_count=counts.get(r.id, 0),
            pool_ids=pools.get(r.id, []),
            model=r.model,
            serial=r.serial,
            ssd=r.ssd,
            active_job_id=r.active_job_id or "",
            create_time=r.create_time,
            update_time=r.update_time,
            generation=r.generation,
        )
        for r in rows
    ]
