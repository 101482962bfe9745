"""Several daemons over one PostgreSQL store: each registers and beats, a
daemon that starts leaves a live peer's changes alone, and one that is
killed has its unfinished changes finished by another, exactly once.

Each daemon is `osd serve` as a child process (a pid of its own, as in
production), with the fake driver slowed so that changes are in flight
long enough to be caught."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import create_engine, make_url, select, text

from osd.enums import AllocationState
from osd.errors import Unavailable
from osd.store.db import Store
from osd.store.models import AllocationRow, DriveRow, NodeRow
from osd.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    volume_pb2,
    volume_pb2_grpc,
)
from tests.conftest import Database, store_on
from tests.factories import make_cluster, make_drive, make_node, make_topology

T = 30


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    port: int
    log: Path
    channel: grpc.Channel

    @property
    def volumes(self) -> volume_pb2_grpc.VolumeServiceStub:
        return volume_pb2_grpc.VolumeServiceStub(self.channel)

    @property
    def clusters(self) -> cluster_pb2_grpc.ClusterServiceStub:
        return cluster_pb2_grpc.ClusterServiceStub(self.channel)


@contextlib.contextmanager
def daemon(
    folder: Path, database: Database, delay: float, *extra: str, state: Path | None = None
) -> Iterator[Daemon]:
    """`osd serve` on the shared store, one process, beating every 0.5 s and
    taking others for gone after 3 s; its log in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "daemon.log"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OSD_FAKE_DRIVER_DELAY": str(delay),
        "OSD_FAKE_DRIVER_STATE": str(state or folder / "fake-driver.db"),
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "osd.cli",
                "serve",
                "--grpc-listen",
                "127.0.0.1:0",
                "--rest-enabled",
                "false",
                "--processes",
                "1",
                "--data-dir",
                str(folder),
                "--database-url",
                database.url,
                "--heartbeat-seconds",
                "0.5",
                "--gone-seconds",
                "3",
                *extra,
            ],
            stderr=out,
            text=True,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        port = 0
        while not port:
            found = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+)", log.read_text())
            if found:
                port = int(found.group(1))
                break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Daemon(proc, port, log, channel)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def create(d: Daemon, cluster_id: str, name: str) -> grpc.Future:
    return d.volumes.CreateVolume.future(
        volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name=name, size="1G"), timeout=60
    )


def db_check(database: Database) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osd.cli", "db", "check", "--database-url", database.url],
        capture_output=True,
        text=True,
        check=False,
    )


def states(d: Daemon) -> dict[str, int]:
    return {v.name: v.state for v in d.volumes.ListVolumes(volume_pb2.ListVolumesRequest()).volumes}


@pytest.fixture
def store(postgres_database: Database) -> Database:
    postgres_database.reset()
    return postgres_database


def test_a_daemon_that_starts_leaves_a_live_peers_creates_alone(
    store: Database, tmp_path: Path
) -> None:
    with store_on(store) as s:
        cluster_id = make_topology(s)[0]
    with daemon(tmp_path / "b", store, delay=8) as b:
        futures = [create(b, cluster_id, f"v{i}") for i in range(6)]
        deadline = time.monotonic() + T
        while len(states(b)) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with daemon(tmp_path / "a", store, delay=0) as a:
            # A is up, its start-up recovery done, while B is in the middle
            # of every create.
            assert set(states(a).values()) == {volume_pb2.VOLUME_STATE_CREATING}
            results = [f.result(timeout=60) for f in futures]
            assert all(r.created for r in results)
            assert set(states(a).values()) == {volume_pb2.VOLUME_STATE_UP}
            # A found B's creates in flight and left them to B.
            assert "recovering" not in a.log.read_text()
            listed = a.clusters.ListDaemons(cluster_pb2.ListDaemonsRequest(), timeout=T).daemons
            assert [d.state for d in listed] == [cluster_pb2.DAEMON_STATE_SERVING] * 2
            assert [d.this_daemon for d in listed] == [False, True]
            assert [d.pid for d in listed] == [b.proc.pid, a.proc.pid]
            assert all(d.address.startswith("127.0.0.1:") and d.version for d in listed)
    checked = db_check(store)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_killed_daemons_creates_are_finished_once_by_another(
    store: Database, tmp_path: Path
) -> None:
    with store_on(store) as s:
        cluster_id = make_topology(s)[0]
    with daemon(tmp_path / "a", store, delay=0) as a:
        with daemon(tmp_path / "b", store, delay=5) as b:
            futures = [create(b, cluster_id, f"v{i}") for i in range(3)]
            deadline = time.monotonic() + T
            while len(states(a)) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            b.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            b.proc.wait()
            for f in futures:
                with pytest.raises(grpc.RpcError):
                    f.result(timeout=T)
        # A takes each over: finished (UP) or, were its storage work to fail,
        # undone; never left CREATING, and never done twice.
        while set(states(a).values()) - {volume_pb2.VOLUME_STATE_UP}:
            assert time.monotonic() - killed < 30, states(a)
            time.sleep(0.05)
        took = time.monotonic() - killed
        assert a.log.read_text().count("interrupted create finished") == 3
        listed = a.clusters.ListDaemons(cluster_pb2.ListDaemonsRequest(), timeout=T).daemons
        gone = [d for d in listed if d.pid == b.proc.pid]
        while gone[0].state != cluster_pb2.DAEMON_STATE_GONE:
            assert time.monotonic() - killed < 30
            time.sleep(0.2)
            listed = a.clusters.ListDaemons(cluster_pb2.ListDaemonsRequest(), timeout=T).daemons
            gone = [d for d in listed if d.pid == b.proc.pid]
    print(f"takeover after kill -9: {took:.2f} s")
    checked = db_check(store)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with store_on(store) as st, st.read() as s:
        left = s.scalars(select(AllocationRow).where(AllocationRow.state != AllocationState.ACTIVE))
        assert list(left) == []


def test_cut_store_connections_lose_no_acknowledged_change(store: Database, tmp_path: Path) -> None:
    """Every connection of the daemon to PostgreSQL is cut, twice, under load
    (as a server restart cuts them): calls in flight may answer UNAVAILABLE,
    but every change the daemon acknowledged is kept, and it serves again by
    itself."""
    admin = create_engine(make_url(store.url), isolation_level="AUTOCOMMIT")
    acknowledged: list[str] = []
    refused: list[grpc.StatusCode] = []
    stop = threading.Event()

    def load(d: Daemon, worker: int) -> None:
        n = 0
        while not stop.is_set():
            name = f"c-{worker}-{n}"
            n += 1
            try:
                d.clusters.CreateCluster(cluster_pb2.CreateClusterRequest(name=name), timeout=T)
            except grpc.RpcError as err:
                refused.append(err.code())
                continue
            acknowledged.append(name)

    try:
        with daemon(tmp_path / "a", store, delay=0) as a:
            workers = [threading.Thread(target=load, args=(a, i)) for i in range(4)]
            for w in workers:
                w.start()
            for _ in range(2):
                time.sleep(1.0)
                with admin.connect() as conn:
                    cut = conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).scalar()
                assert cut
            time.sleep(1.0)
            stop.set()
            for w in workers:
                w.join()
            a.clusters.CreateCluster(cluster_pb2.CreateClusterRequest(name="after"), timeout=T)
            listed, token = set(), ""
            while True:
                page = a.clusters.ListClusters(
                    cluster_pb2.ListClustersRequest(page_size=1000, page_token=token), timeout=T
                )
                listed |= {c.name for c in page.clusters}
                token = page.next_page_token
                if not token:
                    break
    finally:
        admin.dispose()
    assert len(acknowledged) > 20
    assert set(acknowledged) | {"after"} <= listed
    assert set(refused) <= {grpc.StatusCode.UNAVAILABLE}


def test_a_statement_past_the_timeout_is_cancelled_and_answers_unavailable(
    store: Database,
) -> None:
    short = Store(store.url, statement_timeout_seconds=0.2)
    try:
        with pytest.raises(Unavailable, match="statement timeout"), short.read() as s:
            s.execute(text("SELECT pg_sleep(2)"))
        with short.read() as s:  # the pool goes on
            assert s.execute(text("SELECT 1")).scalar() == 1
    finally:
        short.close()


def _replicas(folder: Path) -> set[str]:
    """The replicas a daemon's fake driver holds (its state file)."""
    with contextlib.closing(sqlite3.connect(folder / "fake-driver.db")) as db:
        return {b for _a, b, _v in db.execute("SELECT * FROM replicas")}


def _attached(folder: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(folder / "fake-driver.db")) as db:
        return {b for _a, b, _v in db.execute("SELECT * FROM attachments")}


def _node_state(d: Daemon, node_id: str) -> int:
    nodes = node_pb2_grpc.NodeServiceStub(d.channel)
    return nodes.InspectNode(node_pb2.InspectNodeRequest(node_id=node_id), timeout=T).node.state


def test_node_agents_do_their_nodes_work_and_their_nodes_follow_them(
    store: Database, tmp_path: Path
) -> None:
    """A controller (A) and the agents of two nodes (B, C): a volume placed on
    B's node is made by B, attached on C's node by C, whichever daemon took
    the call; C stopping takes its node OFFLINE, and C returning brings it
    back ONLINE."""
    with store_on(store) as st:
        cluster_id = make_cluster(st, "c1")
        nodes = {
            name: make_node(st, cluster_id, name, zone)
            for name, zone in (("nb", "z1"), ("nc", "z2"))
        }
        for node_id in nodes.values():
            make_drive(st, node_id, "/dev/sdb")
        with st.write() as s:
            for i, node_id in enumerate(nodes.values()):
                s.get_one(NodeRow, node_id).management_addresses = [f"127.0.0.{i + 2}"]
    with (
        daemon(tmp_path / "a", store, 0) as a,
        daemon(tmp_path / "b", store, 0, "--node-name", "nb") as b,
        daemon(tmp_path / "c", store, 0, "--node-name", "nc"),
    ):
        listed = a.clusters.ListDaemons(cluster_pb2.ListDaemonsRequest(), timeout=T).daemons
        assert sorted(d.node_id for d in listed) == sorted(["", nodes["nb"], nodes["nc"]])
        volume = a.volumes.CreateVolume(
            volume_pb2.CreateVolumeRequest(
                cluster_id=cluster_id,
                name="on-b",
                size="1G",
                placement=volume_pb2.Placement(node_selector={"osd.dev/node": "nb"}),
            ),
            timeout=T,
        ).volume
        [alloc] = a.volumes.InspectVolume(
            volume_pb2.InspectVolumeRequest(volume_id=volume.id), timeout=T
        ).allocations
        assert alloc.id in _replicas(tmp_path / "b")
        assert alloc.id not in _replicas(tmp_path / "a") | _replicas(tmp_path / "c")
        b.volumes.AttachVolume(
            volume_pb2.AttachVolumeRequest(
                volume_id=volume.id,
                node_id=nodes["nc"],
                mode=volume_pb2.ATTACH_MODE_READ_WRITE,
            ),
            timeout=T,
        )
        assert volume.id in _attached(tmp_path / "c")
        assert volume.id not in _attached(tmp_path / "a") | _attached(tmp_path / "b")
    # C stopped (and A and B with it); one daemon alone sees C's node go.
    with daemon(tmp_path / "a", store, 0) as a:
        deadline = time.monotonic() + T
        while _node_state(a, nodes["nc"]) != node_pb2.NODE_STATE_OFFLINE:
            assert time.monotonic() < deadline, "the node of a stopped agent stayed ONLINE"
            time.sleep(0.2)
        assert _node_state(a, nodes["nb"]) == node_pb2.NODE_STATE_OFFLINE
        with daemon(tmp_path / "c", store, 0, "--node-name", "nc"):
            while _node_state(a, nodes["nc"]) != node_pb2.NODE_STATE_ONLINE:
                assert time.monotonic() < deadline + T, "the node stayed OFFLINE"
                time.sleep(0.2)
        # A node set OFFLINE by hand (here while its agent is gone) stays so
        # when its agent returns.
        node_pb2_grpc.NodeServiceStub(a.channel).SetNodeState(
            node_pb2.SetNodeStateRequest(node_id=nodes["nb"], state=node_pb2.NODE_STATE_OFFLINE),
            timeout=T,
        )
        with daemon(tmp_path / "b", store, 0, "--node-name", "nb"):
            time.sleep(2.0)
            assert _node_state(a, nodes["nb"]) == node_pb2.NODE_STATE_OFFLINE


def test_daemons_given_one_fake_storage_share_it(store: Database, tmp_path: Path) -> None:
    """With no agents, any daemon drives any node: given one fake state file,
    a volume made through one daemon is snapshotted, grown and deleted
    through the others."""
    with store_on(store) as s:
        cluster_id = make_topology(s)[0]
    shared = tmp_path / "fake-storage.db"
    with (
        daemon(tmp_path / "a", store, 0, state=shared) as a,
        daemon(tmp_path / "b", store, 0, state=shared) as b,
        daemon(tmp_path / "c", store, 0, state=shared) as c,
    ):
        volume = create(a, cluster_id, "shared").result(timeout=T).volume
        b.volumes.CreateSnapshot(
            volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="s"), timeout=T
        )
        c.volumes.UpdateVolume(
            volume_pb2.UpdateVolumeRequest(
                volume_id=volume.id,
                size="2G",
                update_mask=field_mask_pb2.FieldMask(paths=["size"]),
            ),
            timeout=T,
        )
        b.volumes.DeleteVolume(volume_pb2.DeleteVolumeRequest(volume_id=volume.id), timeout=T)
    with contextlib.closing(sqlite3.connect(shared)) as db:
        assert list(db.execute("SELECT * FROM replicas")) == []
        assert [r[1] for r in db.execute("SELECT * FROM snapshots")]  # kept by the snapshot


def test_mixed_load_through_three_daemons_keeps_the_books(store: Database, tmp_path: Path) -> None:
    """Creates, resizes, snapshots and deletes sent at random to three daemons
    for a few seconds: no name is taken twice, no drive over-committed, and
    `osd db check` finds every drive's books in order."""
    with store_on(store) as s:
        cluster_id = make_topology(s, drive_bytes=40 * (1 << 30))[0]
    shared = tmp_path / "fake-storage.db"
    with (
        daemon(tmp_path / "a", store, 0, state=shared) as a,
        daemon(tmp_path / "b", store, 0, state=shared) as b,
        daemon(tmp_path / "c", store, 0, state=shared) as c,
    ):
        daemons = [a, b, c]
        stop = time.monotonic() + 6
        unexpected: list[str] = []
        answered: list[int] = []

        def work(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop:
                d = rng.choice(daemons)
                name = f"v{rng.randrange(12)}"
                try:
                    listed = d.volumes.ListVolumes(
                        volume_pb2.ListVolumesRequest(name_regex=f"^{name}$"), timeout=T
                    ).volumes
                    if not listed:
                        d.volumes.CreateVolume(
                            volume_pb2.CreateVolumeRequest(
                                cluster_id=cluster_id, name=name, size=f"{rng.randrange(1, 8)}G"
                            ),
                            timeout=T,
                        )
                        answered.append(-1)
                        continue
                    volume = listed[0]
                    action = rng.randrange(3)
                    if action == 0:
                        d.volumes.UpdateVolume(
                            volume_pb2.UpdateVolumeRequest(
                                volume_id=volume.id,
                                size_bytes=volume.size_bytes + (1 << 30),
                                update_mask=field_mask_pb2.FieldMask(paths=["size_bytes"]),
                            ),
                            timeout=T,
                        )
                    elif action == 1:
                        d.volumes.CreateSnapshot(
                            volume_pb2.CreateSnapshotRequest(volume_id=volume.id), timeout=T
                        )
                    else:
                        d.volumes.DeleteVolume(
                            volume_pb2.DeleteVolumeRequest(volume_id=volume.id), timeout=T
                        )
                    answered.append(action)
                except grpc.RpcError as err:
                    # Races the API answers by design: another daemon's change
                    # in flight, a name just taken, no room left.
                    if err.code() not in (
                        grpc.StatusCode.FAILED_PRECONDITION,
                        grpc.StatusCode.ALREADY_EXISTS,
                        grpc.StatusCode.NOT_FOUND,
                        grpc.StatusCode.ABORTED,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        grpc.StatusCode.INVALID_ARGUMENT,
                    ):
                        unexpected.append(f"{err.code().name}: {err.details()}")

        workers = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert unexpected == []
        # Every kind of change went through, many times over.
        assert {-1, 0, 1, 2} <= set(answered) and len(answered) > 50, len(answered)
        names = [v.name for v in a.volumes.ListVolumes(volume_pb2.ListVolumesRequest()).volumes]
        assert len(names) == len(set(names)) and names
    checked = db_check(store)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with store_on(store) as st, st.read() as s:
        over = s.scalars(select(DriveRow).where(DriveRow.used_bytes > DriveRow.total_bytes))
        assert list(over) == []


def test_a_killed_daemons_job_is_adopted_and_finished_once(store: Database, tmp_path: Path) -> None:
    with store_on(store) as s:
        cluster_id = make_topology(s)[0]
    shared = tmp_path / "fake-storage.db"
    with daemon(tmp_path / "a", store, 0, state=shared) as a:
        source = create(a, cluster_id, "source").result(timeout=T).volume
        with daemon(tmp_path / "b", store, 3, state=shared) as b:
            started = b.volumes.CreateVolume(
                volume_pb2.CreateVolumeRequest(
                    cluster_id=cluster_id,
                    name="copy",
                    source=volume_pb2.VolumeSource(volume_id=source.id),
                ),
                timeout=T,
            )
            jobs = job_pb2_grpc.JobServiceStub(a.channel)
            inspect = job_pb2.InspectJobRequest(job_id=started.job.id)
            deadline = time.monotonic() + T
            while jobs.InspectJob(inspect, timeout=T).job.state != job_pb2.JOB_STATE_RUNNING:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            b.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            b.proc.wait()
        while True:
            job = jobs.InspectJob(inspect, timeout=T).job
            if job.state in (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_FAILED):
                break
            assert time.monotonic() - killed < 60, job
            time.sleep(0.1)
        took = time.monotonic() - killed
        assert job.state == job_pb2.JOB_STATE_DONE, job.error
        assert job.restart_count == 1
        copy = a.volumes.InspectVolume(
            volume_pb2.InspectVolumeRequest(volume_id=started.volume.id), timeout=T
        ).volume
        assert copy.state == volume_pb2.VOLUME_STATE_UP
    print(f"job taken over after kill -9: {took:.2f} s")
    checked = db_check(store)
    assert checked.returncode == 0, checked.stdout + checked.stderr
