"""Changes that a serving process hands to the primary process.

With several processes on one port (``processes``), each serves the reads
itself, from the store, and passes every other call to the primary over the
primary's private Unix socket, where the primary's interceptor authenticates,
authorizes, audits and logs it as any call. Only the primary then drives the
storage driver, runs phased changes, jobs, recovery and repair, so a crash of
any process never leaves work that another process cannot see.

Which calls are reads is the contract's word: an osd.v1 method its HTTP rule
maps to GET. A read answers the same from any process; the rest go through.

The call is passed as bytes, with the caller's metadata (its credentials and
request id), its deadline, and, under mutual TLS, the client certificate the
handshake here verified (as ``x-osd-client-cert-bin``, which the primary
believes only on its private socket; one a caller sent itself is dropped).
The primary's answer comes back as it was: message, status, details and both
sets of metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.api import annotations_pb2

from osd.contract import contract
from osd.deadline import FOREVER_SECONDS
from osd.server.interceptors import CLIENT_CERT_HEADER


def read_methods() -> frozenset[str]:
    """The full paths (``/osd.v1.VolumeService/InspectVolume``) of the
    methods the contract maps to HTTP GET."""
    out = set()
    for entry in contract():
        for method in entry.descriptor.methods:
            options = method.GetOptions()
            if (
                options.HasExtension(annotations_pb2.http)
                and options.Extensions[annotations_pb2.http].get
            ):
                out.add(f"/{entry.full_name}/{method.name}")
    return frozenset(out)


def change_methods() -> frozenset[str]:
    """The full paths of every other osd.v1 method (all unary: a streaming
    change would need a relay of its own, and fails here until it has one)."""
    reads = read_methods()
    out = set()
    for entry in contract():
        for method in entry.descriptor.methods:
            path = f"/{entry.full_name}/{method.name}"
            if path in reads:
                continue
            if method.client_streaming or method.server_streaming:
                raise RuntimeError(f"{path} streams and is not a read: it cannot be forwarded")
            out.add(path)
    return frozenset(out)


class Forwarder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Serves ``methods`` by calling the same method at ``target``."""

    def __init__(self, target: str, methods: Iterable[str], max_message_bytes: int) -> None:
        self.methods = frozenset(methods)
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._handlers = {m: self._handler(m) for m in self.methods}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self.handler(handler_call_details.method)

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        """The relay of ``method`` (a full path), or None when it is not forwarded."""
        return self._handlers.get(method)

    def serving(self, server: grpc.Server) -> Any:
        """``server`` as the generated ``add_*_to_server`` functions are to see
        it: the handlers they register for the forwarded methods are
        replaced by this forwarder's (grpc looks registered methods up before
        any generic handler)."""
        return _ForwardingServer(server, self)

    def close(self) -> None:
        self._channel.close()

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        upstream = self._channel.unary_unary(method)  # bytes in, bytes out

        def relay(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = [
                (key, value)
                for key, value in context.invocation_metadata() or ()
                if key != CLIENT_CERT_HEADER
            ]
            verified = (context.auth_context() or {}).get("x509_pem_cert")
            if verified:
                metadata.append((CLIENT_CERT_HEADER, verified[0]))
            remaining = context.time_remaining()
            timeout = None if remaining is None or remaining > FOREVER_SECONDS else remaining
            try:
                response, call = upstream.with_call(request, metadata=metadata, timeout=timeout)
            except grpc.RpcError as err:
                initial = err.initial_metadata()
                if initial:
                    context.send_initial_metadata(initial)
                context.set_trailing_metadata(err.trailing_metadata() or ())
                context.abort(err.code(), err.details() or "")
                raise  # unreachable: abort raises
            initial = call.initial_metadata()
            if initial:
                context.send_initial_metadata(initial)
            return response  # type: ignore[no-any-return]

        return grpc.unary_unary_rpc_method_handler(relay)


class _ForwardingServer:
    def __init__(self, server: grpc.Server, forwarder: Forwarder) -> None:
        self._server = server
        self._forwarder = forwarder

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self._server.add_registered_method_handlers(
            service,
            {
                name: self._forwarder.handler(f"/{service}/{name}") or handler
                for name, handler in handlers.items()
            },
        )
