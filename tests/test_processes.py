"""Serving from several processes on one port, and reads kept while the store
stands still: through the real wire, with `osd serve` as a child process.

With ``--processes 2`` the kernel spreads connections over the primary and a
second process. The second serves reads from the store and passes changes to
the primary; these tests tell which process answered by stopping the primary
(SIGSTOP): a read still answers on a connection the second process holds,
while a change on it waits for the primary.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from osd.v1 import cluster_pb2, cluster_pb2_grpc, volume_pb2, volume_pb2_grpc
from tests.conftest import Database, running_daemon
from tests.test_daemon import serving

# Connections opened to find one the second process holds: each lands on
# either process, so all on one would happen once in 2^24 runs.
CONNECTIONS = 24


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid``, whichever of its threads started them."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return sorted(p for p in out if not _zombie(p))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_for(what: str, check: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _channels(port: int) -> list[grpc.Channel]:
    # A subchannel pool of its own per channel: a connection of its own each.
    return [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]


def _listeners(port: int) -> int:
    """How many sockets listen on ``port`` (one per process sharing it)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                count += 1
    return count


def _serving_both(port: int) -> None:
    """Waits until the second process listens on the port too (it starts
    after the primary serves)."""
    _wait_for("both processes to listen", lambda: _listeners(port) == 2)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    """`osd serve --processes 2`: (primary pid, second pid, port), both serving."""
    with serving(tmp_path, "--processes", "2") as (proc, port):
        _wait_for("the second process", lambda: len(_children(proc.pid)) == 1)
        _serving_both(port)
        [second] = _children(proc.pid)
        yield proc.pid, second, port


def _topology(channel: grpc.Channel) -> tuple[str, str]:
    from osd.v1 import node_pb2, node_pb2_grpc

    clusters = cluster_pb2_grpc.ClusterServiceStub(channel)
    nodes = node_pb2_grpc.NodeServiceStub(channel)
    cluster = clusters.CreateCluster(cluster_pb2.CreateClusterRequest(name="c"), timeout=10).cluster
    for i in range(3):
        node = nodes.CreateNode(
            node_pb2.CreateNodeRequest(
                cluster_id=cluster.id,
                name=f"n{i}",
                zone=f"z{i}",
                management_addresses=[f"10.0.0.{i + 1}"],
            ),
            timeout=10,
        ).node
        nodes.CreateDrive(
            node_pb2.CreateDriveRequest(node_id=node.id, device_path="/dev/sdb"), timeout=10
        )
    volume = (
        volume_pb2_grpc.VolumeServiceStub(channel)
        .CreateVolume(
            volume_pb2.CreateVolumeRequest(
                cluster_id=cluster.id,
                name="v",
                size="1G",
                durability=volume_pb2.Durability(
                    type=volume_pb2.DURABILITY_TYPE_REPLICATE, replicas=3
                ),
            ),
            timeout=10,
        )
        .volume
    )
    return cluster.id, volume.id


def _held_by_second(primary: int, channels: list[grpc.Channel], volume_id: str) -> grpc.Channel:
    """A channel whose connection the second process holds: the one that
    still reads while the primary is stopped."""
    for ch in channels:  # connect them all while both processes answer
        volume_pb2_grpc.VolumeServiceStub(ch).InspectVolume(
            volume_pb2.InspectVolumeRequest(volume_id=volume_id), timeout=10
        )
    os.kill(primary, signal.SIGSTOP)
    try:
        for ch in channels:
            try:
                volume_pb2_grpc.VolumeServiceStub(ch).InspectVolume(
                    volume_pb2.InspectVolumeRequest(volume_id=volume_id), timeout=1
                )
                return ch
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        os.kill(primary, signal.SIGCONT)
    raise AssertionError("no connection reached the second process")


def test_the_second_process_serves_reads_and_passes_changes_to_the_primary(
    two: tuple[int, int, int],
) -> None:
    primary, _, port = two
    channels = _channels(port)
    try:
        cluster_id, volume_id = _topology(channels[0])
        second = _held_by_second(primary, channels, volume_id)
        volumes = volume_pb2_grpc.VolumeServiceStub(second)
        clusters = cluster_pb2_grpc.ClusterServiceStub(second)

        os.kill(primary, signal.SIGSTOP)
        try:
            # Reads answer from the second process alone ...
            got = volumes.InspectVolume(
                volume_pb2.InspectVolumeRequest(volume_id=volume_id), timeout=2
            )
            assert got.volume.name == "v" and len(got.allocations) == 3
            page = volumes.ListVolumes(
                volume_pb2.ListVolumesRequest(cluster_id=cluster_id), timeout=2
            )
            assert [v.name for v in page.volumes] == ["v"]
            clusters.InspectCluster(cluster_pb2.InspectClusterRequest(cluster_id=cluster_id))
            # ... and a change waits for the primary.
            future = volumes.UpdateVolume.future(
                volume_pb2.UpdateVolumeRequest(
                    volume_id=volume_id, labels={"tier": "gold"}, update_mask={"paths": ["labels"]}
                ),
                timeout=30,
            )
            time.sleep(1.0)
            assert not future.done()
        finally:
            os.kill(primary, signal.SIGCONT)
        changed = future.result()
        assert changed.volume.labels == {"tier": "gold"}
        # The second process reads what the primary wrote at once: its kept
        # copy is of an older generation.
        again = volumes.InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=volume_id))
        assert again.volume.labels == {"tier": "gold"}
        assert again.volume.generation == changed.volume.generation
        listed = volumes.ListVolumes(volume_pb2.ListVolumesRequest(cluster_id=cluster_id))
        assert listed.volumes[0].labels == {"tier": "gold"}

        # A refused change comes back whole: code, reason, field, request id.
        with pytest.raises(grpc.RpcError) as info:
            volumes.CreateVolume(
                volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name="", size="1G"),
                metadata=[("x-request-id", "fwd-1")],
            )
        err = info.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("x-request-id", "fwd-1") in err.initial_metadata()
        status = status_pb2.Status.FromString(
            dict(err.trailing_metadata())["grpc-status-details-bin"]
        )
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in status.details)
        assert [v.field for v in bad.field_violations] == ["name"]
        # A missing volume reads as missing from either process.
        with pytest.raises(grpc.RpcError) as info:
            volumes.InspectVolume(volume_pb2.InspectVolumeRequest(volume_id="0" * 32))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # Deleted through the second process: gone for its reads too.
        volumes.DeleteVolume(volume_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            volumes.InspectVolume(volume_pb2.InspectVolumeRequest(volume_id=volume_id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        for ch in channels:
            ch.close()


def test_a_second_process_that_dies_is_started_again(two: tuple[int, int, int]) -> None:
    primary, second, port = two
    os.kill(second, signal.SIGKILL)
    _wait_for(
        "a new second process",
        lambda: bool(_children(primary)) and _children(primary) != [second],
    )
    _serving_both(port)


def test_the_second_process_dies_with_the_primary(two: tuple[int, int, int]) -> None:
    primary, second, _ = two
    os.kill(primary, signal.SIGKILL)
    _wait_for("the second process to end", lambda: not Path(f"/proc/{second}").exists())


def test_sigterm_stops_both_processes(tmp_path: Path) -> None:
    with serving(tmp_path, "--processes", "2") as (proc, _):
        _wait_for("the second process", lambda: len(_children(proc.pid)) == 1)
        [second] = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        _wait_for("the second process to end", lambda: not Path(f"/proc/{second}").exists())


def test_a_change_made_by_another_daemon_is_read_at_once(database: Database) -> None:
    """Two daemons over one store: what one changes, the other's kept reads
    do not hide, because every change moves the store's generation."""
    with running_daemon(database) as a, running_daemon(database) as b:
        cluster_id, volume_id = _topology(a.channel)
        read_b = volume_pb2_grpc.VolumeServiceStub(b.channel)
        request = volume_pb2.InspectVolumeRequest(volume_id=volume_id)
        before = read_b.InspectVolume(request)
        assert read_b.InspectVolume(request) == before  # kept, and the same
        volume_pb2_grpc.VolumeServiceStub(a.channel).UpdateVolume(
            volume_pb2.UpdateVolumeRequest(
                volume_id=volume_id, labels={"tier": "gold"}, update_mask={"paths": ["labels"]}
            )
        )
        assert read_b.InspectVolume(request).volume.labels == {"tier": "gold"}
        page = read_b.ListVolumes(volume_pb2.ListVolumesRequest(cluster_id=cluster_id))
        assert page.volumes[0].labels == {"tier": "gold"}
        cluster_pb2_grpc.ClusterServiceStub(a.channel).UpdateCluster(
            cluster_pb2.UpdateClusterRequest(
                cluster_id=cluster_id, labels={"env": "prod"}, update_mask={"paths": ["labels"]}
            )
        )
        got = cluster_pb2_grpc.ClusterServiceStub(b.channel).InspectCluster(
            cluster_pb2.InspectClusterRequest(cluster_id=cluster_id)
        )
        assert got.cluster.labels == {"env": "prod"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_count_the_calls_of_every_process(tmp_path: Path) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    metrics_port = _free_port()
    with serving(tmp_path, "--processes", "2", "--metrics-listen", f"127.0.0.1:{metrics_port}") as (
        proc,
        port,
    ):
        _wait_for("the second process", lambda: len(_children(proc.pid)) == 1)
        _serving_both(port)
        channels = _channels(port)
        try:
            cluster_id, volume_id = _topology(channels[0])
            second = _held_by_second(proc.pid, channels, volume_id)  # both processes serve
            calls = 0
            for ch in [*channels, second, second]:
                cluster_pb2_grpc.ClusterServiceStub(ch).InspectCluster(
                    cluster_pb2.InspectClusterRequest(cluster_id=cluster_id), timeout=10
                )
                calls += 1
        finally:
            for ch in channels:
                ch.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as reply:
            text = reply.read().decode()
    counted = {
        (s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "osd_rpc_requests"
        for s in family.samples
        if s.name == "osd_rpc_requests_total"
    }
    assert counted[("osd.v1.ClusterService/InspectCluster", "OK")] == calls
    # Changes the second process passed on are counted once, by the first.
    assert counted[("osd.v1.ClusterService/CreateCluster", "OK")] == 1
    # And the store's figures are there as with one process.
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "osd_cluster_capacity_bytes" in names


def test_rest_is_served_by_every_process_too(tmp_path: Path) -> None:
    """The REST port is shared as the gRPC port is: the second process answers
    reads itself and passes changes to the first."""
    import http.client

    rest_port = _free_port()
    with serving(
        tmp_path,
        "--processes",
        "2",
        "--rest-enabled",
        "true",
        "--rest-listen",
        f"127.0.0.1:{rest_port}",
    ) as (proc, port):
        _wait_for("the second process", lambda: len(_children(proc.pid)) == 1)
        _serving_both(port)
        _wait_for("both REST listeners", lambda: _listeners(rest_port) == 2)
        channels = _channels(port)
        try:
            _, volume_id = _topology(channels[0])
        finally:
            for ch in channels:
                ch.close()
        path = f"/v1/volumes/{volume_id}"
        conns = [http.client.HTTPConnection("127.0.0.1", rest_port, timeout=10) for _ in range(24)]
        try:
            _rest_through_the_second(proc.pid, conns, path)
        finally:
            for c in conns:
                c.close()


def _rest_through_the_second(primary: int, conns: list[Any], path: str) -> None:
    import json
    from concurrent.futures import ThreadPoolExecutor

    for c in conns:  # connected while both processes answer
        c.request("GET", path)
        first = c.getresponse()
        first.read()
        assert first.status == 200

    def probe(c: Any) -> bool:
        # All at once: the gateway closes a connection idle 5 s, so probes
        # one by one, a second each on the stopped process, would outlast it.
        c.sock.settimeout(2.0)
        try:
            c.request("GET", path)
            reply = c.getresponse()
        except OSError:
            return False  # the stopped first process holds it
        assert reply.status == 200
        assert json.loads(reply.read())["volume"]["name"] == "v"
        return True

    def change(c: Any) -> tuple[int, bytes]:
        body = json.dumps({"labels": {"tier": "gold"}})
        c.request("PATCH", path, body=body, headers={"content-type": "application/json"})
        reply = c.getresponse()
        return reply.status, reply.read()

    os.kill(primary, signal.SIGSTOP)
    stopped = True
    try:
        with ThreadPoolExecutor(len(conns)) as pool:
            answered = list(pool.map(probe, conns))
            held = next((c for c, ok in zip(conns, answered, strict=True) if ok), None)
            assert held is not None, "no connection reached the second process"
            held.sock.settimeout(10.0)
            # The second process answers reads itself, but passes the change to
            # the first: it waits while the first is stopped.
            pending = pool.submit(change, held)
            time.sleep(1.0)
            assert not pending.done()
            os.kill(primary, signal.SIGCONT)
            stopped = False
            status, raw = pending.result(timeout=10)
    finally:
        if stopped:
            os.kill(primary, signal.SIGCONT)
    assert status == 200, raw
    assert json.loads(raw)["volume"]["labels"] == {"tier": "gold"}
    held.request("GET", path)
    again = held.getresponse()
    assert json.loads(again.read())["volume"]["labels"] == {"tier": "gold"}
    held.request("PATCH", path, body="{", headers={"content-type": "application/json"})
    bad = held.getresponse()
    assert bad.status == 400 and bad.getheader("x-request-id")
    bad.read()
