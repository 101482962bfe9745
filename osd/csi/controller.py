"""The CSI controller service: CSI volumes and snapshots are osd's, made and
changed through the daemon's API as any client would.

* A CSI volume is an osd volume; its id is the osd volume id. Its osd name
  is the CSI name where that follows osd's name rule, else "csi-" and a
  hash of it, so one CSI name is always one osd volume: a create is
  idempotent by name, and a create of the same name with another size or
  kind answers ALREADY_EXISTS.
* Parameters (a StorageClass's): ``clusterId``, ``templateId``, ``poolId``,
  ``replicas``, ``failureDomain`` (drive, node or zone), ``provisioning``
  (thin or thick) and ``multiAttach`` (true or false). Keys under
  ``csi.storage.k8s.io/`` are the orchestrator's and are passed over; any
  other key is INVALID_ARGUMENT.
* Topology: a node's segment is its zone, under ``osd.dev/zone``. A create
  with accessibility requirements places the volume in the first zone that
  takes it, preferred zones first, then the other requisite ones (a
  node_selector on the well-known node label); a volume whose copies must
  span zones is placed as its failure domain says, and taken only when a
  copy lands in an allowed zone.
* Publish is an osd attachment of the volume to the node (read-only for a
  read-only capability or ``readonly``); the device path is in the publish
  context, and the node service makes the filesystem's mount.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, wrappers_pb2

from osd.client import Client, error_of
from osd.csi import capabilities as caps
from osd.csi.errors import CsiError, answers, from_daemon, invalid, not_found
from osd.csi.v1 import csi_pb2, csi_pb2_grpc
from osd.v1 import common_pb2, job_pb2, node_pb2, volume_pb2

DEFAULT_SIZE = 1 << 30
SIZE_UNIT = 1 << 20  # sizes are rounded up to whole MiB where the range allows
MIN_SIZE = 512
PARAMETERS = {
    "clusterId",
    "templateId",
    "poolId",
    "replicas",
    "failureDomain",
    "provisioning",
    "multiAttach",
}
FAILURE_DOMAINS = {
    "drive": volume_pb2.FAILURE_DOMAIN_DRIVE,
    "node": volume_pb2.FAILURE_DOMAIN_NODE,
    "zone": volume_pb2.FAILURE_DOMAIN_ZONE,
}
PROVISIONING = {"thin": volume_pb2.PROVISIONING_THIN, "thick": volume_pb2.PROVISIONING_THICK}
RPC = csi_pb2.ControllerServiceCapability.RPC
CAPABILITIES = [
    RPC.CREATE_DELETE_VOLUME,
    RPC.PUBLISH_UNPUBLISH_VOLUME,
    RPC.LIST_VOLUMES,
    RPC.GET_CAPACITY,
    RPC.CREATE_DELETE_SNAPSHOT,
    RPC.LIST_SNAPSHOTS,
    RPC.CLONE_VOLUME,
    RPC.PUBLISH_READONLY,
    RPC.EXPAND_VOLUME,
    RPC.LIST_VOLUMES_PUBLISHED_NODES,
    RPC.VOLUME_CONDITION,
    RPC.GET_VOLUME,
    RPC.SINGLE_NODE_MULTI_WRITER,
    RPC.GET_SNAPSHOT,
]
# Objects a StorageClass names: one that does not exist is a bad parameter,
# not a missing source (NOT_FOUND is the content source's alone).
PARAMETER_FIELDS = {"cluster_id", "template_id", "placement.pool_id"}
# osd's name rule (common.proto).
NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def osd_name(csi_name: str) -> str:
    """The osd name of a CSI name: itself where osd's name rule takes it."""
    if NAME_RE.fullmatch(csi_name) and csi_name not in ("list", "status", ".", ".."):
        return csi_name
    return "csi-" + hashlib.sha256(csi_name.encode()).hexdigest()[:40]


def size_of(capacity: csi_pb2.CapacityRange, default: int = DEFAULT_SIZE) -> int:
    """The bytes to make for a capacity range: the required bytes rounded up
    to a MiB (or to 512 bytes where the limit is tighter); OUT_OF_RANGE when
    none fits."""
    required, limit = capacity.required_bytes, capacity.limit_bytes
    if required < 0 or limit < 0:
        raise CsiError(grpc.StatusCode.OUT_OF_RANGE, "capacity_range cannot be negative")
    if limit and required > limit:
        raise CsiError(
            grpc.StatusCode.OUT_OF_RANGE, "capacity_range.required_bytes exceeds limit_bytes"
        )
    want = required or (min(default, limit) if limit else default)
    for unit in (SIZE_UNIT, MIN_SIZE):
        size = max(unit, -(-want // unit) * unit)
        if not limit or size <= limit:
            return size
    raise CsiError(
        grpc.StatusCode.OUT_OF_RANGE,
        f"no size of whole 512-byte sectors lies between {required} and {limit} bytes",
    )


def in_range(size: int, capacity: csi_pb2.CapacityRange) -> bool:
    return size >= capacity.required_bytes and (
        not capacity.limit_bytes or size <= capacity.limit_bytes
    )


class Controller(csi_pb2_grpc.ControllerServicer):
    def __init__(self, client: Client, *, cluster_id: str = "") -> None:
        self._client = client
        self._cluster_id = cluster_id
        self._volumes = client.stub("VolumeService")
        self._nodes = client.stub("NodeService")
        self._clusters = client.stub("ClusterService")

    # -- volumes -------------------------------------------------------------

    @answers
    def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateVolumeResponse:
        if not request.name:
            raise invalid("name", "is required")
        accesses = caps.accesses_of(request.volume_capabilities, "volume_capabilities")
        source_size = self._source_size(request.volume_content_source)
        size = size_of(request.capacity_range, source_size or DEFAULT_SIZE)
        if source_size and size < source_size:
            raise CsiError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"the source holds {source_size} bytes; a volume made from it is no smaller",
            )
        base = self._create_request(request, accesses, size)
        found = self._by_name(base.name, base.cluster_id)
        if found is not None:
            volume = self._compatible(found, request, accesses, base)
        else:
            try:
                volume = self._create(base, request.accessibility_requirements)
            except grpc.RpcError as err:
                call = error_of(err)
                if call.code == NOT_FOUND and call.metadata.get("field") in PARAMETER_FIELDS:
                    raise invalid("parameters", call.message) from None
                raise
        volume = self._settled(volume, context)
        return csi_pb2.CreateVolumeResponse(volume=self._csi_volume(volume))

    def _create_request(
        self, request: csi_pb2.CreateVolumeRequest, accesses: Sequence[caps.Access], size: int
    ) -> volume_pb2.CreateVolumeRequest:
        params = dict(request.parameters)
        unknown = sorted(
            k for k in params if k not in PARAMETERS and not k.startswith("csi.storage.k8s.io/")
        )
        if unknown:
            raise invalid(f"parameters[{unknown[0]}]", "is not a parameter osd takes")
        out = volume_pb2.CreateVolumeRequest(
            cluster_id=params.get("clusterId", self._cluster_id),
            name=osd_name(request.name),
            size_bytes=size,
            template_id=params.get("templateId", ""),
        )
        if accesses[0].block:
            out.kind = volume_pb2.VOLUME_KIND_BLOCK
        else:
            out.kind = volume_pb2.VOLUME_KIND_FILE
            out.filesystem = caps.filesystem_of(accesses)  # type: ignore[assignment]
        if any(a.multi_writer for a in accesses) or params.get("multiAttach") == "true":
            out.multi_attach = True
        elif params.get("multiAttach", "false") != "false":
            raise invalid("parameters[multiAttach]", "is true or false")
        if "replicas" in params:
            try:
                replicas = int(params["replicas"])
            except ValueError:
                raise invalid("parameters[replicas]", "is a whole number") from None
            if replicas < 1:
                raise invalid("parameters[replicas]", "is at least 1")
            if replicas == 1:
                out.durability.type = volume_pb2.DURABILITY_TYPE_NONE
            else:
                out.durability.type = volume_pb2.DURABILITY_TYPE_REPLICATE
                out.durability.replicas = replicas
        if "failureDomain" in params:
            domain = FAILURE_DOMAINS.get(params["failureDomain"].lower())
            if domain is None:
                raise invalid("parameters[failureDomain]", "is drive, node or zone")
            out.placement.failure_domain = domain
        if "poolId" in params:
            out.placement.pool_id = params["poolId"]
        if "provisioning" in params:
            kind = PROVISIONING.get(params["provisioning"].lower())
            if kind is None:
                raise invalid("parameters[provisioning]", "is thin or thick")
            out.provisioning = kind
        source = request.volume_content_source
        which = source.WhichOneof("type")
        if which == "snapshot":
            out.source.snapshot_id = source.snapshot.snapshot_id
        elif which == "volume":
            out.source.volume_id = source.volume.volume_id
        return out

    def _source_size(self, source: csi_pb2.VolumeContentSource) -> int:
        """The size of the content source (0 without one); NOT_FOUND when it
        does not exist, INVALID_ARGUMENT when it names nothing."""
        which = source.WhichOneof("type")
        if which == "snapshot":
            if not source.snapshot.snapshot_id:
                raise invalid("volume_content_source.snapshot.snapshot_id", "is required")
            return int(self._require_snapshot(source.snapshot.snapshot_id).size_bytes)
        if which == "volume":
            if not source.volume.volume_id:
                raise invalid("volume_content_source.volume.volume_id", "is required")
            return int(self._require_volume(source.volume.volume_id).volume.size_bytes)
        if source.ByteSize():
            raise invalid("volume_content_source", "names neither a snapshot nor a volume")
        return 0

    def _require_snapshot(self, snapshot_id: str) -> volume_pb2.Snapshot:
        try:
            found: volume_pb2.Snapshot = self._volumes.InspectSnapshot(
                volume_pb2.InspectSnapshotRequest(snapshot_id=snapshot_id)
            ).snapshot
        except grpc.RpcError as err:
            if err.code() in (NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise not_found("snapshot", snapshot_id) from None
            raise
        return found

    def _require_volume(self, volume_id: str) -> volume_pb2.InspectVolumeResponse:
        try:
            found: volume_pb2.InspectVolumeResponse = self._volumes.InspectVolume(
                volume_pb2.InspectVolumeRequest(volume_id=volume_id)
            )
        except grpc.RpcError as err:
            if err.code() in (NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise not_found("volume", volume_id) from None
            raise
        return found

    def _by_name(self, name: str, cluster_id: str) -> volume_pb2.Volume | None:
        token = ""
        while True:
            page = self._volumes.ListVolumes(
                volume_pb2.ListVolumesRequest(
                    cluster_id=cluster_id,
                    name_regex=f"^{re.escape(name)}$",
                    page_size=1000,
                    page_token=token,
                )
            )
            if page.volumes:
                return page.volumes[0]  # type: ignore[no-any-return]
            token = page.next_page_token
            if not token:
                return None

    def _compatible(
        self,
        volume: volume_pb2.Volume,
        request: csi_pb2.CreateVolumeRequest,
        accesses: Sequence[caps.Access],
        asked: volume_pb2.CreateVolumeRequest,
    ) -> volume_pb2.Volume:
        """The volume of the same name, when it answers this create too: its
        size in the range, its kind and filesystem, the durability, placement,
        provisioning and sharing the parameters ask for, a zone the topology
        allows, and the same source."""
        why = ""
        if not in_range(volume.size_bytes, request.capacity_range):
            why = f"its size is {volume.size_bytes} bytes"
        for access in accesses:
            why = why or caps.fits(access, volume)
        if asked.HasField("durability") and not why:
            copies = asked.durability.replicas or 1
            if volume.declared_copies != copies:
                why = f"it has {volume.declared_copies} copies"
        domain = asked.placement.failure_domain
        if domain and volume.placement.failure_domain != domain and not why:
            why = "its copies are spread over another failure domain"
        if asked.provisioning and volume.provisioning != asked.provisioning and not why:
            why = "its provisioning differs"
        if asked.multi_attach != volume.multi_attach and not why:
            why = "it " + ("takes" if volume.multi_attach else "does not take") + " several writers"
        allowed = _zones(request.accessibility_requirements.requisite)
        if allowed and not why and not self._zones_of(volume.id) & set(allowed):
            why = "none of its copies is in a requisite zone"
        source = request.volume_content_source
        which = source.WhichOneof("type")
        want = (
            source.snapshot.snapshot_id
            if which == "snapshot"
            else source.volume.volume_id
            if which == "volume"
            else ""
        )
        if want != (volume.source.snapshot_id or volume.source.volume_id):
            why = why or "it was made from another source"
        if why:
            raise CsiError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"volume {request.name!r} exists and does not fit this request: {why}",
            )
        return volume

    def _create(
        self, base: volume_pb2.CreateVolumeRequest, wanted: csi_pb2.TopologyRequirement
    ) -> volume_pb2.Volume:
        allowed = _zones(wanted.requisite) or _zones(wanted.preferred)
        if not allowed:
            return self._volumes.CreateVolume(base).volume  # type: ignore[no-any-return]
        order = _zones(wanted.preferred) + [z for z in allowed if z not in wanted.preferred]
        last: grpc.RpcError | None = None
        for zone in dict.fromkeys(order):
            if zone not in allowed:
                continue
            attempt = volume_pb2.CreateVolumeRequest()
            attempt.CopyFrom(base)
            attempt.placement.node_selector[caps.ZONE_KEY] = zone
            try:
                return self._volumes.CreateVolume(attempt).volume  # type: ignore[no-any-return]
            except grpc.RpcError as err:
                if error_of(err).reason not in ("PLACEMENT_IMPOSSIBLE", "INSUFFICIENT_CAPACITY"):
                    raise
                last = err
        # Copies that must span zones: placed by the failure domain, and
        # taken when one lands in an allowed zone (any zone, when the
        # requirements only prefer).
        volume: volume_pb2.Volume = self._volumes.CreateVolume(base).volume
        zones = self._zones_of(volume.id)
        if zones & set(allowed) or not wanted.requisite:
            return volume
        self._volumes.DeleteVolume(volume_pb2.DeleteVolumeRequest(volume_id=volume.id))
        message = f"no copy of the volume could be placed in zones {', '.join(sorted(allowed))}"
        if last is not None:
            message += f" ({error_of(last).message})"
        raise CsiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def _zones_of(self, volume_id: str) -> set[str]:
        found = self._require_volume(volume_id)
        return {a.zone for a in found.allocations if a.state == common_pb2.ALLOCATION_STATE_ACTIVE}

    def _settled(
        self, volume: volume_pb2.Volume, context: grpc.ServicerContext
    ) -> volume_pb2.Volume:
        """The volume once its copy job is done, within the call's deadline
        (ABORTED while it runs: the create is asked again)."""
        if volume.state != volume_pb2.VOLUME_STATE_CREATING:
            return volume
        remaining = context.time_remaining()
        limit = time.monotonic() + (min(remaining, 3600) if remaining else 60) - 1
        while True:
            volume = self._require_volume(volume.id).volume
            if volume.state != volume_pb2.VOLUME_STATE_CREATING:
                return volume
            job_id = volume.active_job_id
            if job_id:
                job = self._client.call(
                    "JobService.InspectJob", job_pb2.InspectJobRequest(job_id=job_id)
                )
                assert isinstance(job, job_pb2.InspectJobResponse)
                if job.job.state in (job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED):
                    raise CsiError(
                        grpc.StatusCode.INTERNAL,
                        f"filling volume {volume.id} failed: {job.job.error.message}",
                    )
            if time.monotonic() >= limit:
                raise CsiError(
                    grpc.StatusCode.ABORTED,
                    f"volume {volume.id} is still being filled by job {job_id}; ask again",
                )
            time.sleep(0.2)

    def _csi_volume(self, volume: volume_pb2.Volume) -> csi_pb2.Volume:
        """The volume as ListVolumes shows it, with the zones it is reached from."""
        out = self._listed_volume(volume)
        for zone in sorted(self._zones_of(volume.id)):
            out.accessible_topology.add(segments={caps.ZONE_KEY: zone})
        return out

    @answers
    def DeleteVolume(
        self, request: csi_pb2.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        try:
            self._volumes.DeleteVolume(
                volume_pb2.DeleteVolumeRequest(volume_id=request.volume_id, allow_missing=True)
            )
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.INVALID_ARGUMENT:  # not an osd id: never made
                raise
        return csi_pb2.DeleteVolumeResponse()

    @answers
    def ControllerPublishVolume(
        self, request: csi_pb2.ControllerPublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerPublishVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.node_id:
            raise invalid("node_id", "is required")
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability", "is required")
        access = caps.access_of(request.volume_capability, "volume_capability")
        found = self._require_volume(request.volume_id)
        self._require_node(request.node_id)
        why = caps.fits(access, found.volume)
        if why:
            raise invalid("volume_capability", f"does not fit volume {request.volume_id}: {why}")
        read_only = request.readonly or access.read_only
        mode = volume_pb2.ATTACH_MODE_READ_ONLY if read_only else volume_pb2.ATTACH_MODE_READ_WRITE
        elsewhere = [a.node_id for a in found.attachments if a.node_id != request.node_id]
        if access.single_node and elsewhere:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {request.volume_id} is published to node {elsewhere[0]}, and "
                f"{caps.Mode.Name(access.mode)} allows one node",  # type: ignore[arg-type]
            )
        for a in found.attachments:
            if a.node_id == request.node_id and a.mode != mode:
                raise CsiError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"volume {request.volume_id} is published to node {request.node_id} "
                    + ("read-only" if a.mode == volume_pb2.ATTACH_MODE_READ_ONLY else "read-write"),
                )
        attached = self._volumes.AttachVolume(
            volume_pb2.AttachVolumeRequest(
                volume_id=request.volume_id,
                node_id=request.node_id,
                mode=mode,
            )
        ).attachment
        return csi_pb2.ControllerPublishVolumeResponse(
            publish_context={"devicePath": attached.device_path, "readOnly": str(read_only).lower()}
        )

    def _require_node(self, node_id: str) -> node_pb2.Node:
        try:
            node: node_pb2.Node = self._nodes.InspectNode(
                node_pb2.InspectNodeRequest(node_id=node_id)
            ).node
        except grpc.RpcError as err:
            if err.code() in (NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise not_found("node", node_id) from None
            raise
        return node

    @answers
    def ControllerUnpublishVolume(
        self, request: csi_pb2.ControllerUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerUnpublishVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        try:
            self._volumes.DetachVolume(
                volume_pb2.DetachVolumeRequest(volume_id=request.volume_id, node_id=request.node_id)
            )
        except grpc.RpcError as err:
            # Not there (the volume, the node or the attachment): unpublished.
            if err.code() not in (NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise
        return csi_pb2.ControllerUnpublishVolumeResponse()

    @answers
    def ValidateVolumeCapabilities(
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities", "is required")
        volume = self._require_volume(request.volume_id).volume
        for i, cap in enumerate(request.volume_capabilities):
            try:
                access = caps.access_of(cap, f"volume_capabilities[{i}]")
            except CsiError as exc:
                return csi_pb2.ValidateVolumeCapabilitiesResponse(message=exc.message)
            why = caps.fits(access, volume)
            if why:
                return csi_pb2.ValidateVolumeCapabilitiesResponse(message=why)
        for key in request.parameters:
            if key not in PARAMETERS and not key.startswith("csi.storage.k8s.io/"):
                return csi_pb2.ValidateVolumeCapabilitiesResponse(
                    message=f"parameter {key} is not one osd takes"
                )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(
            confirmed=csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=request.volume_context,
                volume_capabilities=request.volume_capabilities,
                parameters=request.parameters,
            )
        )

    @answers
    def ListVolumes(
        self, request: csi_pb2.ListVolumesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ListVolumesResponse:
        if request.max_entries < 0:
            raise invalid("max_entries", "cannot be negative")
        listed, token = _pages(
            lambda size, token: self._volumes.ListVolumes(
                volume_pb2.ListVolumesRequest(
                    cluster_id=self._cluster_id, page_size=size, page_token=token
                )
            ),
            "volumes",
            request.max_entries,
            request.starting_token,
        )
        out = csi_pb2.ListVolumesResponse(next_token=token)
        published = self._published({v.id for v in listed if v.attachment_count})
        for volume in listed:
            entry = out.entries.add()
            entry.volume.CopyFrom(self._listed_volume(volume))
            entry.status.published_node_ids.extend(published.get(volume.id, []))
            entry.status.volume_condition.CopyFrom(_condition(volume))
        return out

    def _listed_volume(self, volume: volume_pb2.Volume) -> csi_pb2.Volume:
        out = csi_pb2.Volume(
            volume_id=volume.id,
            capacity_bytes=volume.size_bytes,
            volume_context=caps.volume_context(volume),
        )
        if volume.source.snapshot_id:
            out.content_source.snapshot.snapshot_id = volume.source.snapshot_id
        elif volume.source.volume_id:
            out.content_source.volume.volume_id = volume.source.volume_id
        return out

    def _published(self, volume_ids: set[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for volume_id in sorted(volume_ids):
            token = ""
            while True:
                page = self._volumes.ListAttachments(
                    volume_pb2.ListAttachmentsRequest(
                        volume_id=volume_id, page_size=1000, page_token=token
                    )
                )
                out.setdefault(volume_id, []).extend(a.node_id for a in page.attachments)
                token = page.next_page_token
                if not token:
                    break
        return out

    @answers
    def ControllerGetVolume(
        self, request: csi_pb2.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        found = self._require_volume(request.volume_id)
        out = csi_pb2.ControllerGetVolumeResponse()
        out.volume.CopyFrom(self._listed_volume(found.volume))
        for zone in sorted(
            {a.zone for a in found.allocations if a.state == common_pb2.ALLOCATION_STATE_ACTIVE}
        ):
            out.volume.accessible_topology.add(segments={caps.ZONE_KEY: zone})
        out.status.published_node_ids.extend(a.node_id for a in found.attachments)
        out.status.volume_condition.CopyFrom(_condition(found.volume))
        return out

    @answers
    def GetCapacity(
        self, request: csi_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetCapacityResponse:
        try:
            caps.accesses_of(request.volume_capabilities or [_ANY], "volume_capabilities")
        except CsiError:
            return csi_pb2.GetCapacityResponse(available_capacity=0)
        cluster_id = request.parameters.get("clusterId", self._cluster_id)
        zone = request.accessible_topology.segments.get(caps.ZONE_KEY, "")
        try:
            copies = max(1, int(request.parameters.get("replicas", "1")))
        except ValueError:
            raise invalid("parameters[replicas]", "is a whole number") from None
        # Each copy takes its size from the free bytes: what a volume can have.
        available = self._available(cluster_id, zone) // copies
        return csi_pb2.GetCapacityResponse(
            available_capacity=available,
            maximum_volume_size=wrappers_pb2.Int64Value(value=available),
            minimum_volume_size=wrappers_pb2.Int64Value(value=MIN_SIZE),
        )

    def _available(self, cluster_id: str, zone: str) -> int:
        """Free bytes on the ONLINE nodes (of one zone, when given)."""
        if not zone:
            summary = self._volumes.GetCapacitySummary(
                volume_pb2.GetCapacitySummaryRequest(cluster_id=cluster_id)
            )
            return sum(c.available_bytes for c in summary.clusters)
        total, token = 0, ""
        while True:
            page = self._nodes.ListNodes(
                node_pb2.ListNodesRequest(
                    cluster_id=cluster_id,
                    zone=zone,
                    states=[node_pb2.NODE_STATE_ONLINE],
                    page_size=1000,
                    page_token=token,
                )
            )
            total += sum(
                max(0, int(n.capacity.total_bytes - n.capacity.used_bytes)) for n in page.nodes
            )
            token = page.next_page_token
            if not token:
                return total

    @answers
    def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.ControllerServiceCapability(
                    rpc=csi_pb2.ControllerServiceCapability.RPC(type=kind)
                )
                for kind in CAPABILITIES
            ]
        )

    @answers
    def ControllerExpandVolume(
        self, request: csi_pb2.ControllerExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.HasField("capacity_range"):
            raise invalid("capacity_range", "is required")
        volume = self._require_volume(request.volume_id).volume
        size = size_of(request.capacity_range, volume.size_bytes)
        if request.HasField("volume_capability"):
            access = caps.access_of(request.volume_capability, "volume_capability")
            why = caps.fits(access, volume)
            if why:
                raise invalid("volume_capability", why)
        if volume.size_bytes < size:
            volume = self._volumes.UpdateVolume(
                volume_pb2.UpdateVolumeRequest(
                    volume_id=volume.id,
                    size_bytes=size,
                    update_mask=field_mask_pb2.FieldMask(paths=["size_bytes"]),
                )
            ).volume
        elif not in_range(volume.size_bytes, request.capacity_range):
            raise CsiError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"volume {volume.id} is {volume.size_bytes} bytes; osd does not shrink it here",
            )
        return csi_pb2.ControllerExpandVolumeResponse(
            capacity_bytes=volume.size_bytes,
            node_expansion_required=volume.kind == volume_pb2.VOLUME_KIND_FILE,
        )

    # -- snapshots -----------------------------------------------------------

    @answers
    def CreateSnapshot(
        self, request: csi_pb2.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateSnapshotResponse:
        if not request.name:
            raise invalid("name", "is required")
        if not request.source_volume_id:
            raise invalid("source_volume_id", "is required")
        self._require_volume(request.source_volume_id)
        try:
            made = self._volumes.CreateSnapshot(
                volume_pb2.CreateSnapshotRequest(
                    volume_id=request.source_volume_id, name=osd_name(request.name)
                )
            )
        except grpc.RpcError as err:
            if error_of(err).reason == "SNAPSHOT_EXISTS":
                raise CsiError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"snapshot {request.name!r} exists, of another volume",
                ) from None
            raise
        return csi_pb2.CreateSnapshotResponse(snapshot=_csi_snapshot(made.snapshot))

    @answers
    def GetSnapshot(
        self, request: csi_pb2.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetSnapshotResponse:
        if not request.snapshot_id:
            raise invalid("snapshot_id", "is required")
        found = self._require_snapshot(request.snapshot_id)
        return csi_pb2.GetSnapshotResponse(snapshot=_csi_snapshot(found))

    @answers
    def ControllerModifyVolume(
        self, request: csi_pb2.ControllerModifyVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerModifyVolumeResponse:
        raise CsiError(
            grpc.StatusCode.UNIMPLEMENTED,
            "osd takes no mutable parameters (no MODIFY_VOLUME capability)",
        )

    @answers
    def DeleteSnapshot(
        self, request: csi_pb2.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteSnapshotResponse:
        if not request.snapshot_id:
            raise invalid("snapshot_id", "is required")
        try:
            self._volumes.DeleteSnapshot(
                volume_pb2.DeleteSnapshotRequest(snapshot_id=request.snapshot_id)
            )
        except grpc.RpcError as err:
            call = error_of(err)
            if call.reason == "SNAPSHOT_NOT_READY" and call.metadata.get("job_id"):
                self._drop_copy(call.metadata["job_id"], request.snapshot_id, context)
            elif err.code() not in (NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise
        return csi_pb2.DeleteSnapshotResponse()

    def _drop_copy(self, job_id: str, snapshot_id: str, context: grpc.ServicerContext) -> None:
        """A snapshot still being copied is dropped by cancelling its copy: a
        cancelled SNAPSHOT_COPY job leaves no snapshot."""
        self._client.call("JobService.CancelJob", job_pb2.CancelJobRequest(job_id=job_id))
        remaining = context.time_remaining()
        try:
            ended = self._client.wait_job(
                job_id, timeout=max(1.0, (remaining or 60) - 1), poll_seconds=0.1
            )
        except TimeoutError:
            raise CsiError(
                grpc.StatusCode.ABORTED,
                f"snapshot {snapshot_id} is still being copied; its copy is cancelled, ask again",
            ) from None
        if ended.state == job_pb2.JOB_STATE_DONE:  # it finished before the cancel
            self._volumes.DeleteSnapshot(volume_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))

    @answers
    def ListSnapshots(
        self, request: csi_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ListSnapshotsResponse:
        if request.max_entries < 0:
            raise invalid("max_entries", "cannot be negative")
        if request.snapshot_id:
            try:
                found = self._volumes.InspectSnapshot(
                    volume_pb2.InspectSnapshotRequest(snapshot_id=request.snapshot_id)
                ).snapshot
            except grpc.RpcError as err:
                if err.code() in (NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    return csi_pb2.ListSnapshotsResponse()
                raise
            if request.source_volume_id and found.volume_id != request.source_volume_id:
                return csi_pb2.ListSnapshotsResponse()
            return csi_pb2.ListSnapshotsResponse(
                entries=[csi_pb2.ListSnapshotsResponse.Entry(snapshot=_csi_snapshot(found))]
            )
        try:
            listed, token = _pages(
                lambda size, token: self._volumes.ListSnapshots(
                    volume_pb2.ListSnapshotsRequest(
                        volume_id=request.source_volume_id,
                        cluster_id=self._cluster_id,
                        page_size=size,
                        page_token=token,
                    )
                ),
                "snapshots",
                request.max_entries,
                request.starting_token,
            )
        except grpc.RpcError as err:
            call = error_of(err)
            if request.source_volume_id and "volume_id" in call.fields:
                return csi_pb2.ListSnapshotsResponse()  # no such volume: no snapshots
            raise from_daemon(call) from None
        return csi_pb2.ListSnapshotsResponse(
            entries=[
                csi_pb2.ListSnapshotsResponse.Entry(snapshot=_csi_snapshot(s))
                for s in listed
                if s.state != volume_pb2.SNAPSHOT_STATE_DELETING
            ],
            next_token=token,
        )


_ANY = csi_pb2.VolumeCapability(
    mount=csi_pb2.VolumeCapability.MountVolume(),
    access_mode=csi_pb2.VolumeCapability.AccessMode(
        mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
    ),
)


def _pages(
    fetch: Callable[[int, str], Any], field: str, max_entries: int, token: str
) -> tuple[list[Any], str]:
    """A CSI page of a daemon list: ``max_entries`` of them (every one when
    0, following the daemon's pages), and the token of the rest."""
    if max_entries:
        page = fetch(min(max_entries, 1000), token)
        return list(getattr(page, field)), str(page.next_page_token)
    out: list[Any] = []
    while True:
        page = fetch(1000, token)
        out += list(getattr(page, field))
        token = page.next_page_token
        if not token:
            return out, ""


def _zones(topologies: Iterable[csi_pb2.Topology]) -> list[str]:
    zones: list[str] = []
    for t in topologies:
        for key in t.segments:
            if key != caps.ZONE_KEY:
                raise invalid(
                    "accessibility_requirements", f"segment key {key!r} is not {caps.ZONE_KEY}"
                )
        zone = t.segments.get(caps.ZONE_KEY, "")
        if zone and zone not in zones:
            zones.append(zone)
    return zones


def _condition(volume: volume_pb2.Volume) -> csi_pb2.VolumeCondition:
    if volume.state == volume_pb2.VOLUME_STATE_UP:
        return csi_pb2.VolumeCondition(abnormal=False, message="up")
    state = volume_pb2.VolumeState.Name(volume.state).removeprefix("VOLUME_STATE_")
    return csi_pb2.VolumeCondition(
        abnormal=volume.state not in (volume_pb2.VOLUME_STATE_CREATING,),
        message=f"{state.lower()}: {volume.live_copies} of {volume.declared_copies} copies live",
    )


def _csi_snapshot(snap: volume_pb2.Snapshot) -> csi_pb2.Snapshot:
    return csi_pb2.Snapshot(
        snapshot_id=snap.id,
        source_volume_id=snap.volume_id,
        size_bytes=snap.size_bytes,
        creation_time=snap.create_time,
        ready_to_use=snap.state == volume_pb2.SNAPSHOT_STATE_READY,
    )
