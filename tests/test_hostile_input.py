"""What a buggy or hostile client sends gets a clear answer and never holds the
daemon: over the wire, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from osd.v1 import cluster_pb2 as pb
from osd.v1 import cluster_pb2_grpc, node_pb2, node_pb2_grpc, volume_pb2, volume_pb2_grpc
from tests.conftest import RunningDaemon
from tests.helpers import error_of

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
