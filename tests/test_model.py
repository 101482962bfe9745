"""A model-based test of the whole engine: random sequences of topology and
volume changes through the gRPC wire, on the fake driver, on both stores.

The machine (``EngineMachine``) keeps a model of its own and, after every
step, compares it with what the daemon reports. Rules:

* topology: a node OFFLINE and back ONLINE (NodeService.SetNodeState),
  maintenance in and out (Service.EnterMaintenance, ExitMaintenance), a drive
  added (Service.StartDriveAdd), soft-ejected (and a soft eject cancelled at
  once), hard-ejected, forgotten, replaced by a spare device
  (Service.StartDriveReplace), a pool rebalanced (Service.StartPoolRebalance);
* volumes: create, grow, replica change, placement move to another pool,
  snapshot, clone of a snapshot, revert to a snapshot, attach, detach,
  delete;
* ``settle``: waits until every job is final, so the jobs (and the repairs
  of a repair controller, when the daemon has one) run to their end.

A refusal (FAILED_PRECONDITION, RESOURCE_EXHAUSTED, ABORTED, NOT_FOUND,
ALREADY_EXISTS, INVALID_ARGUMENT, UNAVAILABLE) is an allowed outcome; INTERNAL,
UNKNOWN or any other code is a failure, and so is a job FAILED with INTERNAL
or UNKNOWN.

Invariants, after every step:

* books: every drive's used bytes equal the sum of its allocations
  (``osd.store.allocations.check``, what ``osd db check`` runs; the CLI itself
  runs against the store at the end of every example);
* live copies: a copy is live when its allocation is ACTIVE on a serving
  drive (ONLINE, or SOFT_EJECTING/REPLACING while its data moves off) of a
  serving node (ONLINE, or DRAINING). Only forget, hard eject, delete, taking
  a node OFFLINE or into maintenance, and a replica change to fewer copies may
  lower a volume's live copies, and each only by what it acts on: the copies
  on that node or drive, or down to the new replica count. A refused call
  lowers nothing;
* a volume that reports UP (with no job acting on it) has exactly its
  durability's number of copies, each live; a volume whose every copy is
  live and complete reports UP;
* maintenance entered without force leaves every volume with a live copy;
* acknowledged data: the fake driver keeps no bytes, only each replica's
  existence and size (replica id = allocation id). So "every acknowledged
  write is still there" is checked as: every ACTIVE allocation of a volume
  has its replica, of the allocation's size, on the allocation's drive in
  the fake; and, one to one, every replica the fake holds on a serving drive
  belongs to an allocation recorded on that drive (no orphans). Both are
  checked only while no job is active, since a move holds a copy on two
  drives for a moment;
* jobs: a job DONE met its goal unless its result says it did not
  (result.complete false): a drive add leaves the drive ONLINE; a soft eject
  and a replace leave the source EJECTED and empty (a replace also out of
  every pool); a rebalance leaves no missing copy in its pool; a replica
  change leaves the volume with that many live copies; a move leaves every
  copy in the new pool; a repair leaves every copy live. A goal is checked
  only when no other change that could undo it ran since the job started;
  a soft eject cancelled leaves its drive ONLINE;
* pools: a pool's available bytes are the free bytes of its ONLINE member
  drives of ONLINE nodes, and its spread is that of its ONLINE members;
* repair (only once the daemon registers a JOB_KIND_VOLUME_REPAIR handler):
  after ``settle``, a volume that was UP, has no job and lost copies while
  spare capacity in distinct zones exists, is UP again.

Known engine bugs that these invariants catch today are gated by
``KNOWN_BUGS``: a violation whose kind is listed there is noted, not raised.
Remove an entry to turn its check back on.

CI budget: ``MAX_EXAMPLES`` examples of up to ``STEP_COUNT`` steps per store.
``scripts/soak`` sets ``OSD_MODEL_SOAK_SECONDS`` to run batch after batch
until the time is up and prints the number of steps it ran.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from osd.engine.jobs import kinds as job_kinds
from osd.enums import JobKind
from osd.store import allocations as books
from osd.store.models import AllocationRow, DriveRow
from osd.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    job_pb2,
    job_pb2_grpc,
    node_pb2_grpc,
    pool_pb2,
    pool_pb2_grpc,
    service_pb2,
    service_pb2_grpc,
    volume_pb2_grpc,
)
from osd.v1 import node_pb2 as npb
from osd.v1 import volume_pb2 as vpb
from tests.conftest import Database, RunningDaemon, running_daemon
from tests.helpers import error_of
from tests.volume_helpers import mask

# -- known bugs ------------------------------------------------------------------

#: Violations of these kinds are noted and not raised, until the engine fix lands.
# Empty: every bug the machine was written against is fixed. A new one found
# before its fix goes here by name, with a line saying what it is.
KNOWN_BUGS: frozenset[str] = frozenset()

# -- budget ----------------------------------------------------------------------

MAX_EXAMPLES = int(os.environ.get("OSD_MODEL_EXAMPLES", "10"))
STEP_COUNT = int(os.environ.get("OSD_MODEL_STEPS", "20"))
SOAK_SECONDS = float(os.environ.get("OSD_MODEL_SOAK_SECONDS", "0"))
SETTLE_SECONDS = 60.0
CLI_CHECK_EVERY = 5  # examples; `osd db check` as a process takes most of a second

GIB = 1 << 30
DRIVE_BYTES = 12 * GIB
NODES = ("n0", "n1", "n2", "n3")
DEVICES = ("sdb", "sdc")  # drives at the start
SPARES = ("sdd", "sde")  # devices a drive add or a replace may take
DRIVES = tuple(f"{n}/{d}" for n in NODES for d in DEVICES + SPARES)
POOLS = ("all", "half")  # "all": every node whole; "half": the sdb drives

REFUSALS = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAVAILABLE,
}
ACTIVE_JOB = (job_pb2.JOB_STATE_PENDING, job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_PAUSED)
FINAL_JOB = (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)
SERVING_DRIVE = (
    npb.DRIVE_STATE_ONLINE,
    npb.DRIVE_STATE_SOFT_EJECTING,
    npb.DRIVE_STATE_REPLACING,
)
SERVING_NODE = (npb.NODE_STATE_ONLINE, npb.NODE_STATE_DRAINING)
ACTIVE = common_pb2.ALLOCATION_STATE_ACTIVE
BAD_JOB_CODES = (grpc.StatusCode.INTERNAL.value[0], grpc.StatusCode.UNKNOWN.value[0])


@dataclass
class Stats:
    examples: int = 0
    steps: int = 0
    accepted: int = 0
    refusals: int = 0
    gated: dict[str, int] = field(default_factory=dict)


STATS = Stats()


def repair_registered() -> bool:
    """Whether the daemon runs volume repairs (a JOB_KIND_VOLUME_REPAIR handler)."""
    kind = getattr(JobKind, "VOLUME_REPAIR", None)
    return kind is not None and any(h.kind == kind for h in job_kinds.handlers())


# -- what the daemon reports, read in one pass -----------------------------------


@dataclass
class Seen:
    nodes: dict[str, npb.Node]  # by name
    drives: dict[str, npb.Drive]  # by id
    volumes: dict[str, vpb.InspectVolumeResponse]  # by name
    jobs: dict[str, job_pb2.Job]
    pools: dict[str, pool_pb2.Pool]  # by name
    rebalance: dict[str, service_pb2.GetPoolRebalanceStatusResponse]  # by pool name
    quiet: bool  # no job active before or after the reads

    def node_of(self, drive_id: str) -> npb.Node | None:
        drive = self.drives.get(drive_id)
        if drive is None:
            return None
        return next((n for n in self.nodes.values() if n.id == drive.node_id), None)

    def live(self, a: common_pb2.Allocation) -> bool:
        drive = self.drives.get(a.drive_id)
        node = self.node_of(a.drive_id)
        return (
            a.state == ACTIVE
            and drive is not None
            and drive.state in SERVING_DRIVE
            and node is not None
            and node.state in SERVING_NODE
        )

    def live_copies(self, name: str) -> int:
        v = self.volumes.get(name)
        return 0 if v is None else sum(1 for a in v.allocations if self.live(a))


def copies_of(volume: vpb.Volume) -> int:
    d = volume.durability
    if d.type == vpb.DURABILITY_TYPE_REPLICATE:
        return d.replicas
    if d.type == vpb.DURABILITY_TYPE_ERASURE:
        return d.data_fragments + d.redundancy_fragments
    return 1


@dataclass
class VolumeModel:
    """What the test knows of one volume."""

    name: str
    floor: int  # live copies it must keep
    clone: bool = False
    moved: bool = False  # its copies changed drive at some point
    degraded_replica_change: bool = False  # a replica change asked while copies were missing
    ever_up: bool = False
    # The count a replica change still running may lower the volume to: until it
    # ends, the floor never rises above it.
    cap: int | None = None


@dataclass
class JobModel:
    epoch: int  # the change epoch when it started
    checked: bool = False
    # A replica change: the live copies its volume had when it started, and
    # whether it lowers the count. A lowering only drops copies (lost ones
    # first): it keeps min(live before, new count) live and rebuilds nothing.
    live_before: int = 0
    lowers: bool = False


class EngineMachine(RuleBasedStateMachine):
    database: Database  # set by the test
    volume_names = Bundle("volume_names")
    snapshot_names = Bundle("snapshot_names")

    def __init__(self) -> None:
        super().__init__()
        STATS.examples += 1
        self.database.reset()
        self._stack = contextlib.ExitStack()
        self.d: RunningDaemon = self._stack.enter_context(running_daemon(self.database))
        ch = self.d.channel
        self.clusters = cluster_pb2_grpc.ClusterServiceStub(ch)
        self.nodes = node_pb2_grpc.NodeServiceStub(ch)
        self.pools = pool_pb2_grpc.PoolServiceStub(ch)
        self.service = service_pb2_grpc.ServiceStub(ch)
        self.volumes = volume_pb2_grpc.VolumeServiceStub(ch)
        self.jobs = job_pb2_grpc.JobServiceStub(ch)
        self.model: dict[str, VolumeModel] = {}
        self.job_model: dict[str, JobModel] = {}
        self.epoch = 0
        self.cancelled_ejects: dict[str, str] = {}
        self.names = 0
        self._build_topology()
        self.seen = self._observe()

    def _build_topology(self) -> None:
        self.cluster_id = self.clusters.CreateCluster(
            cluster_pb2.CreateClusterRequest(name="model")
        ).cluster.id
        # Repairs start at once (the default waits minutes for a node to come
        # back), so a step's losses are repaired within the same example.
        self.clusters.UpdateCluster(
            cluster_pb2.UpdateClusterRequest(
                cluster_id=self.cluster_id,
                repair=cluster_pb2.RepairPolicy(delay_seconds=0, max_repairs=4),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["repair.delay_seconds", "repair.max_repairs"]
                ),
            )
        )
        node_ids = []
        for i, name in enumerate(NODES):
            address = f"{name}.model"
            for dev in DEVICES + SPARES:
                self.d.driver.add_device(address, f"/dev/{dev}", DRIVE_BYTES)
            node = self.nodes.CreateNode(
                npb.CreateNodeRequest(
                    cluster_id=self.cluster_id,
                    name=name,
                    zone=f"z{i}",
                    management_addresses=[address],
                )
            ).node
            node_ids.append(node.id)
            for dev in DEVICES:
                self.nodes.CreateDrive(
                    npb.CreateDriveRequest(node_id=node.id, device_path=f"/dev/{dev}")
                )
        self.pools.CreatePool(
            pool_pb2.CreatePoolRequest(cluster_id=self.cluster_id, name="all", node_ids=node_ids)
        )
        drives = self._paged(
            self.nodes.ListDrives, npb.ListDrivesRequest(cluster_id=self.cluster_id), "drives"
        )
        self.pools.CreatePool(
            pool_pb2.CreatePoolRequest(
                cluster_id=self.cluster_id,
                name="half",
                drive_ids=[d.id for d in drives if d.device_path == "/dev/sdb"],
            )
        )

    def teardown(self) -> None:
        try:
            if getattr(self, "d", None) is not None:
                with contextlib.suppress(Exception):
                    self._wait_jobs()
                if STATS.examples % CLI_CHECK_EVERY == 1:
                    self._db_check_cli()
        finally:
            self._stack.close()

    # -- calling and reading ---------------------------------------------------

    @staticmethod
    def _paged(call: Callable[..., Any], request: Any, attr: str) -> list[Any]:
        out: list[Any] = []
        request.page_size = 1000
        while True:
            resp = call(request, timeout=30)
            out.extend(getattr(resp, attr))
            if not resp.next_page_token:
                return out
            request.page_token = resp.next_page_token

    def call(self, what: str, fn: Callable[..., Any], request: Any) -> Any | None:
        """The response, or None after an allowed refusal; any other error fails."""
        try:
            resp = fn(request, timeout=30)
        except grpc.RpcError as err:
            e = error_of(err)
            if e.code in REFUSALS:
                STATS.refusals += 1
                note(f"  {what}: {e.code.name} {e.reason} {e.message[:120]}")
                return None
            self._internal(what, e.code, e.message)
            return None
        STATS.accepted += 1
        note(f"  {what}: OK")
        return resp

    def _internal(self, what: str, code: grpc.StatusCode, message: str) -> None:
        if what.startswith("revert") and code == grpc.StatusCode.INTERNAL:
            name = what.split()[1]
            if name in self.model and self.model[name].moved:
                self.violation("revert-after-move-fails", f"{what}: {code.name}: {message}")
                return
        raise AssertionError(f"{what} answered {code.name}: {message}")

    def violation(self, kind: str, message: str) -> None:
        if kind in KNOWN_BUGS:
            STATS.gated[kind] = STATS.gated.get(kind, 0) + 1
            note(f"  known bug {kind}: {message}")
            return
        raise AssertionError(f"[{kind}] {message}")

    def _observe(self) -> Seen:
        def active_jobs() -> list[job_pb2.Job]:
            return self._paged(
                self.jobs.ListJobs,
                job_pb2.ListJobsRequest(cluster_id=self.cluster_id, states=ACTIVE_JOB),
                "jobs",
            )

        # Jobs first: a job final here finished before every read below, so
        # its goal is judged on state read after it.
        jobs = {
            j.id: j
            for j in self._paged(
                self.jobs.ListJobs, job_pb2.ListJobsRequest(cluster_id=self.cluster_id), "jobs"
            )
        }
        nodes = {
            n.name: n
            for n in self._paged(
                self.nodes.ListNodes, npb.ListNodesRequest(cluster_id=self.cluster_id), "nodes"
            )
        }
        drives = {
            d.id: d
            for d in self._paged(
                self.nodes.ListDrives, npb.ListDrivesRequest(cluster_id=self.cluster_id), "drives"
            )
        }
        volumes: dict[str, vpb.InspectVolumeResponse] = {}
        for v in self._paged(
            self.volumes.ListVolumes, vpb.ListVolumesRequest(cluster_id=self.cluster_id), "volumes"
        ):
            with contextlib.suppress(grpc.RpcError):
                volumes[v.name] = self.volumes.InspectVolume(
                    vpb.InspectVolumeRequest(volume_id=v.id), timeout=30
                )
        pools = {
            p.name: p
            for p in self._paged(
                self.pools.ListPools, pool_pb2.ListPoolsRequest(cluster_id=self.cluster_id), "pools"
            )
        }
        rebalance = {
            name: self.service.GetPoolRebalanceStatus(
                service_pb2.GetPoolRebalanceStatusRequest(pool_id=p.id), timeout=30
            )
            for name, p in pools.items()
        }
        quiet = not any(j.state in ACTIVE_JOB for j in jobs.values()) and not active_jobs()
        return Seen(nodes, drives, volumes, jobs, pools, rebalance, quiet)

    def _node(self, name: str) -> npb.Node:
        return self.seen.nodes[name]

    def _drive(self, label: str) -> npb.Drive | None:
        node_name, dev = label.split("/")
        node = self.seen.nodes[node_name]
        return next(
            (
                d
                for d in self.seen.drives.values()
                if d.node_id == node.id and d.device_path == f"/dev/{dev}"
            ),
            None,
        )

    def _volume(self, name: str) -> vpb.Volume | None:
        v = self.seen.volumes.get(name)
        return None if v is None else v.volume

    def _snapshot(self, name: str) -> vpb.Snapshot | None:
        snaps = self._paged(
            self.volumes.ListSnapshots,
            vpb.ListSnapshotsRequest(cluster_id=self.cluster_id, name_regex=f"^{name}$"),
            "snapshots",
        )
        return snaps[0] if snaps else None

    def _copies_on(self, seen: Seen, *, node_id: str = "", drive_id: str = "") -> dict[str, int]:
        """Per volume: its allocations on a node or a drive (any state)."""
        out: dict[str, int] = {}
        for name, v in seen.volumes.items():
            n = 0
            for a in v.allocations:
                if (node_id and a.node_id == node_id) or (drive_id and a.drive_id == drive_id):
                    n += 1
            out[name] = n
        return out

    def _lower_floors(self, *, node_id: str = "", drive_id: str = "") -> None:
        """A change that takes a node or a drive out may lower each volume's live
        copies by the copies on it (before the change, or moved there since)."""
        before = self._copies_on(self.seen, node_id=node_id, drive_id=drive_id)
        after = self._copies_on(self._observe(), node_id=node_id, drive_id=drive_id)
        for name, m in self.model.items():
            m.floor -= max(before.get(name, 0), after.get(name, 0))

    def _start_job(self, job: job_pb2.Job, background: bool = True) -> None:
        """Records a job the step started; unless ``background``, waits until it is final."""
        if not job.id:
            return
        if job.id not in self.job_model:
            self.job_model[job.id] = JobModel(self.epoch)
        if background:
            return
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            state = self.jobs.InspectJob(job_pb2.InspectJobRequest(job_id=job.id), timeout=30)
            if state.job.state in FINAL_JOB:
                note(f"  job {job_pb2.JobState.Name(state.job.state)}")
                return
            time.sleep(0.02)
        raise AssertionError(
            f"job {job_pb2.JobKind.Name(job.kind)} not final after {SETTLE_SECONDS}s"
        )

    def _name(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    # -- topology rules --------------------------------------------------------

    @rule(node=st.sampled_from(NODES))
    def node_offline(self, node: str) -> None:
        n = self._node(node)
        self.epoch += 1
        if self.call(
            f"set {node} OFFLINE",
            self.nodes.SetNodeState,
            npb.SetNodeStateRequest(node_id=n.id, state=npb.NODE_STATE_OFFLINE),
        ):
            self._lower_floors(node_id=n.id)

    @rule(node=st.sampled_from(NODES))
    def node_online(self, node: str) -> None:
        self.epoch += 1
        self.call(
            f"set {node} ONLINE",
            self.nodes.SetNodeState,
            npb.SetNodeStateRequest(node_id=self._node(node).id, state=npb.NODE_STATE_ONLINE),
        )

    @rule(node=st.sampled_from(NODES), force=st.booleans())
    def enter_maintenance(self, node: str, force: bool) -> None:
        n = self._node(node)
        self.epoch += 1
        resp = self.call(
            f"enter maintenance {node} force={force}",
            self.service.EnterMaintenance,
            service_pb2.EnterMaintenanceRequest(node_id=n.id, force=force),
        )
        if resp is None:
            return
        was_online = n.state != npb.NODE_STATE_MAINTENANCE
        self._lower_floors(node_id=n.id)
        if force or not was_online:
            return
        # Unforced: no volume may be left without a live copy.
        seen = self._observe()
        for name, v in seen.volumes.items():
            on_node = [a for a in v.allocations if a.node_id == n.id]
            if (
                on_node
                and seen.live_copies(name) == 0
                and self.seen.live_copies(name) > 0
                and v.volume.state not in (vpb.VOLUME_STATE_CREATING, vpb.VOLUME_STATE_DELETING)
            ):
                self.violation(
                    "maintenance-durability",
                    f"{node} entered maintenance unforced, leaving {name} without a live copy",
                )

    @rule(node=st.sampled_from(NODES))
    def exit_maintenance(self, node: str) -> None:
        self.epoch += 1
        self.call(
            f"exit maintenance {node}",
            self.service.ExitMaintenance,
            service_pb2.ExitMaintenanceRequest(node_id=self._node(node).id),
        )

    @rule(drive=st.sampled_from(DRIVES), background=st.booleans())
    def add_drive(self, drive: str, background: bool) -> None:
        node_name, dev = drive.split("/")
        self.epoch += 1
        resp = self.call(
            f"add drive {drive}",
            self.service.StartDriveAdd,
            service_pb2.StartDriveAddRequest(
                node_id=self._node(node_name).id, device_path=f"/dev/{dev}"
            ),
        )
        if resp is not None:
            self._start_job(resp.job, background)

    @rule(drive=st.sampled_from(DRIVES), cancel=st.booleans(), background=st.booleans())
    def soft_eject(self, drive: str, cancel: bool, background: bool) -> None:
        d = self._drive(drive)
        if d is None:
            note(f"  soft eject {drive}: no such drive")
            return
        self.epoch += 1
        resp = self.call(
            f"soft eject {drive}",
            self.nodes.EjectDrive,
            npb.EjectDriveRequest(drive_id=d.id, soft=True),
        )
        if resp is None:
            return
        self._start_job(resp.job)  # waited for below
        for m in self.model.values():
            m.moved = True
        if cancel and resp.job.id:
            done = self.call(
                f"cancel soft eject of {drive}",
                self.jobs.CancelJob,
                job_pb2.CancelJobRequest(job_id=resp.job.id),
            )
            if done is not None:
                self.cancelled_ejects[resp.job.id] = d.id
        self._start_job(resp.job, background)

    @rule(drive=st.sampled_from(DRIVES))
    def hard_eject(self, drive: str) -> None:
        d = self._drive(drive)
        if d is None:
            note(f"  hard eject {drive}: no such drive")
            return
        self.epoch += 1
        if self.call(
            f"hard eject {drive}",
            self.nodes.EjectDrive,
            npb.EjectDriveRequest(drive_id=d.id, soft=False, yes_i_really_mean_it=True),
        ):
            self._lower_floors(drive_id=d.id)

    @rule(drive=st.sampled_from(DRIVES))
    def forget_drive(self, drive: str) -> None:
        d = self._drive(drive)
        if d is None:
            note(f"  forget {drive}: no such drive")
            return
        self.epoch += 1
        if self.call(
            f"forget {drive}",
            self.nodes.ForgetDrive,
            npb.ForgetDriveRequest(drive_id=d.id, yes_i_really_mean_it=True),
        ):
            self._lower_floors(drive_id=d.id)

    @rule(drive=st.sampled_from(DRIVES), spare=st.sampled_from(SPARES), background=st.booleans())
    def replace_drive(self, drive: str, spare: str, background: bool) -> None:
        d = self._drive(drive)
        if d is None:
            note(f"  replace {drive}: no such drive")
            return
        target = self._drive(f"{drive.split('/')[0]}/{spare}")
        request = service_pb2.StartDriveReplaceRequest(source_drive_id=d.id)
        if target is not None:
            request.target_drive_id = target.id
        else:
            request.target_device_path = f"/dev/{spare}"
        self.epoch += 1
        resp = self.call(f"replace {drive} by {spare}", self.service.StartDriveReplace, request)
        if resp is not None:
            self._start_job(resp.job, background)
            for m in self.model.values():
                m.moved = True

    @rule(pool=st.sampled_from(POOLS), background=st.booleans())
    def rebalance(self, pool: str, background: bool) -> None:
        self.epoch += 1
        resp = self.call(
            f"rebalance {pool}",
            self.service.StartPoolRebalance,
            service_pb2.StartPoolRebalanceRequest(pool_id=self.seen.pools[pool].id),
        )
        if resp is not None:
            self._start_job(resp.job, background)
            for m in self.model.values():
                m.moved = True

    # -- volume rules ----------------------------------------------------------

    @rule(
        target=volume_names,
        gib=st.integers(1, 3),
        replicas=st.sampled_from([1, 2, 3]),
        pool=st.sampled_from(("", *POOLS)),
    )
    def create_volume(self, gib: int, replicas: int, pool: str) -> Any:
        name = self._name("v")
        request = vpb.CreateVolumeRequest(
            cluster_id=self.cluster_id, name=name, size_bytes=gib * GIB
        )
        if replicas > 1:
            request.durability.CopyFrom(
                vpb.Durability(type=vpb.DURABILITY_TYPE_REPLICATE, replicas=replicas)
            )
        if pool:
            request.placement.pool_id = self.seen.pools[pool].id
        resp = self.call(
            f"create {name} {gib}G x{replicas} pool={pool or '-'}",
            self.volumes.CreateVolume,
            request,
        )
        if resp is None:
            return multiple()
        self.model[name] = VolumeModel(name, floor=0)
        return name

    @rule(volume=volume_names, gib=st.integers(1, 4))
    def resize_volume(self, volume: str, gib: int) -> None:
        v = self._volume(volume)
        if v is None:
            note(f"  resize {volume}: no such volume")
            return
        self.epoch += 1
        self.call(
            f"resize {volume} to {gib}G",
            self.volumes.UpdateVolume,
            vpb.UpdateVolumeRequest(
                volume_id=v.id, size_bytes=gib * GIB, update_mask=mask("size_bytes")
            ),
        )

    @rule(volume=volume_names, replicas=st.integers(2, 4), background=st.booleans())
    def change_replicas(self, volume: str, replicas: int, background: bool) -> None:
        v = self._volume(volume)
        if v is None:
            note(f"  replicas {volume}: no such volume")
            return
        missing = self.seen.live_copies(volume) < len(self.seen.volumes[volume].allocations)
        self.epoch += 1
        resp = self.call(
            f"set {volume} replicas to {replicas}",
            self.volumes.UpdateVolume,
            vpb.UpdateVolumeRequest(
                volume_id=v.id,
                durability=vpb.Durability(replicas=replicas),
                update_mask=mask("durability.replicas"),
            ),
        )
        if resp is None:
            return
        job = self.job_model.setdefault(resp.job.id, JobModel(self.epoch)) if resp.job.id else None
        if job is not None:
            job.live_before = self.seen.live_copies(volume)
            job.lowers = replicas < copies_of(self.seen.volumes[volume].volume)
        m = self.model[volume]
        m.floor = min(m.floor, replicas)
        m.cap = replicas if m.cap is None else min(m.cap, replicas)
        m.degraded_replica_change = m.degraded_replica_change or missing
        self._start_job(resp.job, background)

    @rule(volume=volume_names, pool=st.sampled_from(POOLS), background=st.booleans())
    def move_volume(self, volume: str, pool: str, background: bool) -> None:
        v = self._volume(volume)
        if v is None:
            note(f"  move {volume}: no such volume")
            return
        self.epoch += 1
        resp = self.call(
            f"move {volume} to pool {pool}",
            self.volumes.UpdateVolume,
            vpb.UpdateVolumeRequest(
                volume_id=v.id,
                placement=vpb.Placement(pool_id=self.seen.pools[pool].id),
                update_mask=mask("placement"),
            ),
        )
        if resp is not None:
            self.model[volume].moved = True
            self._start_job(resp.job, background)

    @rule(target=snapshot_names, volume=volume_names)
    def snapshot(self, volume: str) -> Any:
        v = self._volume(volume)
        if v is None:
            note(f"  snapshot {volume}: no such volume")
            return multiple()
        name = self._name("s")
        resp = self.call(
            f"snapshot {volume} as {name}",
            self.volumes.CreateSnapshot,
            vpb.CreateSnapshotRequest(volume_id=v.id, name=name),
        )
        return multiple() if resp is None else name

    @rule(target=volume_names, snapshot=snapshot_names, replicas=st.sampled_from([1, 2, 3]))
    def clone(self, snapshot: str, replicas: int) -> Any:
        s = self._snapshot(snapshot)
        if s is None:
            note(f"  clone {snapshot}: no such snapshot")
            return multiple()
        name = self._name("v")
        request = vpb.CreateVolumeRequest(
            cluster_id=self.cluster_id, name=name, source=vpb.VolumeSource(snapshot_id=s.id)
        )
        if replicas > 1:
            request.durability.CopyFrom(
                vpb.Durability(type=vpb.DURABILITY_TYPE_REPLICATE, replicas=replicas)
            )
        resp = self.call(
            f"clone {snapshot} as {name} x{replicas}", self.volumes.CreateVolume, request
        )
        if resp is None:
            return multiple()
        self.model[name] = VolumeModel(name, floor=0, clone=True)
        return name

    @rule(volume=volume_names, snapshot=snapshot_names)
    def revert(self, volume: str, snapshot: str) -> None:
        v = self._volume(volume)
        s = self._snapshot(snapshot)
        if v is None or s is None:
            note(f"  revert {volume} to {snapshot}: no such volume or snapshot")
            return
        self.epoch += 1
        self.call(
            f"revert {volume} to {snapshot}",
            self.volumes.RevertVolume,
            vpb.RevertVolumeRequest(volume_id=v.id, snapshot_id=s.id, yes_i_really_mean_it=True),
        )

    @rule(volume=volume_names, node=st.sampled_from(NODES), read_only=st.booleans())
    def attach(self, volume: str, node: str, read_only: bool) -> None:
        v = self._volume(volume)
        if v is None:
            note(f"  attach {volume}: no such volume")
            return
        mode = vpb.ATTACH_MODE_READ_ONLY if read_only else vpb.ATTACH_MODE_READ_WRITE
        self.call(
            f"attach {volume} to {node} {'ro' if read_only else 'rw'}",
            self.volumes.AttachVolume,
            vpb.AttachVolumeRequest(volume_id=v.id, node_id=self._node(node).id, mode=mode),
        )

    @rule(volume=volume_names)
    def detach(self, volume: str) -> None:
        v = self._volume(volume)
        if v is None:
            note(f"  detach {volume}: no such volume")
            return
        self.call(
            f"detach {volume}", self.volumes.DetachVolume, vpb.DetachVolumeRequest(volume_id=v.id)
        )

    @rule(volume=consumes(volume_names))
    def delete_volume(self, volume: str) -> None:
        v = self._volume(volume)
        if v is None:
            note(f"  delete {volume}: no such volume")
            return
        self.epoch += 1
        if self.call(
            f"delete {volume}", self.volumes.DeleteVolume, vpb.DeleteVolumeRequest(volume_id=v.id)
        ):
            self.model.pop(volume, None)

    # -- letting the jobs run --------------------------------------------------

    def _wait_jobs(self) -> list[job_pb2.Job]:
        """Waits until no job is active; returns the jobs still active at the deadline."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            active = self._paged(
                self.jobs.ListJobs,
                job_pb2.ListJobsRequest(cluster_id=self.cluster_id, states=ACTIVE_JOB),
                "jobs",
            )
            if not active or time.monotonic() > deadline:
                return active
            time.sleep(0.05)

    @rule()
    def settle(self) -> None:
        stuck = self._wait_jobs()
        if stuck:
            raise AssertionError(
                "jobs still active after "
                f"{SETTLE_SECONDS:.0f}s: "
                + ", ".join(
                    f"{job_pb2.JobKind.Name(j.kind)} {job_pb2.JobState.Name(j.state)}"
                    for j in stuck
                )
            )
        note("  every job final")
        if repair_registered():
            self._check_repaired()

    def _check_repaired(self) -> None:
        """A volume that was UP and lost copies is UP again once repairs ran,
        when spare capacity in enough distinct zones exists."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            seen = self._observe()
            pending = [
                name
                for name, v in seen.volumes.items()
                if name in self.model
                and self.model[name].ever_up
                and v.volume.state == vpb.VOLUME_STATE_DEGRADED
                and not v.volume.active_job_id
                # A copy on a node in MAINTENANCE waits for the node (or the
                # maintenance timeout, an hour) by policy: not repaired around.
                and not any(
                    c.loss == vpb.COPY_LOSS_NODE_MAINTENANCE for c in v.volume.missing_copies
                )
                and self._spare_zones(seen, v) >= copies_of(v.volume) - seen.live_copies(name)
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                self.violation(
                    "repair-does-not-restore",
                    f"volumes {pending} stayed DEGRADED with spare capacity after repair",
                )
                return
            time.sleep(0.2)

    @staticmethod
    def _spare_zones(seen: Seen, v: vpb.InspectVolumeResponse) -> int:
        """Zones with no live copy of the volume that hold a serving drive
        (in its pool, if it names one) with room for a copy."""
        used_zones = {a.zone for a in v.allocations if seen.live(a)}
        zones = set()
        for d in seen.drives.values():
            node = seen.node_of(d.id)
            if node is None or node.state != npb.NODE_STATE_ONLINE:
                continue
            if d.state != npb.DRIVE_STATE_ONLINE or d.journal:
                continue
            if v.volume.placement.pool_id and v.volume.placement.pool_id not in d.pool_ids:
                continue
            if d.capacity.free_bytes >= v.volume.size_bytes and node.zone not in used_zones:
                zones.add(node.zone)
        return len(zones)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        STATS.steps += 1
        seen = self._observe()
        previous, self.seen = self.seen, seen
        self._check_books()
        self._check_live_copies(seen)
        self._check_volume_states(seen)
        self._check_jobs(seen, previous)
        self._check_pools(seen)
        if seen.quiet:
            self._check_replicas(seen)

    def _check_books(self) -> None:
        with self.d.store.read() as s:
            wrong = books.check(s)
        if wrong:
            self.violation("books", f"used bytes differ from allocations: {wrong}")

    def _check_live_copies(self, seen: Seen) -> None:
        for name, m in list(self.model.items()):
            v = seen.volumes.get(name)
            if v is None:
                # Gone without a delete the model asked for (e.g. a clone
                # rolled back): nothing of it to keep.
                self.model.pop(name)
                continue
            live = seen.live_copies(name)
            if v.volume.state == vpb.VOLUME_STATE_UP:
                m.ever_up = True
            if live < m.floor:
                kind = (
                    "replica-change-deletes-live-copy"
                    if m.degraded_replica_change
                    else "live-copy-lost"
                )
                self.violation(
                    kind,
                    f"{name} has {live} live copies, fewer than the {m.floor} it must keep "
                    f"({_allocs(seen, v)})",
                )
            if m.cap is not None and not v.volume.active_job_id:
                m.cap = None  # the change ended; what is live now is its outcome
            m.floor = live if m.cap is None else min(live, m.cap)

    def _check_volume_states(self, seen: Seen) -> None:
        for name, v in seen.volumes.items():
            vol = v.volume
            if vol.active_job_id:
                continue
            want = copies_of(vol)
            live = seen.live_copies(name)
            # A PENDING reservation (a move's target) or a RELEASING source is
            # a copy in transit, not one of the volume's copies.
            held = [
                a
                for a in v.allocations
                if a.state
                not in (common_pb2.ALLOCATION_STATE_PENDING, common_pb2.ALLOCATION_STATE_RELEASING)
            ]
            if vol.state == vpb.VOLUME_STATE_UP and (live != want or len(held) != want):
                m = self.model.get(name)
                kind = "clone-gets-one-copy" if m is not None and m.clone else "up-without-copies"
                self.violation(
                    kind,
                    f"{name} is UP with {live} live of {len(v.allocations)} copies, "
                    f"durability wants {want} ({_allocs(seen, v)})",
                )
            if vol.state in (
                vpb.VOLUME_STATE_DEGRADED,
                vpb.VOLUME_STATE_DOWN,
            ) and live == want == len(v.allocations):
                self.violation(
                    "state-stale",
                    f"{name} is {vpb.VolumeState.Name(vol.state)} with every copy live "
                    f"({_allocs(seen, v)})",
                )

    def _check_jobs(self, seen: Seen, previous: Seen) -> None:
        for job in seen.jobs.values():
            jm = self.job_model.get(job.id)
            if jm is None:
                # Started by the daemon itself (a repair): it may predate
                # whatever the last step changed.
                jm = self.job_model[job.id] = JobModel(self.epoch - 1)
            if job.state not in FINAL_JOB or jm.checked:
                continue
            jm.checked = True
            kind = job_pb2.JobKind.Name(job.kind)
            if job.state == job_pb2.JOB_STATE_FAILED and job.error.code in BAD_JOB_CODES:
                raise AssertionError(
                    f"job {kind} FAILED with code {job.error.code}: {job.error.message}"
                )
            if job.id in self.cancelled_ejects and job.state == job_pb2.JOB_STATE_CANCELLED:
                drive = seen.drives.get(self.cancelled_ejects[job.id])
                if (
                    drive is not None
                    and jm.epoch == self.epoch
                    and drive.state != npb.DRIVE_STATE_ONLINE
                ):
                    self.violation(
                        "soft-eject-cancel",
                        f"soft eject cancelled, drive left {npb.DriveState.Name(drive.state)}",
                    )
            if job.state != job_pb2.JOB_STATE_DONE:
                continue
            if job.HasField("result") and not job.result.complete:
                note(f"  {kind} DONE incomplete: {job.result.reason} {job.result.summary}")
                continue
            if jm.epoch != self.epoch:
                continue  # something changed since it started
            problem = self._goal_unmet(job, seen)
            if problem:
                if job.kind == job_pb2.JOB_KIND_POOL_REBALANCE:
                    gate = "rebalance-done-with-missing-copies"
                elif "EJECTED source still a member" in problem:
                    gate = "pool-counts-ejected-drives"
                else:
                    gate = "job-done-goal-unmet"
                self.violation(gate, f"{kind} DONE (complete) but {problem}")

    def _goal_unmet(self, job: job_pb2.Job, seen: Seen) -> str:
        target = job.target.id
        if job.kind == job_pb2.JOB_KIND_DRIVE_ADD:
            d = seen.drives.get(target)
            if d is not None and d.state != npb.DRIVE_STATE_ONLINE:
                return f"drive is {npb.DriveState.Name(d.state)}"
        elif job.kind in (job_pb2.JOB_KIND_DRIVE_EVACUATE, job_pb2.JOB_KIND_DRIVE_REPLACE):
            d = seen.drives.get(target)
            if d is not None and (d.state != npb.DRIVE_STATE_EJECTED or d.allocation_count):
                state = npb.DriveState.Name(d.state)
                return f"source is {state} with {d.allocation_count} allocations"
            if d is not None and job.kind == job_pb2.JOB_KIND_DRIVE_REPLACE and d.pool_ids:
                pools = [n for n, p in seen.pools.items() if p.id in d.pool_ids]
                return f"EJECTED source still a member of pools {pools}"
        elif job.kind == job_pb2.JOB_KIND_POOL_REBALANCE:
            for name, p in seen.pools.items():
                if p.id == target and seen.rebalance[name].missing_copies:
                    return f"pool {name} has {seen.rebalance[name].missing_copies} missing copies"
        elif job.kind in (
            job_pb2.JOB_KIND_VOLUME_REPLICA_CHANGE,
            job_pb2.JOB_KIND_VOLUME_MOVE,
            job_pb2.JOB_KIND_VOLUME_REPAIR,
            job_pb2.JOB_KIND_VOLUME_COPY,
        ):
            v = next((v for v in seen.volumes.values() if v.volume.id == target), None)
            if v is None:
                return ""
            want = copies_of(v.volume)
            live = sum(1 for a in v.allocations if seen.live(a))
            jm = self.job_model.get(job.id)
            if job.kind == job_pb2.JOB_KIND_VOLUME_REPLICA_CHANGE and jm is not None and jm.lowers:
                held = [a for a in v.allocations if a.state != common_pb2.ALLOCATION_STATE_PENDING]
                keep = min(jm.live_before, want)
                if len(held) != want or live < keep:
                    return (
                        f"{v.volume.name} has {len(held)} copies, {live} live, after lowering "
                        f"to {want} from {jm.live_before} live ({_allocs(seen, v)})"
                    )
                return ""
            if job.kind != job_pb2.JOB_KIND_VOLUME_MOVE and live != want:
                return f"{v.volume.name} has {live} live copies of {want} ({_allocs(seen, v)})"
            pool = v.volume.placement.pool_id
            if job.kind == job_pb2.JOB_KIND_VOLUME_MOVE and pool:
                outside = [
                    a.drive_id
                    for a in v.allocations
                    if pool not in seen.drives[a.drive_id].pool_ids
                ]
                if outside:
                    return f"{v.volume.name} has copies outside its pool on {outside}"
        return ""

    def _check_pools(self, seen: Seen) -> None:
        try:
            summary = self.volumes.GetCapacitySummary(
                vpb.GetCapacitySummaryRequest(cluster_id=self.cluster_id), timeout=30
            ).clusters[0]
        except grpc.RpcError as err:
            raise AssertionError(f"GetCapacitySummary failed: {err}") from err
        # Read again at once, so a job moving bytes in between shows as a change.
        if not seen.quiet:
            return
        again = self._observe()
        if not (again.quiet and _same_usage(seen, again)):
            return
        for pc in summary.pools:
            members = [
                d for d in seen.drives.values() if pc.pool_id in d.pool_ids and not d.journal
            ]
            serving = [
                d
                for d in members
                if d.state == npb.DRIVE_STATE_ONLINE
                and (n := seen.node_of(d.id)) is not None
                and n.state == npb.NODE_STATE_ONLINE
            ]
            want_free = sum(max(d.capacity.free_bytes, 0) for d in serving)
            if pc.available_bytes != want_free:
                self.violation(
                    "pool-counts-ejected-drives"
                    if any(d.state == npb.DRIVE_STATE_EJECTED for d in members)
                    else "pool-available",
                    f"pool {pc.pool_name} reports {pc.available_bytes} available bytes, its "
                    f"ONLINE drives of ONLINE nodes have {want_free} free",
                )
            online = [
                d for d in members if d.state == npb.DRIVE_STATE_ONLINE and d.capacity.total_bytes
            ]
            status = seen.rebalance[pc.pool_name]
            if online:
                fractions = [d.capacity.used_bytes / d.capacity.total_bytes for d in online]
                spread = 100 * (max(fractions) - min(fractions))
                if abs(status.spread_percent - spread) > 0.5:
                    self.violation(
                        "pool-counts-ejected-drives"
                        if any(d.state == npb.DRIVE_STATE_EJECTED for d in members)
                        else "pool-spread",
                        f"pool {pc.pool_name} spread is {status.spread_percent:.2f}%, its ONLINE "
                        f"members' is {spread:.2f}%",
                    )

    def _check_replicas(self, seen: Seen) -> None:
        """The fake's replicas and the recorded allocations, one to one."""
        replicas = _driver_replicas(self.d)
        with self.d.store.read() as s:
            rows = s.execute(
                select(
                    AllocationRow.id,
                    AllocationRow.drive_id,
                    AllocationRow.bytes,
                    AllocationRow.volume_id,
                )
            ).all()
            drive_ids = set(s.scalars(select(DriveRow.id)))
        by_key = {(r.drive_id, r.id): r for r in rows}
        names = {v.volume.id: name for name, v in seen.volumes.items()}
        for name, v in seen.volumes.items():
            if v.volume.state in (vpb.VOLUME_STATE_CREATING, vpb.VOLUME_STATE_DELETING):
                continue
            for a in v.allocations:
                if a.state != ACTIVE:
                    continue
                size = replicas.get((a.drive_id, a.id))
                if size is None:
                    self.violation(
                        "data-lost",
                        f"{name}: ACTIVE allocation {a.id[:8]} has no replica on drive "
                        f"{a.drive_id[:8]} in the driver",
                    )
                elif size != a.bytes:
                    self.violation(
                        "replica-size",
                        f"{name}: replica {a.id[:8]} is {size} bytes, its allocation {a.bytes}",
                    )
        for (drive_id, rid), _size in replicas.items():
            if drive_id not in drive_ids or (drive_id, rid) in by_key:
                continue
            drive = seen.drives.get(drive_id)
            node = seen.node_of(drive_id)
            if drive is None or drive.state not in SERVING_DRIVE or node is None:
                continue  # the data goes with the drive
            owner = next((r for r in rows if r.id == rid), None)
            where = f"(its allocation is on {owner.drive_id[:8]})" if owner else "(no allocation)"
            self.violation(
                "orphan-replica",
                f"the driver holds replica {rid[:8]} on serving drive {drive_id[:8]} "
                f"{where}, volume {names.get(owner.volume_id, '?') if owner else '?'}",
            )

    def _db_check_cli(self) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "osd.cli", "db", "check", "--database-url", self.database.url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            self.violation("books", f"osd db check failed: {out.stdout} {out.stderr}")


def _same_usage(a: Seen, b: Seen) -> bool:
    return {k: (d.state, d.capacity.used_bytes) for k, d in a.drives.items()} == {
        k: (d.state, d.capacity.used_bytes) for k, d in b.drives.items()
    } and {k: n.state for k, n in a.nodes.items()} == {k: n.state for k, n in b.nodes.items()}


def _allocs(seen: Seen, v: vpb.InspectVolumeResponse) -> str:
    parts = []
    for a in v.allocations:
        drive = seen.drives.get(a.drive_id)
        node = seen.node_of(a.drive_id)
        where = f"{node.name if node else '?'}{drive.device_path[4:] if drive else '?'}"
        parts.append(
            f"#{a.index} {where} {common_pb2.AllocationState.Name(a.state)[17:]}"
            f"{'' if drive is None else '/' + npb.DriveState.Name(drive.state)[12:]}"
        )
    return ", ".join(parts)


def _driver_replicas(d: RunningDaemon) -> dict[tuple[str, str], int]:
    for _ in range(10):
        with contextlib.suppress(RuntimeError):
            return dict(d.driver.state.replicas)
    return dict(d.driver.state.replicas)


def _machine_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        stateful_step_count=STEP_COUNT,
        deadline=None,
        print_blob=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@contextlib.contextmanager
def _report() -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        print(
            f"\nmodel: {STATS.steps} steps in {STATS.examples} examples "
            f"({STATS.accepted} calls accepted, {STATS.refusals} refused) "
            f"in {time.monotonic() - started:.0f}s; "
            f"known bugs seen: {STATS.gated or 'none'}"
        )


def test_engine_model(database: Database) -> None:
    EngineMachine.database = database
    with _report():
        if SOAK_SECONDS <= 0:
            run_state_machine_as_test(EngineMachine, settings=_machine_settings(MAX_EXAMPLES))
            return
        deadline = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < deadline:
            run_state_machine_as_test(EngineMachine, settings=_machine_settings(MAX_EXAMPLES))


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
