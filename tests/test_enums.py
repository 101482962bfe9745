"""The engine's enums and the proto's agree, name for name and number for number."""

from __future__ import annotations

from enum import IntEnum

import pytest
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from osd import enums
from osd.v1 import common_pb2, job_pb2, node_pb2, volume_pb2

PAIRS: list[tuple[type[IntEnum], EnumTypeWrapper, str]] = [
    (enums.NodeState, node_pb2.NodeState, "NODE_STATE_"),
    (enums.CoordinatorRole, node_pb2.CoordinatorRole, "COORDINATOR_ROLE_"),
    (enums.DomainState, node_pb2.DomainState, "DOMAIN_STATE_"),
    (enums.DriveState, node_pb2.DriveState, "DRIVE_STATE_"),
    (enums.AllocationState, common_pb2.AllocationState, "ALLOCATION_STATE_"),
    (enums.LabelOperation, common_pb2.LabelOperation, "LABEL_OPERATION_"),
    (enums.DurabilityType, volume_pb2.DurabilityType, "DURABILITY_TYPE_"),
    (enums.FailureDomain, volume_pb2.FailureDomain, "FAILURE_DOMAIN_"),
    (enums.Provisioning, volume_pb2.Provisioning, "PROVISIONING_"),
    (enums.VolumeKind, volume_pb2.VolumeKind, "VOLUME_KIND_"),
    (enums.VolumeState, volume_pb2.VolumeState, "VOLUME_STATE_"),
    (enums.SnapshotState, volume_pb2.SnapshotState, "SNAPSHOT_STATE_"),
    (enums.AttachMode, volume_pb2.AttachMode, "ATTACH_MODE_"),
    (enums.JobKind, job_pb2.JobKind, "JOB_KIND_"),
    (enums.JobState, job_pb2.JobState, "JOB_STATE_"),
    (enums.ObjectKind, job_pb2.ObjectKind, "OBJECT_KIND_"),
]


@pytest.mark.parametrize(
    ("domain", "proto", "prefix"), PAIRS, ids=lambda p: getattr(p, "__name__", "")
)
def test_domain_enum_matches_proto(
    domain: type[IntEnum], proto: EnumTypeWrapper, prefix: str
) -> None:
    from_proto = {
        name.removeprefix(prefix): number
        for name, number in proto.items()
        if not name.endswith("_UNSPECIFIED")
    }
    assert {m.name: m.value for m in domain} == from_proto
