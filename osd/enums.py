"""Domain enums. Their numbers are the proto enums' numbers, so the transport
converts by value; tests/test_enums.py keeps the two in step."""

from __future__ import annotations

from enum import IntEnum


class NodeState(IntEnum):
    ONLINE = 1
    OFFLINE = 2
    MAINTENANCE = 3
    DRAINING = 4


class CoordinatorRole(IntEnum):
    NONE = 1
    PRIMARY = 2
    SECONDARY = 3


class DomainState(IntEnum):
    READY = 1
    FLUSH = 2


class DriveState(IntEnum):
    ADDING = 1
    ONLINE = 2
    SOFT_EJECTING = 3
    EJECTED = 4
    FAILED = 5
    REPLACING = 6
    OFFLINE = 7


class AllocationState(IntEnum):
    PENDING = 1
    ACTIVE = 2
    UNAVAILABLE = 3
    RELEASING = 4


class DurabilityType(IntEnum):
    NONE = 1
    REPLICATE = 2
    ERASURE = 3


class FailureDomain(IntEnum):
    DRIVE = 1
    NODE = 2
    ZONE = 3


class Provisioning(IntEnum):
    THIN = 1
    THICK = 2


class VolumeKind(IntEnum):
    BLOCK = 1
    FILE = 2


class Filesystem(IntEnum):
    """A FILE volume's filesystem (the proto's Filesystem)."""

    EXT4 = 1
    XFS = 2


class VolumeState(IntEnum):
    CREATING = 1
    UP = 2
    DEGRADED = 3
    DOWN = 4
    DATA_LOST = 5
    DELETING = 6


class SnapshotState(IntEnum):
    CREATING = 1
    READY = 2
    DELETING = 3


class AttachMode(IntEnum):
    READ_WRITE = 1
    READ_ONLY = 2


class JobKind(IntEnum):
    DRIVE_ADD = 1
    DRIVE_REPLACE = 2
    DRIVE_EVACUATE = 3
    POOL_REBALANCE = 4
    NODE_DRAIN = 5
    VOLUME_MOVE = 6
    VOLUME_REPLICA_CHANGE = 7
    VOLUME_COPY = 8
    VOLUME_REPAIR = 9
    SNAPSHOT_COPY = 10


class JobState(IntEnum):
    PENDING = 1
    RUNNING = 2
    PAUSED = 3
    DONE = 4
    FAILED = 5
    CANCELLED = 6

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class ObjectKind(IntEnum):
    CLUSTER = 1
    NODE = 2
    DRIVE = 3
    POOL = 4
    VOLUME = 5
    SNAPSHOT = 6
    JOB = 7


class SourceKind(IntEnum):
    """Which VolumeSource field a volume was created from (stored, not in the proto)."""

    NONE = 0
    SNAPSHOT = 1
    VOLUME = 2
    DATASTORE_VERSION = 3


class LabelOperation(IntEnum):
    SET = 1
    UPDATE = 2
    DELETE = 3


class CopyLoss(IntEnum):
    """Why a declared copy of a volume is not live."""

    DRIVE_FORGOTTEN = 1
    DRIVE_EJECTED = 2
    NODE_OFFLINE = 3
    NODE_MAINTENANCE = 4
    DRIVE_UNAVAILABLE = 5
    STALE = 6


class Access(IntEnum):
    """What a caller may do with a volume; each level includes those below."""

    READ = 1
    WRITE = 2
    ADMIN = 3


class DaemonState(IntEnum):
    SERVING = 1
    GONE = 2
    STOPPED = 3


class ServiceKind(IntEnum):
    DAEMON = 1
    NODE_AGENT = 2
    DRIVE = 3
