"""Helpers for the volume, snapshot, attachment and template tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import func, select

from osd.store import allocations
from osd.store.models import (
    AllocationRow,
    AttachmentRow,
    DriveRow,
    SnapshotRow,
    StateRow,
    TemplateRow,
    VolumeRow,
)
from osd.v1 import node_pb2 as npb
from osd.v1 import node_pb2_grpc, template_pb2_grpc, volume_pb2_grpc
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.helpers import ErrorView, error_of

GIB = 1 << 30
REPLICATE = pb.DURABILITY_TYPE_REPLICATE
NONE = pb.DURABILITY_TYPE_NONE
ERASURE = pb.DURABILITY_TYPE_ERASURE


def volumes(daemon: RunningDaemon) -> volume_pb2_grpc.VolumeServiceStub:
    return volume_pb2_grpc.VolumeServiceStub(daemon.channel)


def node_stub(daemon: RunningDaemon) -> node_pb2_grpc.NodeServiceStub:
    return node_pb2_grpc.NodeServiceStub(daemon.channel)


def hard_eject(daemon: RunningDaemon, drive_id: str) -> None:
    """Ejects a drive at once, its copies lost (confirmed), and checks it is out."""
    resp = node_stub(daemon).EjectDrive(
        npb.EjectDriveRequest(drive_id=drive_id, yes_i_really_mean_it=True), timeout=10
    )
    assert resp.drive.state == npb.DRIVE_STATE_EJECTED


def templates(daemon: RunningDaemon) -> template_pb2_grpc.TemplateServiceStub:
    return template_pb2_grpc.TemplateServiceStub(daemon.channel)


def fails(call: Callable[[Any], Any], request: Any) -> ErrorView:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return error_of(info.value)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def replicated(replicas: int = 3) -> pb.Durability:
    return pb.Durability(type=REPLICATE, replicas=replicas)


def create(
    stub: volume_pb2_grpc.VolumeServiceStub,
    cluster_id: str,
    name: str,
    *,
    size: str = "1G",
    replicas: int | None = 3,
    **kw: Any,
) -> pb.Volume:
    req = pb.CreateVolumeRequest(cluster_id=cluster_id, name=name, size=size, **kw)
    if replicas is not None and "durability" not in kw:
        req.durability.CopyFrom(replicated(replicas))
    return stub.CreateVolume(req).volume


@dataclass(frozen=True)
class Counts:
    volumes: int
    allocations: int
    snapshots: int
    attachments: int
    templates: int
    used_bytes: int


def counts(daemon: RunningDaemon) -> Counts:
    """What is stored, to assert that a refused call wrote nothing."""
    with daemon.store.read() as s:

        def n(model: type[Any]) -> int:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)

        used = int(s.scalar(select(func.coalesce(func.sum(DriveRow.used_bytes), 0))) or 0)
        return Counts(
            n(VolumeRow), n(AllocationRow), n(SnapshotRow), n(AttachmentRow), n(TemplateRow), used
        )


def generation(daemon: RunningDaemon) -> int:
    with daemon.store.read() as s:
        return int(s.scalars(select(StateRow.generation)).one())


def books(daemon: RunningDaemon) -> list[allocations.Discrepancy]:
    """Drives whose used bytes differ from their allocations (empty when right)."""
    with daemon.store.read() as s:
        return allocations.check(s)


def over_committed(daemon: RunningDaemon) -> list[str]:
    with daemon.store.read() as s:
        return list(
            s.scalars(select(DriveRow.id).where(DriveRow.used_bytes > DriveRow.total_bytes))
        )


def used_by_drive(daemon: RunningDaemon) -> dict[str, int]:
    with daemon.store.read() as s:
        return {d: int(u) for d, u in s.execute(select(DriveRow.id, DriveRow.used_bytes)).all()}
