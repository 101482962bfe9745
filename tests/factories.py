"""Store-level builders for tests that need objects whose API is not the subject.

Tests of a service go through its API; these builders set up the *other*
objects a test needs (a topology under a volume test, say) directly in the
store, each in its own committed write.
"""

from __future__ import annotations

import uuid

from osd.engine.enums import DriveState, NodeState
from osd.store.db import Store
from osd.store.models import ClusterRow, DriveRow, NodeRow, utcnow
from osd.store.state import bump_generation
from tests.helpers import node_row

GIB = 1 << 30


def make_cluster(store: Store, name: str = "c1") -> str:
    now = utcnow()
    with store.write() as s:
        gen = bump_generation(s)
        row = ClusterRow(
            id=uuid.uuid4().hex,
            name=name,
            labels={},
            block=True,
            file=True,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
    return row.id


def make_node(
    store: Store,
    cluster_id: str,
    name: str,
    zone: str = "z1",
    *,
    state: NodeState = NodeState.ONLINE,
    labels: dict[str, str] | None = None,
) -> str:
    with store.write() as s:
        gen = bump_generation(s)
        row = node_row(cluster_id, name, zone)
        row.state = int(state)
        row.labels = dict(labels or {})
        row.management_addresses = [f"{name}.mgmt"]
        row.storage_addresses = [f"{name}.data"]
        row.generation = gen
        s.add(row)
    return row.id


def make_drive(
    store: Store,
    node_id: str,
    device_path: str = "/dev/sdb",
    total_bytes: int = 100 * GIB,
    *,
    state: DriveState = DriveState.ONLINE,
    journal: bool = False,
    labels: dict[str, str] | None = None,
) -> str:
    now = utcnow()
    with store.write() as s:
        gen = bump_generation(s)
        node = s.get_one(NodeRow, node_id)
        row = DriveRow(
            id=uuid.uuid4().hex,
            cluster_id=node.cluster_id,
            node_id=node_id,
            device_path=device_path,
            description="",
            labels=dict(labels or {}),
            journal=journal,
            state=int(state),
            total_bytes=total_bytes,
            used_bytes=0,
            model="fake",
            serial=uuid.uuid4().hex[:12],
            ssd=True,
            active_job_id=None,
            create_time=now,
            update_time=now,
            generation=gen,
        )
        s.add(row)
    return row.id


def make_topology(
    store: Store,
    zones: int = 3,
    nodes_per_zone: int = 1,
    drives_per_node: int = 2,
    drive_bytes: int = 100 * GIB,
    cluster_name: str = "c1",
) -> tuple[str, list[str], list[str]]:
    """A cluster of ``zones`` zones; returns (cluster id, node ids, drive ids)."""
    cluster_id = make_cluster(store, cluster_name)
    nodes: list[str] = []
    drives: list[str] = []
    for z in range(zones):
        for n in range(nodes_per_zone):
            node_id = make_node(store, cluster_id, f"n{z}-{n}", f"zone{z}")
            nodes.append(node_id)
            for d in range(drives_per_node):
                drives.append(make_drive(store, node_id, f"/dev/sd{chr(98 + d)}", drive_bytes))
    return cluster_id, nodes, drives
