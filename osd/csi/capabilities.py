"""Volume capabilities as osd serves them.

A CSI volume is an osd volume: BLOCK for block access, FILE (with the
filesystem of ``fs_type``: ext4, the default, or xfs) for mount access. The
access modes map onto osd's attachments: one read-write attachment at a
time (``multi_attach`` off), any number of read-only ones, and several
writers only for a block volume that allows them (``multi_attach``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from osd.csi.errors import invalid
from osd.csi.v1 import csi_pb2
from osd.v1 import volume_pb2

Mode = csi_pb2.VolumeCapability.AccessMode.Mode
# The topology segment the plugin reports and takes: a node's zone, under the
# same key as the label placement selects zones by (osd.store.nodes.ZONE_LABEL).
ZONE_KEY = "osd.dev/zone"

READ_ONLY_MODES = {
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY,
    csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY,
}
MULTI_WRITER_MODES = {csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER}
SINGLE_NODE_MODES = {
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER,
}
# An empty fs_type leaves the filesystem to the volume (ext4 for a new one).
FILESYSTEMS = {
    "": volume_pb2.FILESYSTEM_UNSPECIFIED,
    "ext4": volume_pb2.FILESYSTEM_EXT4,
    "xfs": volume_pb2.FILESYSTEM_XFS,
}
FS_NAMES: dict[int, str] = {volume_pb2.FILESYSTEM_EXT4: "ext4", volume_pb2.FILESYSTEM_XFS: "xfs"}

# What the plugin tells the node side in the volume context.
CONTEXT_KIND = "osd.dev/kind"
CONTEXT_FILESYSTEM = "osd.dev/filesystem"


@dataclass(frozen=True)
class Access:
    """One capability, checked."""

    block: bool
    filesystem: int  # volume_pb2.Filesystem; unset for block, or the volume's own
    mode: int
    mount_flags: tuple[str, ...] = ()

    @property
    def read_only(self) -> bool:
        return self.mode in READ_ONLY_MODES

    @property
    def multi_writer(self) -> bool:
        return self.mode in MULTI_WRITER_MODES

    @property
    def single_node(self) -> bool:
        return self.mode in SINGLE_NODE_MODES


def access_of(cap: csi_pb2.VolumeCapability, field: str) -> Access:
    """``cap`` checked (INVALID_ARGUMENT naming ``field`` when it is not one
    osd serves)."""
    kind = cap.WhichOneof("access_type")
    if kind is None:
        raise invalid(field, "needs an access type: block or mount")
    mode = cap.access_mode.mode
    if mode == csi_pb2.VolumeCapability.AccessMode.UNKNOWN or mode not in Mode.values():
        raise invalid(f"{field}.access_mode", "is required")
    if kind == "block":
        return Access(True, volume_pb2.FILESYSTEM_UNSPECIFIED, mode)
    fs_type = cap.mount.fs_type
    if fs_type not in FILESYSTEMS:
        raise invalid(f"{field}.mount.fs_type", f"{fs_type!r} is not one of ext4, xfs")
    if mode in MULTI_WRITER_MODES or mode == Mode.Value("MULTI_NODE_SINGLE_WRITER"):
        raise invalid(
            f"{field}.access_mode",
            f"{Mode.Name(mode)} needs block access: ext4 and xfs are not cluster "
            "filesystems, and other nodes cannot read one that a node writes",
        )
    return Access(False, FILESYSTEMS[fs_type], mode, tuple(cap.mount.mount_flags))


def accesses_of(caps: Sequence[csi_pb2.VolumeCapability], field: str) -> list[Access]:
    """Every capability checked; they must agree on block or mount, and on the
    filesystem."""
    if not caps:
        raise invalid(field, "is required")
    out = [access_of(cap, f"{field}[{i}]") for i, cap in enumerate(caps)]
    named = {a.filesystem for a in out} - {volume_pb2.FILESYSTEM_UNSPECIFIED}
    if len({a.block for a in out}) > 1 or len(named) > 1:
        raise invalid(field, "mix block and mount access, or two filesystems")
    return out


def filesystem_of(accesses: Sequence[Access]) -> int:
    """The filesystem a new volume gets: the one named, else ext4."""
    named = [a.filesystem for a in accesses if a.filesystem]
    return named[0] if named else volume_pb2.FILESYSTEM_EXT4


def fits(access: Access, volume: volume_pb2.Volume) -> str:
    """Why ``volume`` cannot serve ``access`` ("" when it can)."""
    block = volume.kind == volume_pb2.VOLUME_KIND_BLOCK
    if access.block != block:
        return (
            "block access needs a block volume"
            if access.block
            else "mount access needs a filesystem volume"
        )
    own = volume.filesystem or volume_pb2.FILESYSTEM_EXT4
    if not block and access.filesystem not in (volume_pb2.FILESYSTEM_UNSPECIFIED, own):
        return f"the volume's filesystem is {FS_NAMES.get(own, 'ext4')}"
    if access.multi_writer and not volume.multi_attach:
        return "the volume takes one writer at a time"
    return ""


def volume_context(volume: volume_pb2.Volume) -> dict[str, str]:
    if volume.kind == volume_pb2.VOLUME_KIND_BLOCK:
        return {CONTEXT_KIND: "block"}
    return {CONTEXT_KIND: "file", CONTEXT_FILESYSTEM: FS_NAMES.get(volume.filesystem, "ext4")}
