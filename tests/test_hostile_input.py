"""What a buggy or hostile client sends gets a clear answer and never holds the
daemon: over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from osd import config
from osd.engine.shared.paging import TOKEN_TTL_SECONDS, Pager, filters_digest
from osd.engine.volumes.models import VolumeQuery
from osd.v1 import cluster_pb2 as pb
from osd.v1 import (
    cluster_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    pool_pb2,
    pool_pb2_grpc,
    service_pb2,
    service_pb2_grpc,
    volume_pb2,
    volume_pb2_grpc,
)
from tests.conftest import RunningDaemon
from tests.factories import make_cluster, make_node, make_topology
from tests.helpers import error_of
from tests.test_jobs import wait_job

# Python's backtracking engine needs tens of seconds for this pattern against
# a 29-character name that does not match; a linear-time engine needs none.
CATASTROPHIC = "^(a+)+$"
VICTIM = "a" * 29 + "b"


def test_a_catastrophic_pattern_neither_freezes_the_daemon_nor_matches(
    daemon: RunningDaemon,
) -> None:
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    cluster = clusters.CreateCluster(pb.CreateClusterRequest(name=VICTIM)).cluster
    clusters.CreateCluster(pb.CreateClusterRequest(name="a" * 29))
    health = health_pb2_grpc.HealthStub(daemon.channel)
    answered: list[int] = []

    def probe() -> None:
        # Health answers while the list runs: nothing holds the interpreter.
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        answered.append(reply.status)

    prober = threading.Thread(target=probe)
    prober.start()
    found = clusters.ListClusters(pb.ListClustersRequest(name_regex=CATASTROPHIC), timeout=5)
    prober.join(10)
    assert [c.name for c in found.clusters] == ["a" * 29]
    assert answered == [health_pb2.HealthCheckResponse.SERVING]
    # The same pattern is as harmless on every list that takes one.
    nodes = node_pb2_grpc.NodeServiceStub(daemon.channel).ListNodes(
        node_pb2.ListNodesRequest(cluster_id=cluster.id, name_regex=CATASTROPHIC), timeout=5
    )
    assert list(nodes.nodes) == []
    volumes = volume_pb2_grpc.VolumeServiceStub(daemon.channel).ListVolumes(
        volume_pb2.ListVolumesRequest(name_regex=CATASTROPHIC), timeout=5
    )
    assert list(volumes.volumes) == []


@pytest.mark.parametrize("pattern", [r"(a)\1", "a(?=b)", "(?<!a)b", "("])
def test_a_pattern_the_linear_engine_cannot_run_is_invalid_argument(
    daemon: RunningDaemon, pattern: str
) -> None:
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    with pytest.raises(grpc.RpcError) as info:
        clusters.ListClusters(pb.ListClustersRequest(name_regex=pattern), timeout=5)
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == ["name_regex"]
    assert err.fields["name_regex"].startswith("is not a regular expression RE2 accepts")


# -- bytes that do not parse -------------------------------------------------------


def _raw(daemon: RunningDaemon, method: str) -> grpc.UnaryUnaryMultiCallable:
    return daemon.channel.unary_unary(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x02\xff\xfe",  # name: two bytes that are not UTF-8
        b"\x0a\x05ab",  # name: five bytes announced, two sent
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a tag that is no tag
    ],
)
def test_bytes_that_do_not_parse_are_invalid_argument_naming_the_method(
    daemon: RunningDaemon, payload: bytes
) -> None:
    method = "/osd.v1.ClusterService/CreateCluster"
    with pytest.raises(grpc.RpcError) as info:
        _raw(daemon, method)(payload, timeout=5)
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "MALFORMED_REQUEST"
    assert err.message.startswith(f"{method}: the request does not parse")
    assert err.metadata == {"method": method}
    # Nothing was created, and the daemon goes on serving.
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    assert list(clusters.ListClusters(pb.ListClustersRequest(), timeout=5).clusters) == []


# -- errors are bounded ------------------------------------------------------------


def _trailer_bytes(err: grpc.RpcError) -> int:
    """The trailers' size as sent: binary values base64-encoded, and
    grpc-message with every byte that is not printable ASCII percent-encoded."""
    assert isinstance(err, grpc.Call)
    size = 0
    for key, value in err.trailing_metadata() or ():
        raw = value if isinstance(value, bytes) else value.encode()
        size += len(key) + (len(base64.b64encode(raw)) if key.endswith("-bin") else len(raw))
    message = (err.details() or "").encode()
    return size + len("grpc-message") + sum(1 if 0x20 <= b < 0x7F else 3 for b in message)


# Past this, gRPC clients refuse a response's trailers.
TRAILERS_MAX = 8 * 1024


@pytest.mark.parametrize("char", ["x", "\U0001f600"], ids=["ascii", "emoji"])
def test_a_huge_client_value_comes_back_clipped(daemon: RunningDaemon, char: str) -> None:
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    cluster = clusters.CreateCluster(pb.CreateClusterRequest(name="c1")).cluster
    path = char * 100_000
    with pytest.raises(grpc.RpcError) as info:
        clusters.UpdateCluster(
            pb.UpdateClusterRequest(
                cluster_id=cluster.id, update_mask=field_mask_pb2.FieldMask(paths=[path])
            ),
            timeout=5,
        )
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(err.message.encode()) < 1200
    assert "more bytes" in err.message
    assert _trailer_bytes(info.value) < TRAILERS_MAX


@pytest.mark.parametrize(
    "path", ["e\u0301", "\u00e9", "\U0001f600", "a\nb\x1b[31m", "\u202e", "%s%n%x"]
)
def test_client_text_in_a_message_comes_back_escaped_in_printable_ascii(
    daemon: RunningDaemon, path: str
) -> None:
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    cluster = clusters.CreateCluster(pb.CreateClusterRequest(name="c1")).cluster
    with pytest.raises(grpc.RpcError) as info:
        clusters.UpdateCluster(
            pb.UpdateClusterRequest(
                cluster_id=cluster.id, update_mask=field_mask_pb2.FieldMask(paths=[path])
            ),
            timeout=5,
        )
    message = info.value.details()
    assert message.isascii() and message.isprintable() and "%" not in message, message
    assert path.encode("unicode_escape").decode().replace("%", "\\x25") in message
    # The status in the details carries the same message as grpc-message.
    status = rpc_status.from_call(info.value)
    assert status is not None and status.message == message


def test_thousands_of_violations_stay_under_the_details_bound(daemon: RunningDaemon) -> None:
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    labels = {f"bad key {i} " + "k" * 50: "v" for i in range(3000)}
    with pytest.raises(grpc.RpcError) as info:
        clusters.CreateCluster(pb.CreateClusterRequest(name="c2", labels=labels), timeout=10)
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    assert status is not None
    assert status.ByteSize() <= 3 * 1024
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    listed = [v for v in bad.field_violations if v.field]
    assert 0 < len(listed) < 3000
    assert bad.field_violations[-1].description.endswith("more violations, not listed")
    assert _trailer_bytes(info.value) < TRAILERS_MAX


# -- host things ---------------------------------------------------------------------


def _osd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osd.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["check", "current", "upgrade"])
def test_db_commands_against_an_unreachable_store_say_so_in_one_line(command: str) -> None:
    # Nothing listens on port 1.
    out = _osd("db", command, "--database-url", "postgresql://osd:secret@127.0.0.1:1/osd")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"osd db {command}: cannot use the store at postgresql")
    assert "secret" not in out.stderr and "Traceback" not in out.stderr


def test_the_store_is_created_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    out = _osd("db", "upgrade", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "osd.db").stat().st_mode) == 0o600


def test_a_relative_data_dir_in_a_config_file_is_read_from_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    conf = folder / "osd.toml"
    conf.write_text('data_dir = "state"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = config.load({}, {}, str(conf))
    assert settings.resolved_data_dir() == folder / "state"
    # Absolute or home-relative paths stay as written; a flag or the
    # environment is read from where the command runs.
    conf.write_text(f'data_dir = "{tmp_path / "abs"}"\n')
    assert config.load({}, {}, str(conf)).resolved_data_dir() == tmp_path / "abs"
    conf.write_text('data_dir = "state"\n')
    assert config.load({"data_dir": "state"}, {}, str(conf)).data_dir == "state"
    assert config.load({}, {"OSD_DATA_DIR": "state"}, str(conf)).data_dir == "state"
    # Started from elsewhere, `osd db upgrade --config` creates the store there.
    out = _osd("db", "upgrade", "--config", str(conf))
    assert out.returncode == 0, out.stderr
    assert (folder / "state" / "osd.db").is_file()


# -- deleting what jobs worked on ------------------------------------------------------


def test_everything_deletes_after_jobs_ran_on_it(daemon: RunningDaemon) -> None:
    clusters = cluster_pb2_grpc.ClusterServiceStub(daemon.channel)
    nodes = node_pb2_grpc.NodeServiceStub(daemon.channel)
    pools = pool_pb2_grpc.PoolServiceStub(daemon.channel)
    service = service_pb2_grpc.ServiceStub(daemon.channel)
    cluster = clusters.CreateCluster(pb.CreateClusterRequest(name="short-lived")).cluster
    node = nodes.CreateNode(
        node_pb2.CreateNodeRequest(
            cluster_id=cluster.id, name="n1", zone="z1", management_addresses=["n1.lab"]
        )
    ).node
    # A drive add (DRIVE_ADD), a pool rebalance (POOL_REBALANCE), a soft eject
    # (DRIVE_EVACUATE) and a drain (NODE_DRAIN), each run to its end.
    added = service.StartDriveAdd(
        service_pb2.StartDriveAddRequest(node_id=node.id, device_path="/dev/sdb"), timeout=10
    )
    assert wait_job(daemon, added.job.id).state == job_pb2.JOB_STATE_DONE
    drive_id = added.job.target.id
    pool = pools.CreatePool(
        pool_pb2.CreatePoolRequest(cluster_id=cluster.id, name="p", drive_ids=[drive_id])
    ).pool
    rebalance = service.StartPoolRebalance(
        service_pb2.StartPoolRebalanceRequest(pool_id=pool.id), timeout=10
    )
    assert wait_job(daemon, rebalance.job.id).state == job_pb2.JOB_STATE_DONE
    ejected = nodes.EjectDrive(node_pb2.EjectDriveRequest(drive_id=drive_id, soft=True))
    assert wait_job(daemon, ejected.job.id).state == job_pb2.JOB_STATE_DONE
    drained = nodes.DrainNode(node_pb2.DrainNodeRequest(node_id=node.id))
    assert wait_job(daemon, drained.job.id).state == job_pb2.JOB_STATE_DONE
    # Each object the jobs worked on deletes, and then the cluster.
    pools.DeletePool(pool_pb2.DeletePoolRequest(pool_id=pool.id))
    nodes.DeleteDrive(node_pb2.DeleteDriveRequest(drive_id=drive_id))
    nodes.DeleteNode(node_pb2.DeleteNodeRequest(node_id=node.id))
    clusters.DeleteCluster(pb.DeleteClusterRequest(cluster_id=cluster.id))
    assert list(clusters.ListClusters(pb.ListClustersRequest()).clusters) == []
    # The cluster's finished jobs went with it.
    jobs = job_pb2_grpc.JobServiceStub(daemon.channel)
    assert list(jobs.ListJobs(job_pb2.ListJobsRequest(cluster_id=cluster.id)).jobs) == []


# -- a repeated create waits for the first -----------------------------------------------


def test_a_repeated_create_waits_for_the_first_to_finish(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = make_topology(daemon.store)
    stub = volume_pb2_grpc.VolumeServiceStub(daemon.channel)
    request = volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name="v", size="1G")
    daemon.driver.block("create_replica")
    first: list[volume_pb2.CreateVolumeResponse] = []
    creating = threading.Thread(target=lambda: first.append(stub.CreateVolume(request)))
    creating.start()
    try:
        assert daemon.driver.wait_blocked("create_replica")
        # Its deadline comes first: ABORTED, OPERATION_PENDING, nothing claimed.
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateVolume(request, timeout=3)
        err = error_of(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.ABORTED, "OPERATION_PENDING")
        # With time enough, it answers the first call's outcome.
        waiting = stub.CreateVolume.future(request, timeout=20)
        threading.Event().wait(0.5)
        assert not waiting.done()  # still waiting while the first runs
    finally:
        daemon.driver.unblock("create_replica")
    creating.join(20)
    second = waiting.result()
    assert first[0].created and first[0].volume.state == volume_pb2.VOLUME_STATE_UP
    assert not second.created
    assert second.volume.id == first[0].volume.id
    assert second.volume.state == volume_pb2.VOLUME_STATE_UP


def test_a_repeated_snapshot_waits_for_the_first_to_finish(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = make_topology(daemon.store)
    stub = volume_pb2_grpc.VolumeServiceStub(daemon.channel)
    volume = stub.CreateVolume(
        volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name="v", size="1G")
    ).volume
    request = volume_pb2.CreateSnapshotRequest(volume_id=volume.id, name="s")
    daemon.driver.block("create_snapshot")
    first: list[volume_pb2.CreateSnapshotResponse] = []
    taking = threading.Thread(target=lambda: first.append(stub.CreateSnapshot(request)))
    taking.start()
    try:
        assert daemon.driver.wait_blocked("create_snapshot")
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateSnapshot(request, timeout=3)
        err = error_of(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.ABORTED, "OPERATION_PENDING")
    finally:
        daemon.driver.unblock("create_snapshot")
    taking.join(20)
    again = stub.CreateSnapshot(request, timeout=20)
    assert first[0].created and not again.created
    assert again.snapshot.id == first[0].snapshot.id
    assert again.snapshot.state == volume_pb2.SNAPSHOT_STATE_READY


# -- page tokens are signed and bound to their list ------------------------------------


def _volume_page(daemon: RunningDaemon, **kw: Any) -> volume_pb2.ListVolumesResponse:
    stub = volume_pb2_grpc.VolumeServiceStub(daemon.channel)
    return stub.ListVolumes(volume_pb2.ListVolumesRequest(page_size=1, **kw), timeout=5)


def _token_refused(daemon: RunningDaemon, token: str, **kw: Any) -> str:
    with pytest.raises(grpc.RpcError) as info:
        _volume_page(daemon, page_token=token, **kw)
    err = error_of(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == ["page_token"], err.fields
    return err.fields["page_token"]


def test_a_page_token_that_was_edited_forged_or_moved_is_refused(daemon: RunningDaemon) -> None:
    cluster_id, _nodes, _drives = make_topology(daemon.store)
    stub = volume_pb2_grpc.VolumeServiceStub(daemon.channel)
    for name in ("a", "b", "c"):
        stub.CreateVolume(
            volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name=name, size="1G"),
            timeout=10,
        )
    token = _volume_page(daemon, labels={}).next_page_token
    assert token
    # The token as issued goes on, and the page size may change.
    follow = _volume_page(daemon, page_token=token)
    assert [v.name for v in follow.volumes] == ["b"]
    # Edited: the body says another name.
    head, _, mac = token.partition(".")
    body = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    body["a"]["n"] = "a\x00"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    assert "not a page token this server issued" in _token_refused(daemon, f"{forged}.{mac}")
    # Unsigned, with a NUL byte (once a 500 on PostgreSQL).
    assert "not a page token" in _token_refused(daemon, forged)
    assert "not a page token" in _token_refused(daemon, token + "\x00")
    # Another list's token.
    nodes = node_pb2_grpc.NodeServiceStub(daemon.channel)
    node_token = nodes.ListNodes(node_pb2.ListNodesRequest(page_size=1)).next_page_token
    assert node_token
    assert "of a node list, not of a volume list" in _token_refused(daemon, node_token)
    # The same list with other filters.
    assert "other filters" in _token_refused(daemon, token, name_regex="^[ab]$")
    assert "other filters" in _token_refused(daemon, token, cluster_id=cluster_id)
    # Stale: one this store signed more than a day ago.
    query = VolumeQuery(page_size=1)
    old = Pager(
        daemon.store.page_key,
        "volume",
        filters_digest(query),
        now=lambda: time.time() - TOKEN_TTL_SECONDS - 60,
    ).token(body["a"])
    assert "expired" in _token_refused(daemon, old)


def test_a_repeated_drive_create_waits_for_the_first_to_finish(daemon: RunningDaemon) -> None:
    cluster_id = make_cluster(daemon.store)
    node_id = make_node(daemon.store, cluster_id, "n1")
    stub = node_pb2_grpc.NodeServiceStub(daemon.channel)
    request = node_pb2.CreateDriveRequest(node_id=node_id, device_path="/dev/sdq")
    daemon.driver.block("format_drive")
    first = stub.CreateDrive.future(request, timeout=30)
    try:
        assert daemon.driver.wait_blocked("format_drive")
        # Found ADDING: its deadline comes first, so OPERATION_PENDING.
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateDrive(request, timeout=3)
        err = error_of(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.ABORTED, "OPERATION_PENDING")
        assert err.metadata["kind"] == "drive"
        waiting = stub.CreateDrive.future(request, timeout=30)
        threading.Event().wait(0.5)
        assert not waiting.done()  # still waiting while the first runs
    finally:
        daemon.driver.unblock("format_drive")
    made, second = first.result(), waiting.result()
    assert made.created and made.drive.state == node_pb2.DRIVE_STATE_ONLINE
    assert not second.created and second.drive.id == made.drive.id
    assert second.drive.state == node_pb2.DRIVE_STATE_ONLINE
