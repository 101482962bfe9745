"""The ASGI application: HTTP /v1 in, gRPC to the daemon out.

Per request: find the route, read the body (at most ``max_body_bytes``),
assemble the request message, call the RPC with the caller's credentials and
request id as metadata, and answer with the response in proto3 JSON or the
error body of gateway.errors. Besides the routes of the contract it serves
``GET /healthz`` (from the daemon's gRPC health service) and
``GET /v1/openapi.json``.

Headers:

* ``Authorization`` and ``X-Api-Key`` pass to the daemon as metadata of the
  same name.
* ``X-Request-Id``: a well-formed one ([A-Za-z0-9._:-], at most 128
  characters) is passed on, otherwise the gateway makes one; the response
  carries the id the daemon used.
* ``Grpc-Timeout`` (e.g. ``5S``, ``250m``): the call's deadline, at most the
  gateway's own ``call_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from gateway import errors, jobs, openapi, transcode
from gateway.errors import GatewayError, Reason
from gateway.routes import BadPathVariable, MethodNotAllowed, NoRoute, Route, Router, method_routes
from gateway.upstream import (
    CLIENT_CERT_KEY,
    PASSED_HEADERS,
    REQUEST_ID_KEY,
    RpcFailed,
    Upstream,
    parse_grpc_timeout,
)
from osd.contract import message_class

log = logging.getLogger("gateway")

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024
CALL_TIMEOUT_SECONDS = 30.0
HEALTH_TIMEOUT_SECONDS = 5.0
MAX_QUERY_FIELDS = 1000
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
# GET /metrics, answered by the daemon the gateway runs in: from the
# request's authorization, X-Api-Key and verified client certificate, the
# (status, body, content type).
MetricsEndpoint = Callable[[str | None, str | None, bytes | None], tuple[int, bytes, str]]
OPENAPI_PATH = "/v1/openapi.json"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# What a gRPC metadata value may hold: printable ASCII.
_METADATA_VALUE_RE = re.compile(rb"[\x20-\x7e]*")
_JSON = b"application/json"


def default_services() -> list[ServiceDescriptor]:
    """Every service of the osd.v1 contract."""
    from osd.contract import descriptors

    return descriptors()


class _Request:
    """What the gateway reads of one HTTP request."""

    __slots__ = (
        "api_key",
        "arrival",
        "authorization",
        "bad_credential",
        "client_cert",
        "content_length",
        "method",
        "query",
        "raw_path",
        "request_id",
        "timeout",
    )

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        self.raw_path: bytes = raw.split(b"?", 1)[0]
        self.query: bytes = scope.get("query_string", b"")
        self.request_id = ""
        self.arrival = time.monotonic()
        self.authorization: str | None = None
        self.api_key: str | None = None
        self.bad_credential = ""  # the credential header gRPC could not carry
        # The client certificate the HTTPS handshake verified (DER), if any.
        self.client_cert: bytes | None = getattr(scope.get("client"), "cert", None)
        self.content_length: str | None = None
        self.timeout: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                self.request_id = value.decode("latin-1")
            elif name == b"authorization":
                self.authorization = value.decode("latin-1")
                if not _METADATA_VALUE_RE.fullmatch(value):
                    self.bad_credential = "Authorization"
            elif name == b"x-api-key":
                self.api_key = value.decode("latin-1")
                if not _METADATA_VALUE_RE.fullmatch(value):
                    self.bad_credential = "X-Api-Key"
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"grpc-timeout":
                self.timeout = value.decode("latin-1")
        if not _REQUEST_ID_RE.fullmatch(self.request_id):
            self.request_id = uuid.uuid4().hex

    def metadata(self) -> list[tuple[str, str | bytes]]:
        out: list[tuple[str, str | bytes]] = [(REQUEST_ID_KEY, self.request_id)]
        for key, value in zip(PASSED_HEADERS, (self.authorization, self.api_key), strict=True):
            if value is not None:
                out.append((key, value))
        if self.client_cert is not None:
            # Believed by the daemon only over its private Unix socket.
            out.append((CLIENT_CERT_KEY, self.client_cert))
        return out


class GatewayApp:
    """The REST gateway as an ASGI application.

    Args:
        target: the daemon's gRPC address (HOST:PORT).
        services: the services to expose; every service of osd.v1 by default.
        call_timeout: the deadline of each call, in seconds.
        max_body_bytes: larger request bodies answer 413.
    """

    def __init__(
        self,
        target: str,
        *,
        services: Sequence[ServiceDescriptor] | None = None,
        call_timeout: float = CALL_TIMEOUT_SECONDS,
        max_body_bytes: int = MAX_BODY_BYTES,
        metrics: MetricsEndpoint | None = None,
    ) -> None:
        self.metrics = metrics
        self.services = list(default_services() if services is None else services)
        self.routes = [r for s in self.services for m in s.methods for r in method_routes(m)]
        self.router = Router(self.routes)
        self.upstream = Upstream(target)
        self.call_timeout = call_timeout
        self.max_body_bytes = max_body_bytes
        self._classes = {r.rpc_path: message_class(r.input_type) for r in self.routes}
        self._openapi: bytes | None = None

    def openapi_document(self) -> dict[str, Any]:
        return openapi.document(self.services, self.routes)

    def route_name(self, method: str, path: str) -> str | None:
        """The route that serves ``method`` on ``path`` (undecoded), as
        "GET /v1/clusters/{cluster_id}", or None when none does: what names
        a request's trace span."""
        if path in (HEALTH_PATH, METRICS_PATH, OPENAPI_PATH):
            return f"{method} {path}"
        try:
            route, _ = self.router.resolve(method, path)
        except (NoRoute, MethodNotAllowed, BadPathVariable):
            return None
        return f"{route.http_method} {route.template}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        await self.upstream.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        request = _Request(scope)
        status = 500
        started = False

        async def tracked_send(message: ASGIMessage) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            status = await self._dispatch(request, receive, tracked_send)
        except GatewayError as exc:
            status = exc.http_status
            await _send_json(
                send, status, exc.body(request.request_id), request.request_id, exc.headers
            )
        except RpcFailed as exc:
            status, rpc_status = errors.rpc_error(exc.code, exc.details, exc.trailing)
            request_id = exc.request_id or request.request_id
            headers = errors.challenge(status, request.authorization or request.api_key)
            await _send_json(
                send, status, errors.status_body(rpc_status, request_id), request_id, headers
            )
        except Exception:
            log.exception("%s %s %s failed", request.request_id, request.method, scope["path"])
            if started:  # too late for an error response: the client sees a cut-off body
                return
            failure = GatewayError(
                500,
                grpc.StatusCode.INTERNAL,
                f"internal gateway error; the log has the details under request id "
                f"{request.request_id}",
                reason=Reason.INTERNAL,
            )
            await _send_json(send, 500, failure.body(request.request_id), request.request_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %s %d (%.1f ms)",
                request.request_id,
                request.method,
                scope["path"],
                status,
                (time.perf_counter() - start) * 1000,
            )

    async def _dispatch(self, request: _Request, receive: Receive, send: Send) -> int:
        try:
            path = request.raw_path.decode("utf-8")
        except UnicodeDecodeError:
            raise GatewayError.bad_request(Reason.INVALID_PATH, "", "path is not UTF-8") from None
        if path == METRICS_PATH and self.metrics is not None:
            if request.method != "GET":
                raise _method_not_allowed(request.method, path, ["GET"])
            return await self._send_metrics(request, send)
        if path in (HEALTH_PATH, OPENAPI_PATH):
            if request.method != "GET":
                raise _method_not_allowed(request.method, path, ["GET"])
            if path == HEALTH_PATH:
                return await self._health(request, send)
            return await self._send_openapi(request, send)
        try:
            route, values = self.router.resolve(request.method, path)
        except NoRoute:
            raise GatewayError(
                404, grpc.StatusCode.NOT_FOUND, f"no route for {path}", reason=Reason.NO_ROUTE
            ) from None
        except MethodNotAllowed as exc:
            raise _method_not_allowed(request.method, path, exc.allowed) from None
        except BadPathVariable as exc:
            raise GatewayError.bad_request(
                Reason.INVALID_PATH, exc.name, "is not UTF-8 once percent-decoded"
            ) from None
        if request.bad_credential:
            raise GatewayError(
                401,
                grpc.StatusCode.UNAUTHENTICATED,
                f"the {request.bad_credential} header holds bytes that are not printable "
                "ASCII; no credential does",
                reason=Reason.CREDENTIALS_MALFORMED,
                headers=errors.challenge(401, request.bad_credential),
            )
        if route.streaming_request:
            raise GatewayError(
                501,
                grpc.StatusCode.UNIMPLEMENTED,
                f"{route.method.full_name} streams its requests, which REST cannot carry; "
                "call it over gRPC",
                reason=Reason.NOT_SUPPORTED,
            )
        body = await self._read_body(request, receive)
        message = transcode.build_request(
            route, self._classes[route.rpc_path], values, _query(request.query), body
        )
        timeout = self._timeout(request)
        if route.streaming_response:
            return await self._stream(route, message, request, timeout, send)
        reply = await self.upstream.unary(route, message, request.metadata(), timeout)
        request_id = reply.request_id or request.request_id
        status, headers = 200, {}
        location = jobs.job_location(route, reply.message)
        if location is not None:
            status, headers = 202, {"location": location}
        await _send_json(
            send, status, transcode.response_json(route, reply.message), request_id, headers
        )
        return status

    def _timeout(self, request: _Request) -> float:
        if request.timeout is None:
            return self.call_timeout
        seconds = parse_grpc_timeout(request.timeout)
        if seconds is None:
            raise GatewayError.bad_request(
                Reason.INVALID_FIELD,
                "Grpc-Timeout",
                f"{request.timeout[:32]!r} is not a timeout: 1 to 8 digits and a unit among "
                "H, M, S, m, u, n (e.g. 5S, 250m)",
            )
        # The client's deadline runs from when its request arrived: what reading
        # and decoding took is spent, and a deadline already past is not called.
        left = seconds - (time.monotonic() - request.arrival)
        if left <= 0:
            raise GatewayError(
                504,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the deadline Grpc-Timeout {request.timeout} passed before the call was made",
                reason=Reason.DEADLINE_EXCEEDED,
            )
        return min(left, self.call_timeout)

    async def _read_body(self, request: _Request, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        if request.content_length is not None:
            try:
                declared = int(request.content_length)
            except ValueError:
                declared = 0
            if declared > limit:
                raise _too_large(f"of {declared} bytes", limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(f"of more than {limit} bytes", limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _stream(
        self, route: Route, message: Message, request: _Request, timeout: float, send: Send
    ) -> int:
        request_id, responses = await self.upstream.stream(
            route, message, request.metadata(), timeout
        )
        request_id = request_id or request.request_id
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/x-ndjson"),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        try:
            async for item in responses:
                line = transcode.dumps({"result": transcode.response_json(route, item)})
                await send({"type": "http.response.body", "body": line + b"\n", "more_body": True})
        except RpcFailed as exc:
            _, rpc_status = errors.rpc_error(exc.code, exc.details, exc.trailing)
            line = transcode.dumps({"error": errors.status_body(rpc_status, request_id)})
            await send({"type": "http.response.body", "body": line + b"\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return 200

    async def _health(self, request: _Request, send: Send) -> int:
        serving, status, message = await self.upstream.health(
            min(HEALTH_TIMEOUT_SECONDS, self.call_timeout)
        )
        code = 200 if serving else 503
        body: dict[str, Any] = {"status": status}
        if message:
            body["message"] = message
        await _send_json(send, code, body, request.request_id)
        return code

    async def _send_metrics(self, request: _Request, send: Send) -> int:
        assert self.metrics is not None
        if request.bad_credential:
            status, body, kind = 401, b"UNAUTHENTICATED: unreadable credentials\n", "text/plain"
        else:
            status, body, kind = await asyncio.to_thread(
                self.metrics, request.authorization, request.api_key, request.client_cert
            )
        headers = {"content-type": kind}
        headers.update(errors.challenge(status, request.authorization or request.api_key))
        await _send(send, status, body, request.request_id, headers)
        return status

    async def _send_openapi(self, request: _Request, send: Send) -> int:
        if self._openapi is None:
            self._openapi = transcode.dumps(self.openapi_document())
        await _send(send, 200, self._openapi, request.request_id, {})
        return 200


def _query(raw: bytes) -> Iterable[tuple[str, str]]:
    if not raw:
        return ()
    try:
        return parse_qsl(
            raw.decode("latin-1"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except UnicodeDecodeError:
        raise GatewayError.bad_request(
            Reason.INVALID_QUERY, "", "query string is not UTF-8 once percent-decoded"
        ) from None
    except ValueError:
        raise GatewayError.bad_request(
            Reason.INVALID_QUERY, "", f"query string has more than {MAX_QUERY_FIELDS} parameters"
        ) from None


def _method_not_allowed(method: str, path: str, allowed: Sequence[str]) -> GatewayError:
    return GatewayError(
        405,
        grpc.StatusCode.UNIMPLEMENTED,
        f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}",
        reason=Reason.METHOD_NOT_ALLOWED,
        headers={"allow": ", ".join(allowed)},
    )


def _too_large(size: str, limit: int) -> GatewayError:
    return GatewayError(
        413,
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request body {size} is over the limit of {limit} bytes",
        reason=Reason.BODY_TOO_LARGE,
    )


async def _send_json(
    send: Send, status: int, doc: Any, request_id: str, headers: dict[str, str] | None = None
) -> None:
    await _send(send, status, transcode.dumps(doc), request_id, headers or {})


async def _send(
    send: Send, status: int, body: bytes, request_id: str, headers: dict[str, str]
) -> None:
    raw_headers = [
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode("latin-1")),
    ]
    if "content-type" not in headers:
        raw_headers.insert(0, (b"content-type", _JSON))
    raw_headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
