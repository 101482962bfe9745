"""What the authentication and ownership tests share: a daemon that trusts
three token issuers and defines a custom role, tokens for it, and calls made
over gRPC and again through the REST gateway."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf import json_format
from google.protobuf.message import Message

from gateway.errors import http_status
from osd.v1 import cluster_pb2, datastore_pb2, node_pb2, volume_pb2
from tests.conftest import Database, RunningDaemon, running_daemon
from tests.factories import make_topology
from tests.helpers import error_of

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"s" * 40
RSA_ISSUER = "https://rsa.example"
JWKS_ISSUER = "https://oidc.example"
UNAUTHENTICATED = "UNAUTHENTICATED"
PERMISSION_DENIED = "PERMISSION_DENIED"
OK = "OK"


@dataclass
class Keys:
    secret_file: Path
    rsa_private: rsa.RSAPrivateKey
    ec_private: ec.EllipticCurvePrivateKey


@dataclass
class World:
    daemon: RunningDaemon
    keys: Keys
    rest: httpx.Client
    cluster_id: str
    log: list[str]


def token(keys: Keys, *, roles: list[str], subject: str = "alice", **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "osd",
        "sub": subject,
        "iat": now,
        "exp": now + 600,
        "roles": roles,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def make_keys(tmp_path: Path) -> Keys:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    return Keys(
        secret_file,
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    )


def _issuers(keys: Keys, tmp_path: Path) -> tuple[dict[str, Any], ...]:
    pem = tmp_path / "rsa.pub.pem"
    pem.write_bytes(
        keys.rsa_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys.ec_private.public_key()))
    jwk.update(kid="k1", use="sig", alg="ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    return (
        {"issuer": RSA_ISSUER, "public_key_file": str(pem)},
        {"issuer": JWKS_ISSUER, "jwks_file": str(jwks)},
    )


class _Capture(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def auth_world(database: Database, keys: Keys, tmp_path: Path) -> Iterator[World]:
    lines: list[str] = []
    capture = _Capture(lines)
    capture.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        with running_daemon(
            database,
            rest_enabled=True,
            rest_listen="127.0.0.1:0",
            auth_secret_file=str(keys.secret_file),
            auth_issuers=_issuers(keys, tmp_path),
            auth_roles={"node-reader": {"allow": ["osd.v1.NodeService/*"], "deny": ["*/Delete*"]}},
        ) as d:
            cluster_id, _, _ = make_topology(d.store, zones=3)
            with httpx.Client(
                base_url=f"http://127.0.0.1:{d.daemon.rest_port}", timeout=30
            ) as rest:
                yield World(d, keys, rest, cluster_id, lines)
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)


# -- calls over both transports ----------------------------------------------


@dataclass(frozen=True)
class Call:
    """One RPC, as gRPC sends it and as REST does."""

    method: str  # "/osd.v1.ClusterService/CreateCluster"
    request: Message
    response: type[Message]
    verb: str
    path: str
    body: dict[str, Any] | None = None


def create_cluster(name: str) -> Call:
    return Call(
        "/osd.v1.ClusterService/CreateCluster",
        cluster_pb2.CreateClusterRequest(name=name),
        cluster_pb2.CreateClusterResponse,
        "POST",
        "/v1/clusters",
        {"name": name},
    )


def list_clusters() -> Call:
    return Call(
        "/osd.v1.ClusterService/ListClusters",
        cluster_pb2.ListClustersRequest(),
        cluster_pb2.ListClustersResponse,
        "GET",
        "/v1/clusters",
    )


def create_volume(cluster_id: str, name: str) -> Call:
    body = {"cluster_id": cluster_id, "name": name, "size": "1G"}
    return Call(
        "/osd.v1.VolumeService/CreateVolume",
        volume_pb2.CreateVolumeRequest(cluster_id=cluster_id, name=name, size="1G"),
        volume_pb2.CreateVolumeResponse,
        "POST",
        "/v1/volumes",
        body,
    )


def register_datastore_version() -> Call:
    return Call(
        "/osd.v1.DatastoreService/CreateDatastoreVersion",
        datastore_pb2.CreateDatastoreVersionRequest(datastore="mysql", name="8.0"),
        datastore_pb2.CreateDatastoreVersionResponse,
        "POST",
        "/v1/datastoreVersions",
        {"datastore": "mysql", "name": "8.0"},
    )


def list_nodes(cluster_id: str) -> Call:
    return Call(
        "/osd.v1.NodeService/ListNodes",
        node_pb2.ListNodesRequest(cluster_id=cluster_id),
        node_pb2.ListNodesResponse,
        "GET",
        f"/v1/nodes?cluster_id={cluster_id}",
    )


def delete_node(node_id: str) -> Call:
    return Call(
        "/osd.v1.NodeService/DeleteNode",
        node_pb2.DeleteNodeRequest(node_id=node_id),
        node_pb2.DeleteNodeResponse,
        "DELETE",
        f"/v1/nodes/{node_id}",
    )


@dataclass
class Answer:
    code: str
    reason: str = ""
    message: str = ""
    challenge: str | None = None
    body: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # the ErrorInfo's


def over_grpc(w: World, call: Call, headers: dict[str, str]) -> Answer:
    rpc = w.daemon.channel.unary_unary(
        call.method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=call.response.FromString,
    )
    try:
        reply = rpc(call.request, metadata=list(headers.items()), timeout=30)
    except grpc.RpcError as err:
        view = error_of(err)
        return Answer(view.code.name, view.reason, view.message, metadata=view.metadata)
    return Answer(OK, body=json_format.MessageToDict(reply, preserving_proto_field_name=True))


def over_rest(w: World, call: Call, headers: dict[str, str]) -> Answer:
    resp = w.rest.request(call.verb, call.path, json=call.body, headers=headers)
    doc = resp.json()
    if resp.status_code >= 400:
        # The body names the gRPC code, and the HTTP status is the one the
        # gateway's table gives that code.
        code = doc["status"]
        assert resp.status_code == http_status(grpc.StatusCode[code]), (resp.status_code, doc)
        info = next((d for d in doc.get("details", []) if d.get("reason")), {})
        return Answer(
            code,
            info.get("reason", ""),
            doc.get("message", ""),
            resp.headers.get("www-authenticate"),
            metadata=dict(info.get("metadata", {})),
        )
    assert resp.status_code in (200, 202), (resp.status_code, doc)
    return Answer(OK, body=doc)


Wire = Callable[[World, Call, dict[str, str]], Answer]


def wire_of(name: str) -> Wire:
    return over_grpc if name == "grpc" else over_rest


def refused_unauthenticated(answer: Answer, wire: Wire, reason: str) -> None:
    assert answer.code == UNAUTHENTICATED, answer
    assert answer.reason == reason, answer
    if wire is over_rest:
        assert answer.challenge is not None and answer.challenge.startswith("Bearer"), answer
