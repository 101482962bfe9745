"""The daemon: the gRPC server with health, reflection and every osd service."""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import text

from gateway.server import GatewayServer
from osd.config import Settings, SettingsError, is_loopback, parse_listen
from osd.contract import contract, method_roles
from osd.engine import drivers
from osd.engine.access.apikeys import ApiKeys
from osd.engine.access.authenticator import Authenticator
from osd.engine.access.roles import RoleConfigError, RoleTable, custom_roles
from osd.engine.access.tokens import DEFAULT_ISSUER, IssuerConfig, IssuerConfigError, TokenVerifier
from osd.engine.engine import Engine
from osd.engine.topology.models import RepairPolicy
from osd.server.interceptors import ServerInterceptor
from osd.server.registry import build_servicer
from osd.store.db import Store

# The names of the threads that serve calls start with this.
RPC_THREAD_PREFIX = "osd-rpc"
log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
STORE_PROBE_SECONDS = 5.0


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
    except (RoleConfigError, IssuerConfigError) as exc:
        raise SettingsError(str(exc)) from None
    return Authenticator(
        enabled=settings.auth_on, roles=roles, tokens=tokens, api_keys=ApiKeys(store)
    )


def check_exposure(settings: Settings) -> None:
    """Refuses a non-loopback listener while every caller would be admin."""
    if settings.auth_on or settings.insecure:
        return
    listeners = [("grpc_listen", settings.grpc_listen)]
    if settings.rest_enabled:
        listeners.append(("rest_listen", settings.rest_listen))
    for name, value in listeners:
        host, _ = parse_listen(value)
        if not is_loopback(host):
            raise SettingsError(
                f"{name} {value} is not a loopback address, and without authentication every "
                "caller is admin: configure --auth-secret-file (or auth_issuers, or "
                "--auth-enabled with API keys), or pass --insecure to serve it anyway"
            )


class Daemon:
    """One osd daemon: a store, a driver, the engine over them, and the gRPC server."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        if engine is None:
            store = Store(settings.resolved_database_url())
            engine = Engine(
                store,
                drivers.load(settings.driver, settings.resolved_data_dir()),
                max_jobs=settings.max_jobs,
                repair=RepairPolicy(
                    delay_seconds=settings.repair_delay_seconds,
                    maintenance_timeout_seconds=settings.repair_maintenance_timeout_seconds,
                    max_repairs=settings.repair_max,
                    max_repairs_per_drive=settings.repair_max_per_drive,
                ),
                repair_interval_seconds=settings.repair_interval_seconds,
                repair_enabled=settings.repair_enabled,
            )
        self.engine = engine
        self.auth = build_authenticator(settings, engine.store)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.service_names = [e.full_name for e in contract()]
        self.grpc_port = 0
        self.rest_port = 0
        self._gateway: GatewayServer | None = None
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._probe: threading.Thread | None = None

    def start(self) -> None:
        """Migrates the store, binds the port and starts serving."""
        check_exposure(self.settings)
        self.engine.store.upgrade()
        self.engine.start()
        self._executor = futures.ThreadPoolExecutor(
            max_workers=self.settings.workers, thread_name_prefix=RPC_THREAD_PREFIX
        )
        server = grpc.server(
            self._executor,
            interceptors=[ServerInterceptor(self.auth)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        for entry in contract():
            entry.add_to_server(build_servicer(entry, self.engine), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.settings.reflection_enabled:
            reflection.enable_server_reflection(
                [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
            )
        host, port = parse_listen(self.settings.grpc_listen)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.grpc_port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.settings.grpc_listen}: {exc}") from None
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {self.settings.grpc_listen}")
        server.start()
        self._server = server
        self._set_serving(True)
        self._probe = threading.Thread(
            target=self._probe_store, name="osd-store-probe", daemon=True
        )
        self._probe.start()
        log.info("serving gRPC on %s:%d", host, self.grpc_port)
        if not self.auth.enabled:
            log.warning(
                "authentication is off: every caller is admin (configure --auth-secret-file "
                "or auth_issuers to require credentials)"
            )
        if self.settings.rest_enabled:
            self._start_gateway(host)

    def _start_gateway(self, grpc_host: str) -> None:
        """Serves REST on ``rest_listen``, calling this daemon's gRPC port over loopback."""
        local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(grpc_host, grpc_host)
        target = f"[{local}]:{self.grpc_port}" if ":" in local else f"{local}:{self.grpc_port}"
        try:
            parse_listen(self.settings.rest_listen)
            self._gateway = GatewayServer(
                self.settings.rest_listen, target, grace_seconds=self.settings.grace_seconds
            )
            self._gateway.start()
        except (OSError, ValueError):
            self.stop(grace=0)
            raise
        self.rest_port = self._gateway.port

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
        # Both servers stop accepting at once and drain within the one grace.
        stopped = self._server.stop(grace) if self._server is not None else None
        if self._gateway is not None:
            self._gateway.stop(timeout=max(0.0, deadline - time.monotonic()))
        if stopped is not None:
            stopped.wait()
        if self._executor is not None:
            # Idle workers leave now; those in a cancelled call leave when it ends.
            self._executor.shutdown(wait=False, cancel_futures=True)
        # Calls still running were cancelled: closing the store refuses their
        # commits, so each rolls back, as its caller was told. Workers get what
        # is left of the grace, and at least a moment.
        self.engine.close(timeout=max(0.5, deadline - time.monotonic()))
        if self._probe is not None:
            self._probe.join(timeout=0.5)
        log.info("stopped")

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()
