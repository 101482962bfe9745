"""Requests that name their object instead of giving its id.

A request message with a ``<kind>_ref`` oneof of ``<kind>_id`` and
``<kind>_name`` (and, for the kinds named within a cluster, a ``cluster_id``
beside it) may carry the name: :func:`by_name` wraps such a servicer method
so that the name is resolved (:class:`osd.engine.shared.names.Names`) and
the id set in the request before the method runs. The method, the audit
record and every check after it see the id, as if the caller had sent it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, ServiceDescriptor

from osd.engine.shared.names import ROWS, Names


@dataclass(frozen=True)
class NameRef:
    """Where a request message names its object."""

    kind: str
    id_field: str
    name_field: str

    def resolve(self, request: Any, names: Names) -> None:
        if request.WhichOneof(f"{self.kind}_ref") != self.name_field:
            return
        name = getattr(request, self.name_field)
        cluster_id = getattr(request, "cluster_id", "")
        setattr(request, self.id_field, names.resolve(self.kind, name, cluster_id))


def name_ref(message: Descriptor) -> NameRef | None:
    """The request's name alternative, if it has one."""
    for kind in ROWS:
        oneof = message.oneofs_by_name.get(f"{kind}_ref")
        if oneof is None:
            continue
        fields = {f.name for f in oneof.fields}
        if fields == {f"{kind}_id", f"{kind}_name"}:
            return NameRef(kind, f"{kind}_id", f"{kind}_name")
    return None


def by_name(servicer: Any, service: ServiceDescriptor, names: Names) -> None:
    """Wraps each method of ``servicer`` whose request may name its object."""
    for method in service.methods:
        ref = name_ref(method.input_type)
        behaviour = getattr(servicer, method.name, None)
        if ref is None or behaviour is None:
            continue
        setattr(servicer, method.name, _resolving(behaviour, ref, names))


def _resolving(behaviour: Callable[..., Any], ref: NameRef, names: Names) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    def handle(request: Any, context: Any) -> Any:
        ref.resolve(request, names)
        return behaviour(request, context)

    return handle
