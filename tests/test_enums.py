"""The engine's enums and the proto's agree, name for name and number for number,
and the store's enum columns hold them."""

from __future__ import annotations

from enum import IntEnum

import pytest
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from sqlalchemy import Integer
from sqlalchemy.dialects import sqlite

from osd import enums
from osd.store.models import Base
from osd.store.types import IntEnumType
from osd.v1 import cluster_pb2, common_pb2, job_pb2, node_pb2, volume_pb2

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
    (enums.Access, volume_pb2.Access, "ACCESS_"),
    (enums.VolumeKind, volume_pb2.VolumeKind, "VOLUME_KIND_"),
    (enums.VolumeState, volume_pb2.VolumeState, "VOLUME_STATE_"),
    (enums.SnapshotState, volume_pb2.SnapshotState, "SNAPSHOT_STATE_"),
    (enums.AttachMode, volume_pb2.AttachMode, "ATTACH_MODE_"),
    (enums.JobKind, job_pb2.JobKind, "JOB_KIND_"),
    (enums.JobState, job_pb2.JobState, "JOB_STATE_"),
    (enums.ObjectKind, job_pb2.ObjectKind, "OBJECT_KIND_"),
    (enums.DaemonState, cluster_pb2.DaemonState, "DAEMON_STATE_"),
    (enums.ServiceKind, cluster_pb2.ServiceKind, "SERVICE_KIND_"),
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


# Every enum-valued column and the enum it holds. The template's kind,
# durability_type and provisioning also hold 0 ("no default"), which none of
# those enums has, so they stay plain integers.
ENUM_COLUMNS: dict[tuple[str, str], type[IntEnum]] = {
    ("nodes", "state"): enums.NodeState,
    ("nodes", "coordinator_role"): enums.CoordinatorRole,
    ("nodes", "domain_state"): enums.DomainState,
    ("drives", "state"): enums.DriveState,
    ("volumes", "kind"): enums.VolumeKind,
    ("volumes", "durability_type"): enums.DurabilityType,
    ("volumes", "provisioning"): enums.Provisioning,
    ("volumes", "source_kind"): enums.SourceKind,
    ("volumes", "state"): enums.VolumeState,
    ("snapshots", "durability_type"): enums.DurabilityType,
    ("snapshots", "state"): enums.SnapshotState,
    ("allocations", "state"): enums.AllocationState,
    ("attachments", "mode"): enums.AttachMode,
    ("flush_moves", "mode"): enums.AttachMode,
    ("jobs", "kind"): enums.JobKind,
    ("jobs", "target_kind"): enums.ObjectKind,
    ("jobs", "state"): enums.JobState,
}


def test_enum_columns_are_typed_with_their_enum() -> None:
    typed = {
        (table.name, column.name): column.type.enum
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, IntEnumType)
    }
    assert typed == ENUM_COLUMNS


def test_the_enum_type_keeps_the_number_and_loads_the_member() -> None:
    column = IntEnumType(enums.JobState)
    dialect = sqlite.dialect()
    assert column.impl_instance.__class__ is Integer
    for member in enums.JobState:
        assert column.process_bind_param(member, dialect) == member.value
        assert type(column.process_bind_param(member, dialect)) is int
        assert column.process_bind_param(member.value, dialect) == member.value
        assert column.process_result_value(member.value, dialect) is member
    assert column.process_bind_param(None, dialect) is None
    assert column.process_result_value(None, dialect) is None
    with pytest.raises(ValueError, match=r"^0 given is not a JobState \(one of PENDING=1, "):
        column.process_bind_param(0, dialect)
    with pytest.raises(ValueError, match="7 in the database is not a JobState"):
        column.process_result_value(7, dialect)
    with pytest.raises(TypeError, match="where a JobState is expected"):
        column.process_bind_param(enums.JobKind.DRIVE_ADD, dialect)
    with pytest.raises(TypeError, match="where a JobState number is expected"):
        column.process_bind_param(True, dialect)


def test_a_zero_member_is_a_member() -> None:
    column = IntEnumType(enums.SourceKind)
    dialect = sqlite.dialect()
    assert column.process_bind_param(0, dialect) == 0
    assert column.process_result_value(0, dialect) is enums.SourceKind.NONE
