"""Service (maintenance, drive add and replace, pool rebalance): request ->
engine input -> engine -> response."""

from __future__ import annotations

import grpc

from osd.engine.engine import Engine
from osd.engine.jobs import service_api as svc
from osd.server.job import job_to_proto, progress_to_proto
from osd.server.node import drive_to_proto, node_to_proto
from osd.v1 import service_pb2 as pb
from osd.v1 import service_pb2_grpc


class ServiceServicer(service_pb2_grpc.ServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._service = engine.service
        self._maintenance = engine.maintenance

    def EnterMaintenance(
        self, request: pb.EnterMaintenanceRequest, context: grpc.ServicerContext
    ) -> pb.EnterMaintenanceResponse:
        result = self._maintenance.enter_maintenance(request.node_id, request.force)
        return pb.EnterMaintenanceResponse(
            node=node_to_proto(result.node),
            affected_volume_ids=result.affected_volume_ids,
            generation=result.generation,
        )

    def ExitMaintenance(
        self, request: pb.ExitMaintenanceRequest, context: grpc.ServicerContext
    ) -> pb.ExitMaintenanceResponse:
        result = self._maintenance.exit_maintenance(request.node_id)
        return pb.ExitMaintenanceResponse(
            node=node_to_proto(result.value), generation=result.generation
        )

    def StartDriveAdd(
        self, request: pb.StartDriveAddRequest, context: grpc.ServicerContext
    ) -> pb.StartDriveAddResponse:
        result = self._service.start_drive_add(
            svc.StartDriveAdd(
                node_id=request.node_id,
                device_path=request.device_path,
                journal=request.journal,
                labels=dict(request.labels),
                description=request.description,
                pool_ids=list(request.pool_ids),
                yes_i_really_mean_it=request.yes_i_really_mean_it,
            )
        )
        response = pb.StartDriveAddResponse(
            job=job_to_proto(result.job), started=result.started, generation=result.generation
        )
        if result.drive is not None:
            response.drive.CopyFrom(drive_to_proto(result.drive))
        return response

    def GetDriveAddStatus(
        self, request: pb.GetDriveAddStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetDriveAddStatusResponse:
        result = self._service.drive_add_status(request.node_id, request.device_path)
        response = pb.GetDriveAddStatusResponse(job=job_to_proto(result.job))
        if result.drive is not None:
            response.drive.CopyFrom(drive_to_proto(result.drive))
        return response

    def StartDriveReplace(
        self, request: pb.StartDriveReplaceRequest, context: grpc.ServicerContext
    ) -> pb.StartDriveReplaceResponse:
        result = self._service.start_drive_replace(
            svc.StartDriveReplace(
                source_drive_id=request.source_drive_id,
                target_device_path=request.target_device_path,
                target_drive_id=request.target_drive_id,
                yes_i_really_mean_it=request.yes_i_really_mean_it,
            )
        )
        response = pb.StartDriveReplaceResponse(
            source_drive=drive_to_proto(result.source),
            job=job_to_proto(result.job),
            started=result.started,
            generation=result.generation,
        )
        if result.target is not None:
            response.target_drive.CopyFrom(drive_to_proto(result.target))
        return response

    def GetDriveReplaceStatus(
        self, request: pb.GetDriveReplaceStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetDriveReplaceStatusResponse:
        result = self._service.drive_replace_status(request.source_drive_id)
        response = pb.GetDriveReplaceStatusResponse(
            job=job_to_proto(result.job), source_drive=drive_to_proto(result.source)
        )
        if result.target is not None:
            response.target_drive.CopyFrom(drive_to_proto(result.target))
        return response

    def StartPoolRebalance(
        self, request: pb.StartPoolRebalanceRequest, context: grpc.ServicerContext
    ) -> pb.StartPoolRebalanceResponse:
        result = self._service.start_pool_rebalance(request.pool_id)
        return pb.StartPoolRebalanceResponse(
            job=job_to_proto(result.job), started=result.started, generation=result.generation
        )

    def GetClusterRebalanceStatus(
        self, request: pb.GetClusterRebalanceStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetClusterRebalanceStatusResponse:
        found = self._service.cluster_rebalance_status(request.cluster_id)
        response = pb.GetClusterRebalanceStatusResponse()
        for p in found:
            entry = response.pools.add(
                pool_id=p.pool_id,
                pool_name=p.pool_name,
                status=pb.RebalanceStatus.ValueType(p.status.status),
                spread_percent=p.status.spread_percent,
                missing_copies=p.status.missing_copies,
                auto_balance=p.auto_balance,
                auto_balance_threshold_percent=p.auto_balance_threshold_percent,
            )
            if p.status.job is not None:
                entry.job.CopyFrom(job_to_proto(p.status.job))
        response.unfinished = sum(1 for p in found if p.status.unfinished)
        return response

    def GetPoolRebalancePlan(
        self, request: pb.GetPoolRebalancePlanRequest, context: grpc.ServicerContext
    ) -> pb.GetPoolRebalancePlanResponse:
        plan = self._service.pool_rebalance_plan(request.pool_id)
        return pb.GetPoolRebalancePlanResponse(
            moves=[
                pb.RebalanceMove(
                    volume_id=m.volume_id,
                    index=m.index,
                    allocation_id=m.allocation_id,
                    source_drive_id=m.source_drive_id,
                    target_drive_id=m.target_drive_id,
                    bytes=m.bytes,
                )
                for m in plan.moves
            ],
            complete=plan.complete,
            moved_bytes=plan.moved_bytes,
            drives=[
                pb.RebalanceDrive(
                    drive_id=d.drive_id,
                    node_id=d.node_id,
                    total_bytes=d.total_bytes,
                    used_bytes_before=d.used_bytes_before,
                    used_bytes_after=d.used_bytes_after,
                )
                for d in plan.drives
            ],
            spread_percent_before=plan.spread_percent_before,
            spread_percent_after=plan.spread_percent_after,
            missing_copies=plan.missing_copies,
        )

    def GetPoolRebalanceStatus(
        self, request: pb.GetPoolRebalanceStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetPoolRebalanceStatusResponse:
        result = self._service.pool_rebalance_status(request.pool_id)
        response = pb.GetPoolRebalanceStatusResponse(
            status=pb.RebalanceStatus.ValueType(result.status),
            progress=progress_to_proto(result.progress),
            spread_percent=result.spread_percent,
            missing_copies=result.missing_copies,
        )
        if result.job is not None:
            response.job.CopyFrom(job_to_proto(result.job))
        return response
