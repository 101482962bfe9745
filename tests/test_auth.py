"""Authentication and roles, over gRPC and again through the REST gateway.

One daemon per store trusts three token issuers: the HS256 secret of
``--auth-secret-file`` (issuer "osd"), an RS256 public key, and an ES256 key
in a JWKS file. It also accepts API keys, and defines a custom role. Each test
runs its calls over both transports and asserts the gRPC code, or the HTTP
status (401 with a Bearer challenge, 403).
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from concurrent import futures
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from osd import cli
from osd.config import Settings, SettingsError
from osd.contract import contract, method_roles
from osd.daemon import Daemon
from osd.engine.access.audit import AuditQuery
from osd.server.interceptors import ServerInterceptor
from osd.v1 import cluster_pb2
from tests.auth_helpers import (
    JWKS_ISSUER,
    OK,
    PERMISSION_DENIED,
    ROOT,
    RSA_ISSUER,
    SECRET,
    Keys,
    Wire,
    World,
    bearer,
    create_cluster,
    create_volume,
    delete_node,
    list_clusters,
    list_nodes,
    refused_unauthenticated,
    register_datastore_version,
    token,
)
from tests.conftest import Database, running_daemon

# -- the matrix -----------------------------------------------------------------


def test_anonymous_is_unauthenticated_and_rest_says_bearer(w: World, wire: Wire) -> None:
    answer = wire(w, list_clusters(), {})
    refused_unauthenticated(answer, wire, "CREDENTIALS_MISSING")
    assert "bearer token" in answer.message
    # A refused create wrote nothing.
    admin = bearer(token(w.keys, roles=["admin"]))
    refused_unauthenticated(wire(w, create_cluster("ghost"), {}), wire, "CREDENTIALS_MISSING")
    names = [c["name"] for c in wire(w, list_clusters(), admin).body["clusters"]]  # type: ignore[index]
    assert names == ["c1"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bad signature", "TOKEN_INVALID"),
        ("unknown issuer", "ISSUER_UNKNOWN"),
        ("expired", "TOKEN_EXPIRED"),
        ("issued in the future beyond the leeway", "TOKEN_NOT_YET_VALID"),
        ("not before, beyond the leeway", "TOKEN_NOT_YET_VALID"),
        ("no roles claim", "TOKEN_INVALID"),
        ("roles not a list", "TOKEN_INVALID"),
        ("no sub", "TOKEN_INVALID"),
        ("a newline in sub", "TOKEN_INVALID"),
        ("a control character in a group", "TOKEN_INVALID"),
        ("not a JWT", "CREDENTIALS_MALFORMED"),
        ("basic auth", "CREDENTIALS_MALFORMED"),
        ("alg none", "TOKEN_INVALID"),
        ("RSA public key as HMAC secret", "TOKEN_INVALID"),
    ],
)
def test_bad_credentials_are_unauthenticated(w: World, wire: Wire, case: str, reason: str) -> None:
    now = int(time.time())
    rsa_pem = w.keys.rsa_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    headers = {
        "bad signature": bearer(
            jwt.encode(
                {"iss": "osd", "sub": "a", "iat": now, "exp": now + 60, "roles": ["admin"]},
                b"t" * 40,
                algorithm="HS256",
            )
        ),
        "unknown issuer": bearer(token(w.keys, roles=["admin"], iss="elsewhere")),
        "expired": bearer(token(w.keys, roles=["admin"], iat=now - 600, exp=now - 60)),
        "issued in the future beyond the leeway": bearer(
            token(w.keys, roles=["admin"], iat=now + 60, exp=now + 600)
        ),
        "not before, beyond the leeway": bearer(token(w.keys, roles=["admin"], nbf=now + 60)),
        "no roles claim": {},
        "roles not a list": bearer(token(w.keys, roles="admin")),  # type: ignore[arg-type]
        "no sub": bearer(token(w.keys, roles=["admin"], sub=None)),
        "a newline in sub": bearer(token(w.keys, roles=["admin"], sub="ops\nINFO forged")),
        "a control character in a group": bearer(
            token(w.keys, roles=["admin"], groups=["dev\x1b[31m"])
        ),
        "not a JWT": bearer("not-a-token"),
        "basic auth": {"authorization": "Basic YWRtaW46YWRtaW4="},
        "alg none": bearer(
            jwt.encode(
                {"iss": "osd", "sub": "a", "iat": now, "exp": now + 60, "roles": ["admin"]},
                None,
                algorithm="none",
            )
        ),
        "RSA public key as HMAC secret": bearer(
            _forge_hs256(
                {"iss": RSA_ISSUER, "sub": "a", "iat": now, "exp": now + 60, "roles": ["admin"]},
                rsa_pem,
            )
        ),
    }[case]
    if case == "no roles claim":
        claims = {"iss": "osd", "sub": "a", "iat": now, "exp": now + 60}
        headers = bearer(jwt.encode(claims, SECRET, algorithm="HS256"))
    answer = wire(w, create_cluster("forged"), headers)
    refused_unauthenticated(answer, wire, reason)
    admin = bearer(token(w.keys, roles=["admin"]))
    names = [c["name"] for c in wire(w, list_clusters(), admin).body["clusters"]]  # type: ignore[index]
    assert "forged" not in names


def _forge_hs256(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 token keyed with ``key`` (PyJWT refuses PEM keys for HMAC itself)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_clock_skew_inside_the_leeway_is_accepted(w: World, wire: Wire) -> None:
    now = int(time.time())
    just_expired = bearer(token(w.keys, roles=["view"], iat=now - 600, exp=now - 10))
    early = bearer(token(w.keys, roles=["view"], iat=now + 10, nbf=now + 10))
    assert wire(w, list_clusters(), just_expired).code == OK
    assert wire(w, list_clusters(), early).code == OK


def test_rs256_and_jwks_issuers_are_trusted(w: World, wire: Wire) -> None:
    now = int(time.time())
    claims = {"sub": "bob", "iat": now, "exp": now + 60, "roles": ["view"]}
    rs = jwt.encode({**claims, "iss": RSA_ISSUER}, w.keys.rsa_private, algorithm="RS256")
    es = jwt.encode(
        {**claims, "iss": JWKS_ISSUER}, w.keys.ec_private, algorithm="ES256", headers={"kid": "k1"}
    )
    assert wire(w, list_clusters(), bearer(rs)).code == OK
    assert wire(w, list_clusters(), bearer(es)).code == OK
    # A key the JWKS does not hold, and a token of one issuer signed by another's key.
    other = jwt.encode(
        {**claims, "iss": JWKS_ISSUER}, w.keys.ec_private, algorithm="ES256", headers={"kid": "k2"}
    )
    refused_unauthenticated(wire(w, list_clusters(), bearer(other)), wire, "TOKEN_INVALID")
    crossed = jwt.encode({**claims, "iss": "osd"}, w.keys.rsa_private, algorithm="RS256")
    refused_unauthenticated(wire(w, list_clusters(), bearer(crossed)), wire, "TOKEN_INVALID")


def test_view_reads_but_cannot_create(w: World, wire: Wire) -> None:
    view = bearer(token(w.keys, roles=["view"], subject="viewer"))
    assert wire(w, list_clusters(), view).code == OK
    assert wire(w, list_nodes(w.cluster_id), view).code == OK
    for call in (create_cluster("v"), create_volume(w.cluster_id, "v1")):
        answer = wire(w, call, view)
        assert (answer.code, answer.reason) == (PERMISSION_DENIED, "ROLE_NOT_ALLOWED"), answer
    assert (
        wire(w, create_volume(w.cluster_id, "v1"), bearer(token(w.keys, roles=["admin"]))).code
        == OK
    )


def test_user_cannot_change_topology_or_register_datastores(w: World, wire: Wire) -> None:
    user = bearer(token(w.keys, roles=["user"], subject="carol"))
    assert wire(w, list_clusters(), user).code == OK
    for call in (create_cluster("mine"), register_datastore_version()):
        answer = wire(w, call, user)
        assert (answer.code, answer.reason) == (PERMISSION_DENIED, "ROLE_NOT_ALLOWED"), answer
    node_id = wire(w, list_nodes(w.cluster_id), user).body["nodes"][0]["id"]  # type: ignore[index]
    assert wire(w, delete_node(node_id), user).code == PERMISSION_DENIED
    created = wire(w, create_volume(w.cluster_id, "carols"), user)
    assert created.code == OK, created
    assert created.body["volume"]["name"] == "carols"  # type: ignore[index]


def test_admin_may_call_everything(w: World, wire: Wire) -> None:
    admin = bearer(token(w.keys, roles=["admin"], subject="root"))
    assert wire(w, create_cluster("c2"), admin).code == OK
    assert wire(w, create_volume(w.cluster_id, "v"), admin).code == OK
    # Unknown role names give nothing, and a token may hold several roles.
    assert wire(w, list_clusters(), bearer(token(w.keys, roles=["root"]))).code == PERMISSION_DENIED
    both = bearer(token(w.keys, roles=["view", "admin"]))
    assert wire(w, create_cluster("c3"), both).code == OK


def test_custom_role_allows_by_glob_and_deny_wins(w: World, wire: Wire) -> None:
    reader = bearer(token(w.keys, roles=["node-reader"]))
    nodes = wire(w, list_nodes(w.cluster_id), reader)
    assert nodes.code == OK
    node_id = nodes.body["nodes"][0]["id"]  # type: ignore[index]
    assert wire(w, delete_node(node_id), reader).code == PERMISSION_DENIED
    assert wire(w, list_clusters(), reader).code == PERMISSION_DENIED


def test_two_credentials_at_once_are_refused(w: World, wire: Wire) -> None:
    headers = {**bearer(token(w.keys, roles=["admin"])), "x-api-key": "osdk_x"}
    refused_unauthenticated(wire(w, list_clusters(), headers), wire, "CREDENTIALS_AMBIGUOUS")


# -- API keys -----------------------------------------------------------------


def _osd(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def test_api_key_works_until_revoked(w: World, wire: Wire) -> None:
    url = w.daemon.database.url
    rc, out, err = _osd(
        "apikey", "create", "--role", "admin", "--subject", "ci", "--database-url", url
    )
    assert rc == 0, err
    key = out.strip()
    assert key.startswith("osdk_")
    key_id = key.split("_")[1]
    assert wire(w, create_cluster("by-key"), {"x-api-key": key}).code == OK
    # The store keeps a digest, never the key; the list shows neither.
    with w.daemon.store.read() as s:
        stored = " ".join(str(v) for v in s.execute(_select_keys()).one())
    secret = key.split("_", 2)[2]
    assert secret not in stored and key_id in stored
    rc, out, _ = _osd("apikey", "list", "--database-url", url)
    assert rc == 0 and key_id in out and secret not in out and "ci" in out
    # A key with one character changed is refused.
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    refused_unauthenticated(
        wire(w, list_clusters(), {"x-api-key": tampered}), wire, "API_KEY_INVALID"
    )
    rc, _, err = _osd("apikey", "revoke", key_id, "--database-url", url)
    assert rc == 0, err
    refused_unauthenticated(wire(w, list_clusters(), {"x-api-key": key}), wire, "API_KEY_INVALID")
    rc, out, _ = _osd("apikey", "list", "--database-url", url)
    assert key_id not in out
    rc, out, _ = _osd("apikey", "list", "--all", "--database-url", url)
    assert key_id in out
    rc, _, err = _osd("apikey", "revoke", "0123456789abcdef", "--database-url", url)
    assert rc == 1 and "not found" in err


def _select_keys() -> Any:
    from sqlalchemy import select

    from osd.store.models import ApiKeyRow

    return select(ApiKeyRow.id, ApiKeyRow.secret_sha256, ApiKeyRow.subject, ApiKeyRow.role)


def test_a_view_key_is_a_view_caller(w: World, wire: Wire) -> None:
    rc, out, err = _osd(
        "apikey", "create", "--role", "view", "--subject", "dash",
        "--database-url", w.daemon.database.url,
    )  # fmt: skip
    assert rc == 0, err
    key = {"x-api-key": out.strip()}
    assert wire(w, list_clusters(), key).code == OK
    assert wire(w, create_cluster("nope"), key).code == PERMISSION_DENIED


def test_apikey_create_refuses_an_unknown_role(database: Database) -> None:
    rc, out, err = _osd(
        "apikey", "create", "--role", "root", "--subject", "x", "--database-url", database.url
    )
    assert rc == 2 and out == "" and "--role root: not a role" in err


# -- what stays open, and what never leaks --------------------------------------


def test_health_is_open_and_reflection_needs_credentials(w: World) -> None:
    health = health_pb2_grpc.HealthStub(w.daemon.channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert w.rest.get("/healthz").status_code == 200

    stub = reflection_pb2_grpc.ServerReflectionStub(w.daemon.channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ServerReflectionInfo(iter([ask]), timeout=10))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    view = list(bearer(token(w.keys, roles=["view"])).items())
    replies = list(stub.ServerReflectionInfo(iter([ask]), metadata=view, timeout=10))
    names = {s.name for s in replies[0].list_services_response.service}
    assert "osd.v1.VolumeService" in names


def test_no_secret_reaches_the_log(w: World, wire: Wire) -> None:
    jwt_text = token(w.keys, roles=["admin"])
    _, out, _ = _osd(
        "apikey", "create", "--role", "admin", "--subject", "ci",
        "--database-url", w.daemon.database.url,
    )  # fmt: skip
    key = out.strip()
    wire(w, create_cluster("logged"), bearer(jwt_text))
    wire(w, create_cluster("logged"), {"x-api-key": key})
    # Refused credentials, which carry the real ones inside them.
    wire(w, list_clusters(), bearer(jwt_text + "x"))
    wire(w, list_clusters(), {"x-api-key": key + "x"})
    text = "\n".join(w.log)
    assert "ListClusters" in text  # the access log did record the calls
    for secret in (jwt_text, jwt_text.split(".")[2], key, key.split("_", 2)[2], SECRET.decode()):
        assert secret not in text


def test_reflection_is_served_as_v1_too(w: World) -> None:
    info = w.daemon.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="osd.v1.VolumeService"),
    ]
    with pytest.raises(grpc.RpcError) as refused:
        list(info(iter(asks), timeout=10))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    view = list(bearer(token(w.keys, roles=["view"])).items())
    listed, itself, volume = list(info(iter(asks), metadata=view, timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "osd.v1.VolumeService",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.health.v1.Health",
    } <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in itself.file_descriptor_response.file_descriptor_proto
    ]
    [v1] = [f for f in files if f.name == "grpc/reflection/v1/reflection.proto"]
    assert v1.package == "grpc.reflection.v1" and v1.service[0].name == "ServerReflection"
    assert v1.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert any(
        f.name == "osd/v1/volume.proto"
        for f in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            volume.file_descriptor_response.file_descriptor_proto,
        )
    )


def test_reflection_refusals_are_audited(w: World) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(w.daemon.channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError):
        list(stub.ServerReflectionInfo(iter([ask]), timeout=10))
    [record] = w.daemon.daemon.engine.audit.list(AuditQuery()).items
    assert record.method == "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert record.code == grpc.StatusCode.UNAUTHENTICATED.value[0]


def test_a_service_the_interceptor_does_not_know_is_closed_by_default(w: World) -> None:
    """A method that streams its requests, in osd.v1 or not, and a unary
    /grpc.* service, on a server with the daemon's own interceptor: none is
    served without credentials, and an osd.v1 method no role names is
    served to nobody."""
    served: list[str] = []

    def upload(requests: Any, context: grpc.ServicerContext) -> bytes:
        served.append("upload")
        return b"".join(requests)

    def chat(requests: Any, context: grpc.ServicerContext) -> Any:
        served.append("chat")
        yield from requests

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        served.append("echo")
        return request

    handlers = [
        grpc.method_handlers_generic_handler(
            "osd.v1.TestOnlyService",
            {
                "Upload": grpc.stream_unary_rpc_method_handler(upload),
                "Chat": grpc.stream_stream_rpc_method_handler(chat),
            },
        ),
        grpc.method_handlers_generic_handler(
            "grpc.testing.Probe", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        ),
    ]
    d = w.daemon.daemon
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[ServerInterceptor(d.auth, d.engine.audit)],
        handlers=handlers,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            upload_rpc = channel.stream_unary("/osd.v1.TestOnlyService/Upload")
            chat_rpc = channel.stream_stream("/osd.v1.TestOnlyService/Chat")
            echo_rpc = channel.unary_unary("/grpc.testing.Probe/Echo")

            def code(rpc: Any, arg: Any, headers: dict[str, str]) -> grpc.StatusCode:
                try:
                    result = rpc(arg, metadata=list(headers.items()), timeout=10)
                    if not isinstance(result, bytes):
                        list(result)
                except grpc.RpcError as err:
                    return err.code()  # type: ignore[no-any-return]
                return grpc.StatusCode.OK

            admin = bearer(token(w.keys, roles=["admin"]))
            for headers in ({}, bearer("garbage")):
                assert code(upload_rpc, iter([b"a"]), headers) == grpc.StatusCode.UNAUTHENTICATED
                assert code(chat_rpc, iter([b"a"]), headers) == grpc.StatusCode.UNAUTHENTICATED
                assert code(echo_rpc, b"a", headers) == grpc.StatusCode.UNAUTHENTICATED
            assert code(upload_rpc, iter([b"a"]), admin) == grpc.StatusCode.PERMISSION_DENIED
            assert code(chat_rpc, iter([b"a"]), admin) == grpc.StatusCode.PERMISSION_DENIED
            assert served == []
            assert code(echo_rpc, b"a", bearer(token(w.keys, roles=["view"]))) == grpc.StatusCode.OK
            assert served == ["echo"]
    finally:
        server.stop(grace=0)


# -- secure defaults ---------------------------------------------------------------


def test_start_refuses_a_public_address_without_auth(database: Database, keys: Keys) -> None:
    for listen in ("0.0.0.0:0", "[::]:0"):
        settings = Settings(grpc_listen=listen, rest_enabled=False, database_url=database.url)
        with pytest.raises(SettingsError, match=r"not a loopback address.*--insecure"):
            Daemon(settings).start()
    rc, _, err = _osd("serve", "--grpc-listen", "0.0.0.0:0", "--database-url", database.url)
    assert rc == 2 and "--insecure" in err
    # The REST listener counts too.
    settings = Settings(
        grpc_listen="127.0.0.1:0", rest_listen="0.0.0.0:0", database_url=database.url
    )
    with pytest.raises(SettingsError, match="rest_listen"):
        Daemon(settings).start()


@pytest.mark.parametrize("how", ["insecure", "auth"])
def test_a_public_address_is_served_with_auth_or_insecure(
    database: Database, keys: Keys, how: str
) -> None:
    extra: dict[str, Any] = (
        {"insecure": True} if how == "insecure" else {"auth_secret_file": str(keys.secret_file)}
    )
    settings = Settings(
        grpc_listen="0.0.0.0:0", rest_enabled=False, database_url=database.url, **extra
    )
    d = Daemon(settings)
    d.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{d.grpc_port}") as channel:
            stub = cluster_pb2_grpc_stub(channel)
            if how == "insecure":
                stub.ListClusters(cluster_pb2.ListClustersRequest(), timeout=10)
            else:
                with pytest.raises(grpc.RpcError) as info:
                    stub.ListClusters(cluster_pb2.ListClustersRequest(), timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        d.stop(grace=0)


def cluster_pb2_grpc_stub(channel: grpc.Channel) -> Any:
    from osd.v1 import cluster_pb2_grpc

    return cluster_pb2_grpc.ClusterServiceStub(channel)


def test_auth_off_warns_that_every_caller_is_admin(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="osd.daemon")
    with running_daemon(database):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("every caller is admin" in m for m in warnings), warnings


def test_token_issue_makes_a_token_the_daemon_accepts(w: World, wire: Wire) -> None:
    rc, out, err = _osd(
        "token", "issue", "--secret-file", str(w.keys.secret_file),
        "--role", "user", "--subject", "dave", "--ttl", "30m",
    )  # fmt: skip
    assert rc == 0, err
    token = out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "dave" and claims["roles"] == ["user"] and claims["iss"] == "osd"
    assert claims["exp"] - claims["iat"] == 1800
    assert wire(w, create_volume(w.cluster_id, "daves"), bearer(token)).code == OK
    assert wire(w, create_cluster("daves"), bearer(token)).code == PERMISSION_DENIED


def test_token_issue_refuses_a_short_secret_and_a_bad_ttl(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("tooshort")
    rc, out, err = _osd(
        "token", "issue", "--secret-file", str(short), "--role", "admin", "--subject", "x"
    )
    assert rc == 2 and out == "" and "at least 32 bytes" in err
    with pytest.raises(SystemExit):
        _osd("token", "issue", "--secret-file", str(short), "--role", "admin",
             "--subject", "x", "--ttl", "forever")  # fmt: skip


# -- every RPC has a role ---------------------------------------------------------


def test_every_rpc_declares_a_role_and_its_comment_agrees() -> None:
    roles = method_roles()
    methods = [
        f"{entry.full_name}/{m.name}" for entry in contract() for m in entry.descriptor.methods
    ]
    assert sorted(roles) == sorted(methods)
    assert set(roles.values()) <= {"view", "user", "admin"}
    stated: dict[str, str] = {}
    for path in sorted((ROOT / "proto" / "osd" / "v1").glob("*.proto")):
        text = path.read_text()
        service = ""
        role = ""
        for line in text.splitlines():
            if m := re.match(r"service (\w+) \{", line):
                service = m.group(1)
            if m := re.match(r"\s*// Role: (\w+)\.", line):
                role = m.group(1)
            if m := re.match(r"\s*rpc (\w+)\(", line):
                stated[f"osd.v1.{service}/{m.group(1)}"] = role
                role = ""
    assert stated == roles
    # Reads (watching changes and waiting for a generation among them) are
    # open to view, but the audit trail; nothing that changes state is.
    for method, role in roles.items():
        name = method.rsplit("/", 1)[1]
        if method == "osd.v1.AuditService/ListAuditRecords":
            assert role == "admin"
            continue
        assert (role == "view") == name.startswith(("Inspect", "List", "Get", "Watch", "Wait")), (
            method
        )


def test_datastore_registration_topology_and_the_service_api_are_admin_only() -> None:
    roles = method_roles()
    for method, role in roles.items():
        service, name = method.split("/")
        if name.startswith(("Inspect", "List", "Get", "Wait")):
            continue  # reads (waiting for a generation reads the store's)
        if service in (
            "osd.v1.ClusterService",
            "osd.v1.NodeService",
            "osd.v1.PoolService",
            "osd.v1.DatastoreService",
            "osd.v1.Service",
            "osd.v1.JobService",
        ):
            assert role == "admin", method
        if service == "osd.v1.TemplateService":
            # A user's own templates, like its volumes: ownership decides.
            assert role == "user", method


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key"])
@pytest.mark.parametrize(
    "value",
    [b"Bearer \xe9t\xe9", b"\xff\xfe", b"Bearer a\tb", b"k\x80"],
    ids=["latin-1", "bytes", "tab", "high"],
)
def test_rest_credentials_that_are_not_ascii_are_malformed(
    w: World, header: str, value: bytes
) -> None:
    """gRPC metadata is printable ASCII; HTTP headers may carry any byte. A
    header gRPC could not carry answers 401, not 500."""
    resp = w.rest.get("/v1/clusters", headers={header: value})
    doc = resp.json()
    assert resp.status_code == 401, doc
    assert doc["status"] == "UNAUTHENTICATED"
    reasons = [d.get("reason") for d in doc.get("details", [])]
    assert "CREDENTIALS_MALFORMED" in reasons
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert str(value) not in doc["message"]
    # ...and the same request with a good credential still works.
    admin = bearer(token(w.keys, roles=["admin"]))
    assert w.rest.get("/v1/clusters", headers=admin).status_code == 200
