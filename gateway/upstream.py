"""The gateway's side of the gRPC connection to the daemon.

One ``grpc.aio`` channel per gateway, opened in the event loop that serves
HTTP (grpc.aio measured faster here than a synchronous channel driven from a
thread pool; see scripts/bench-rest). Calls are generic: the method path and
the message classes come from the route's descriptor.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.routes import Route

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
REQUEST_ID_KEY = "x-request-id"
# Headers passed to the daemon as metadata of the same (lower-case) name.
PASSED_HEADERS = ("authorization", "x-api-key")

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TIMEOUT_RE = re.compile(r"([0-9]{1,8})([HMSmun])")


def parse_grpc_timeout(text: str) -> float | None:
    """Seconds from a ``Grpc-Timeout`` header value (e.g. "5S", "250m"), or None."""
    found = _TIMEOUT_RE.fullmatch(text.strip())
    if found is None:
        return None
    return int(found.group(1)) * _TIMEOUT_UNITS[found.group(2)]


def message_class(descriptor: Descriptor) -> type[Message]:
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def request_id_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The x-request-id the daemon echoed in its initial metadata."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None


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
    """Calls the daemon's RPCs by route."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel: grpc.aio.Channel | None = None
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}
        self._stream: dict[str, grpc.aio.UnaryStreamMultiCallable] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel, opened on first use in the running event loop."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.target,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ],
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
        metadata: Sequence[tuple[str, str]],
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
        metadata: Sequence[tuple[str, str]],
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
