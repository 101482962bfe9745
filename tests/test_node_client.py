"""A client in another language: Node.js with @grpc/grpc-js and
@grpc/proto-loader (installed from clients/node/package-lock.json), loading
proto/ alone, creates, inspects, lists and deletes a volume against a daemon
with authentication on, and decodes a failed call's details."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from tests.auth_helpers import World, token

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed: scripts/test installs them (nodejs, npm)")
        pytest.skip("node and npm are not installed (CI installs them)")
    if not (CLIENT / "node_modules" / "@grpc" / "proto-loader").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=CLIENT,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return Path(node)


def test_a_node_client_uses_the_contract_from_proto_alone(w: World, node_client: Path) -> None:
    user = token(w.keys, roles=["user"], subject="node-user")
    run = subprocess.run(
        [str(node_client), "smoke.mjs", w.daemon.target, user, w.cluster_id],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["created"] == {"name": "from-node", "size_bytes": str(2 << 30)}
    assert seen["inspected"] is True
    assert seen["listed"] == ["from-node"]
    assert seen["after_delete"] == "NOT_FOUND"
    error = seen["error"]
    assert error["grpc_code"] == "INVALID_ARGUMENT" and error["code"] == 3
    assert error["reason"] and error["request_id"]
    assert set(error["fields"]) >= {"cluster_id", "name"}


def test_the_descriptor_set_loads_on_its_own() -> None:
    """osd/v1/descriptor_set.binpb holds every file it imports, so a tool
    with an empty pool can load it (grpcurl -protoset, a gateway)."""
    data = (ROOT / "osd" / "v1" / "descriptor_set.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    names = {f.name for f in files}
    assert {"google/api/annotations.proto", "google/rpc/status.proto"} <= names
    service = pool.FindServiceByName("osd.v1.VolumeService")
    assert "CreateVolume" in service.methods_by_name
    # Every google/api and google/rpc file the set needs is vendored in proto/.
    for name in names:
        if name.startswith(("google/api/", "google/rpc/")):
            assert (ROOT / "proto" / name).exists(), name
