"""PoolService: request -> engine input -> engine -> response."""

from __future__ import annotations

import grpc

from osd.engine.engine import Engine
from osd.engine.topology import models as t
from osd.server import convert
from osd.server.node import drive_to_proto
from osd.v1 import pool_pb2 as pb
from osd.v1 import pool_pb2_grpc

UPDATABLE = ("name", "labels", "auto_balance", "auto_balance_threshold_percent")


def pool_to_proto(p: t.Pool) -> pb.Pool:
    return pb.Pool(
        id=p.id,
        cluster_id=p.cluster_id,
        name=p.name,
        labels=p.labels,
        drive_ids=p.drive_ids,
        node_ids=p.node_ids,
        capacity=convert.capacity(p.capacity),
        volume_count=p.volume_count,
        active_job_id=p.active_job_id,
        create_time=convert.timestamp(p.create_time),
        update_time=convert.timestamp(p.update_time),
        generation=p.generation,
        auto_balance=p.auto_balance,
        auto_balance_threshold_percent=p.auto_balance_threshold_percent,
    )


class PoolServicer(pool_pb2_grpc.PoolServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._pools = engine.pools

    def CreatePool(
        self, request: pb.CreatePoolRequest, context: grpc.ServicerContext
    ) -> pb.CreatePoolResponse:
        result = self._pools.create(
            t.CreatePool(
                cluster_id=request.cluster_id,
                name=request.name,
                drive_ids=list(request.drive_ids),
                node_ids=list(request.node_ids),
                labels=dict(request.labels),
            )
        )
        return pb.CreatePoolResponse(
            pool=pool_to_proto(result.value), created=result.created, generation=result.generation
        )

    def InspectPool(
        self, request: pb.InspectPoolRequest, context: grpc.ServicerContext
    ) -> pb.InspectPoolResponse:
        detail = self._pools.inspect(request.pool_id)
        return pb.InspectPoolResponse(
            pool=pool_to_proto(detail.pool), drives=[drive_to_proto(d) for d in detail.drives]
        )

    def ListPools(
        self, request: pb.ListPoolsRequest, context: grpc.ServicerContext
    ) -> pb.ListPoolsResponse:
        page = self._pools.list(
            t.ListPools(
                page_size=request.page_size,
                page_token=request.page_token,
                cluster_id=request.cluster_id,
                labels=dict(request.labels),
                name_regex=request.name_regex,
            )
        )
        return pb.ListPoolsResponse(
            pools=[pool_to_proto(p) for p in page.items], next_page_token=page.next_page_token
        )

    def UpdatePool(
        self, request: pb.UpdatePoolRequest, context: grpc.ServicerContext
    ) -> pb.UpdatePoolResponse:
        paths = convert.update_paths(request.update_mask, UPDATABLE)
        result = self._pools.update(
            t.UpdatePool(
                pool_id=request.pool_id,
                name=request.name if "name" in paths else None,
                labels=dict(request.labels) if "labels" in paths else None,
                expected_generation=request.expected_generation,
                auto_balance=request.auto_balance if "auto_balance" in paths else None,
                auto_balance_threshold_percent=(
                    request.auto_balance_threshold_percent
                    if "auto_balance_threshold_percent" in paths
                    else None
                ),
            )
        )
        return pb.UpdatePoolResponse(pool=pool_to_proto(result.value), generation=result.generation)

    def AddPoolMembers(
        self, request: pb.AddPoolMembersRequest, context: grpc.ServicerContext
    ) -> pb.AddPoolMembersResponse:
        result = self._pools.add_members(
            t.PoolMembers(
                pool_id=request.pool_id,
                drive_ids=list(request.drive_ids),
                node_ids=list(request.node_ids),
                expected_generation=request.expected_generation,
            )
        )
        return pb.AddPoolMembersResponse(
            pool=pool_to_proto(result.value), generation=result.generation
        )

    def RemovePoolMembers(
        self, request: pb.RemovePoolMembersRequest, context: grpc.ServicerContext
    ) -> pb.RemovePoolMembersResponse:
        result = self._pools.remove_members(
            t.PoolMembers(
                pool_id=request.pool_id,
                drive_ids=list(request.drive_ids),
                node_ids=list(request.node_ids),
                expected_generation=request.expected_generation,
            )
        )
        return pb.RemovePoolMembersResponse(
            pool=pool_to_proto(result.value), generation=result.generation
        )

    def DeletePool(
        self, request: pb.DeletePoolRequest, context: grpc.ServicerContext
    ) -> pb.DeletePoolResponse:
        return pb.DeletePoolResponse(generation=self._pools.delete(request.pool_id))
