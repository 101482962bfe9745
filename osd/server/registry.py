"""Which gRPC services osd serves, and which of their RPCs are still pending.

Every service of the osd.v1 contract is served. An RPC is either implemented
by its servicer class or pending: a pending RPC answers UNIMPLEMENTED with a
message that names the capability it waits for. ``PENDING`` is the explicit
list; tests/test_parity.py checks it against the descriptors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from osd.contract import ServiceEntry
from osd.engine.engine import Engine
from osd.errors import Unimplemented
from osd.server.audit import AuditServicer
from osd.server.cluster import ClusterServicer
from osd.server.datastore import DatastoreServicer
from osd.server.job import JobServicer
from osd.server.names import by_name
from osd.server.node import NodeServicer
from osd.server.pool import PoolServicer
from osd.server.service import ServiceServicer
from osd.server.template import TemplateServicer
from osd.server.volume import VolumeServicer
from osd.server.watch import WatchServicer

# Servicer classes by full service name. Each takes the engine.
IMPLEMENTED: dict[str, Callable[[Engine], Any]] = {
    "osd.v1.AuditService": AuditServicer,
    "osd.v1.ClusterService": ClusterServicer,
    "osd.v1.DatastoreService": DatastoreServicer,
    "osd.v1.NodeService": NodeServicer,
    "osd.v1.PoolService": PoolServicer,
    "osd.v1.JobService": JobServicer,
    "osd.v1.Service": ServiceServicer,
    "osd.v1.VolumeService": VolumeServicer,
    "osd.v1.TemplateService": TemplateServicer,
    "osd.v1.WatchService": WatchServicer,
}

# Services whose RPCs wait for a capability: full service name -> capability.
# An RPC of such a service that its servicer does not implement is pending.
# Empty while every RPC of the contract is implemented; an RPC added to the
# contract before its capability lands goes here.
PENDING: dict[str, str] = {}


def implemented_methods(entry: ServiceEntry) -> set[str]:
    """The RPCs of ``entry`` that its servicer class defines itself."""
    cls = IMPLEMENTED.get(entry.full_name)
    if cls is None:
        return set()
    own: set[str] = set()
    for klass in cls.__mro__:  # type: ignore[attr-defined]
        if klass is entry.base_class:
            break
        own.update(vars(klass))
    return {m.name for m in entry.descriptor.methods} & own


def _pending_method(method: str, capability: str) -> Callable[..., Any]:
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        raise Unimplemented.capability(method, capability)

    handler.__name__ = method.rsplit(".", 1)[-1]
    return handler


def build_servicer(entry: ServiceEntry, engine: Engine) -> Any:
    """The servicer for ``entry``, with every pending RPC answering UNIMPLEMENTED."""
    implemented = implemented_methods(entry)
    capability = PENDING.get(entry.full_name, "")
    base = IMPLEMENTED.get(entry.full_name)
    pending: dict[str, Any] = {}
    for method in entry.descriptor.methods:
        if method.name in implemented:
            continue
        if not capability:
            raise RuntimeError(f"{method.full_name} is neither implemented nor listed as pending")
        pending[method.name] = _pending_method(method.full_name, capability)
    if base is None:
        cls = type(f"Pending{entry.descriptor.name}", (entry.base_class,), pending)
        return cls()
    if pending:
        cls = type(f"Partial{entry.descriptor.name}", (base,), pending)  # type: ignore[arg-type]
        servicer = cls(engine)
    else:
        servicer = base(engine)
    by_name(servicer, entry.descriptor, engine.names)
    return servicer
