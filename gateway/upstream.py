"""The gateway's side of the gRPC connection to the daemon.

One ``grpc.aio`` channel per gateway, opened in the event loop that serves
HTTP (grpc.aio measured faster here than a synchronous channel driven from a
thread pool; see scripts/bench-rest). Calls are generic: the method path and
the message classes come from the route's descriptor.

The target is any gRPC target: ``HOST:PORT`` for a remote daemon, or
``unix:/PATH`` for the private socket of the daemon the gateway runs in. A
remote daemon serving TLS is dialled with :class:`ClientTls`. The PEM helpers
here (:func:`read_pem`, :func:`read_key_pair`, ...) also serve the server side
(gateway.server) and the command line, so that every TLS file is checked, and
every error worded, the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
import grpc.aio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.routes import Route
from osd.contract import message_class

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
REQUEST_ID_KEY = "x-request-id"
# Headers passed to the daemon as metadata of the same (lower-case) name.
PASSED_HEADERS = ("authorization", "x-api-key")
# The client certificate the gateway's HTTPS port verified, as DER.
CLIENT_CERT_KEY = "x-osd-client-cert-bin"

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TIMEOUT_RE = re.compile(r"([0-9]{1,8})([HMSmun])")


def parse_grpc_timeout(text: str) -> float | None:
    """Seconds from a ``Grpc-Timeout`` header value (e.g. "5S", "250m"), or None."""
    found = _TIMEOUT_RE.fullmatch(text.strip())
    if found is None:
        return None
    return int(found.group(1)) * _TIMEOUT_UNITS[found.group(2)]


def request_id_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The x-request-id the daemon echoed in its initial metadata."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None


class TlsError(ValueError):
    """A TLS file that cannot be used; the message names the setting and the file."""


def read_pem(setting: str, path: str) -> bytes:
    """The bytes of the PEM file ``path``, given as ``setting``."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise TlsError(f"{setting} {path}: cannot read it: {exc.strerror or exc}") from None


def load_certificates(setting: str, path: str, data: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM file, first one first; at least one."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsError(
            f"{setting} {path}: not a PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None


def _public_key_of_private_key(setting: str, path: str, data: bytes) -> bytes:
    """The public key (DER SubjectPublicKeyInfo) of an unencrypted PEM private key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # what cryptography raises for an encrypted key without a password
        raise TlsError(
            f"{setting} {path}: the key is encrypted, and there is no way to give its "
            "password; decrypt it (openssl pkey -in KEY -out PLAIN) and keep it mode 600"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(
            f"{setting} {path}: not a PEM private key (-----BEGIN PRIVATE KEY-----)"
        ) from None
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain and its private key, read and checked together."""

    cert_chain: bytes
    private_key: bytes
    certificate: x509.Certificate  # the first of the chain: the one presented

    def describe(self) -> str:
        """Who the certificate names, its serial and its end, for the log."""
        cert = self.certificate
        return (
            f"{cert.subject.rfc4514_string() or 'no subject'}, serial {cert.serial_number:x}, "
            f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def read_key_pair(cert_setting: str, cert_path: str, key_setting: str, key_path: str) -> KeyPair:
    """Reads a PEM certificate chain and its private key, and checks that the key
    is the certificate's: a mismatch would otherwise show only as failed
    handshakes, or (reloaded into a live context) as a listener with no key."""
    chain = read_pem(cert_setting, cert_path)
    key = read_pem(key_setting, key_path)
    certificate = load_certificates(cert_setting, cert_path, chain)[0]
    public = _public_key_of_private_key(key_setting, key_path, key)
    try:
        presented = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(
            f"{cert_setting} {cert_path}: the certificate's public key is of an unsupported type"
        ) from None
    if presented != public:
        raise TlsError(
            f"{key_setting} {key_path} is not the private key of the first certificate "
            f"in {cert_setting} {cert_path}"
        )
    return KeyPair(chain, key, certificate)


def read_ca_bundle(setting: str, path: str) -> bytes:
    """The certificates of a PEM bundle of CAs (at least one), as PEM again:
    without the text some bundles carry between them, which ssl's ``cadata``
    refuses when it is not ASCII."""
    certificates = load_certificates(setting, path, read_pem(setting, path))
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


@dataclass(frozen=True)
class ClientTls:
    """How to dial a daemon that serves TLS.

    ``root_certificates`` are the CAs trusted to have signed the daemon's
    certificate (None: the system's); ``client`` the certificate presented for
    mutual TLS; ``server_name`` the name to check the daemon's certificate
    against when it is not the host of the target.
    """

    root_certificates: bytes | None = None
    client: KeyPair | None = None
    server_name: str = ""

    @classmethod
    def from_files(
        cls, *, ca: str = "", client_cert: str = "", client_key: str = "", server_name: str = ""
    ) -> ClientTls:
        """Reads the files the command line names; TlsError names the flag and the file."""
        if bool(client_cert) != bool(client_key):
            given, missing = (
                ("--tls-client-cert", "--tls-client-key")
                if client_cert
                else ("--tls-client-key", "--tls-client-cert")
            )
            raise TlsError(f"{given} needs {missing}: give the certificate and its key together")
        client = (
            read_key_pair("--tls-client-cert", client_cert, "--tls-client-key", client_key)
            if client_cert
            else None
        )
        roots = read_ca_bundle("--tls-ca", ca) if ca else None
        return cls(root_certificates=roots, client=client, server_name=server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.client.private_key if self.client else None,
            certificate_chain=self.client.cert_chain if self.client else None,
        )

    def options(self) -> list[tuple[str, str]]:
        """Channel options: the name checked against the daemon's certificate."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


@dataclass
class Reply:
    """A unary call's response and the request id the daemon used."""

    message: Message
    request_id: str | None


class RpcFailed(Exception):
    """A call ended with a status other than OK."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing: Sequence[tuple[str, str | bytes]] | None,
        request_id: str | None,
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing = trailing
        self.request_id = request_id


class Upstream:
    """Calls the daemon's RPCs by route, over TLS when given ``tls``."""

    def __init__(self, target: str, *, tls: ClientTls | None = None) -> None:
        self.target = target
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}
        self._stream: dict[str, grpc.aio.UnaryStreamMultiCallable] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel, opened on first use in the running event loop."""
        if self._channel is None:
            options: list[tuple[str, str | int]] = [
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
            if self.tls is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self.tls.credentials(), options=[*options, *self.tls.options()]
                )
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            self._unary.clear()
            self._stream.clear()
            await channel.close()

    def _unary_callable(self, route: Route) -> grpc.aio.UnaryUnaryMultiCallable:
        found = self._unary.get(route.rpc_path)
        if found is None:
            found = self.channel.unary_unary(
                route.rpc_path,
                request_serializer=_serialize,
                response_deserializer=message_class(route.output_type).FromString,
            )
            self._unary[route.rpc_path] = found
        return found

    def _stream_callable(self, route: Route) -> grpc.aio.UnaryStreamMultiCallable:
        found = self._stream.get(route.rpc_path)
        if found is None:
            found = self.channel.unary_stream(
                route.rpc_path,
                request_serializer=_serialize,
                response_deserializer=message_class(route.output_type).FromString,
            )
            self._stream[route.rpc_path] = found
        return found

    async def unary(
        self,
        route: Route,
        request: Message,
        metadata: Sequence[tuple[str, str | bytes]],
        timeout: float,
    ) -> Reply:
        call = self._unary_callable(route)(request, metadata=metadata, timeout=timeout)
        try:
            response = await call
            initial = await call.initial_metadata()
        except grpc.aio.AioRpcError as err:
            raise _failed(err) from None
        return Reply(response, request_id_of(initial))

    async def stream(
        self,
        route: Route,
        request: Message,
        metadata: Sequence[tuple[str, str | bytes]],
        timeout: float,
    ) -> tuple[str | None, AsyncIterator[Message]]:
        """The request id and the responses of a server-streaming call.

        The first response (or the failure before it) is awaited here, so that
        a call that fails at once still answers with its own HTTP status.
        """
        call = self._stream_callable(route)(request, metadata=metadata, timeout=timeout)
        try:
            initial = await call.initial_metadata()
            first = await call.read()
        except grpc.aio.AioRpcError as err:
            raise _failed(err) from None

        async def rest() -> AsyncIterator[Message]:
            if first is grpc.aio.EOF:
                return
            yield first
            try:
                while True:
                    item = await call.read()
                    if item is grpc.aio.EOF:
                        return
                    yield item
            except grpc.aio.AioRpcError as err:
                raise _failed(err) from None
            finally:
                call.cancel()

        return request_id_of(initial), rest()

    async def health(self, timeout: float) -> tuple[bool, str, str]:
        """Whether the daemon says SERVING, its status name, and why not when unreachable."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            return (
                False,
                "UNKNOWN",
                f"daemon health check failed: {err.code().name}: {err.details() or ''}",
            )
        return serving_of(reply)


# A unary call made without a socket: (method path, request, metadata,
# timeout) -> Reply, raising RpcFailed; blocking, so run in an executor.
LocalUnary = Callable[[str, Message, Sequence[tuple[str, str | bytes]], float], Reply]
# The daemon's health, without a socket: timeout -> (serving, status name, why not).
LocalHealth = Callable[[float], tuple[bool, str, str]]


class LocalUpstream(Upstream):
    """The daemon the gateway runs in, called in its own process: unary calls
    and health go to ``unary`` and ``health`` on ``executor``'s threads (the
    handlers block), with no socket and no serialisation. Streaming calls
    still go over the channel to ``target``."""

    def __init__(
        self,
        target: str,
        *,
        unary: LocalUnary,
        health: LocalHealth,
        executor: Executor,
        remote: frozenset[str] = frozenset(),
    ) -> None:
        """``remote``: the method paths that go over the channel to ``target``
        all the same (in a process that serves reads only, the changes, which
        ``target``, the first process, makes)."""
        super().__init__(target)
        self._local_unary = unary
        self._local_health = health
        self._executor = executor
        self._remote = remote

    async def unary(
        self,
        route: Route,
        request: Message,
        metadata: Sequence[tuple[str, str | bytes]],
        timeout: float,
    ) -> Reply:
        if route.rpc_path in self._remote:
            return await super().unary(route, request, metadata, timeout)
        loop = asyncio.get_running_loop()
        # In the request's context, as asyncio.to_thread does: the call's
        # trace span is a child of the request's.
        return await loop.run_in_executor(
            self._executor,
            contextvars.copy_context().run,
            self._local_unary,
            route.rpc_path,
            request,
            metadata,
            timeout,
        )

    async def health(self, timeout: float) -> tuple[bool, str, str]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._local_health, timeout)


def serving_of(reply: health_pb2.HealthCheckResponse) -> tuple[bool, str, str]:
    """What Upstream.health says of a health answer: SERVING or not, and its name."""
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, str(name), ""


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _failed(err: grpc.aio.AioRpcError) -> RpcFailed:
    return RpcFailed(
        err.code(),
        err.details() or "",
        err.trailing_metadata(),
        request_id_of(err.initial_metadata()),
    )
