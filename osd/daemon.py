"""The daemon: the gRPC server with health, reflection and every osd service.

With tls_cert and tls_key both listeners serve TLS (mutual TLS with
tls_client_ca), and :meth:`Daemon.reload_tls` (SIGHUP) loads new
certificates for new handshakes. The REST gateway inside the daemon calls the
gRPC server over a private Unix socket, never over TCP: a gateway dialling the
TLS port would need a client certificate of its own under mutual TLS, and
the socket needs none. Its credentials still pass as metadata and are checked
by the same interceptor as every other call's.

With ``processes`` above 1 the daemon serves from that many processes on the
one port (SO_REUSEPORT: the kernel spreads connections over them). The first,
the primary, is the daemon as above; each other one serves the reads itself
and passes every change to the primary over the private socket (see
:mod:`osd.server.forward`). The primary starts them once it serves, starts
again one that dies, and stops them when it stops; they die with it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server
from sqlalchemy import text

from gateway.server import GatewayServer, ServerTls, TlsFiles
from gateway.upstream import (
    LocalUpstream,
    Reply,
    RpcFailed,
    TlsError,
    request_id_of,
    serving_of,
)
from osd.config import Settings, SettingsError, format_listen, is_loopback, parse_listen
from osd.contract import contract, method_roles
from osd.engine import drivers
from osd.engine.access.apikeys import ApiKeys
from osd.engine.access.authenticator import Authenticator
from osd.engine.access.certs import ClientCertConfigError, ClientCerts
from osd.engine.access.roles import RoleConfigError, RoleTable, custom_roles
from osd.engine.access.tokens import DEFAULT_ISSUER, IssuerConfig, IssuerConfigError, TokenVerifier
from osd.engine.engine import Engine
from osd.engine.topology.models import RepairPolicy
from osd.errors import OsdError
from osd.server import reflection_v1
from osd.server.forward import Forwarder, change_methods
from osd.server.interceptors import ServerInterceptor
from osd.server.local import LocalCallFailed, LocalCalls, call_health
from osd.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from osd.server.metrics import Metrics
from osd.server.registry import build_servicer
from osd.store.db import Store
from osd.tracing import Tracing
from osd.tracing import setup as setup_tracing

# The names of the threads that serve calls start with this.
RPC_THREAD_PREFIX = "osd-rpc"
log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
STORE_PROBE_SECONDS = 5.0
# The longest path a Unix socket address holds (sun_path, less its NUL).
MAX_UNIX_PATH_BYTES = 107
# A serving process that dies is started again after this, doubling to the most.
RESPAWN_SECONDS = 0.5
RESPAWN_MAX_SECONDS = 30.0
PR_SET_PDEATHSIG = 1


def build_authenticator(settings: Settings, store: Store) -> Authenticator:
    """The authenticator the settings describe; SettingsError names what is wrong."""
    try:
        roles = RoleTable(method_roles(), custom_roles(settings.auth_roles))
        issuers = [
            IssuerConfig.from_table(table, f"auth_issuers[{i}]")
            for i, table in enumerate(settings.auth_issuers)
        ]
        if settings.auth_secret_file:
            issuers.insert(
                0, IssuerConfig(issuer=DEFAULT_ISSUER, secret_file=settings.auth_secret_file)
            )
        tokens = TokenVerifier(issuers, leeway=settings.auth_leeway_seconds) if issuers else None
        certs = None
        if settings.auth_client_certs:
            if not settings.tls_client_ca:
                raise SettingsError(
                    "auth_client_certs needs mutual TLS: set tls_client_ca (and tls_cert, "
                    "tls_key), so that client certificates are verified"
                )
            certs = ClientCerts(settings.auth_client_certs, roles.role_names())
    except (RoleConfigError, IssuerConfigError, ClientCertConfigError) as exc:
        raise SettingsError(str(exc)) from None
    return Authenticator(
        enabled=settings.auth_on,
        roles=roles,
        tokens=tokens,
        api_keys=ApiKeys(store),
        client_certs=certs,
    )


def check_exposure(settings: Settings) -> None:
    """Refuses a non-loopback listener while every caller would be admin."""
    listeners = [("grpc_listen", settings.grpc_listen)]
    if settings.rest_enabled:
        listeners.append(("rest_listen", settings.rest_listen))
    if settings.metrics_listen:
        # Served without credentials even with authentication on.
        host, _ = parse_listen(settings.metrics_listen)
        if not is_loopback(host) and not settings.insecure:
            raise SettingsError(
                f"metrics_listen {settings.metrics_listen} is not a loopback address, and "
                "that port serves /metrics without credentials: scrape /metrics on the REST "
                "port with a token, or pass --insecure to serve it anyway"
            )
    if settings.auth_on or settings.insecure:
        return
    for name, value in listeners:
        host, _ = parse_listen(value)
        if not is_loopback(host):
            raise SettingsError(
                f"{name} {value} is not a loopback address, and without authentication every "
                "caller is admin: configure --auth-secret-file (or auth_issuers, or "
                "--auth-enabled with API keys), or pass --insecure to serve it anyway"
            )


def read_tls(settings: Settings) -> ServerTls | None:
    """What the TLS files hold, checked, or None when TLS is off; SettingsError
    names the setting (and the file) that cannot be used."""
    try:
        files = TlsFiles.named(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        return files.read() if files is not None else None
    except TlsError as exc:
        raise SettingsError(str(exc)) from None


def _grpc_certificate_configuration(tls: ServerTls) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(tls.pair.private_key, tls.pair.cert_chain)], root_certificates=tls.client_ca
    )


class Daemon:
    """One osd daemon: a store, a driver, the engine over them, and the gRPC server."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        primary_target: str = "",
        tracing: Tracing | None = None,
    ) -> None:
        """``primary_target``: for a process serving beside the primary, the
        primary's private socket, which the changes go to. ``tracing``: this
        process's (see osd.tracing), set up from ``settings`` when not given."""
        self.settings = settings
        self.primary = not primary_target
        self._primary_target = primary_target
        # An engine handed in (embedded, in tests) is served by this process
        # alone unless asked otherwise.
        self.processes = (
            1
            if primary_target or (engine is not None and settings.processes == 0)
            else settings.resolved_processes()
        )
        # Before the store: a daemon that cannot serve its TLS opens nothing.
        self._tls = read_tls(settings)
        # The gRPC configuration a reload made, handed to grpc at its next handshake.
        self._tls_pending: grpc.ServerCertificateConfiguration | None = None
        self._tls_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        # Each serving process sets up its own, in its own interpreter.
        self.tracing = tracing if tracing is not None else setup_tracing(settings)
        if engine is None:
            # Room for every worker, and for the jobs, repair and audit threads.
            store = Store(
                settings.resolved_database_url(),
                pool_size=settings.store_pool_size or settings.workers + 8,
                statement_timeout_seconds=settings.store_statement_timeout_seconds,
            )
            driver = (
                drivers.load(
                    settings.driver,
                    settings.resolved_data_dir(),
                    node_name=settings.node_name,
                    filesystem=settings.local_filesystem,
                    mount_roots=settings.local_mount_roots,
                )
                if self.primary
                else drivers.ReadsOnly(takes_files=settings.driver == "local")
            )
            engine = Engine(
                store,
                driver,  # type: ignore[arg-type]
                max_jobs=settings.max_jobs,
                repair=RepairPolicy(
                    delay_seconds=settings.repair_delay_seconds,
                    maintenance_timeout_seconds=settings.repair_maintenance_timeout_seconds,
                    max_repairs=settings.repair_max,
                    max_repairs_per_drive=settings.repair_max_per_drive,
                ),
                repair_interval_seconds=settings.repair_interval_seconds,
                repair_enabled=settings.repair_enabled,
                audit_retention_days=settings.audit_retention_days,
                job_retention_days=settings.job_retention_days,
                usage_interval_seconds=settings.usage_interval_seconds,
                heartbeat_seconds=settings.heartbeat_seconds,
                gone_seconds=settings.gone_seconds,
                node_id=settings.node_id,
                node_name=settings.node_name,
                watch_retention_seconds=settings.watch_retention_seconds,
            )
        self.engine = engine
        self.tracing.instrument(engine.store.engines)
        self.auth = build_authenticator(settings, engine.store)
        self.metrics = Metrics(engine)
        self._metrics_server: Any = None
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.service_names = [e.full_name for e in contract()]
        self.grpc_port = 0
        self.rest_port = 0
        self.metrics_port = 0
        self._gateway: GatewayServer | None = None
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._probe: threading.Thread | None = None
        self._local_dir: Path | None = None
        # "unix:PATH" of the private socket the REST gateway inside (and the
        # other serving processes) call; "" without one.
        self.local_target = ""
        self._forwarder: Forwarder | None = None
        self._local: LocalCalls | None = None
        self._replicas: list[_Replica] = []

    @property
    def tls(self) -> ServerTls | None:
        """The TLS material the listeners serve (the last read), or None when TLS is off."""
        return self._tls

    def start(self) -> None:
        """Migrates the store, binds the port and starts serving."""
        check_exposure(self.settings)
        if self.primary:
            self.engine.store.upgrade()
        self.engine.start(primary=self.primary)
        self._executor = futures.ThreadPoolExecutor(
            max_workers=self.settings.workers, thread_name_prefix=RPC_THREAD_PREFIX
        )
        if not self.primary:
            self._forwarder = Forwarder(self._primary_target, change_methods(), MAX_MESSAGE_BYTES)
        # What this process passes to the primary (nothing, in the primary).
        self._forwarded = self._forwarder.methods if self._forwarder else frozenset()
        server = grpc.server(
            self._executor,
            interceptors=[
                # First, so that its span is the call's whole.
                *self.tracing.server_interceptors(),
                ServerInterceptor(
                    self.auth,
                    self.engine.audit,
                    observe=self.metrics.observe,
                    forwarded=self._forwarded,
                    annotate=self.tracing.annotate,
                ),
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 1 if self._shares_port else 0),
            ],
        )
        if self._forwarder is not None:
            # Before the services, so that it answers the changes.
            server.add_generic_rpc_handlers((self._forwarder,))
        target = server if self._forwarder is None else self._forwarder.serving(server)
        # The same handlers, wrapped by an interceptor of their own, for the
        # calls the REST gateway inside makes without a socket.
        self._local = LocalCalls(
            ServerInterceptor(
                self.auth,
                self.engine.audit,
                observe=self.metrics.observe,
                annotate=self.tracing.annotate,
            ),
            exclude=self._forwarded,
        )
        for entry in contract():
            servicer = build_servicer(entry, self.engine)
            entry.add_to_server(servicer, target)
            entry.add_to_server(servicer, self._local)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.settings.reflection_enabled:
            reflection_v1.enable([*self.service_names, health.SERVICE_NAME], server)
        host, port = parse_listen(self.settings.grpc_listen)
        try:
            self._add_ports(server, host, port)
        except OSError:
            self._remove_local_dir()
            raise
        server.start()
        self._server = server
        if self.primary:
            self.engine.members.address = format_listen(host, self.grpc_port)
            self.engine.members.register()
        self._set_serving(True)
        self._probe = threading.Thread(
            target=self._probe_store, name="osd-store-probe", daemon=True
        )
        self._probe.start()
        if not self.primary:
            log.info(
                "serving reads on %s:%d in process %d; changes go to the primary",
                host,
                self.grpc_port,
                os.getpid(),
            )
            if self.settings.rest_enabled:
                self._start_gateway()
            return
        if self._tls is None:
            log.info("serving gRPC on %s:%d", host, self.grpc_port)
        else:
            log.info(
                "serving gRPC on %s:%d with TLS%s (certificate %s)",
                host,
                self.grpc_port,
                ", client certificates required" if self._tls.mutual else "",
                self._tls.pair.describe(),
            )
        if not self.auth.enabled:
            log.warning(
                "authentication is off: every caller is admin (configure --auth-secret-file "
                "or auth_issuers to require credentials)"
            )
        if self.settings.rest_enabled:
            self._start_gateway()
        if self.settings.metrics_listen:
            self._start_metrics()
        self._start_replicas(host)

    def _start_metrics(self) -> None:
        host, port = parse_listen(self.settings.metrics_listen)
        try:
            self._metrics_server, _ = start_http_server(
                port, addr=host, registry=self.metrics.registry
            )
        except OSError as exc:
            self.stop(grace=0)
            raise OSError(f"cannot listen on {self.settings.metrics_listen}: {exc}") from None
        self.metrics_port = int(self._metrics_server.server_port)
        log.info("serving metrics on http://%s:%d/metrics", host, self.metrics_port)

    def metrics_endpoint(
        self, authorization: str | None, api_key: str | None, cert: bytes | None
    ) -> tuple[int, bytes, str]:
        """GET /metrics on the REST port: (status, body, content type). With
        authentication on, it needs the role GetCapacitySummary needs (view)."""
        try:
            principal = self.auth.authenticate(authorization, api_key, cert)
            self.auth.authorize(principal, "osd.v1.VolumeService/GetCapacitySummary")
        except OsdError as exc:
            status = 401 if exc.code == grpc.StatusCode.UNAUTHENTICATED else 403
            return status, f"{exc.code.name}: {exc.message}\n".encode(), "text/plain"
        return 200, self.metrics.render(), METRICS_CONTENT_TYPE

    def _add_ports(self, server: grpc.Server, host: str, port: int) -> None:
        """The gRPC port (TLS when configured) and, for the REST gateway inside
        the daemon, the private Unix socket."""
        address = format_listen(host, port)
        try:
            if self._tls is None:
                self.grpc_port = server.add_insecure_port(address)
            else:
                credentials = grpc.dynamic_ssl_server_credentials(
                    _grpc_certificate_configuration(self._tls),
                    self._fetch_tls_configuration,
                    require_client_authentication=self._tls.mutual,
                )
                self.grpc_port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.settings.grpc_listen}: {exc}") from None
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {self.settings.grpc_listen}")
        if not self.primary or (not self.settings.rest_enabled and self.processes == 1):
            return
        # mkdtemp makes the directory mode 0700: only this user reaches the
        # socket, and even then every call is authenticated as on the port.
        self._local_dir = Path(tempfile.mkdtemp(prefix="osd-"))
        path = self._local_dir / "grpc.sock"
        if len(str(path).encode()) > MAX_UNIX_PATH_BYTES:
            raise OSError(
                f"the gateway's private socket {path} is longer than a Unix socket path may "
                "be: set TMPDIR to a shorter directory"
            )
        self.local_target = f"unix:{path}"
        try:
            bound = server.add_insecure_port(self.local_target)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.local_target}: {exc}") from None
        if bound == 0:
            raise OSError(f"cannot listen on {self.local_target}")

    def _start_gateway(self) -> None:
        """Serves REST on ``rest_listen``, calling this daemon's handlers in
        process (see osd.server.local); streaming calls, which the in-process
        path does not carry, go over the private Unix socket."""
        assert self._executor is not None
        try:
            parse_listen(self.settings.rest_listen)
            self._gateway = GatewayServer(
                self.settings.rest_listen,
                self.local_target,
                grace_seconds=self.settings.grace_seconds,
                tls=self._tls,
                metrics=self.metrics_endpoint,
                upstream=LocalUpstream(
                    self.local_target or self._primary_target,
                    unary=self._traced_local_unary if self.tracing.on else self._local_unary,
                    health=self._local_health,
                    executor=self._executor,
                    remote=self._forwarded,
                ),
                reuse_port=self._shares_port,
                wrap_app=self.tracing.wrap_asgi if self.tracing.on else None,
            )
            self._gateway.start()
        except (OSError, ValueError):
            self.stop(grace=0)
            raise
        self.rest_port = self._gateway.port

    @property
    def _shares_port(self) -> bool:
        """Whether several processes serve this daemon's ports (SO_REUSEPORT):
        only when asked to, so that a second daemon started by mistake on the
        same port fails."""
        return self.processes > 1 or not self.primary

    def _local_unary(
        self,
        path: str,
        request: Message,
        metadata: Sequence[tuple[str, str | bytes]],
        timeout: float,
    ) -> Reply:
        assert self._local is not None
        try:
            response, initial = self._local.unary(path, request, metadata, timeout)
        except LocalCallFailed as exc:
            raise RpcFailed(
                exc.code, exc.details, exc.trailing, request_id_of(exc.initial)
            ) from None
        return Reply(response, request_id_of(initial))

    def _traced_local_unary(
        self,
        path: str,
        request: Message,
        metadata: Sequence[tuple[str, str | bytes]],
        timeout: float,
    ) -> Reply:
        """A call in process within a span of its own, as a call over gRPC is."""
        with self.tracing.local_call(path):
            return self._local_unary(path, request, metadata, timeout)

    def _local_health(self, timeout: float) -> tuple[bool, str, str]:
        reply, code, details = call_health(
            self.health.Check, health_pb2.HealthCheckRequest(service=""), timeout
        )
        if code is not None and code != grpc.StatusCode.OK:
            return False, "UNKNOWN", f"daemon health check failed: {code.name}: {details}"
        return serving_of(reply)

    def reload_tls(self) -> ServerTls | None:
        """Re-reads tls_cert, tls_key and tls_client_ca for the next handshakes
        on both listeners (on SIGHUP); connections already open keep theirs.

        When the files cannot be used (unreadable, not PEM, a key that is not
        the certificate's: say, half-way through being replaced) the listeners
        keep the certificates they have and one warning line says why. Returns
        what was taken, or None when nothing was (so too when TLS is off).
        """
        if self._tls is None:
            return None
        with self._reload_lock:
            try:
                tls = self._tls.files.read()
                if self._gateway is not None:
                    self._gateway.reload_tls(tls)
            except TlsError as exc:
                log.warning("TLS certificates not reloaded, keeping the current ones: %s", exc)
                return None
            configuration = _grpc_certificate_configuration(tls)
            with self._tls_lock:
                self._tls = tls
                self._tls_pending = configuration
        for replica in self._replicas:
            replica.send(signal.SIGHUP)
        return tls

    def _fetch_tls_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc calls this before each TLS handshake on the gRPC port: the
        configuration the last reload made, once, or None to keep the current one."""
        with self._tls_lock:
            pending, self._tls_pending = self._tls_pending, None
        return pending

    def _remove_local_dir(self) -> None:
        if self._local_dir is not None:
            shutil.rmtree(self._local_dir, ignore_errors=True)
            self._local_dir = None

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def _probe_store(self) -> None:
        """Reports NOT_SERVING while the store cannot be reached."""
        healthy = True
        while not self._stopping.wait(STORE_PROBE_SECONDS):
            try:
                with self.engine.store.read() as s:
                    s.execute(text("SELECT 1"))
                ok = True
            except Exception as exc:
                ok = False
                if healthy:
                    log.warning("store probe failed: %s", exc)
            if ok != healthy and not self._stopping.is_set():
                healthy = ok
                self._set_serving(ok)

    def stop(self, grace: float | None = None) -> None:
        """Refuses new calls, lets in-flight ones finish within ``grace``, closes the store."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        grace = self.settings.grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        self.health.enter_graceful_shutdown()
        # The other processes drain within the same grace, while this one
        # still answers the changes they pass on.
        for replica in self._replicas:
            replica.terminate()
        # Both servers stop accepting at once and drain within the one grace.
        stopped = self._server.stop(grace) if self._server is not None else None
        if self._gateway is not None:
            self._gateway.stop(timeout=max(0.0, deadline - time.monotonic()))
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        for replica in self._replicas:
            replica.wait(max(0.0, deadline - time.monotonic()))
        if stopped is not None:
            stopped.wait()
        if self._forwarder is not None:
            self._forwarder.close()
        self._remove_local_dir()
        if self._executor is not None:
            # Idle workers leave now; those in a cancelled call leave when it ends.
            self._executor.shutdown(wait=False, cancel_futures=True)
        # Calls still running were cancelled: closing the store refuses their
        # commits, so each rolls back, as its caller was told. Workers get what
        # is left of the grace, and at least a moment.
        self.engine.close(timeout=max(0.5, deadline - time.monotonic()))
        if self._probe is not None:
            self._probe.join(timeout=0.5)
        self.tracing.shutdown()  # exports the spans not yet exported
        log.info("stopped")

    def _start_replicas(self, host: str) -> None:
        """Starts the other serving processes, on the port this one bound."""
        if self.processes <= 1:
            return
        rest = self.settings.rest_listen
        if self._gateway is not None:  # the port it bound, when asked for any
            rest = format_listen(parse_listen(rest)[0], self.rest_port)
        settings = replace(
            self.settings,
            grpc_listen=format_listen(host, self.grpc_port),
            rest_listen=rest,
            database_url=self.engine.store.url,
            metrics_listen="",
            processes=1,
        )
        for index in range(1, self.processes):
            replica = _Replica(index, settings, self.local_target, self._stopping)
            replica.start()
            self._replicas.append(replica)
        log.info("serving gRPC from %d processes", self.processes)

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()


class _Replica:
    """One serving process beside the primary: started, watched, and started
    again when it dies while the primary serves (it holds no work of its own:
    every change it took was the primary's to do)."""

    def __init__(
        self, index: int, settings: Settings, primary_target: str, stopping: threading.Event
    ) -> None:
        self.index = index
        self._payload = pickle.dumps((settings, primary_target, os.getpid()))
        self._stopping = stopping
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(
            target=self._watch, name=f"osd-process-{self.index}", daemon=True
        )
        self._watcher.start()

    def _spawn(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-c", "from osd.daemon import serve_replica; serve_replica()"],
            stdin=subprocess.PIPE,
        )
        assert process.stdin is not None
        process.stdin.write(self._payload)
        process.stdin.close()
        with self._lock:
            self._process = process

    def _watch(self) -> None:
        pause = RESPAWN_SECONDS
        while True:
            with self._lock:
                process = self._process
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            log.error(
                "serving process %d (pid %d) exited with %s; starting it again in %.1f s",
                self.index,
                process.pid,
                code,
                pause,
            )
            if self._stopping.wait(pause):
                return
            # A process that served a while before it died is not failing to start.
            pause = (
                RESPAWN_SECONDS
                if time.monotonic() - started > RESPAWN_MAX_SECONDS
                else min(pause * 2, RESPAWN_MAX_SECONDS)
            )
            self._spawn()

    def terminate(self) -> None:
        self.send(signal.SIGTERM)

    def send(self, signum: int) -> None:
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    def wait(self, timeout: float) -> None:
        with self._lock:
            process = self._process
        if process is None:
            return
        try:
            process.wait(timeout=timeout + 1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=1.0)


def serve_replica() -> None:
    """The entry point of a serving process (see :class:`_Replica`): its
    settings, the primary's socket and the primary's pid come on stdin."""
    from osd import logs

    settings, primary_target, parent = pickle.loads(sys.stdin.buffer.read())
    # Die with the primary, however it ends: a process left behind would
    # keep serving reads on the port, and pass changes to no one.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(1)
    logs.setup(settings.log_level, settings.log_format, settings.log_levels)
    daemon = Daemon(settings, primary_target=primary_target)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the primary tells it when to stop

    def reload_tls() -> None:
        daemon.reload_tls()

    signal.signal(
        signal.SIGHUP,
        lambda *_: threading.Thread(target=reload_tls, name="osd-tls-reload", daemon=True).start(),
    )
    daemon.start()
    stop.wait()
    daemon.stop()
    os._exit(0)
