"""Runs the gateway's ASGI app under uvicorn, in a thread of its own.

The daemon starts one next to its gRPC server; ``osd gateway`` starts one in
front of a remote daemon. The listening socket is bound in :meth:`start`, in
the caller's thread, so a taken port fails there with OSError and port 0
yields the ephemeral port in :attr:`GatewayServer.port`.

With :class:`ServerTls` it serves HTTPS, and with a client CA it requires
each client to present a certificate that CA signed (mutual TLS).
:meth:`GatewayServer.reload_tls` loads new certificates for new handshakes
(on SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from google.protobuf.descriptor import ServiceDescriptor
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from gateway.app import CALL_TIMEOUT_SECONDS, MAX_BODY_BYTES, GatewayApp, MetricsEndpoint
from gateway.upstream import (
    ClientTls,
    KeyPair,
    TlsError,
    Upstream,
    read_ca_bundle,
    read_key_pair,
)

log = logging.getLogger("gateway")

# Wraps the gateway's ASGI app in middleware (the daemon's tracing): the app,
# and what names the route of a request (method, path) -> "GET /v1/...".
AppWrapper = Callable[[Any, Callable[[str, str], str | None]], Any]

START_TIMEOUT_SECONDS = 10.0


def split_listen(value: str) -> tuple[str, int]:
    """HOST and PORT of "HOST:PORT" ("[::1]:9110" for IPv6)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # the daemon's processes share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class TlsFiles:
    """Where a server's TLS material lives: the settings tls_cert, tls_key and
    (for mutual TLS) tls_client_ca."""

    cert: str
    key: str
    client_ca: str = ""

    @classmethod
    def named(cls, cert: str, key: str, client_ca: str) -> TlsFiles | None:
        """The files of the three settings, or None when TLS is off; TlsError
        when they name too few to serve with."""
        if not (cert or key):
            if client_ca:
                raise TlsError(
                    "tls_client_ca is set but tls_cert and tls_key are not: mutual TLS needs "
                    "the server's own certificate and key too"
                )
            return None
        if not (cert and key):
            given, missing = ("tls_cert", "tls_key") if cert else ("tls_key", "tls_cert")
            raise TlsError(
                f"{given} is set but {missing} is not: TLS needs the certificate chain "
                "(tls_cert) and its private key (tls_key)"
            )
        return cls(cert, key, client_ca)

    def read(self) -> ServerTls:
        """Reads and checks the files; TlsError names the setting and the file.

        Checked as OpenSSL will use them too (by loading them into a context
        of their own), so that a reload that passes here cannot fail half-way
        into the live context and leave it without a key.
        """
        pair = read_key_pair("tls_cert", self.cert, "tls_key", self.key)
        client_ca = read_ca_bundle("tls_client_ca", self.client_ca) if self.client_ca else None
        tls = ServerTls(self, pair, client_ca)
        try:
            tls.ssl_context()
        except ssl.SSLError as exc:
            raise TlsError(
                f"tls_cert {self.cert} with tls_key {self.key}: {exc.reason or exc}"
            ) from None
        return tls


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and key, and the client CAs of mutual TLS,
    as read from :class:`TlsFiles` at one moment."""

    files: TlsFiles
    pair: KeyPair
    client_ca: bytes | None = None

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate that the client CA signed."""
        return self.client_ca is not None

    def ssl_context(self) -> ssl.SSLContext:
        """A server context for HTTP/1.1 over TLS 1.2 or later."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        self.load_into(context)
        return context

    def load_into(self, context: ssl.SSLContext) -> None:
        """Loads the chain and key (and client CAs) into ``context``, for its
        next handshakes.

        CAs loaded before stay trusted: OpenSSL can add to a context's store
        but not take from it, so a CA removed from tls_client_ca is refused by
        this listener only from the next start.
        """
        with _pem_paths(self.pair.cert_chain, self.pair.private_key) as (cert, key):
            context.load_cert_chain(cert, key)
        if self.client_ca is not None:
            context.load_verify_locations(cadata=self.client_ca.decode("ascii"))
            context.verify_mode = ssl.CERT_REQUIRED


@contextlib.contextmanager
def _pem_paths(*blobs: bytes) -> Iterator[list[str]]:
    """Paths that read as ``blobs``, for ssl, which loads a certificate chain
    and key only from named files.

    On Linux they are anonymous memory files (memfd): no copy of a key touches
    a disk, and what is loaded is exactly what was read and checked, even while
    the files named in the settings are being replaced. Elsewhere they are
    files in a private temporary directory, removed at once.
    """
    if sys.platform == "linux":
        fds: list[int] = []
        try:
            for blob in blobs:
                fds.append(os.memfd_create("osd-tls", os.MFD_CLOEXEC))
                with open(fds[-1], "wb", closefd=False) as fh:
                    fh.write(blob)
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
    else:
        with tempfile.TemporaryDirectory(prefix="osd-tls-") as tmp:
            paths = []
            for i, blob in enumerate(blobs):
                path = Path(tmp) / f"{i}.pem"
                path.touch(mode=0o600)
                path.write_bytes(blob)
                paths.append(str(path))
            yield paths


class PeerAddress(tuple[str, int]):
    """The ASGI scope's ``client`` (host, port), also carrying the client
    certificate the TLS handshake verified (DER), as ``cert``."""

    cert: bytes | None = None


class _PeerCertProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol, whose scope's ``client`` carries the peer's
    verified certificate: ASGI has no field for it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        client = getattr(self, "client", None)
        if der and client is not None:
            peer = PeerAddress(client)
            peer.cert = der
            self.client = peer


class GatewayServer:
    """The REST gateway serving HTTP on ``listen`` for the daemon at ``target``.

    Args:
        listen: HOST:PORT to serve on (port 0 picks a free one).
        target: the daemon's gRPC target, HOST:PORT or unix:/PATH.
        tls: serve HTTPS with this certificate (and with its client CA, mutual TLS).
        upstream_tls: how to dial ``target`` over TLS (None: in plaintext).
        metrics: what answers GET /metrics (the daemon's, inside it); 404 without.
        upstream: what the calls go to instead of a channel to ``target`` (the
            daemon the gateway runs in, called in process).
        reuse_port: share the port with the other processes of the daemon
            (SO_REUSEPORT), as its gRPC port is shared.
        wrap_app: what serves instead of the app, given the app (the
            daemon's tracing middleware).
    """

    def __init__(
        self,
        listen: str,
        target: str,
        *,
        services: Sequence[ServiceDescriptor] | None = None,
        call_timeout: float = CALL_TIMEOUT_SECONDS,
        max_body_bytes: int = MAX_BODY_BYTES,
        grace_seconds: float = 5.0,
        tls: ServerTls | None = None,
        upstream_tls: ClientTls | None = None,
        metrics: MetricsEndpoint | None = None,
        upstream: Upstream | None = None,
        reuse_port: bool = False,
        wrap_app: AppWrapper | None = None,
    ) -> None:
        self.host, self._requested_port = split_listen(listen)
        self.app = GatewayApp(
            target,
            services=services,
            call_timeout=call_timeout,
            max_body_bytes=max_body_bytes,
            metrics=metrics,
        )
        if upstream_tls is not None:
            # The app opens its channel on first use, in the serving loop: until
            # then its upstream is only a target, and may be swapped for one
            # that dials with TLS.
            self.app.upstream = Upstream(target, tls=upstream_tls)
        if upstream is not None:
            self.app.upstream = upstream
        # What uvicorn serves: the app, or the app in middleware.
        self.asgi_app: Any = (
            self.app if wrap_app is None else wrap_app(self.app, self.app.route_name)
        )
        self.grace_seconds = grace_seconds
        self.reuse_port = reuse_port
        self.tls = tls
        self.port = 0
        self._ssl_context: ssl.SSLContext | None = None
        self._reloading = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        """Binds the port and serves in a background thread; returns once serving."""
        sock = _bind(self.host, self._requested_port, reuse_port=self.reuse_port)
        self.port = sock.getsockname()[1]
        context = self._ssl_context = self.tls.ssl_context() if self.tls else None
        # Our own context rather than uvicorn's ssl_* options: reload_tls loads
        # new certificates into this very object, which the listening socket
        # (bound above, handed over in _run) uses for every handshake. Given only
        # when serving TLS: uvicorn takes ssl_context_factory from 0.47 on.
        tls_options: dict[str, Any] = (
            {"ssl_context_factory": lambda _config, _default: context} if context else {}
        )
        config = uvicorn.Config(
            self.asgi_app,
            loop="auto",  # uvloop when installed
            # httptools when installed; over TLS, one that gives the app the
            # client certificate the handshake verified.
            http=_PeerCertProtocol if context else "auto",
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(self.grace_seconds)),
            **tls_options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(config, sock), name="osd-gateway", daemon=True
        )
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_SECONDS) or self._failure is not None:
            self.stop()
            raise OSError(
                f"REST gateway did not start on {self.host}:{self.port}: "
                f"{self._failure or 'timed out'}"
            )
        log.info(
            "serving REST on %s%s (gRPC target %s)",
            self.url,
            ", client certificates required" if self.tls and self.tls.mutual else "",
            self.app.upstream.target,
        )

    def reload_tls(self, tls: ServerTls | None = None) -> ServerTls:
        """Loads new certificates into the listener, for its next handshakes
        (on SIGHUP); connections already open keep theirs.

        Re-reads the files unless given what was read of them. Raises TlsError,
        keeping the certificates it has, when they cannot be used.
        """
        if self.tls is None:
            raise TlsError("the REST listener does not serve TLS (no tls_cert and tls_key)")
        with self._reloading:
            tls = tls or self.tls.files.read()
            self._load(tls)
            self.tls = tls
        return tls

    def _load(self, tls: ServerTls) -> None:
        """Loads ``tls`` into the listening context (if it is listening yet)."""
        context, loop = self._ssl_context, self._loop
        if context is None:
            return
        try:
            if loop is None or not loop.is_running():
                tls.load_into(context)
                return

            # Handshakes run in the loop's thread: load between two of them,
            # never while OpenSSL copies the context's key into a new connection.
            async def load() -> None:
                tls.load_into(context)

            loaded = asyncio.run_coroutine_threadsafe(load(), loop)
            try:
                loaded.result(START_TIMEOUT_SECONDS)
            except TimeoutError:
                loaded.cancel()
                raise TlsError(
                    "the REST listener did not take the new certificates within "
                    f"{START_TIMEOUT_SECONDS:g}s"
                ) from None
        except ssl.SSLError as exc:  # not seen: read() loaded the same bytes already
            raise TlsError(
                f"tls_cert {tls.files.cert} with tls_key {tls.files.key}: {exc.reason or exc}"
            ) from None

    def _run(self, config: uvicorn.Config, sock: socket.socket) -> None:
        assert self._server is not None
        server = self._server

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.005)
            self._started.set()
            await task

        try:
            with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
                runner.run(serve())
        except BaseException as exc:  # reported to start() or logged
            self._failure = exc
            if self._started.is_set():
                log.exception("REST gateway stopped on an error")
        finally:
            sock.close()
            self._started.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stops accepting, lets open requests finish within ``timeout`` seconds
        (default: the grace), then closes those still open, and joins."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=self.grace_seconds if timeout is None else timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=1)
        self._server = None
        self._thread = None
