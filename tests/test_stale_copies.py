"""A copy that was away while its volume could be written (attached
read-write, and readable from its other copies) is stale, over the wire on
SQLite and PostgreSQL: when its node comes back (ONLINE again, out of
maintenance) it stays UNAVAILABLE, reported as COPY_LOSS_STALE, until a
repair rebuilds it from a live copy. A copy that went away with the last
readable ones holds the newest data, and serves again as it is; so does one
whose volume was not attached read-write meanwhile."""

from __future__ import annotations

from osd.v1 import common_pb2
from osd.v1 import job_pb2 as jpb
from osd.v1 import node_pb2 as npb
from osd.v1 import service_pb2 as spb
from osd.v1 import volume_pb2 as pb
from tests.conftest import RunningDaemon
from tests.test_jobs import service_stub
from tests.test_repair import assert_healed, drive_of, inspect, repaired, set_policy, world
from tests.volume_helpers import create, node_stub, volumes

ACTIVE = common_pb2.ALLOCATION_STATE_ACTIVE
UNAVAILABLE = common_pb2.ALLOCATION_STATE_UNAVAILABLE


def attach(d: RunningDaemon, volume_id: str, node_id: str) -> None:
    """Attaches the volume read-write on ``node_id``: a writer from now on."""
    volumes(d).AttachVolume(
        pb.AttachVolumeRequest(
            volume_id=volume_id, node_id=node_id, mode=pb.ATTACH_MODE_READ_WRITE
        ),
        timeout=10,
    )


def set_node(d: RunningDaemon, node_id: str, state: int) -> None:
    node_stub(d).SetNodeState(npb.SetNodeStateRequest(node_id=node_id, state=state), timeout=10)


def state_on(d: RunningDaemon, volume_id: str, node_id: str) -> int:
    [state] = [a.state for a in inspect(d, volume_id).allocations if a.node_id == node_id]
    return state


def losses(d: RunningDaemon, volume_id: str) -> dict[str, int]:
    """node id -> why the volume's copy there is missing."""
    return {m.node_id: m.loss for m in inspect(d, volume_id).volume.missing_copies}


def test_a_copy_back_from_an_offline_node_is_resynced_not_served(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _drives = world(daemon, zones=4, paused=True)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    _drive, away = drive_of(daemon, vol.id, 0)
    attach(daemon, vol.id, next(n for n in nodes if n != away))

    set_node(daemon, away, npb.NODE_STATE_OFFLINE)
    assert losses(daemon, vol.id) == {away: pb.COPY_LOSS_NODE_OFFLINE}
    # The two other copies serve, and take the writes meanwhile.
    set_node(daemon, away, npb.NODE_STATE_ONLINE)

    got = inspect(daemon, vol.id)
    assert got.volume.state == pb.VOLUME_STATE_DEGRADED
    assert state_on(daemon, vol.id, away) == UNAVAILABLE
    assert (got.volume.declared_copies, got.volume.live_copies) == (3, 2)
    assert losses(daemon, vol.id) == {away: pb.COPY_LOSS_STALE}

    set_policy(daemon, cluster_id, paused=False)
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert_healed(daemon, vol.id)


def test_the_last_copy_to_go_serves_again_and_the_earlier_one_waits(
    daemon: RunningDaemon,
) -> None:
    cluster_id, _nodes, _drives = world(daemon, zones=4, paused=True)
    two = pb.Durability(type=pb.DURABILITY_TYPE_REPLICATE, replicas=2)
    vol = create(volumes(daemon), cluster_id, "v2", size="64M", replicas=None, durability=two)
    _d0, first = drive_of(daemon, vol.id, 0)
    _d1, last = drive_of(daemon, vol.id, 1)
    attach(daemon, vol.id, last)

    # The first copy goes while the other serves (and is written); then the
    # other goes too, and the volume is DOWN.
    set_node(daemon, first, npb.NODE_STATE_OFFLINE)
    set_node(daemon, last, npb.NODE_STATE_OFFLINE)
    assert inspect(daemon, vol.id).volume.state == pb.VOLUME_STATE_DOWN

    # The first copy is older than the data: it comes back and does not serve.
    set_node(daemon, first, npb.NODE_STATE_ONLINE)
    assert state_on(daemon, vol.id, first) == UNAVAILABLE
    assert inspect(daemon, vol.id).volume.state == pb.VOLUME_STATE_DOWN

    # The last copy holds the newest data: it serves again as it is, and the
    # first one waits for a resync from it.
    set_node(daemon, last, npb.NODE_STATE_ONLINE)
    assert state_on(daemon, vol.id, last) == ACTIVE
    assert state_on(daemon, vol.id, first) == UNAVAILABLE
    got = inspect(daemon, vol.id).volume
    assert got.state == pb.VOLUME_STATE_DEGRADED
    assert losses(daemon, vol.id) == {first: pb.COPY_LOSS_STALE}

    set_policy(daemon, cluster_id, paused=False)
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert_healed(daemon, vol.id, copies=2)


def test_a_single_copy_comes_back_as_it_is(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = world(daemon, zones=4, paused=True)
    none = pb.Durability(type=pb.DURABILITY_TYPE_NONE)
    vol = create(volumes(daemon), cluster_id, "one", size="64M", replicas=None, durability=none)
    _drive, node = drive_of(daemon, vol.id, 0)
    set_node(daemon, node, npb.NODE_STATE_OFFLINE)
    assert inspect(daemon, vol.id).volume.state == pb.VOLUME_STATE_DOWN
    set_node(daemon, node, npb.NODE_STATE_ONLINE)
    assert state_on(daemon, vol.id, node) == ACTIVE
    assert inspect(daemon, vol.id).volume.state == pb.VOLUME_STATE_UP


def test_a_copy_back_from_maintenance_is_resynced(daemon: RunningDaemon) -> None:
    cluster_id, nodes, _drives = world(daemon, zones=4, paused=True)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    _drive, node = drive_of(daemon, vol.id, 1)
    attach(daemon, vol.id, next(n for n in nodes if n != node))
    service = service_stub(daemon)
    service.EnterMaintenance(spb.EnterMaintenanceRequest(node_id=node), timeout=10)
    assert losses(daemon, vol.id) == {node: pb.COPY_LOSS_NODE_MAINTENANCE}
    service.ExitMaintenance(spb.ExitMaintenanceRequest(node_id=node), timeout=10)
    assert state_on(daemon, vol.id, node) == UNAVAILABLE
    assert losses(daemon, vol.id) == {node: pb.COPY_LOSS_STALE}

    set_policy(daemon, cluster_id, paused=False)
    job = repaired(daemon, vol.id)
    assert job.state == jpb.JOB_STATE_DONE, job.error
    assert_healed(daemon, vol.id)


def test_copies_of_a_detached_volume_come_back_as_they_are(daemon: RunningDaemon) -> None:
    # Nothing can write it while they are away: no resync, no repair.
    cluster_id, nodes, _drives = world(daemon, zones=4, paused=True)
    vol = create(volumes(daemon), cluster_id, "v1", size="64M")
    _drive, away = drive_of(daemon, vol.id, 0)
    set_node(daemon, away, npb.NODE_STATE_OFFLINE)
    set_node(daemon, away, npb.NODE_STATE_ONLINE)
    assert state_on(daemon, vol.id, away) == ACTIVE
    assert inspect(daemon, vol.id).volume.state == pb.VOLUME_STATE_UP

    # Attached read-write while a copy is away: that copy is stale from then on.
    set_node(daemon, away, npb.NODE_STATE_OFFLINE)
    attach(daemon, vol.id, next(n for n in nodes if n != away))
    set_node(daemon, away, npb.NODE_STATE_ONLINE)
    assert state_on(daemon, vol.id, away) == UNAVAILABLE
    assert losses(daemon, vol.id) == {away: pb.COPY_LOSS_STALE}
