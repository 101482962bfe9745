"""The kinds of long-running jobs (see :mod:`osd.engine.job_kinds.base`)."""

from __future__ import annotations

from osd.engine.job_kinds.base import JobHandler
from osd.engine.job_kinds.drive_add import DriveAdd
from osd.engine.job_kinds.drive_replace import DriveReplace
from osd.engine.job_kinds.evacuate import DriveEvacuate, NodeDrain
from osd.engine.job_kinds.rebalance import PoolRebalance
from osd.engine.job_kinds.volume_copy import VolumeCopy
from osd.engine.job_kinds.volume_move import VolumeMove
from osd.engine.job_kinds.volume_replicas import VolumeReplicaChange


def handlers() -> list[JobHandler]:
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
    ]
