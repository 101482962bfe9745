"""NodeService: request -> engine input -> engine -> response.

DrainNode is not defined here: it waits for the jobs capability (see
osd.server.registry.PENDING).
"""

from __future__ import annotations

import grpc

from osd.engine.engine import Engine
from osd.engine.topology import models as t
from osd.engine.volumes import models as vm
from osd.server import convert
from osd.server.job import job_to_proto
from osd.v1 import node_pb2 as pb
from osd.v1 import node_pb2_grpc, volume_pb2

NODE_UPDATABLE = ("name", "zone", "management_addresses", "storage_addresses", "labels")
DRIVE_UPDATABLE = ("description", "labels")


def node_to_proto(n: t.Node) -> pb.Node:
    return pb.Node(
        id=n.id,
        cluster_id=n.cluster_id,
        name=n.name,
        zone=n.zone,
        management_addresses=n.management_addresses,
        storage_addresses=n.storage_addresses,
        labels=n.labels,
        state=pb.NodeState.ValueType(n.state),
        coordinator_role=pb.CoordinatorRole.ValueType(n.coordinator_role),
        domain_state=pb.DomainState.ValueType(n.domain_state),
        capacity=convert.capacity(n.capacity),
        drive_count=n.drive_count,
        active_job_id=n.active_job_id,
        create_time=convert.timestamp(n.create_time),
        update_time=convert.timestamp(n.update_time),
        generation=n.generation,
    )


def drive_to_proto(d: t.Drive) -> pb.Drive:
    return pb.Drive(
        id=d.id,
        node_id=d.node_id,
        cluster_id=d.cluster_id,
        device_path=d.device_path,
        description=d.description,
        labels=d.labels,
        journal=d.journal,
        state=pb.DriveState.ValueType(d.state),
        capacity=convert.capacity(d.capacity),
        allocation_count=d.allocation_count,
        pool_ids=d.pool_ids,
        model=d.model,
        serial=d.serial,
        ssd=d.ssd,
        active_job_id=d.active_job_id,
        create_time=convert.timestamp(d.create_time),
        update_time=convert.timestamp(d.update_time),
        generation=d.generation,
    )


def move_to_proto(m: vm.AttachmentMove) -> pb.AttachmentMove:
    return pb.AttachmentMove(
        volume_id=m.volume_id,
        from_node_id=m.from_node_id,
        to_node_id=m.to_node_id,
        mode=volume_pb2.AttachMode.ValueType(m.mode),
    )


def not_moved_to_proto(n: vm.AttachmentNotMoved) -> pb.AttachmentNotMoved:
    return pb.AttachmentNotMoved(
        volume_id=n.volume_id, node_id=n.node_id, reason=n.reason, message=n.message
    )


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._nodes = engine.nodes
        self._drives = engine.drives
        self._flush = engine.flush

    # -- nodes -----------------------------------------------------------

    def CreateNode(
        self, request: pb.CreateNodeRequest, context: grpc.ServicerContext
    ) -> pb.CreateNodeResponse:
        result = self._nodes.create(
            t.CreateNode(
                cluster_id=request.cluster_id,
                name=request.name,
                zone=request.zone,
                management_addresses=list(request.management_addresses),
                storage_addresses=list(request.storage_addresses),
                labels=dict(request.labels),
            )
        )
        return pb.CreateNodeResponse(
            node=node_to_proto(result.value), created=result.created, generation=result.generation
        )

    def InspectNode(
        self, request: pb.InspectNodeRequest, context: grpc.ServicerContext
    ) -> pb.InspectNodeResponse:
        detail = self._nodes.inspect(request.node_id)
        return pb.InspectNodeResponse(
            node=node_to_proto(detail.node), drives=[drive_to_proto(d) for d in detail.drives]
        )

    def ListNodes(
        self, request: pb.ListNodesRequest, context: grpc.ServicerContext
    ) -> pb.ListNodesResponse:
        page = self._nodes.list(
            t.ListNodes(
                page_size=request.page_size,
                page_token=request.page_token,
                cluster_id=request.cluster_id,
                states=tuple(request.states),
                zone=request.zone,
                labels=dict(request.labels),
                name_regex=request.name_regex,
            )
        )
        return pb.ListNodesResponse(
            nodes=[node_to_proto(n) for n in page.items], next_page_token=page.next_page_token
        )

    def UpdateNode(
        self, request: pb.UpdateNodeRequest, context: grpc.ServicerContext
    ) -> pb.UpdateNodeResponse:
        paths = convert.update_paths(request.update_mask, NODE_UPDATABLE)
        result = self._nodes.update(
            t.UpdateNode(
                node_id=request.node_id,
                name=request.name if "name" in paths else None,
                zone=request.zone if "zone" in paths else None,
                management_addresses=(
                    list(request.management_addresses) if "management_addresses" in paths else None
                ),
                storage_addresses=(
                    list(request.storage_addresses) if "storage_addresses" in paths else None
                ),
                labels=dict(request.labels) if "labels" in paths else None,
                expected_generation=request.expected_generation,
            )
        )
        return pb.UpdateNodeResponse(node=node_to_proto(result.value), generation=result.generation)

    def UpdateNodeLabels(
        self, request: pb.UpdateNodeLabelsRequest, context: grpc.ServicerContext
    ) -> pb.UpdateNodeLabelsResponse:
        result = self._nodes.update_labels(
            t.ChangeLabels(
                object_id=request.node_id,
                operation=convert.label_operation(request.operation),
                labels=dict(request.labels),
                expected_generation=request.expected_generation,
            )
        )
        return pb.UpdateNodeLabelsResponse(
            node=node_to_proto(result.value), generation=result.generation
        )

    def SetNodeState(
        self, request: pb.SetNodeStateRequest, context: grpc.ServicerContext
    ) -> pb.SetNodeStateResponse:
        result = self._nodes.set_state(
            t.SetNodeState(
                node_id=request.node_id,
                state=request.state if request.HasField("state") else None,
                coordinator_role=(
                    request.coordinator_role if request.HasField("coordinator_role") else None
                ),
                domain_state=request.domain_state if request.HasField("domain_state") else None,
                expected_generation=request.expected_generation,
            )
        )
        return pb.SetNodeStateResponse(
            node=node_to_proto(result.value), generation=result.generation
        )

    def DrainNode(
        self, request: pb.DrainNodeRequest, context: grpc.ServicerContext
    ) -> pb.DrainNodeResponse:
        result = self._nodes.drain(request.node_id)
        return pb.DrainNodeResponse(
            node=node_to_proto(result.node),
            job=job_to_proto(result.job),
            generation=result.generation,
        )

    def FlushNode(
        self, request: pb.FlushNodeRequest, context: grpc.ServicerContext
    ) -> pb.FlushNodeResponse:
        result = self._flush.flush(request.node_id)
        return pb.FlushNodeResponse(
            node=node_to_proto(self._nodes.inspect(request.node_id).node),
            moved=[move_to_proto(m) for m in result.moved],
            not_moved=[not_moved_to_proto(n) for n in result.not_moved],
            generation=result.generation,
        )

    def ReadyNode(
        self, request: pb.ReadyNodeRequest, context: grpc.ServicerContext
    ) -> pb.ReadyNodeResponse:
        result = self._flush.ready(request.node_id)
        return pb.ReadyNodeResponse(
            node=node_to_proto(self._nodes.inspect(request.node_id).node),
            returned=[move_to_proto(m) for m in result.moved],
            not_returned=[not_moved_to_proto(n) for n in result.not_moved],
            generation=result.generation,
        )

    def DeleteNode(
        self, request: pb.DeleteNodeRequest, context: grpc.ServicerContext
    ) -> pb.DeleteNodeResponse:
        return pb.DeleteNodeResponse(generation=self._nodes.delete(request.node_id))

    # -- drives ----------------------------------------------------------

    def CreateDrive(
        self, request: pb.CreateDriveRequest, context: grpc.ServicerContext
    ) -> pb.CreateDriveResponse:
        result = self._drives.create(
            t.CreateDrive(
                node_id=request.node_id,
                device_path=request.device_path,
                journal=request.journal,
                labels=dict(request.labels),
                description=request.description,
                yes_i_really_mean_it=request.yes_i_really_mean_it,
            )
        )
        return pb.CreateDriveResponse(
            drive=drive_to_proto(result.value),
            created=result.created,
            generation=result.generation,
        )

    def InspectDrive(
        self, request: pb.InspectDriveRequest, context: grpc.ServicerContext
    ) -> pb.InspectDriveResponse:
        detail = self._drives.inspect(request.drive_id)
        return pb.InspectDriveResponse(
            drive=drive_to_proto(detail.drive),
            allocations=[convert.allocation(a) for a in detail.allocations],
        )

    def ListDrives(
        self, request: pb.ListDrivesRequest, context: grpc.ServicerContext
    ) -> pb.ListDrivesResponse:
        page = self._drives.list(
            t.ListDrives(
                page_size=request.page_size,
                page_token=request.page_token,
                node_id=request.node_id,
                cluster_id=request.cluster_id,
                states=tuple(request.states),
                pool_id=request.pool_id,
                labels=dict(request.labels),
                name_regex=request.name_regex,
            )
        )
        return pb.ListDrivesResponse(
            drives=[drive_to_proto(d) for d in page.items], next_page_token=page.next_page_token
        )

    def UpdateDrive(
        self, request: pb.UpdateDriveRequest, context: grpc.ServicerContext
    ) -> pb.UpdateDriveResponse:
        paths = convert.update_paths(request.update_mask, DRIVE_UPDATABLE)
        result = self._drives.update(
            t.UpdateDrive(
                drive_id=request.drive_id,
                description=request.description if "description" in paths else None,
                labels=dict(request.labels) if "labels" in paths else None,
                expected_generation=request.expected_generation,
            )
        )
        return pb.UpdateDriveResponse(
            drive=drive_to_proto(result.value), generation=result.generation
        )

    def UpdateDriveLabels(
        self, request: pb.UpdateDriveLabelsRequest, context: grpc.ServicerContext
    ) -> pb.UpdateDriveLabelsResponse:
        result = self._drives.update_labels(
            t.ChangeLabels(
                object_id=request.drive_id,
                operation=convert.label_operation(request.operation),
                labels=dict(request.labels),
                expected_generation=request.expected_generation,
            )
        )
        return pb.UpdateDriveLabelsResponse(
            drive=drive_to_proto(result.value), generation=result.generation
        )

    def EjectDrive(
        self, request: pb.EjectDriveRequest, context: grpc.ServicerContext
    ) -> pb.EjectDriveResponse:
        result = self._drives.eject(request.drive_id, request.soft, request.yes_i_really_mean_it)
        return pb.EjectDriveResponse(
            drive=drive_to_proto(result.drive),
            job=job_to_proto(result.job) if result.job is not None else None,
            generation=result.generation,
        )

    def ForgetDrive(
        self, request: pb.ForgetDriveRequest, context: grpc.ServicerContext
    ) -> pb.ForgetDriveResponse:
        result = self._drives.forget(request.drive_id, request.yes_i_really_mean_it)
        return pb.ForgetDriveResponse(
            volume_ids=result.volume_ids,
            snapshot_ids=result.snapshot_ids,
            generation=result.generation,
        )

    def SetDriveState(
        self, request: pb.SetDriveStateRequest, context: grpc.ServicerContext
    ) -> pb.SetDriveStateResponse:
        result = self._drives.set_state(
            t.SetDriveState(
                drive_id=request.drive_id,
                state=request.state,
                confirmed=request.yes_i_really_mean_it,
                expected_generation=request.expected_generation,
            )
        )
        return pb.SetDriveStateResponse(
            drive=drive_to_proto(result.drive),
            restored_volume_ids=result.restored_volume_ids,
            resync_volume_ids=result.resync_volume_ids,
            restored_snapshot_ids=result.restored_snapshot_ids,
            generation=result.generation,
        )

    def DeleteDrive(
        self, request: pb.DeleteDriveRequest, context: grpc.ServicerContext
    ) -> pb.DeleteDriveResponse:
        return pb.DeleteDriveResponse(generation=self._drives.delete(request.drive_id))
