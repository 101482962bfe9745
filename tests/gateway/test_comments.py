"""Proto comments from the descriptor set, used only where it matches the compiled code."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2

from gateway.comments import Comments, _packaged_set
from osd.v1 import cluster_pb2, service_pb2, volume_pb2

FILES = [cluster_pb2.DESCRIPTOR]


def test_the_packaged_set_has_the_contract_comments() -> None:
    comments = Comments.load(FILES)
    assert comments.get("osd.v1.ClusterService.DeleteCluster").startswith(
        "Deletes an empty cluster."
    )
    assert comments.get("osd.v1.CreateClusterRequest.block") == "Defaults to true."
    assert comments.get("osd/v1/cluster.proto").startswith("ClusterService:")
    assert comments.get("osd.v1.NoSuchThing") == ""


def test_oneofs_have_their_comments() -> None:
    comments = Comments.load([service_pb2.DESCRIPTOR, volume_pb2.DESCRIPTOR])
    assert comments.get("osd.v1.StartDriveReplaceRequest.target").startswith("Required:")
    assert comments.get("osd.v1.CreateVolumeRequest.size_spec").startswith("The size;")
    assert comments.get("osd.v1.VolumeSource.source") == ""


def test_a_stale_file_in_the_set_gives_no_comments(caplog: pytest.LogCaptureFixture) -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(_packaged_set())
    for file in fds.file:
        if file.name == "osd/v1/cluster.proto":
            file.message_type[0].field[0].name = "renamed"
    comments = Comments.load(FILES, fds.SerializeToString())
    assert comments.get("osd.v1.ClusterService.DeleteCluster") == ""
    assert "osd/v1/cluster.proto differs from the compiled contract" in caplog.text


def test_an_unreadable_set_gives_no_comments(caplog: pytest.LogCaptureFixture) -> None:
    assert Comments.load(FILES, b"\xff\xff\xff").by_name == {}
    assert "unreadable" in caplog.text
    assert Comments.load(FILES, b"").by_name == {}
