"""Helpers for reading gRPC errors in tests, and a node record."""

from __future__ import annotations

import uuid

from osd.client import CallError
from osd.client import error_of as error_of  # re-exported for the tests
from osd.store.models import NodeRow, utcnow

# A failed call, decoded as clients of the daemon decode it.
ErrorView = CallError


def node_row(cluster_id: str, name: str, zone: str = "z1") -> NodeRow:
    """A node record, for tests that need one in the store without the node API."""
    now = utcnow()
    return NodeRow(
        id=uuid.uuid4().hex,
        cluster_id=cluster_id,
        name=name,
        zone=zone,
        management_addresses=["10.0.0.1"],
        storage_addresses=["10.0.1.1"],
        labels={},
        state=1,
        coordinator_role=1,
        domain_state=1,
        create_time=now,
        update_time=now,
        generation=1,
    )
