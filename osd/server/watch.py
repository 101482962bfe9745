"""WatchService: the recorded changes (osd.store.events), streamed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc

from osd.engine.access.principal import current
from osd.engine.engine import Engine
from osd.enums import ObjectKind
from osd.errors import InvalidArgument, OsdError, OutOfRange, ResourceExhausted
from osd.server import convert
from osd.server.cluster import cluster_to_proto
from osd.server.job import job_to_proto
from osd.server.node import drive_to_proto, node_to_proto
from osd.server.pool import pool_to_proto
from osd.server.volume import snapshot_to_proto, volume_to_proto
from osd.store import events
from osd.v1 import job_pb2, watch_pb2_grpc
from osd.v1 import watch_pb2 as pb

# Streams served at once by one daemon process (each holds a worker thread).
MAX_WATCHES = 8
# Events read from the store at a time, and how often a following stream
# looks for new ones.
BATCH = 500
POLL_SECONDS = 0.1
WATCHED = {int(k) for k in events.WATCHED.values()}


class WatchServicer(watch_pb2_grpc.WatchServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._store = engine.store
        self._lock = threading.Lock()
        self._open = 0

    def Watch(
        self, request: pb.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchEvent]:
        if request.from_generation < 0:
            raise InvalidArgument.field("from_generation", "cannot be negative")
        kinds = {int(k) for k in request.kinds}
        unknown = sorted(kinds - WATCHED)
        if unknown:
            raise InvalidArgument.field("kinds", f"{unknown[0]} is not a kind of object")
        with self._lock:
            if self._open >= MAX_WATCHES:
                raise ResourceExhausted(
                    f"this daemon serves {MAX_WATCHES} watches already; retry later",
                    reason="TOO_MANY_WATCHES",
                    metadata={"max_watches": str(MAX_WATCHES)},
                )
            self._open += 1
        try:
            yield from self._stream(request, kinds, context)
        finally:
            with self._lock:
                self._open -= 1

    def _stream(
        self, request: pb.WatchRequest, kinds: set[int], context: grpc.ServicerContext
    ) -> Iterator[pb.WatchEvent]:
        cursor = request.from_generation
        with self._store.read() as s:
            pruned = events.pruned_through(s)
        if cursor < pruned:
            raise OutOfRange(
                f"the events after generation {cursor} are no longer kept (pruned through "
                f"{pruned}): read the objects again, then watch from generation {pruned}",
                reason="WATCH_EXPIRED",
                metadata={"pruned_through": str(pruned)},
            )
        admin = current().is_admin
        seen_generation = None
        while context.is_active():
            with self._store.read() as s:
                batch = events.since(s, cursor, kinds, BATCH)
                rows = [(e.generation, e.kind, e.object_id, e.action, e.time) for e in batch]
            for generation, kind, object_id, action, when in rows:
                event = self._event(generation, kind, object_id, action, admin)
                if event is not None:
                    event.time.CopyFrom(convert.timestamp(when))
                    yield event
                cursor = generation
            if len(rows) == BATCH:
                continue
            if not request.follow:
                return
            # Caught up: wait for the store to move.
            while context.is_active():
                now = self._store.generation()
                if now is None or now != seen_generation:
                    seen_generation = now
                    break
                time.sleep(POLL_SECONDS)

    def _event(
        self, generation: int, kind: int, object_id: str, action: int, admin: bool
    ) -> pb.WatchEvent | None:
        """The event as this caller may see it (None: not for this caller)."""
        out = pb.WatchEvent(
            generation=generation,
            kind=kind,  # type: ignore[arg-type]
            object_id=object_id,
            action=action,  # type: ignore[arg-type]
        )
        private = kind in (ObjectKind.VOLUME, ObjectKind.SNAPSHOT)
        if action == events.DELETED:
            return out if admin or not private else None
        try:
            self._fill(out, kind, object_id)
        except OsdError as exc:
            if exc.code == grpc.StatusCode.PERMISSION_DENIED:
                return None
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            if private and not admin:
                return None  # gone since: no longer shown to have been read
        return out

    def _fill(self, out: pb.WatchEvent, kind: int, object_id: str) -> None:
        e = self._engine
        if kind == ObjectKind.CLUSTER:
            out.cluster.CopyFrom(cluster_to_proto(e.clusters.inspect(object_id)))
        elif kind == ObjectKind.VOLUME:
            out.volume.CopyFrom(volume_to_proto(e.volumes.inspect(object_id).volume))
        elif kind == ObjectKind.SNAPSHOT:
            out.snapshot.CopyFrom(snapshot_to_proto(e.snapshots.inspect(object_id).snapshot))
        elif kind == ObjectKind.NODE:
            out.node.CopyFrom(node_to_proto(e.nodes.inspect(object_id).node))
        elif kind == ObjectKind.DRIVE:
            out.drive.CopyFrom(drive_to_proto(e.drives.inspect(object_id).drive))
        elif kind == ObjectKind.POOL:
            out.pool.CopyFrom(pool_to_proto(e.pools.inspect(object_id).pool))
        elif kind == ObjectKind.JOB:
            job: job_pb2.Job = job_to_proto(e.jobs.inspect(object_id))
            out.job.CopyFrom(job)
