"""TLS and mutual TLS on the gRPC port, the REST gateway and the clients, through the wire.

A throwaway PKI is made here with ``cryptography``: a CA that signs the
server's certificate (127.0.0.1 and localhost) and a client's, a "wrong" CA
with a client certificate of its own, and an "other" CA whose server
certificate replaces the first on reload.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from osd import cli
from osd import config as cfg
from osd.config import Settings, SettingsError
from osd.daemon import Daemon
from osd.engine.access.tokens import issue
from osd.store.models import ClusterRow
from osd.v1 import cluster_pb2, cluster_pb2_grpc
from tests.conftest import Database, running_daemon

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"t" * 40


# -- a throwaway PKI ----------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path
    serial: int


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    client: Issued
    wrong_ca: Path
    wrong_client: Issued
    other_ca: Path
    other_server: Issued
    member: Issued  # CN carol, O dev
    stranger: Issued  # CN stranger: signed by the CA, mapped to no roles


def _name(common_name: str, organization: str = "") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class _Ca:
    def __init__(self, common_name: str, folder: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / f"{common_name.replace(' ', '-')}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, common_name: str, folder: Path, *, server: bool, organization: str = ""
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = common_name.replace(" ", "-")
        cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return Issued(cert_path, key_path, serial)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, wrong, other = (_Ca(n, folder) for n in ("osd test CA", "wrong CA", "other CA"))
    return Pki(
        ca=ca.path,
        server=ca.issue("localhost", folder, server=True),
        client=ca.issue("ops", folder, server=False),
        wrong_ca=wrong.path,
        wrong_client=wrong.issue("intruder", folder, server=False),
        other_ca=other.path,
        other_server=other.issue("localhost again", folder, server=True),
        member=ca.issue("carol", folder, server=False, organization="dev"),
        stranger=ca.issue("stranger", folder, server=False),
    )


def _copy(issued: Issued, folder: Path) -> Issued:
    """The certificate and key in files of the test's own, which it may replace."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "server.pem", folder / "server.key"
    shutil.copyfile(issued.cert, cert)
    shutil.copyfile(issued.key, key)
    return Issued(cert, key, issued.serial)


def _replace(files: Issued, source: Issued) -> None:
    """Puts ``source``'s certificate and key in ``files``' place, as a rotation would."""
    for src, dst in ((source.cert, files.cert), (source.key, files.key)):
        tmp = dst.with_suffix(".new")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _tls(pki: Pki, *, mutual: bool = False, server: Issued | None = None) -> dict[str, Any]:
    server = server or pki.server
    settings: dict[str, Any] = {"tls_cert": str(server.cert), "tls_key": str(server.key)}
    if mutual:
        settings["tls_client_ca"] = str(pki.ca)
    return settings


# -- clients ------------------------------------------------------------------


def _channel(
    target: str,
    ca: Path | None = None,
    client: Issued | None = None,
    *,
    server_name: str = "",
) -> grpc.Channel:
    """A channel of its own (no subchannel shared with another test channel),
    over TLS trusting ``ca`` when given, in plaintext otherwise."""
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    if ca is None:
        return grpc.insecure_channel(target, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(target, credentials, options=options)


def _call(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    """The status of a ListClusters on ``channel``."""
    stub = cluster_pb2_grpc.ClusterServiceStub(channel)
    try:
        stub.ListClusters(cluster_pb2.ListClustersRequest(), metadata=metadata, timeout=10)
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return grpc.StatusCode.OK


def _grpc(
    target: str,
    ca: Path | None = None,
    client: Issued | None = None,
    *,
    server_name: str = "",
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    with _channel(target, ca, client, server_name=server_name) as channel:
        return _call(channel, metadata)


def _client_context(ca: Path, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def _https(port: int, ca: Path, client: Issued | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://127.0.0.1:{port}", verify=_client_context(ca, client), timeout=10
    )


def _served_serial(port: int, ca: Path, client: Issued | None = None) -> int:
    """The serial of the certificate a new TLS connection to ``port`` is shown,
    verified against ``ca``."""
    context = _client_context(ca, client)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _osd(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _create(target: str, pki: Pki, name: str, client: Issued | None = None) -> str:
    with _channel(target, pki.ca, client) as channel:
        reply = cluster_pb2_grpc.ClusterServiceStub(channel).CreateCluster(
            cluster_pb2.CreateClusterRequest(name=name), timeout=10
        )
    cluster_id: str = reply.cluster.id
    return cluster_id


# -- gRPC ---------------------------------------------------------------------


def test_grpc_over_tls_needs_the_right_ca(database: Database, pki: Pki) -> None:
    with running_daemon(database, **_tls(pki)) as d:
        created = _create(d.target, pki, "over-tls")
        with _channel(d.target, pki.ca) as channel:
            listed = cluster_pb2_grpc.ClusterServiceStub(channel).ListClusters(
                cluster_pb2.ListClustersRequest(), timeout=10
            )
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert [c.id for c in listed.clusters] == [created]
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # The certificate names localhost too, and nothing else.
        assert _grpc(f"localhost:{d.daemon.grpc_port}", pki.ca) == grpc.StatusCode.OK
        assert (
            _grpc(d.target, pki.ca, server_name="elsewhere.example") == grpc.StatusCode.UNAVAILABLE
        )
        # A client that trusts another CA refuses the handshake; plaintext is not spoken.
        assert _grpc(d.target, pki.wrong_ca) == grpc.StatusCode.UNAVAILABLE
        assert _grpc(d.target) == grpc.StatusCode.UNAVAILABLE
        # TLS alone asks for no client certificate; one presented does no harm.
        assert _grpc(d.target, pki.ca, pki.client) == grpc.StatusCode.OK


def test_mutual_tls_on_grpc_needs_a_client_certificate_the_ca_signed(
    database: Database, pki: Pki
) -> None:
    with running_daemon(database, **_tls(pki, mutual=True)) as d:
        created = _create(d.target, pki, "mutual", client=pki.client)
        assert _grpc(d.target, pki.ca, pki.client) == grpc.StatusCode.OK
        assert _grpc(d.target, pki.ca, pki.wrong_client) == grpc.StatusCode.UNAVAILABLE
        assert _grpc(d.target, pki.ca) == grpc.StatusCode.UNAVAILABLE
        assert _grpc(d.target) == grpc.StatusCode.UNAVAILABLE
        with d.store.read() as s:
            assert [row.id for row in s.query(ClusterRow).all()] == [created]


def test_credentials_are_still_checked_over_tls(
    database: Database, pki: Pki, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    token = issue(SECRET, subject="ops", roles=["admin"], ttl_seconds=600)
    with running_daemon(
        database,
        **_tls(pki, mutual=True),
        auth_secret_file=str(secret),
        rest_enabled=True,
        rest_listen="127.0.0.1:0",
    ) as d:
        bearer = (("authorization", f"Bearer {token}"),)
        assert _grpc(d.target, pki.ca, pki.client) == grpc.StatusCode.UNAUTHENTICATED
        assert _grpc(d.target, pki.ca, pki.client, metadata=bearer) == grpc.StatusCode.OK
        # The gateway's private socket is no way around authentication.
        assert d.daemon.local_target.startswith("unix:")
        assert _grpc(d.daemon.local_target) == grpc.StatusCode.UNAUTHENTICATED
        with _https(d.daemon.rest_port, pki.ca, pki.client) as http:
            refused = http.get("/v1/clusters")
            assert refused.status_code == 401, refused.text
            assert refused.headers["www-authenticate"].startswith("Bearer")
            made = http.post(
                "/v1/clusters",
                json={"name": "with-token"},
                headers={"authorization": f"Bearer {token}"},
            )
            assert made.status_code == 200, made.text
        # The command line sends its token over TLS too.
        tls_args = (
            "--endpoint",
            d.target,
            "--tls-ca",
            str(pki.ca),
            "--tls-client-cert",
            str(pki.client.cert),
            "--tls-client-key",
            str(pki.client.key),
        )
        rc, _, err = _osd("cluster", "list", *tls_args)
        assert rc == 6 and "UNAUTHENTICATED" in err  # osd.client.EXIT_CODES
        rc, out, err = _osd("cluster", "list", *tls_args, "--token", token)
        assert rc == 0, err
        assert [c["name"] for c in json.loads(out)["clusters"]] == ["with-token"]


# -- REST ---------------------------------------------------------------------


def test_rest_over_https_with_mutual_tls(database: Database, pki: Pki) -> None:
    with running_daemon(
        database, **_tls(pki, mutual=True), rest_enabled=True, rest_listen="127.0.0.1:0"
    ) as d:
        port = d.daemon.rest_port
        with _https(port, pki.ca, pki.client) as http:
            # Nothing was changed yet: the store is at generation 0.
            assert http.get("/v1/clusters").json() == {
                "clusters": [],
                "next_page_token": "",
                "generation": "0",
            }
            made = http.post("/v1/clusters", json={"name": "east"})
            assert made.status_code == 200, made.text
            listed = http.get("/v1/clusters")
            assert listed.status_code == 200
            assert [c["name"] for c in listed.json()["clusters"]] == ["east"]
        # What REST made, gRPC sees.
        with _channel(d.target, pki.ca, pki.client) as channel:
            names = [
                c.name
                for c in cluster_pb2_grpc.ClusterServiceStub(channel)
                .ListClusters(cluster_pb2.ListClustersRequest(), timeout=10)
                .clusters
            ]
        assert names == ["east"]
        for client in (pki.wrong_client, None):
            with pytest.raises(httpx.TransportError), _https(port, pki.ca, client) as http:
                http.get("/v1/clusters")
        with pytest.raises(httpx.ConnectError), _https(port, pki.wrong_ca, pki.client) as http:
            http.get("/v1/clusters")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/v1/clusters", timeout=5)


def test_rest_over_https_without_client_certificates(database: Database, pki: Pki) -> None:
    with running_daemon(database, **_tls(pki), rest_enabled=True, rest_listen="127.0.0.1:0") as d:
        with _https(d.daemon.rest_port, pki.ca) as http:
            assert http.get("/healthz").json() == {"status": "SERVING"}
            assert http.post("/v1/clusters", json={"name": "west"}).status_code == 200
        with pytest.raises(httpx.ConnectError), _https(d.daemon.rest_port, pki.wrong_ca) as http:
            http.get("/healthz")


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext"])
def test_the_gateway_inside_calls_over_a_private_unix_socket(
    database: Database, pki: Pki, tls: bool
) -> None:
    settings = _tls(pki, mutual=True) if tls else {}
    with running_daemon(database, **settings, rest_enabled=True, rest_listen="127.0.0.1:0") as d:
        target = d.daemon.local_target
        assert target.startswith("unix:")
        path = Path(target.removeprefix("unix:"))
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        if tls:
            http = _https(d.daemon.rest_port, pki.ca, pki.client)
        else:
            http = httpx.Client(base_url=f"http://127.0.0.1:{d.daemon.rest_port}", timeout=10)
        with http:
            assert http.post("/v1/clusters", json={"name": "via-unix"}).status_code == 200
            assert http.get("/healthz").status_code == 200
        # The socket speaks plaintext gRPC to whoever can reach it (this user).
        assert _grpc(target) == grpc.StatusCode.OK
    assert not path.parent.exists()


def test_no_private_socket_without_the_gateway(database: Database) -> None:
    with running_daemon(database) as d:
        assert d.daemon.local_target == ""


# -- reload -------------------------------------------------------------------


def test_reload_serves_the_new_certificate_to_new_connections(
    database: Database, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _copy(pki.server, tmp_path / "tls")
    with running_daemon(
        database,
        tls_cert=str(files.cert),
        tls_key=str(files.key),
        rest_enabled=True,
        rest_listen="127.0.0.1:0",
    ) as d:
        grpc_port, rest_port = d.daemon.grpc_port, d.daemon.rest_port
        for port in (grpc_port, rest_port):
            assert _served_serial(port, pki.ca) == pki.server.serial
        assert _grpc(d.target, pki.other_ca) == grpc.StatusCode.UNAVAILABLE
        kept = _channel(d.target, pki.ca)
        assert _call(kept) == grpc.StatusCode.OK

        _replace(files, pki.other_server)
        assert d.daemon.reload_tls()

        assert pki.other_server.serial != pki.server.serial
        for port in (grpc_port, rest_port):
            assert _served_serial(port, pki.other_ca) == pki.other_server.serial
        assert _grpc(d.target, pki.other_ca) == grpc.StatusCode.OK
        assert _grpc(d.target, pki.ca) == grpc.StatusCode.UNAVAILABLE
        with _https(rest_port, pki.other_ca) as http:
            assert http.get("/v1/clusters").status_code == 200
        # A connection made before keeps the certificate it agreed on.
        assert _call(kept) == grpc.StatusCode.OK
        kept.close()

        # Files that cannot be used leave the listeners as they are, with one warning.
        files.key.write_text("not a key\n")
        caplog.clear()
        with caplog.at_level("WARNING", logger="osd.daemon"):
            assert not d.daemon.reload_tls()
        warnings = [r.getMessage() for r in caplog.records if r.name == "osd.daemon"]
        assert len(warnings) == 1
        assert "not reloaded" in warnings[0] and "tls_key" in warnings[0]
        for port in (grpc_port, rest_port):
            assert _served_serial(port, pki.other_ca) == pki.other_server.serial
        assert _grpc(d.target, pki.other_ca) == grpc.StatusCode.OK


def test_reload_without_tls_does_nothing(database: Database) -> None:
    with running_daemon(database) as d:
        assert not d.daemon.reload_tls()
        assert _grpc(d.target) == grpc.StatusCode.OK


@contextlib.contextmanager
def _process(argv: list[str]) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """``osd ARGV`` as a child process whose log lines arrive in the queue."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "osd.cli", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = proc.stderr
    assert stderr is not None
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
            stderr.close()


def _wait_for(lines: queue.Queue[str], pattern: str, seconds: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no line matched {pattern!r} in:\n{''.join(seen)}")


def test_sighup_reloads_the_certificates_of_osd_serve(
    database: Database, pki: Pki, tmp_path: Path
) -> None:
    files = _copy(pki.server, tmp_path / "tls")
    argv = [
        "serve",
        "--grpc-listen",
        "127.0.0.1:0",
        "--rest-listen",
        "127.0.0.1:0",
        "--database-url",
        database.url,
        "--tls-cert",
        str(files.cert),
        "--tls-key",
        str(files.key),
        "--tls-client-ca",
        str(pki.ca),
        "--grace-seconds",
        "1",
    ]
    with _process(argv) as (proc, lines):
        grpc_port = int(_wait_for(lines, r"serving gRPC on 127\.0\.0\.1:(\d+) with TLS").group(1))
        rest_port = int(_wait_for(lines, r"serving REST on https://127\.0\.0\.1:(\d+)").group(1))
        for port in (grpc_port, rest_port):
            assert _served_serial(port, pki.ca, pki.client) == pki.server.serial

        # Half-way through a rotation (new certificate, old key): kept as it is.
        shutil.copyfile(pki.other_server.cert, files.cert)
        proc.send_signal(signal.SIGHUP)
        _wait_for(lines, r"WARNING .*TLS certificates not reloaded.*not the private key")
        assert _served_serial(rest_port, pki.ca, pki.client) == pki.server.serial

        shutil.copyfile(pki.other_server.key, files.key)
        proc.send_signal(signal.SIGHUP)
        _wait_for(lines, rf"INFO .*reloaded TLS certificates .*serial {pki.other_server.serial:x}")
        for port in (grpc_port, rest_port):
            assert _served_serial(port, pki.other_ca, pki.client) == pki.other_server.serial
        target = f"127.0.0.1:{grpc_port}"
        assert _grpc(target, pki.other_ca, pki.client) == grpc.StatusCode.OK
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_osd_gateway_standalone_dials_and_serves_tls(
    database: Database, pki: Pki, tmp_path: Path
) -> None:
    files = _copy(pki.server, tmp_path / "gateway-tls")
    with running_daemon(database, **_tls(pki, mutual=True)) as d:
        made = _create(d.target, pki, "behind-gateway", client=pki.client)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        argv = [
            "gateway",
            "--grpc-endpoint",
            d.target,
            "--rest-listen",
            f"127.0.0.1:{port}",
            "--tls-ca",
            str(pki.ca),
            "--tls-client-cert",
            str(pki.client.cert),
            "--tls-client-key",
            str(pki.client.key),
            "--tls-cert",
            str(files.cert),
            "--tls-key",
            str(files.key),
            "--tls-client-ca",
            str(pki.ca),
        ]
        with _process(argv) as (proc, lines):
            _wait_for(lines, r"serving REST on https://127\.0\.0\.1:\d+, client certificates")
            with _https(port, pki.ca, pki.client) as http:
                got = http.get(f"/v1/clusters/{made}")
                assert got.status_code == 200, got.text
                assert got.json()["cluster"]["name"] == "behind-gateway"
            with pytest.raises(httpx.TransportError), _https(port, pki.ca) as http:
                http.get("/healthz")
            _replace(files, pki.other_server)
            proc.send_signal(signal.SIGHUP)
            _wait_for(lines, r"reloaded TLS certificates")
            assert _served_serial(port, pki.other_ca, pki.client) == pki.other_server.serial
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0


def test_osd_gateway_without_the_daemons_ca_cannot_reach_it(database: Database, pki: Pki) -> None:
    with running_daemon(database, **_tls(pki)) as d:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        argv = ["gateway", "--grpc-endpoint", d.target, "--rest-listen", f"127.0.0.1:{port}"]
        with _process(argv) as (_proc, lines):
            _wait_for(lines, r"serving REST on http://")
            answer = httpx.get(f"http://127.0.0.1:{port}/v1/clusters", timeout=10)
            assert answer.status_code == 503, answer.text


# -- the command line ---------------------------------------------------------


def test_the_cli_dials_a_tls_daemon(database: Database, pki: Pki) -> None:
    with running_daemon(database, **_tls(pki)) as d:
        made = _create(d.target, pki, "from-cli-test")
        rc, out, err = _osd("cluster", "list", "--endpoint", d.target, "--tls-ca", str(pki.ca))
        assert rc == 0, err
        assert [c["id"] for c in json.loads(out)["clusters"]] == [made]
        rc, out, err = _osd("health", "--endpoint", d.target, "--tls-ca", str(pki.ca))
        assert (rc, out.strip()) == (0, "SERVING"), err
        rc, out, err = _osd(
            "cluster", "create", "made-by-cli", "--endpoint", d.target, "--tls-ca", str(pki.ca)
        )
        assert rc == 0, err
        assert json.loads(out)["cluster"]["name"] == "made-by-cli"
        # The endpoint's host is checked against the certificate, unless told another name.
        rc, _, err = _osd(
            "health",
            "--endpoint",
            d.target,
            "--tls-ca",
            str(pki.ca),
            "--tls-server-name",
            "elsewhere.example",
            "--timeout",
            "5",
        )
        assert rc == 1 and "UNAVAILABLE" in err
        rc, out, err = _osd(
            "health",
            "--endpoint",
            d.target,
            "--tls-ca",
            str(pki.ca),
            "--tls-server-name",
            "localhost",
        )
        assert (rc, out.strip()) == (0, "SERVING"), err
        for wrong in (("--tls-ca", str(pki.wrong_ca)), ()):
            rc, _, err = _osd("health", "--endpoint", d.target, "--timeout", "5", *wrong)
            assert rc == 1 and "UNAVAILABLE" in err


def test_the_cli_presents_its_client_certificate(
    database: Database, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_daemon(database, **_tls(pki, mutual=True)) as d:
        base = ("--endpoint", d.target, "--tls-ca", str(pki.ca), "--timeout", "5")
        rc, _, err = _osd("health", *base)
        assert rc == 1 and "UNAVAILABLE" in err
        rc, out, err = _osd(
            "health",
            *base,
            "--tls-client-cert",
            str(pki.client.cert),
            "--tls-client-key",
            str(pki.client.key),
        )
        assert (rc, out.strip()) == (0, "SERVING"), err
        rc, _, err = _osd(
            "health",
            *base,
            "--tls-client-cert",
            str(pki.wrong_client.cert),
            "--tls-client-key",
            str(pki.wrong_client.key),
        )
        assert rc == 1 and "UNAVAILABLE" in err
        # The same from the environment (read when the parser is built).
        made = _create(d.target, pki, "seen-by-env", client=pki.client)
        monkeypatch.setenv("OSD_ENDPOINT", d.target)
        monkeypatch.setenv("OSD_TLS_CA", str(pki.ca))
        monkeypatch.setenv("OSD_TLS_CLIENT_CERT", str(pki.client.cert))
        monkeypatch.setenv("OSD_TLS_CLIENT_KEY", str(pki.client.key))
        rc, out, err = _osd("cluster", "list")
        assert rc == 0, err
        assert [c["id"] for c in json.loads(out)["clusters"]] == [made]


def test_the_cli_names_a_tls_file_it_cannot_use(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    rc, _, err = _osd("health", "--tls-ca", str(missing))
    assert rc == 2
    assert err.strip() == f"osd: --tls-ca {missing}: cannot read it: No such file or directory"
    rc, _, err = _osd("health", "--tls-ca", str(pki.client.key))
    assert rc == 2 and f"--tls-ca {pki.client.key}: not a PEM certificate" in err
    rc, _, err = _osd("health", "--tls-ca", str(pki.ca), "--tls-client-cert", str(pki.client.cert))
    assert rc == 2 and "--tls-client-cert needs --tls-client-key" in err
    rc, _, err = _osd(
        "cluster",
        "list",
        "--tls-client-cert",
        str(pki.client.cert),
        "--tls-client-key",
        str(pki.server.key),
    )
    assert rc == 2 and "is not the private key" in err
    rc, _, err = _osd("health", "--tls-server-name", "localhost")
    assert rc == 2 and "--tls-server-name" in err


# -- settings -----------------------------------------------------------------


def _daemon_error(**settings: Any) -> str:
    with pytest.raises(SettingsError) as info:
        Daemon(Settings(database_url="sqlite:///nowhere/never-opened.db", **settings))
    return str(info.value)


def test_tls_settings_must_come_in_pairs(pki: Pki) -> None:
    cert, key, ca = str(pki.server.cert), str(pki.server.key), str(pki.ca)
    assert _daemon_error(tls_cert=cert).startswith("tls_cert is set but tls_key is not")
    assert _daemon_error(tls_key=key).startswith("tls_key is set but tls_cert is not")
    assert _daemon_error(tls_client_ca=ca).startswith(
        "tls_client_ca is set but tls_cert and tls_key are not"
    )


def test_tls_files_that_cannot_be_used_are_named(pki: Pki, tmp_path: Path) -> None:
    cert, key = str(pki.server.cert), str(pki.server.key)
    missing = str(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert _daemon_error(tls_cert=missing, tls_key=key) == (
        f"tls_cert {missing}: cannot read it: No such file or directory"
    )
    assert _daemon_error(tls_cert=cert, tls_key=missing).startswith(f"tls_key {missing}:")
    assert _daemon_error(tls_cert=str(garbage), tls_key=key).startswith(
        f"tls_cert {garbage}: not a PEM certificate"
    )
    assert _daemon_error(tls_cert=cert, tls_key=str(garbage)).startswith(
        f"tls_key {garbage}: not a PEM private key"
    )
    assert _daemon_error(tls_cert=cert, tls_key=str(pki.client.key)) == (
        f"tls_key {pki.client.key} is not the private key of the first certificate "
        f"in tls_cert {cert}"
    )
    assert _daemon_error(tls_cert=cert, tls_key=key, tls_client_ca=str(garbage)).startswith(
        f"tls_client_ca {garbage}: not a PEM certificate"
    )
    encrypted = tmp_path / "encrypted.key"
    loaded = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    encrypted.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"password"),
        )
    )
    assert _daemon_error(tls_cert=cert, tls_key=str(encrypted)).startswith(
        f"tls_key {encrypted}: the key is encrypted"
    )


def test_osd_serve_reports_a_bad_tls_file_in_one_line(database: Database, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    rc, _, err = _osd(
        "serve",
        "--database-url",
        database.url,
        "--grpc-listen",
        "127.0.0.1:0",
        "--tls-cert",
        str(missing),
        "--tls-key",
        str(missing),
    )
    assert rc == 2
    assert err.strip().splitlines() == [
        f"osd: tls_cert {missing}: cannot read it: No such file or directory"
    ]


def test_tls_settings_come_from_flags_env_and_a_config_file_beside_it(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "osd.toml"
    config.parent.mkdir()
    config.write_text(
        'tls_cert = "tls/server.pem"\ntls_key = "/abs/server.key"\ntls_client_ca = "ca.pem"\n'
    )
    settings = cfg.load({}, environ={}, config_file=str(config))
    assert settings.tls_cert == str(config.parent / "tls" / "server.pem")
    assert settings.tls_key == "/abs/server.key"
    assert settings.tls_client_ca == str(config.parent / "ca.pem")
    settings = cfg.load(
        {"tls_cert": "flag.pem"},
        environ={"OSD_TLS_CERT": "env.pem", "OSD_TLS_KEY": "env.key"},
        config_file=str(config),
    )
    assert (settings.tls_cert, settings.tls_key) == ("flag.pem", "env.key")


# -- client certificates as identities ------------------------------------------


def _mapped(pki: Pki, tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    return {
        **_tls(pki, mutual=True),
        "rest_enabled": True,
        "rest_listen": "127.0.0.1:0",
        "auth_secret_file": str(secret),
        "auth_client_certs": {"ops": ["admin"], "carol": ["view"]},
    }


def _create_status(
    target: str, ca: Path, client: Issued, metadata: tuple[tuple[str, Any], ...] = ()
) -> grpc.StatusCode:
    with _channel(target, ca, client) as channel:
        try:
            cluster_pb2_grpc.ClusterServiceStub(channel).CreateCluster(
                cluster_pb2.CreateClusterRequest(name=f"c-{time.monotonic_ns()}"),
                metadata=metadata,
                timeout=10,
            )
        except grpc.RpcError as err:
            code: grpc.StatusCode = err.code()
            return code
    return grpc.StatusCode.OK


def test_a_mapped_client_certificate_is_the_callers_identity(
    database: Database, pki: Pki, tmp_path: Path
) -> None:
    with running_daemon(database, **_mapped(pki, tmp_path)) as d:
        target, port = d.target, d.daemon.rest_port
        # gRPC: ops is admin, carol views, stranger is signed but mapped to nothing.
        assert _create_status(target, pki.ca, pki.client) == grpc.StatusCode.OK
        assert _grpc(target, pki.ca, pki.member) == grpc.StatusCode.OK
        assert _create_status(target, pki.ca, pki.member) == grpc.StatusCode.PERMISSION_DENIED
        assert _grpc(target, pki.ca, pki.stranger) == grpc.StatusCode.UNAUTHENTICATED
        # A token, when given, is the identity instead of the certificate.
        view = issue(SECRET, subject="viewer", roles=["view"], ttl_seconds=600)
        as_view = (("authorization", f"Bearer {view}"),)
        assert _create_status(target, pki.ca, pki.client, as_view) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        # A TCP caller cannot name a certificate it did not present.
        ops_der = x509.load_pem_x509_certificate(pki.client.cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        spoof = (("x-osd-client-cert-bin", ops_der),)
        assert _create_status(target, pki.ca, pki.member, spoof) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert _create_status(target, pki.ca, pki.stranger, spoof) == (
            grpc.StatusCode.UNAUTHENTICATED
        )

        # REST: the same, through the daemon's own HTTPS port.
        with _https(port, pki.ca, pki.client) as http:
            made = http.post("/v1/clusters", json={"name": "by-cert"})
            assert made.status_code == 200, made.text
            records = http.get("/v1/audit", params={"subject": "ops"}).json()["records"]
            assert {r["via"] for r in records} == {"client-cert"}
            assert len(records) == 2  # the gRPC create and this one
        with _https(port, pki.ca, pki.member) as http:
            assert http.get("/v1/clusters").status_code == 200
            refused = http.post("/v1/clusters", json={"name": "by-carol"})
            assert refused.status_code == 403, refused.text
        with _https(port, pki.ca, pki.stranger) as http:
            refused = http.get("/v1/clusters")
            assert refused.status_code == 401, refused.text
            assert "'stranger' is not one auth_client_certs maps" in refused.json()["message"]
        # carol's certificate names her organization as a group.
        with _https(port, pki.ca, pki.client) as http:
            denied = http.get(
                "/v1/audit", params={"subject": "carol", "codes": "PERMISSION_DENIED"}
            ).json()["records"]
            assert denied and all(r["roles"] == ["view"] for r in denied)
        assert d.daemon.auth.client_certs is not None
        member = d.daemon.auth.client_certs.principal(pki.member.cert.read_bytes())
        assert member is not None and member.groups == frozenset({"dev"})


def test_client_certificate_identities_need_mutual_tls_and_known_roles(
    database: Database, pki: Pki, tmp_path: Path
) -> None:
    settings = _mapped(pki, tmp_path)
    settings.pop("tls_client_ca")
    with pytest.raises(SettingsError, match="auth_client_certs needs mutual TLS"):
        Daemon(Settings(database_url=database.url, **settings))
    settings = _mapped(pki, tmp_path)
    settings["auth_client_certs"] = {"ops": ["root"]}
    with pytest.raises(SettingsError, match="root is not a role"):
        Daemon(Settings(database_url=database.url, **settings))
    settings["auth_client_certs"] = {"ops": "admin"}
    with pytest.raises(SettingsError, match="give a list of role names"):
        Daemon(Settings(database_url=database.url, **settings))
