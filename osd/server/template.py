"""TemplateService: request -> engine input -> engine -> response.

Creating, changing and deleting templates needs the admin role; reading
them, the user role. Until authentication is configured every caller is
treated as admin.
"""

from __future__ import annotations

import grpc

from osd.engine.engine import Engine
from osd.engine.shared.sizes import SizeSpec
from osd.engine.volumes import models as vm
from osd.engine.volumes.templates import UPDATABLE
from osd.server import convert
from osd.server.job import job_to_proto
from osd.server.volume import (
    durability_from_proto,
    durability_to_proto,
    placement_from_proto,
    placement_to_proto,
    qos_from_proto,
    qos_to_proto,
    size_from_oneof,
)
from osd.v1 import template_pb2 as pb
from osd.v1 import template_pb2_grpc, volume_pb2


def template_to_proto(t: vm.Template) -> pb.Template:
    msg = pb.Template(
        id=t.id,
        cluster_id=t.cluster_id,
        name=t.name,
        labels=t.labels,
        size_bytes=t.size_bytes,
        provisioning=volume_pb2.Provisioning.ValueType(t.provisioning),
        snapshot_factor=t.snapshot_factor,
        kind=volume_pb2.VolumeKind.ValueType(t.kind),
        volume_count=t.volume_count,
        create_time=convert.timestamp(t.create_time),
        update_time=convert.timestamp(t.update_time),
        generation=t.generation,
        owner=t.owner,
    )
    if t.durability is not None:
        msg.durability.CopyFrom(durability_to_proto(t.durability))
    if t.placement is not None:
        msg.placement.CopyFrom(placement_to_proto(t.placement))
    if t.qos is not None:
        msg.qos.CopyFrom(qos_to_proto(t.qos))
    return msg


def propagation_to_proto(p: vm.Propagation) -> pb.TemplatePropagation:
    return pb.TemplatePropagation(
        updated_volume_ids=p.updated_volume_ids,
        jobs=[job_to_proto(j) for j in p.jobs],
        refused=[
            pb.PropagationRefusal(volume_id=r.volume_id, reason=r.reason, message=r.message)
            for r in p.refused
        ],
        unchanged_count=p.unchanged_count,
        hidden_count=p.hidden_count,
    )


def status_to_proto(t: vm.TemplateStatus) -> pb.TemplateStatus:
    msg = pb.TemplateStatus(
        template_id=t.template_id,
        name=t.name,
        volume_count=t.volume_count,
        snapshot_count=t.snapshot_count,
        logical_bytes=t.logical_bytes,
        allocated_bytes=t.allocated_bytes,
        capacity=convert.capacity(t.capacity),
        available_bytes=t.available_bytes,
        tail_available_bytes=t.tail_available_bytes,
        volume_available_bytes=t.volume_available_bytes,
    )
    if t.tail_capacity is not None:
        msg.tail_capacity.CopyFrom(convert.capacity(t.tail_capacity))
    return msg


class TemplateServicer(template_pb2_grpc.TemplateServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._templates = engine.templates

    def CreateTemplate(
        self, request: pb.CreateTemplateRequest, context: grpc.ServicerContext
    ) -> pb.CreateTemplateResponse:
        result = self._templates.create(
            vm.CreateTemplate(
                cluster_id=request.cluster_id,
                name=request.name,
                labels=dict(request.labels),
                durability=(
                    durability_from_proto(request.durability)
                    if request.HasField("durability")
                    else None
                ),
                placement=(
                    placement_from_proto(request.placement)
                    if request.HasField("placement")
                    else None
                ),
                qos=qos_from_proto(request.qos) if request.HasField("qos") else None,
                size=size_from_oneof(
                    request.WhichOneof("size_spec"), request.size_bytes, request.size
                ),
                provisioning=request.provisioning,
                snapshot_factor=(
                    request.snapshot_factor if request.HasField("snapshot_factor") else None
                ),
                kind=request.kind,
            )
        )
        return pb.CreateTemplateResponse(
            template=template_to_proto(result.value),
            created=result.created,
            generation=result.generation,
        )

    def InspectTemplate(
        self, request: pb.InspectTemplateRequest, context: grpc.ServicerContext
    ) -> pb.InspectTemplateResponse:
        return pb.InspectTemplateResponse(
            template=template_to_proto(self._templates.inspect(request.template_id))
        )

    def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.ServicerContext
    ) -> pb.ListTemplatesResponse:
        page = self._templates.list(
            vm.TemplateQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                cluster_id=request.cluster_id,
                labels=dict(request.labels),
                name_regex=request.name_regex,
            )
        )
        return pb.ListTemplatesResponse(
            templates=[template_to_proto(t) for t in page.items],
            next_page_token=page.next_page_token,
        )

    def UpdateTemplate(
        self, request: pb.UpdateTemplateRequest, context: grpc.ServicerContext
    ) -> pb.UpdateTemplateResponse:
        paths = convert.update_paths(request.update_mask, sorted(UPDATABLE))
        size = None
        if "size_bytes" in paths:
            size = SizeSpec(nbytes=request.size_bytes)
        elif "size" in paths:
            size = SizeSpec(text=request.size)
        result = self._templates.update(
            vm.UpdateTemplate(
                template_id=request.template_id,
                paths=frozenset(paths),
                name=request.name,
                labels=dict(request.labels),
                durability=(
                    durability_from_proto(request.durability)
                    if request.HasField("durability")
                    else None
                ),
                placement=(
                    placement_from_proto(request.placement)
                    if request.HasField("placement")
                    else None
                ),
                qos=qos_from_proto(request.qos) if request.HasField("qos") else None,
                size=size,
                provisioning=request.provisioning,
                snapshot_factor=request.snapshot_factor,
                kind=request.kind,
                expected_generation=request.expected_generation,
                propagate=request.propagate,
                confirmed=request.yes_i_really_mean_it,
            )
        )
        response = pb.UpdateTemplateResponse(
            template=template_to_proto(result.value), generation=result.generation
        )
        if result.propagation is not None:
            response.propagation.CopyFrom(propagation_to_proto(result.propagation))
        return response

    def DeleteTemplate(
        self, request: pb.DeleteTemplateRequest, context: grpc.ServicerContext
    ) -> pb.DeleteTemplateResponse:
        return pb.DeleteTemplateResponse(generation=self._templates.delete(request.template_id))

    def GetTemplateStatus(
        self, request: pb.GetTemplateStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetTemplateStatusResponse:
        return pb.GetTemplateStatusResponse(
            status=status_to_proto(self._templates.status(request.template_id))
        )

    def GetClusterTemplateStatus(
        self, request: pb.GetClusterTemplateStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetClusterTemplateStatusResponse:
        return pb.GetClusterTemplateStatusResponse(
            statuses=[
                status_to_proto(t) for t in self._templates.cluster_status(request.cluster_id)
            ]
        )
