"""Reads over REST carry the store generation they reflect, as over gRPC."""

from __future__ import annotations

from google.protobuf import json_format

from osd.v1 import volume_pb2, volume_pb2_grpc
from tests.factories import make_topology
from tests.gateway.conftest import RestDaemon


def test_reads_over_rest_carry_the_generation(rest_daemon: RestDaemon) -> None:
    cluster_id, _, _ = make_topology(rest_daemon.store)
    made = rest_daemon.http.post(
        "/v1/volumes", json={"cluster_id": cluster_id, "name": "v1", "size": "1G"}
    )
    assert made.status_code == 200, made.text
    written = int(made.json()["generation"])
    volume_id = made.json()["volume"]["id"]
    for path in (
        f"/v1/volumes/{volume_id}",
        f"/v1/volumes?cluster_id={cluster_id}",
        f"/v1/clusters/{cluster_id}",
        "/v1/clusters",
    ):
        answer = rest_daemon.http.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert int(answer.json()["generation"]) >= written, path
    over_grpc = volume_pb2_grpc.VolumeServiceStub(rest_daemon.channel).InspectVolume(
        volume_pb2.InspectVolumeRequest(volume_id=volume_id), timeout=10
    )
    body = rest_daemon.http.get(f"/v1/volumes/{volume_id}").json()
    assert json_format.ParseDict(body, volume_pb2.InspectVolumeResponse()) == over_grpc
