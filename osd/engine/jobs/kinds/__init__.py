"""The kinds of long-running jobs (see :mod:`osd.engine.jobs.handler`)."""

from __future__ import annotations

from osd.engine.jobs.handler import AnyHandler
from osd.engine.jobs.kinds.drive_add import DriveAdd
from osd.engine.jobs.kinds.drive_evacuate import DriveEvacuate
from osd.engine.jobs.kinds.drive_replace import DriveReplace
from osd.engine.jobs.kinds.node_drain import NodeDrain
from osd.engine.jobs.kinds.pool_rebalance import PoolRebalance
from osd.engine.jobs.kinds.snapshot_copy import SnapshotCopy
from osd.engine.jobs.kinds.volume_copy import VolumeCopy
from osd.engine.jobs.kinds.volume_move import VolumeMove
from osd.engine.jobs.kinds.volume_repair import VolumeRepair
from osd.engine.jobs.kinds.volume_replica_change import VolumeReplicaChange


def handlers() -> list[AnyHandler]:
    """One handler of every kind this package implements."""
    return [
        DriveAdd(),
        DriveReplace(),
        DriveEvacuate(),
        NodeDrain(),
        PoolRebalance(),
        VolumeMove(),
        VolumeReplicaChange(),
        VolumeCopy(),
        VolumeRepair(),
        SnapshotCopy(),
    ]
