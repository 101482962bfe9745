"""The CSI node service: the device osd attached to this node (a loop device
over a copy, with the local driver), mounted where the orchestrator asks.

* Stage: for mount access, the device's filesystem (made at first attach,
  or here if the device holds none) is mounted at the staging path, with
  the capability's mount flags, ``ro`` for read-only access. Block access
  stages nothing.
* Publish: the staging mount is bind-mounted at the target path (read-only
  when asked); for block access the device itself is bind-mounted onto a
  file at the target path.
* Unpublish and unstage unmount, and remove what publish made.
* Each call is idempotent: asked again as it was, it answers OK; asked
  again otherwise (another device or mode at the same path) it answers
  ALREADY_EXISTS.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import grpc

from osd.client import Client
from osd.csi import capabilities as caps
from osd.csi.errors import CsiError, answers, invalid, not_found
from osd.csi.v1 import csi_pb2, csi_pb2_grpc
from osd.engine.drivers.base import DriverError
from osd.engine.drivers.local import grow_ext4_offline, make_filesystem, mount_table, run_command
from osd.v1 import node_pb2, volume_pb2

NodeRPC = csi_pb2.NodeServiceCapability.RPC
CAPABILITIES = [
    NodeRPC.STAGE_UNSTAGE_VOLUME,
    NodeRPC.GET_VOLUME_STATS,
    NodeRPC.EXPAND_VOLUME,
    NodeRPC.VOLUME_CONDITION,
    NodeRPC.SINGLE_NODE_MULTI_WRITER,
]


def _run(*argv: str, what: str) -> str:
    try:
        return run_command(*argv, what=what)
    except DriverError as exc:
        raise CsiError(grpc.StatusCode.INTERNAL, str(exc)) from None


def _mounted(path: str) -> tuple[str, str] | None:
    """(source, filesystem type) of what is mounted at ``path``, if anything."""
    return mount_table().get(os.path.realpath(path)) if os.path.exists(path) else None


def _options(path: str) -> set[str]:
    """The mount options of the mount at ``path`` (read-only or not among them)."""
    out = _run("findmnt", "-n", "-o", "OPTIONS", "--mountpoint", path, what=f"reading {path}")
    return set(out.strip().split(","))


def _has_filesystem(device: str) -> str:
    done = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", device],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _mkfs(filesystem: str, device: str, volume_id: str) -> None:
    try:
        make_filesystem(filesystem, device, volume_id)
    except DriverError as exc:
        raise CsiError(grpc.StatusCode.INTERNAL, str(exc)) from None


def _grow_ext4(device: str) -> None:
    try:
        grow_ext4_offline(device)
    except DriverError as exc:
        raise CsiError(grpc.StatusCode.INTERNAL, str(exc)) from None


class Node(csi_pb2_grpc.NodeServicer):
    def __init__(self, client: Client, *, node_id: str, max_volumes: int = 0) -> None:
        self._client = client
        self._node_id = node_id
        self._max_volumes = max_volumes
        self._volumes = client.stub("VolumeService")
        self._nodes = client.stub("NodeService")

    # -- what the daemon knows -------------------------------------------------

    def _volume(self, volume_id: str) -> volume_pb2.InspectVolumeResponse:
        try:
            found: volume_pb2.InspectVolumeResponse = self._volumes.InspectVolume(
                volume_pb2.InspectVolumeRequest(volume_id=volume_id)
            )
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise not_found("volume", volume_id) from None
            raise
        return found

    def _device(
        self, volume_id: str, publish_context: dict[str, str], access: caps.Access
    ) -> tuple[str, bool, volume_pb2.Volume]:
        """The device of the volume's attachment to this node, whether it is
        read-only, and the volume; FAILED_PRECONDITION when it is not
        published here, or cannot serve ``access``."""
        found = self._volume(volume_id)
        why = caps.fits(access, found.volume)
        if why:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {volume_id} cannot be used so: {why}",
            )
        mine = [a for a in found.attachments if a.node_id == self._node_id]
        if not mine or not mine[0].device_path:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {volume_id} is not published to node {self._node_id}",
            )
        device = mine[0].device_path
        given = publish_context.get("devicePath")
        if given and given != device:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {volume_id} is attached here as {device}, not {given}",
            )
        return device, mine[0].mode == volume_pb2.ATTACH_MODE_READ_ONLY, found.volume

    # -- stage -----------------------------------------------------------------

    @answers
    def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeStageVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.staging_target_path:
            raise invalid("staging_target_path", "is required")
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability", "is required")
        access = caps.access_of(request.volume_capability, "volume_capability")
        device, attached_ro, volume = self._device(
            request.volume_id, dict(request.publish_context), access
        )
        if access.block:
            return csi_pb2.NodeStageVolumeResponse()
        read_only = access.read_only or attached_ro
        staging = request.staging_target_path
        have = _mounted(staging)
        if have is not None:
            if have[0] != device or ("ro" in _options(staging)) != read_only:
                raise CsiError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"{staging} holds another mount ({have[0]}), or this one "
                    + ("read-write" if read_only else "read-only"),
                )
            return csi_pb2.NodeStageVolumeResponse()
        Path(staging).mkdir(parents=True, exist_ok=True)
        filesystem = caps.FS_NAMES.get(volume.filesystem, "ext4")
        present = _has_filesystem(device)
        if not present:
            if attached_ro:
                raise CsiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"volume {request.volume_id} holds no filesystem, and is attached read-only",
                )
            _mkfs(filesystem, device, request.volume_id)
        elif present != filesystem:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {request.volume_id} holds {present}, not {filesystem}",
            )
        elif filesystem == "ext4" and not read_only:
            _grow_ext4(device)
        options = list(access.mount_flags)
        if read_only:
            options.append("ro")
        argv = ["mount", "-t", filesystem]
        if options:
            argv += ["-o", ",".join(options)]
        _run(*argv, device, staging, what=f"mounting volume {request.volume_id} at {staging}")
        if filesystem == "xfs" and not read_only:
            # A volume made larger than its source (a clone of a snapshot, or
            # grown while unmounted) gets the room: xfs grows mounted.
            _run("xfs_growfs", staging, what=f"growing the filesystem at {staging}")
        return csi_pb2.NodeStageVolumeResponse()

    @answers
    def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.staging_target_path:
            raise invalid("staging_target_path", "is required")
        staging = request.staging_target_path
        if _mounted(staging) is not None:
            _run("umount", staging, what=f"unmounting {staging}")
        return csi_pb2.NodeUnstageVolumeResponse()

    # -- publish ---------------------------------------------------------------

    @answers
    def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodePublishVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.target_path:
            raise invalid("target_path", "is required")
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability", "is required")
        access = caps.access_of(request.volume_capability, "volume_capability")
        if not access.block and not request.staging_target_path:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "staging_target_path is not set: the plugin stages volumes first",
            )
        device, attached_ro, _ = self._device(
            request.volume_id, dict(request.publish_context), access
        )
        read_only = request.readonly or access.read_only or attached_ro
        target = request.target_path
        source = device if access.block else request.staging_target_path
        if not access.block and _mounted(source) is None:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {request.volume_id} is not staged at {source}",
            )
        have = _mounted(target)
        if have is not None:
            want = device if access.block else _mounted(source)[0]  # type: ignore[index]
            same_ro = ("ro" in _options(target)) == read_only
            if have[0] not in (want, "udev", "devtmpfs") or not same_ro:
                raise CsiError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"{target} holds another mount, or the same one "
                    + ("read-write" if read_only else "read-only"),
                )
            return csi_pb2.NodePublishVolumeResponse()
        parent = Path(target).parent
        parent.mkdir(parents=True, exist_ok=True)
        if access.block:
            Path(target).touch(exist_ok=True)
        else:
            Path(target).mkdir(exist_ok=True)
        _run("mount", "--bind", source, target, what=f"publishing at {target}")
        if read_only:
            try:
                _run("mount", "-o", "remount,bind,ro", target, what=f"making {target} read-only")
            except CsiError:
                _run("umount", target, what=f"unmounting {target}")
                raise
        return csi_pb2.NodePublishVolumeResponse()

    @answers
    def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.target_path:
            raise invalid("target_path", "is required")
        target = request.target_path
        while _mounted(target) is not None:
            _run("umount", target, what=f"unmounting {target}")
        path = Path(target)
        if path.is_dir():
            path.rmdir()
        elif path.exists():
            path.unlink()
        return csi_pb2.NodeUnpublishVolumeResponse()

    # -- stats and growth ------------------------------------------------------

    @answers
    def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.volume_path:
            raise invalid("volume_path", "is required")
        found = self._volume(request.volume_id)
        path = request.volume_path
        if not os.path.exists(path):
            raise not_found("volume path", path)
        out = csi_pb2.NodeGetVolumeStatsResponse()
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            if _mounted(path) is None:
                raise not_found("a mount of the volume at", path)
            fs = os.statvfs(path)
            total, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
            out.usage.add(
                unit=csi_pb2.VolumeUsage.BYTES,
                total=total,
                available=free,
                used=(fs.f_blocks - fs.f_bfree) * fs.f_frsize,
            )
            out.usage.add(
                unit=csi_pb2.VolumeUsage.INODES,
                total=fs.f_files,
                available=fs.f_favail,
                used=fs.f_files - fs.f_ffree,
            )
        else:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
            out.usage.add(unit=csi_pb2.VolumeUsage.BYTES, total=size)
        volume = found.volume
        if volume.state == volume_pb2.VOLUME_STATE_UP:
            out.volume_condition.message = "up"
        else:
            out.volume_condition.abnormal = True
            out.volume_condition.message = (
                volume_pb2.VolumeState.Name(volume.state).removeprefix("VOLUME_STATE_").lower()
                + f": {volume.live_copies} of {volume.declared_copies} copies live"
            )
        return out

    @answers
    def NodeExpandVolume(
        self, request: csi_pb2.NodeExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeExpandVolumeResponse:
        if not request.volume_id:
            raise invalid("volume_id", "is required")
        if not request.volume_path:
            raise invalid("volume_path", "is required")
        volume = self._volume(request.volume_id).volume
        path = request.volume_path
        if not os.path.exists(path):
            raise not_found("volume path", path)
        if volume.kind == volume_pb2.VOLUME_KIND_FILE:
            mounted = _mounted(path)
            if mounted is None:
                raise CsiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"volume {volume.id} is not mounted at {path}",
                )
            device, fstype = mounted
            if fstype == "xfs":
                _run("xfs_growfs", path, what=f"growing the filesystem at {path}")
            else:
                _run("resize2fs", device, what=f"growing the filesystem at {path}")
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=volume.size_bytes)

    # -- the node --------------------------------------------------------------

    @answers
    def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.NodeServiceCapability(rpc=csi_pb2.NodeServiceCapability.RPC(type=kind))
                for kind in CAPABILITIES
            ]
        )

    @answers
    def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetInfoResponse:
        node = self._nodes.InspectNode(node_pb2.InspectNodeRequest(node_id=self._node_id)).node
        out = csi_pb2.NodeGetInfoResponse(node_id=node.id, max_volumes_per_node=self._max_volumes)
        if node.zone:
            out.accessible_topology.segments[caps.ZONE_KEY] = node.zone
        return out
