"""ClusterService: request -> engine input -> engine -> response."""

from __future__ import annotations

import time

import grpc

from osd import deadline
from osd.engine.engine import Engine
from osd.engine.shared.models import ListQuery
from osd.engine.topology.models import (
    Cluster,
    CreateCluster,
    RepairPolicy,
    RepairPolicyChange,
    UpdateCluster,
)
from osd.errors import FieldViolation, InvalidArgument
from osd.server import convert
from osd.server.node import drive_to_proto, node_to_proto
from osd.server.pool import pool_to_proto
from osd.store.state import current_generation
from osd.v1 import cluster_pb2 as pb
from osd.v1 import cluster_pb2_grpc

REPAIR_FIELDS = (
    "paused",
    "delay_seconds",
    "maintenance_timeout_seconds",
    "max_repairs",
    "max_repairs_per_drive",
)
UPDATABLE = ("name", "labels", "block", "file", "repair", *(f"repair.{f}" for f in REPAIR_FIELDS))


# How long WaitForGeneration waits: by default, and at most.
DEFAULT_GENERATION_WAIT = 30.0
MAX_GENERATION_WAIT = 300.0


def repair_to_proto(p: RepairPolicy) -> pb.RepairPolicy:
    return pb.RepairPolicy(
        paused=p.paused,
        delay_seconds=p.delay_seconds,
        maintenance_timeout_seconds=p.maintenance_timeout_seconds,
        max_repairs=p.max_repairs,
        max_repairs_per_drive=p.max_repairs_per_drive,
    )


def repair_change(msg: pb.RepairPolicy, paths: set[str]) -> RepairPolicyChange | None:
    """The policy fields to change: those named "repair.<field>", and with
    "repair" every field the message sets."""
    if not any(p == "repair" or p.startswith("repair.") for p in paths):
        return None
    whole = "repair" in paths
    present = {f.name for f, _value in msg.ListFields()}
    values = {
        f: getattr(msg, f)
        for f in REPAIR_FIELDS
        if f"repair.{f}" in paths or (whole and f in present)
    }
    return RepairPolicyChange(**values)


def cluster_to_proto(c: Cluster) -> pb.Cluster:
    return pb.Cluster(
        id=c.id,
        name=c.name,
        labels=c.labels,
        block=c.block,
        file=c.file,
        create_time=convert.timestamp(c.create_time),
        update_time=convert.timestamp(c.update_time),
        generation=c.generation,
        repair=repair_to_proto(c.repair),
    )


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._clusters = engine.clusters
        self._members = engine.members
        self._store = engine.store
        self._inspected: convert.ResponseMemo[pb.InspectClusterResponse] = convert.ResponseMemo()

    def CreateCluster(
        self, request: pb.CreateClusterRequest, context: grpc.ServicerContext
    ) -> pb.CreateClusterResponse:
        result = self._clusters.create(
            CreateCluster(
                name=request.name,
                labels=dict(request.labels),
                block=request.block if request.HasField("block") else None,
                file=request.file if request.HasField("file") else None,
            )
        )
        return pb.CreateClusterResponse(
            cluster=cluster_to_proto(result.value),
            created=result.created,
            generation=result.generation,
        )

    def InspectCluster(
        self, request: pb.InspectClusterRequest, context: grpc.ServicerContext
    ) -> pb.InspectClusterResponse:
        cluster = self._clusters.inspect(request.cluster_id)
        return self._inspected.get(
            cluster.id,
            cluster,
            lambda: pb.InspectClusterResponse(cluster=cluster_to_proto(cluster)),
        )

    def ListClusters(
        self, request: pb.ListClustersRequest, context: grpc.ServicerContext
    ) -> pb.ListClustersResponse:
        page = self._clusters.list(
            ListQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                name_regex=request.name_regex,
                labels=dict(request.labels),
            )
        )
        return pb.ListClustersResponse(
            clusters=[cluster_to_proto(c) for c in page.items],
            next_page_token=page.next_page_token,
        )

    def UpdateCluster(
        self, request: pb.UpdateClusterRequest, context: grpc.ServicerContext
    ) -> pb.UpdateClusterResponse:
        paths = convert.update_paths(request.update_mask, UPDATABLE)
        result = self._clusters.update(
            UpdateCluster(
                cluster_id=request.cluster_id,
                name=request.name if "name" in paths else None,
                labels=dict(request.labels) if "labels" in paths else None,
                block=request.block if "block" in paths else None,
                file=request.file if "file" in paths else None,
                expected_generation=request.expected_generation,
                repair=repair_change(request.repair, paths),
            )
        )
        return pb.UpdateClusterResponse(
            cluster=cluster_to_proto(result.value), generation=result.generation
        )

    def DeleteCluster(
        self, request: pb.DeleteClusterRequest, context: grpc.ServicerContext
    ) -> pb.DeleteClusterResponse:
        return pb.DeleteClusterResponse(generation=self._clusters.delete(request.cluster_id))

    def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetClusterStatusResponse:
        st = self._clusters.status(request.cluster_id)
        services = self._clusters.services(request.cluster_id, self._members.list())
        return pb.GetClusterStatusResponse(
            services=[
                pb.ServiceHealth(
                    kind=pb.ServiceKind.Value(f"SERVICE_KIND_{h.kind.name}"),
                    name=h.name,
                    node_id=h.node_id,
                    up=h.up,
                    state=h.state,
                    address=h.address,
                )
                for h in services
            ],
            services_down=sum(1 for h in services if not h.up),
            cluster=cluster_to_proto(st.cluster),
            node_count=st.node_count,
            drive_count=st.drive_count,
            pool_count=st.pool_count,
            volume_count=st.volume_count,
            snapshot_count=st.snapshot_count,
            capacity=convert.capacity(st.capacity),
            provisioned_bytes=st.provisioned_bytes,
            generation=st.generation,
        )

    def GetClusterTopology(
        self, request: pb.GetClusterTopologyRequest, context: grpc.ServicerContext
    ) -> pb.GetClusterTopologyResponse:
        top = self._clusters.topology(request.cluster_id)
        st = top.status
        return pb.GetClusterTopologyResponse(
            cluster=cluster_to_proto(st.cluster),
            capacity=convert.capacity(st.capacity),
            provisioned_bytes=st.provisioned_bytes,
            nodes=[
                pb.TopologyNode(
                    node=node_to_proto(node), drives=[drive_to_proto(d) for d in drives]
                )
                for node, drives in top.nodes
            ],
            pools=[pool_to_proto(p) for p in top.pools],
            generation=st.generation,
        )

    def WaitForGeneration(
        self, request: pb.WaitForGenerationRequest, context: grpc.ServicerContext
    ) -> pb.WaitForGenerationResponse:
        problems = []
        if request.generation < 1:
            problems.append(FieldViolation("generation", "is required: a positive generation"))
        if not 0 <= request.wait_seconds <= MAX_GENERATION_WAIT:
            problems.append(
                FieldViolation("wait_seconds", f"is from 0 to {MAX_GENERATION_WAIT:g} seconds")
            )
        if problems:
            raise InvalidArgument.fields(problems)
        wait = request.wait_seconds or DEFAULT_GENERATION_WAIT
        stop = time.monotonic() + min(wait, deadline.remaining(wait))
        pause = 0.005
        while True:
            now = self._store.generation()
            if now is None:
                with self._store.read() as s:
                    now = current_generation(s)
            if now >= request.generation or time.monotonic() >= stop:
                return pb.WaitForGenerationResponse(
                    reached=now >= request.generation, generation=now
                )
            time.sleep(min(pause, max(0.0, stop - time.monotonic())))
            pause = min(0.05, pause * 2)

    def ListDaemons(
        self, request: pb.ListDaemonsRequest, context: grpc.ServicerContext
    ) -> pb.ListDaemonsResponse:
        out = pb.ListDaemonsResponse()
        for m in self._members.list():
            d = out.daemons.add(
                name=m.id,
                host=m.host,
                pid=m.pid,
                address=m.address,
                version=m.version,
                state=int(m.state),
                this_daemon=m.this_daemon,
                node_id=m.node_id,
            )
            d.start_time.CopyFrom(convert.timestamp(m.start_time))
            d.heartbeat_time.CopyFrom(convert.timestamp(m.heartbeat_time))
            if m.stop_time is not None:
                d.stop_time.CopyFrom(convert.timestamp(m.stop_time))
        return out
