"""Server interceptors: request ids, authentication, access logs, and the
error mapping.

Every osd.v1 call is authenticated from its ``authorization`` (``Bearer
TOKEN``) or ``x-api-key`` metadata and its caller's roles are checked against
the method's ``(osd.v1.auth).role`` before the servicer runs; the servicer
then runs as that caller (:func:`osd.engine.access.principal.current`). The
health service stays open to all, so that probes work without credentials;
server reflection, and any other service, needs an authenticated caller.

A gRPC server interceptor only sees the handler, not the call: a try around
``continuation()`` would catch nothing the servicer raises. So the
interceptor wraps the handler's behaviour itself, and its request
deserializer: bytes that do not parse as the request message (invalid UTF-8
in a string field, a truncated message) reach the behaviour as an
:class:`_Undecodable`, which answers INVALID_ARGUMENT naming the method
instead of grpc's INTERNAL.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from osd import deadline
from osd.engine.access import audit
from osd.engine.access.audit import AuditLog
from osd.engine.access.authenticator import Authenticator
from osd.engine.access.principal import Principal, acting_as
from osd.errors import InvalidArgument, OsdError
from osd.server.audit import named_ids
from osd.server.errors import internal_status, to_status
from osd.store import readgen

log = logging.getLogger("osd.access")

REQUEST_ID_HEADER = "x-request-id"
# The caller of a call that did not authenticate, as its audit record names it.
ANONYMOUS = Principal(subject="", roles=frozenset(), via="none")
AUTHORIZATION_HEADER = "authorization"
API_KEY_HEADER = "x-api-key"
# The client certificate the daemon's own REST gateway verified (DER).
CLIENT_CERT_HEADER = "x-osd-client-cert-bin"
HEALTH_PREFIX = "/grpc.health."
# The methods that read: each answers with the store generation it reflects.
READ_PREFIXES = ("Inspect", "List", "Get")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id when it is well formed, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID_RE.fullmatch(value):
            return value
    return uuid.uuid4().hex


def credentials_of(
    context: grpc.ServicerContext, auth: Authenticator
) -> tuple[str | None, str | None, bytes | None]:
    """The call's ``authorization`` and ``x-api-key`` metadata, if given, and
    when client certificates may be identities, the caller's certificate.

    That is the one the TLS handshake verified, or for a call that came over
    the daemon's private Unix socket (from its own REST gateway, which
    verified it on its HTTPS port) the one in ``x-osd-client-cert-bin``. The
    latter is ignored on any other connection: a TCP caller cannot name a
    certificate it did not present."""
    authorization: str | None = None
    api_key: str | None = None
    forwarded: bytes | None = None
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION_HEADER and isinstance(value, str):
            authorization = value
        elif key == API_KEY_HEADER and isinstance(value, str):
            api_key = value
        elif key == CLIENT_CERT_HEADER and isinstance(value, bytes):
            forwarded = value
    cert: bytes | None = None
    if auth.client_certs is not None and authorization is None and api_key is None:
        verified = (context.auth_context() or {}).get("x509_pem_cert")
        if verified:
            cert = verified[0]
        elif forwarded is not None and context.peer().startswith("unix:"):
            cert = forwarded
    return authorization, api_key, cert


@dataclass(frozen=True)
class Hooks:
    """What the interceptor hands each call: how to authenticate it, where to
    record it, what to tell of how it ended (method, code name, seconds), and
    what to tell its trace span (method, request id, code; see osd.tracing)."""

    auth: Authenticator
    audit: AuditLog
    observe: Callable[[str, str, float], None] | None = None
    annotate: Callable[[str, str, grpc.StatusCode], None] | None = None


class _Call:
    """Bookkeeping for one call: its id, its caller, its start, how it ended,
    and its audit record."""

    def __init__(self, method: str, context: grpc.ServicerContext, hooks: Hooks) -> None:
        self.method = method
        self.context = context
        self.auth = hooks.auth
        self.audit = hooks.audit
        self.observe = hooks.observe
        self.annotate = hooks.annotate
        self.request_id = request_id_of(context)
        self.subject = "-"
        self.principal: Principal | None = None
        self.request: Any = None
        self.start = time.perf_counter()
        context.send_initial_metadata(((REQUEST_ID_HEADER, self.request_id),))

    def authenticate(self, *, authorize: bool = True) -> Principal:
        """The caller, and with ``authorize`` one allowed to call this method;
        raises otherwise."""
        principal = self.auth.authenticate(*credentials_of(self.context, self.auth))
        self.principal = principal
        self.subject = principal.subject or "-"
        if authorize:
            self.auth.authorize(principal, self.method.lstrip("/"))
        return principal

    def _record(self, code: int, response: Any = None) -> None:
        name = self.method.lstrip("/")
        if not audit.audited(name, self.auth.roles.required_role(name), code):
            return
        who = self.principal or ANONYMOUS
        # The ids a caller that did not authenticate names are its own words:
        # not recorded, so that anyone cannot fill the trail with them.
        targets = (
            audit.ids_in(itertools.chain(named_ids(self.request), named_ids(response, 2)))
            if self.principal is not None
            else ()
        )
        self.audit.record(
            audit.AuditEntry(
                subject=who.subject,
                roles=tuple(sorted(who.roles)),
                via=who.via,
                issuer=who.issuer,
                method=name,
                target_ids=targets,
                code=code,
                request_id=self.request_id,
            )
        )

    def _ended(self, code: grpc.StatusCode) -> None:
        if self.observe is not None:
            self.observe(self.method.lstrip("/"), code.name, time.perf_counter() - self.start)
        if self.annotate is not None:
            self.annotate(self.method, self.request_id, code)

    def fail(self, exc: BaseException) -> None:
        code = exc.code if isinstance(exc, OsdError) else grpc.StatusCode.INTERNAL
        self._record(code.value[0])
        self._ended(code)
        if isinstance(exc, OsdError):
            log.info(
                "%s %s %s %s: %s (%.1f ms)",
                self.request_id,
                self.subject,
                self.method,
                exc.code.name,
                exc.message,
                self._ms(),
                extra=self._fields(exc.code.name),
            )
            self.context.abort_with_status(to_status(exc, self.request_id))
        log.error(
            "%s %s %s INTERNAL (%.1f ms)",
            self.request_id,
            self.subject,
            self.method,
            self._ms(),
            exc_info=exc,
            extra=self._fields("INTERNAL"),
        )
        self.context.abort_with_status(internal_status(self.request_id))

    def done(self, response: Any = None) -> None:
        self._record(0, response)
        self._ended(grpc.StatusCode.OK)
        log.debug(
            "%s %s %s OK (%.1f ms)",
            self.request_id,
            self.subject,
            self.method,
            self._ms(),
            extra=self._fields("OK"),
        )

    def _fields(self, code: str) -> dict[str, Any]:
        """The access line's fields, for structured logs."""
        return {
            "request_id": self.request_id,
            "method": self.method.lstrip("/"),
            "subject": self.subject,
            "code": code,
            "duration_ms": round(self._ms(), 3),
        }

    def _ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000


class _Undecodable:
    """A request whose bytes did not parse, and why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def error(self, method: str) -> InvalidArgument:
        return InvalidArgument(
            f"{method}: the request does not parse: {self.why[:200]}",
            reason="MALFORMED_REQUEST",
            metadata={"method": method},
        )


def _lenient(
    deserialize: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:
            return _Undecodable(str(exc) or type(exc).__name__)

    return parse


def _wrap_unary(behaviour: Callable[..., Any], method: str, hooks: Hooks) -> Callable[..., Any]:
    # A read (Inspect, List, Get) answers with the generation it reflects
    # (osd.store.readgen), in its response's top-level `generation`, unless
    # the servicer set one.
    reads = method.rpartition("/")[2].startswith(READ_PREFIXES)

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(method, context, hooks)
        call.request = request
        token = deadline.start(context.time_remaining())
        try:
            principal = call.authenticate()
            if isinstance(request, _Undecodable):
                raise request.error(method)
            with acting_as(principal):
                if reads:
                    with readgen.recording() as reading:
                        response = behaviour(request, context)
                    _answer_generation(response, reading.generation)
                else:
                    response = behaviour(request, context)
        except Exception as exc:
            call.fail(exc)
            raise  # unreachable: fail() aborts the call
        finally:
            deadline.end(token)
        call.done(response)
        return response

    return handle


def _answer_generation(response: Any, generation: int | None) -> None:
    """Sets a read's `generation` when its servicer left it 0. The response
    may be one a memo shares between calls (osd.server.convert.ResponseMemo):
    then it is set once, by the first call, to a generation every later call
    that gets it also reflects, as the memo answers only while the object it
    was built from is what the store holds."""
    if generation is not None and getattr(response, "generation", None) == 0:
        response.generation = generation


def _wrap_stream(
    behaviour: Callable[..., Iterator[Any]], method: str, hooks: Hooks
) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _Call(method, context, hooks)
        call.request = request
        try:
            principal = call.authenticate()
            if isinstance(request, _Undecodable):
                raise request.error(method)
            with acting_as(principal):
                yield from behaviour(request, context)
        except Exception as exc:
            call.fail(exc)
            raise
        call.done()

    return handle


def _guard(
    handler: grpc.RpcMethodHandler, method: str, hooks: Hooks, *, authorize: bool
) -> grpc.RpcMethodHandler:
    """Every behaviour of ``handler``, run only for an authenticated caller
    (and, with ``authorize``, one whose roles allow ``method``), as that
    caller. For what the interceptor does not otherwise wrap: server
    reflection and any other /grpc.* service, and an osd.v1 method that
    streams its requests. A refusal is audited like any other."""

    def check(context: grpc.ServicerContext) -> Principal:
        call = _Call(method, context, hooks)
        try:
            principal = call.authenticate(authorize=authorize)
        except OsdError as exc:
            call.fail(exc)
            raise  # unreachable: fail() aborts the call
        return principal

    def single(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with acting_as(check(context)):
                return behaviour(request, context)

        return handle

    def streamed(behaviour: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            principal = check(context)
            with acting_as(principal):
                yield from behaviour(request, context)

        return handle

    changes: dict[str, Any] = {}
    for kind, wrap in (
        ("unary_unary", single),
        ("stream_unary", single),
        ("unary_stream", streamed),
        ("stream_stream", streamed),
    ):
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            changes[kind] = wrap(behaviour)
    return handler._replace(**changes)


class ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Gives every call a request id and an access-log line, authenticates
    and authorizes it, and maps errors."""

    def __init__(
        self,
        auth: Authenticator,
        audit_log: AuditLog,
        observe: Callable[[str, str, float], None] | None = None,
        forwarded: frozenset[str] = frozenset(),
        annotate: Callable[[str, str, grpc.StatusCode], None] | None = None,
    ) -> None:
        """``forwarded``: methods this process passes to the primary process
        (see :mod:`osd.server.forward`), which checks and records them itself.
        ``annotate``: marks the span of the call (tracing on)."""
        self.auth = auth
        self.audit = audit_log
        self.hooks = Hooks(auth, audit_log, observe, annotate)
        self.forwarded = forwarded
        # method -> (the handler served, its wrapped form): the services'
        # handlers do not change, so each is wrapped once, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler, method)
        if wrapped is not None:  # only served methods have a handler: a bounded set
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler | None:
        if method in self.forwarded:
            return handler
        if method.startswith(HEALTH_PREFIX):
            return handler  # open to all, so that probes need no credentials
        if method.startswith("/grpc."):
            if not self.auth.enabled:
                return handler
            return _guard(handler, method, self.hooks, authorize=False)
        parse = _lenient(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=_wrap_unary(handler.unary_unary, method, self.hooks),
                request_deserializer=parse,
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=_wrap_stream(handler.unary_stream, method, self.hooks),
                request_deserializer=parse,
            )
        # A method that streams its requests: none in osd.v1 today, and never
        # served unchecked.
        return _guard(handler, method, self.hooks, authorize=True)
