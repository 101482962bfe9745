"""VolumeService: request -> engine input -> engine -> response.

Volumes, their snapshots and their attachments. Every RPC needs the user
role; until authentication is configured every caller is treated as admin.
"""

from __future__ import annotations

import grpc

from osd.engine.engine import Engine
from osd.engine.shared.sizes import SizeSpec
from osd.engine.volumes import models as vm
from osd.enums import SourceKind
from osd.server import convert
from osd.server.job import job_to_proto
from osd.v1 import volume_pb2 as pb
from osd.v1 import volume_pb2_grpc

UPDATABLE = (
    "name",
    "size_bytes",
    "size",
    "size_add",
    "qos",
    "qos.iops_limit",
    "qos.bandwidth_limit_bytes",
    "labels",
    "multi_attach",
    "durability.replicas",
    "placement",
    "owner",
    "public",
    "acl",
    "template_id",
)
SNAPSHOT_UPDATABLE = ("name", "labels", "image")

_SOURCE_FIELDS = {
    "snapshot_id": SourceKind.SNAPSHOT,
    "volume_id": SourceKind.VOLUME,
    "datastore_version_id": SourceKind.DATASTORE_VERSION,
}


# -- the shaping messages (shared with TemplateService) -------------------------


def durability_from_proto(msg: pb.Durability) -> vm.Durability:
    return vm.Durability(msg.type, msg.replicas, msg.data_fragments, msg.redundancy_fragments)


def durability_to_proto(d: vm.Durability) -> pb.Durability:
    return pb.Durability(
        type=pb.DurabilityType.ValueType(d.type),
        replicas=d.replicas,
        data_fragments=d.data_fragments,
        redundancy_fragments=d.redundancy_fragments,
    )


def placement_from_proto(msg: pb.Placement) -> vm.Placement:
    return vm.Placement(
        pool_id=msg.pool_id,
        tail_pool_id=msg.tail_pool_id,
        failure_domain=msg.failure_domain,
        node_selector=dict(msg.node_selector),
        drive_selector=dict(msg.drive_selector),
    )


def placement_to_proto(p: vm.Placement) -> pb.Placement:
    return pb.Placement(
        pool_id=p.pool_id,
        tail_pool_id=p.tail_pool_id,
        failure_domain=pb.FailureDomain.ValueType(p.failure_domain),
        node_selector=p.node_selector,
        drive_selector=p.drive_selector,
    )


def qos_from_proto(msg: pb.Qos) -> vm.Qos:
    return vm.Qos(msg.iops_limit, msg.bandwidth_limit_bytes)


def qos_to_proto(q: vm.Qos) -> pb.Qos:
    return pb.Qos(iops_limit=q.iops_limit, bandwidth_limit_bytes=q.bandwidth_limit_bytes)


def size_from_oneof(which: str | None, nbytes: int, text: str) -> SizeSpec | None:
    """The size a request's ``size_spec`` oneof gives (None when unset)."""
    if which == "size_bytes":
        return SizeSpec(nbytes=nbytes)
    if which == "size":
        return SizeSpec(text=text)
    return None


# -- objects ---------------------------------------------------------------------


def volume_to_proto(v: vm.Volume) -> pb.Volume:
    source = pb.VolumeSource()
    if v.source.kind != SourceKind.NONE:
        setattr(source, f"{v.source.kind.name.lower()}_id", v.source.id)
    return pb.Volume(
        id=v.id,
        cluster_id=v.cluster_id,
        name=v.name,
        kind=pb.VolumeKind.ValueType(v.kind),
        filesystem=pb.Filesystem.ValueType(v.filesystem),
        size_bytes=v.size_bytes,
        durability=durability_to_proto(v.durability),
        placement=placement_to_proto(v.placement),
        provisioning=pb.Provisioning.ValueType(v.provisioning),
        snapshot_factor=v.snapshot_factor,
        qos=qos_to_proto(v.qos),
        labels=v.labels,
        template_id=v.template_id,
        source=source,
        parent_snapshot_id=v.parent_snapshot_id,
        multi_attach=v.multi_attach,
        state=pb.VolumeState.ValueType(v.state),
        usage=pb.VolumeUsage(
            provisioned_bytes=v.usage.provisioned_bytes,
            allocated_bytes=v.usage.allocated_bytes,
            stored_bytes=v.usage.stored_bytes,
        ),
        attachment_count=v.attachment_count,
        snapshot_count=v.snapshot_count,
        active_job_id=v.active_job_id,
        create_time=convert.timestamp(v.create_time),
        update_time=convert.timestamp(v.update_time),
        generation=v.generation,
        declared_copies=v.copies.declared,
        live_copies=v.copies.live,
        missing_copies=[
            pb.MissingCopy(
                index=m.index,
                loss=pb.CopyLoss.ValueType(m.loss),
                allocation_id=m.allocation_id,
                drive_id=m.drive_id,
                node_id=m.node_id,
            )
            for m in v.copies.missing
        ],
        repair_job_id=v.copies.repair_job_id,
        degraded_time=(
            convert.timestamp(v.copies.degraded_time) if v.copies.degraded_time else None
        ),
        owner=v.owner,
        public=v.public,
        acl=[grant_to_proto(g) for g in v.acl],
    )


def grant_to_proto(g: vm.Grant) -> pb.AccessGrant:
    if g.kind == "group":
        return pb.AccessGrant(group=g.name, access=pb.Access.ValueType(int(g.access)))
    return pb.AccessGrant(user=g.name, access=pb.Access.ValueType(int(g.access)))


def grant_from_proto(g: pb.AccessGrant) -> vm.Grant:
    which = g.WhichOneof("grantee") or ""
    return vm.Grant(which, getattr(g, which) if which else "", int(g.access))


def attachment_to_proto(a: vm.Attachment) -> pb.Attachment:
    return pb.Attachment(
        volume_id=a.volume_id,
        node_id=a.node_id,
        mode=pb.AttachMode.ValueType(a.mode),
        device_path=a.device_path,
        attach_time=convert.timestamp(a.attach_time),
        generation=a.generation,
        mount_path=a.mount_path,
        mount_options=a.mount_options,
    )


def snapshot_attachment_to_proto(a: vm.SnapshotAttachment) -> pb.SnapshotAttachment:
    return pb.SnapshotAttachment(
        snapshot_id=a.snapshot_id,
        node_id=a.node_id,
        device_path=a.device_path,
        attach_time=convert.timestamp(a.attach_time),
        generation=a.generation,
    )


def snapshot_to_proto(s: vm.Snapshot) -> pb.Snapshot:
    return pb.Snapshot(
        id=s.id,
        cluster_id=s.cluster_id,
        name=s.name,
        auto_named=s.auto_named,
        volume_id=s.volume_id,
        size_bytes=s.size_bytes,
        durability=durability_to_proto(s.durability),
        labels=s.labels,
        image=s.image,
        state=pb.SnapshotState.ValueType(s.state),
        space_used_bytes=s.space_used_bytes,
        clone_count=s.clone_count,
        datastore_version_count=s.datastore_version_count,
        create_time=convert.timestamp(s.create_time),
        update_time=convert.timestamp(s.update_time),
        generation=s.generation,
        owner=s.owner,
        parent_snapshot_id=s.parent_snapshot_id,
    )


def _capacity_to_proto(c: vm.ClusterCapacity) -> pb.ClusterCapacity:
    return pb.ClusterCapacity(
        cluster_id=c.cluster_id,
        cluster_name=c.cluster_name,
        capacity=convert.capacity(c.capacity),
        available_bytes=c.available_bytes,
        logical_bytes=c.logical_bytes,
        provisioned_bytes=c.provisioned_bytes,
        volume_count=c.volume_count,
        snapshot_count=c.snapshot_count,
        repair_reserved_bytes=c.repair_reserved_bytes,
        pools=[
            pb.PoolCapacity(
                pool_id=p.pool_id,
                pool_name=p.pool_name,
                capacity=convert.capacity(p.capacity),
                available_bytes=p.available_bytes,
            )
            for p in c.pools
        ],
    )


# Responses kept besides those of InspectVolume (see convert.ResponseMemo).
SUMMARIES_KEPT = 64
PAGES_KEPT = 8
VOLUMES_KEPT = 2048


class VolumeServicer(volume_pb2_grpc.VolumeServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._volumes = engine.volumes
        self._snapshots = engine.snapshots
        self._attachments = engine.attachments
        self._repair = engine.repair
        self._inspected: convert.ResponseMemo[pb.InspectVolumeResponse] = convert.ResponseMemo()
        self._summaries: convert.ResponseMemo[pb.GetCapacitySummaryResponse] = convert.ResponseMemo(
            SUMMARIES_KEPT
        )
        # Keyed by the page object itself, which the memo holds while it is
        # kept: few, since a page may hold a thousand volumes.
        self._listed: convert.ResponseMemo[pb.ListVolumesResponse] = convert.ResponseMemo(
            PAGES_KEPT
        )
        # Each volume's message, for as long as the engine hands back the
        # same volume (it does while the volume and what it shows are as
        # they were, see osd.engine.volumes.views): a page read after a
        # change elsewhere converts only the volumes that changed.
        self._converted: convert.ResponseMemo[pb.Volume] = convert.ResponseMemo(VOLUMES_KEPT)

    def _volume(self, v: vm.Volume) -> pb.Volume:
        """``v`` as a message (a copy goes into each response that holds it)."""
        return self._converted.get(v.id, v, lambda: volume_to_proto(v))

    # -- volumes ---------------------------------------------------------------

    def CreateVolume(
        self, request: pb.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> pb.CreateVolumeResponse:
        result = self._volumes.create(create_volume_from_proto(request))
        response = pb.CreateVolumeResponse(
            volume=volume_to_proto(result.value),
            created=result.created,
            generation=result.generation,
        )
        if result.job is not None:
            response.job.CopyFrom(job_to_proto(result.job))
        return response

    def InspectVolume(
        self, request: pb.InspectVolumeRequest, context: grpc.ServicerContext
    ) -> pb.InspectVolumeResponse:
        detail = self._volumes.inspect(request.volume_id)
        return self._inspected.get(
            detail.volume.id,
            detail,
            lambda: pb.InspectVolumeResponse(
                volume=self._volume(detail.volume),
                allocations=[convert.allocation(a) for a in detail.allocations],
                attachments=[attachment_to_proto(a) for a in detail.attachments],
            ),
        )

    def ListVolumes(
        self, request: pb.ListVolumesRequest, context: grpc.ServicerContext
    ) -> pb.ListVolumesResponse:
        page = self._volumes.list(
            vm.VolumeQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                cluster_id=request.cluster_id,
                labels=dict(request.labels),
                name_regex=request.name_regex,
                pool_id=request.pool_id,
                node_id=request.node_id,
                states=tuple(int(s) for s in request.states),
                template_id=request.template_id,
                datastore_version_id=request.datastore_version_id,
                degraded=request.degraded,
                repairing=request.repairing,
                parent_snapshot_id=request.parent_snapshot_id,
            )
        )
        return self._listed.get(
            id(page),
            page,
            lambda: pb.ListVolumesResponse(
                volumes=[self._volume(v) for v in page.items],
                next_page_token=page.next_page_token,
            ),
        )

    def GetCapacitySummary(
        self, request: pb.GetCapacitySummaryRequest, context: grpc.ServicerContext
    ) -> pb.GetCapacitySummaryResponse:
        summary = self._volumes.capacity(request.cluster_id)
        return self._summaries.get(
            request.cluster_id,
            summary,
            lambda: pb.GetCapacitySummaryResponse(
                clusters=[_capacity_to_proto(c) for c in summary.clusters],
                generation=summary.generation,
            ),
        )

    def UpdateVolume(
        self, request: pb.UpdateVolumeRequest, context: grpc.ServicerContext
    ) -> pb.UpdateVolumeResponse:
        result = self._volumes.update(update_volume_from_proto(request))
        response = pb.UpdateVolumeResponse(
            volume=volume_to_proto(result.value), generation=result.generation
        )
        if result.job is not None:
            response.job.CopyFrom(job_to_proto(result.job))
        return response

    def RepairVolume(
        self, request: pb.RepairVolumeRequest, context: grpc.ServicerContext
    ) -> pb.RepairVolumeResponse:
        result = self._repair.repair_now(request.volume_id)
        return pb.RepairVolumeResponse(
            volume=volume_to_proto(result.volume),
            job=job_to_proto(result.job),
            started=result.started,
            generation=result.generation,
        )

    def DeleteVolume(
        self, request: pb.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVolumeResponse:
        result = self._volumes.delete(request.volume_id, request.allow_missing)
        return pb.DeleteVolumeResponse(deleted=result.deleted, generation=result.generation)

    # -- snapshots -------------------------------------------------------------

    def CreateSnapshot(
        self, request: pb.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.CreateSnapshotResponse:
        result = self._snapshots.create(
            vm.CreateSnapshot(
                volume_id=request.volume_id, name=request.name, labels=dict(request.labels)
            )
        )
        return pb.CreateSnapshotResponse(
            snapshot=snapshot_to_proto(result.value),
            created=result.created,
            generation=result.generation,
            job=job_to_proto(result.job) if result.job is not None else None,
        )

    def InspectSnapshot(
        self, request: pb.InspectSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.InspectSnapshotResponse:
        detail = self._snapshots.inspect(request.snapshot_id)
        return pb.InspectSnapshotResponse(
            snapshot=snapshot_to_proto(detail.snapshot),
            allocations=[convert.allocation(a) for a in detail.allocations],
            attachments=[snapshot_attachment_to_proto(a) for a in detail.attachments],
        )

    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        page = self._snapshots.list(
            vm.SnapshotQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                volume_id=request.volume_id,
                cluster_id=request.cluster_id,
                labels=dict(request.labels),
                name_regex=request.name_regex,
                images_only=request.images_only,
                parent_snapshot_id=request.parent_snapshot_id,
            )
        )
        return pb.ListSnapshotsResponse(
            snapshots=[snapshot_to_proto(s) for s in page.items],
            next_page_token=page.next_page_token,
        )

    def UpdateSnapshot(
        self, request: pb.UpdateSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.UpdateSnapshotResponse:
        paths = convert.update_paths(request.update_mask, SNAPSHOT_UPDATABLE)
        result = self._snapshots.update(
            vm.UpdateSnapshot(
                snapshot_id=request.snapshot_id,
                name=request.name if "name" in paths else None,
                labels=dict(request.labels) if "labels" in paths else None,
                image=request.image if "image" in paths else None,
                expected_generation=request.expected_generation,
            )
        )
        return pb.UpdateSnapshotResponse(
            snapshot=snapshot_to_proto(result.value), generation=result.generation
        )

    def DeleteSnapshot(
        self, request: pb.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSnapshotResponse:
        return pb.DeleteSnapshotResponse(generation=self._snapshots.delete(request.snapshot_id))

    def RevertVolume(
        self, request: pb.RevertVolumeRequest, context: grpc.ServicerContext
    ) -> pb.RevertVolumeResponse:
        result = self._snapshots.revert(
            request.volume_id, request.snapshot_id, request.yes_i_really_mean_it
        )
        return pb.RevertVolumeResponse(
            volume=volume_to_proto(result.value), generation=result.generation
        )

    def RebaseVolume(
        self, request: pb.RebaseVolumeRequest, context: grpc.ServicerContext
    ) -> pb.RebaseVolumeResponse:
        result = self._snapshots.rebase_volume(
            vm.Rebase(request.volume_id, request.parent_snapshot_id, request.expected_generation)
        )
        return pb.RebaseVolumeResponse(
            volume=volume_to_proto(result.value), generation=result.generation
        )

    def RebaseSnapshot(
        self, request: pb.RebaseSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.RebaseSnapshotResponse:
        result = self._snapshots.rebase_snapshot(
            vm.Rebase(request.snapshot_id, request.parent_snapshot_id, request.expected_generation)
        )
        return pb.RebaseSnapshotResponse(
            snapshot=snapshot_to_proto(result.value), generation=result.generation
        )

    def FreezeVolume(
        self, request: pb.FreezeVolumeRequest, context: grpc.ServicerContext
    ) -> pb.FreezeVolumeResponse:
        result = self._snapshots.freeze(
            vm.FreezeVolume(
                volume_id=request.volume_id, name=request.name, labels=dict(request.labels)
            )
        )
        return pb.FreezeVolumeResponse(
            snapshot=snapshot_to_proto(result.value), generation=result.generation
        )

    # -- attachments -----------------------------------------------------------

    def AttachVolume(
        self, request: pb.AttachVolumeRequest, context: grpc.ServicerContext
    ) -> pb.AttachVolumeResponse:
        result = self._attachments.attach(
            request.volume_id,
            request.node_id,
            request.mode,
            mount_path=request.mount_path,
            mount_options=tuple(request.mount_options),
        )
        return pb.AttachVolumeResponse(
            attachment=attachment_to_proto(result.attachment),
            attached=result.attached,
            generation=result.generation,
        )

    def DetachVolume(
        self, request: pb.DetachVolumeRequest, context: grpc.ServicerContext
    ) -> pb.DetachVolumeResponse:
        result = self._attachments.detach(request.volume_id, request.node_id, request.force)
        return pb.DetachVolumeResponse(
            detached_node_ids=result.node_ids, generation=result.generation
        )

    def AttachSnapshot(
        self, request: pb.AttachSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.AttachSnapshotResponse:
        result = self._attachments.attach_snapshot(request.snapshot_id, request.node_id)
        return pb.AttachSnapshotResponse(
            attachment=snapshot_attachment_to_proto(result.attachment),
            attached=result.attached,
            generation=result.generation,
        )

    def DetachSnapshot(
        self, request: pb.DetachSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.DetachSnapshotResponse:
        result = self._attachments.detach_snapshot(
            request.snapshot_id, request.node_id, request.force
        )
        return pb.DetachSnapshotResponse(
            detached_node_ids=result.node_ids, generation=result.generation
        )

    def ListAttachments(
        self, request: pb.ListAttachmentsRequest, context: grpc.ServicerContext
    ) -> pb.ListAttachmentsResponse:
        page = self._attachments.list(
            vm.AttachmentQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                volume_id=request.volume_id,
                node_id=request.node_id,
                cluster_id=request.cluster_id,
            )
        )
        return pb.ListAttachmentsResponse(
            attachments=[attachment_to_proto(a) for a in page.items],
            next_page_token=page.next_page_token,
        )

    def ReassignAttachments(
        self, request: pb.ReassignAttachmentsRequest, context: grpc.ServicerContext
    ) -> pb.ReassignAttachmentsResponse:
        result = self._attachments.reassign(
            [
                vm.AttachmentChange(
                    volume_id=c.volume_id,
                    detach_node_ids=tuple(c.detach_node_ids),
                    detach_all=c.detach_all,
                    read_only_node_ids=tuple(c.read_only_node_ids),
                    read_write_node_ids=tuple(c.read_write_node_ids),
                    force=c.force,
                )
                for c in request.changes
            ]
        )
        return pb.ReassignAttachmentsResponse(
            attachments=[attachment_to_proto(a) for a in result.attachments],
            generation=result.generation,
        )


def create_volume_from_proto(request: pb.CreateVolumeRequest) -> vm.CreateVolume:
    which = request.source.WhichOneof("source")
    source = vm.Source()
    if which is not None:
        source = vm.Source(_SOURCE_FIELDS[which], getattr(request.source, which))
    return vm.CreateVolume(
        name=request.name,
        cluster_id=request.cluster_id,
        size=size_from_oneof(request.WhichOneof("size_spec"), request.size_bytes, request.size),
        durability=(
            durability_from_proto(request.durability) if request.HasField("durability") else None
        ),
        placement=(
            placement_from_proto(request.placement) if request.HasField("placement") else None
        ),
        provisioning=request.provisioning,
        snapshot_factor=(request.snapshot_factor if request.HasField("snapshot_factor") else None),
        qos=qos_from_proto(request.qos) if request.HasField("qos") else None,
        labels=dict(request.labels),
        template_id=request.template_id,
        source=source,
        kind=request.kind,
        multi_attach=request.multi_attach,
        filesystem=request.filesystem,
    )


def update_volume_from_proto(request: pb.UpdateVolumeRequest) -> vm.UpdateVolume:
    paths = convert.update_paths(request.update_mask, UPDATABLE)
    size = None
    if {"size_bytes", "size"} <= paths:
        size = SizeSpec(nbytes=request.size_bytes, text=request.size)
    elif "size_bytes" in paths:
        size = SizeSpec(nbytes=request.size_bytes)
    elif "size" in paths:
        size = SizeSpec(text=request.size)
    whole_qos = "qos" in paths
    return vm.UpdateVolume(
        volume_id=request.volume_id,
        name=request.name if "name" in paths else None,
        size=size,
        size_add=request.size_add if "size_add" in paths else None,
        iops_limit=(request.qos.iops_limit if whole_qos or "qos.iops_limit" in paths else None),
        bandwidth_limit_bytes=(
            request.qos.bandwidth_limit_bytes
            if whole_qos or "qos.bandwidth_limit_bytes" in paths
            else None
        ),
        labels=dict(request.labels) if "labels" in paths else None,
        multi_attach=request.multi_attach if "multi_attach" in paths else None,
        replicas=(request.durability.replicas if "durability.replicas" in paths else None),
        placement=(placement_from_proto(request.placement) if "placement" in paths else None),
        owner=request.owner if "owner" in paths else None,
        public=request.public if "public" in paths else None,
        acl=tuple(grant_from_proto(g) for g in request.acl) if "acl" in paths else None,
        shrink_ok=request.shrink_ok,
        expected_generation=request.expected_generation,
        confirmed=request.yes_i_really_mean_it,
        template_id=request.template_id if "template_id" in paths else None,
    )
