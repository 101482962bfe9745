"""Runs the gateway's ASGI app under uvicorn, in a thread of its own.

The daemon starts one next to its gRPC server; ``osd gateway`` starts one in
front of a remote daemon. The listening socket is bound in :meth:`start`, in
the caller's thread, so a taken port fails there with OSError and port 0
yields the ephemeral port in :attr:`GatewayServer.port`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Sequence

import uvicorn
from google.protobuf.descriptor import ServiceDescriptor

from gateway.app import CALL_TIMEOUT_SECONDS, MAX_BODY_BYTES, GatewayApp

log = logging.getLogger("gateway")

START_TIMEOUT_SECONDS = 10.0


def split_listen(value: str) -> tuple[str, int]:
    """HOST and PORT of "HOST:PORT" ("[::1]:9110" for IPv6)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class GatewayServer:
    """The REST gateway serving HTTP on ``listen`` for the daemon at ``target``."""

    def __init__(
        self,
        listen: str,
        target: str,
        *,
        services: Sequence[ServiceDescriptor] | None = None,
        call_timeout: float = CALL_TIMEOUT_SECONDS,
        max_body_bytes: int = MAX_BODY_BYTES,
        grace_seconds: float = 5.0,
    ) -> None:
        self.host, self._requested_port = split_listen(listen)
        self.app = GatewayApp(
            target, services=services, call_timeout=call_timeout, max_body_bytes=max_body_bytes
        )
        self.grace_seconds = grace_seconds
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Binds the port and serves in a background thread; returns once serving."""
        sock = _bind(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            loop="auto",  # uvloop when installed
            http="auto",  # httptools when installed
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(self.grace_seconds)),
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
        log.info("serving REST on %s (gRPC target %s)", self.url, self.app.upstream.target)

    def _run(self, config: uvicorn.Config, sock: socket.socket) -> None:
        assert self._server is not None
        server = self._server

        async def serve() -> None:
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
