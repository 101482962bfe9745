"""Routes from the ``google.api.http`` rules of service descriptors.

Every RPC that carries an http rule (and each of its ``additional_bindings``)
becomes one :class:`Route`. Nothing here is written per RPC: a new service in
the contract gets its routes the moment its generated module exists.

Path templates follow the google.api.http grammar::

    Template = "/" Segments [ Verb ] ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

A variable without a pattern matches one path segment; ``*`` matches one
segment and ``**`` any number of them. Matching works on the raw request path,
and each variable's text is percent-decoded afterwards, so ``%2F`` inside an id
reaches the RPC as ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

_METHODS = ("get", "put", "post", "delete", "patch")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@%-]+")


class TemplateError(ValueError):
    """An http rule's path template does not follow the grammar."""


@dataclass(frozen=True)
class PathVariable:
    """A ``{field.path}`` of a template: the request field it fills."""

    field_path: tuple[str, ...]
    pattern: str  # the regular expression its text matches

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str  # upper case
    template: str  # as written in the rule, e.g. /v1/jobs/{job_id}:cancel
    variables: tuple[PathVariable, ...]
    body: str  # "" (no body), "*" (the whole request) or a top-level field name
    response_body: str  # "" (the whole response) or a top-level field name
    method: MethodDescriptor
    regex: re.Pattern[str] = field(compare=False, repr=False)
    literal_count: int = 0
    has_verb: bool = False

    @property
    def rpc_path(self) -> str:
        """The gRPC method path, e.g. /osd.v1.ClusterService/InspectCluster."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def input_type(self) -> Descriptor:
        return self.method.input_type

    @property
    def output_type(self) -> Descriptor:
        return self.method.output_type

    @property
    def streaming_request(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def streaming_response(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def openapi_path(self) -> str:
        """The template with each variable reduced to ``{name}``."""
        return re.sub(r"\{([^}=]+)(=[^}]*)?\}", r"{\1}", self.template)

    def bound_fields(self) -> frozenset[str]:
        """Top-level request fields that the path fills whole (``{cluster_id}``)."""
        return frozenset(v.name for v in self.variables if len(v.field_path) == 1)

    def alternatives(self) -> dict[str, str]:
        """Top-level fields a request on this route may not carry, with why:
        the other member of a ``<kind>_ref`` oneof (an id or a name) whose
        member the path fills, and with an id, the ``cluster_id`` that only a
        name needs."""
        out: dict[str, str] = {}
        bound = self.bound_fields()
        request = self.input_type
        for oneof in request.oneofs:
            filled = [f.name for f in oneof.fields if f.name in bound]
            if not oneof.name.endswith("_ref") or not filled:
                continue
            for f in oneof.fields:
                if f.name not in bound:
                    out[f.name] = f"not with {filled[0]}, which the path sets"
            scoped = "cluster_id" in request.fields_by_name and "cluster_id" not in bound
            if filled[0].endswith("_id") and scoped:
                out["cluster_id"] = f"only names a cluster for a name, not with {filled[0]}"
        return out

    def bound_paths(self) -> frozenset[str]:
        """Dotted paths of every field the path fills (``cluster_id``, ``shape.id``)."""
        return frozenset(v.name for v in self.variables)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The decoded variable values when ``raw_path`` fits this route."""
        found = self.regex.fullmatch(raw_path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for i, v in enumerate(self.variables):
            try:
                values[v.name] = unquote(found.group(f"v{i}"), errors="strict")
            except UnicodeDecodeError:
                raise BadPathVariable(v.name) from None
        return values


class _TemplateParser:
    """Turns one path template into a regular expression and its variables."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.variables: list[PathVariable] = []
        self.literals = 0

    def parse(self) -> tuple[str, bool]:
        text = self.template
        if not text.startswith("/"):
            raise TemplateError(f"template {text!r} must start with '/'")
        verb = ""
        last = text.rsplit("/", 1)[-1]
        if ":" in last and "}" not in last.split(":")[-1]:
            text, verb = text.rsplit(":", 1)
            if not _LITERAL.fullmatch(verb):
                raise TemplateError(f"template {self.template!r} has a bad verb {verb!r}")
        regex = self._segments(text[1:], top=True)
        if verb:
            regex += ":" + re.escape(verb)
        return "/" + regex, bool(verb)

    def _segments(self, text: str, *, top: bool) -> str:
        parts: list[str] = []
        for segment in _split_segments(text, self.template):
            if segment == "*":
                parts.append("[^/]+")
            elif segment == "**":
                parts.append(".+")
            elif segment.startswith("{"):
                if not top:
                    raise TemplateError(f"template {self.template!r} nests a variable")
                parts.append(self._variable(segment[1:-1]))
            elif _LITERAL.fullmatch(segment):
                self.literals += 1
                parts.append(re.escape(segment))
            else:
                raise TemplateError(f"template {self.template!r} has a bad segment {segment!r}")
        return "/".join(parts)

    def _variable(self, inner: str) -> str:
        name, _, pattern = inner.partition("=")
        path = tuple(name.split("."))
        if not all(_IDENT.fullmatch(p) for p in path):
            raise TemplateError(f"template {self.template!r} has a bad variable {name!r}")
        regex = self._segments(pattern, top=False) if pattern else "[^/]+"
        variable = PathVariable(path, regex)
        self.variables.append(variable)
        return f"(?P<v{len(self.variables) - 1}>{regex})"


def _split_segments(text: str, template: str) -> list[str]:
    """Splits on '/' outside braces."""
    segments: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"template {template!r} has an unbalanced '}}'")
        if char == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise TemplateError(f"template {template!r} has an unbalanced '{{'")
    segments.append(current)
    if any(not s for s in segments):
        raise TemplateError(f"template {template!r} has an empty segment")
    return segments


def _resolve_field(message: Descriptor, path: Sequence[str], where: str) -> FieldDescriptor:
    """The field at ``path`` in ``message``; every step but the last must be a message."""
    current = message
    found: FieldDescriptor | None = None
    for i, name in enumerate(path):
        found = current.fields_by_name.get(name)
        if found is None:
            raise TemplateError(f"{where}: {current.full_name} has no field {name!r}")
        if i < len(path) - 1:
            if found.message_type is None or found.is_repeated:
                raise TemplateError(f"{where}: {'.'.join(path[: i + 1])} is not a message field")
            current = found.message_type
    assert found is not None
    return found


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    elif kind in _METHODS:
        verb, template = kind.upper(), getattr(rule, kind)
    else:
        raise TemplateError(f"{method.full_name}: http rule has no pattern")
    parser = _TemplateParser(template)
    regex, has_verb = parser.parse()
    where = f"{method.full_name} {verb} {template}"
    for variable in parser.variables:
        target = _resolve_field(method.input_type, variable.field_path, where)
        if target.is_repeated or target.message_type is not None:
            raise TemplateError(f"{where}: path variable {variable.name} must be a scalar field")
    for name, message in ((rule.body, method.input_type), (rule.response_body, method.output_type)):
        if name and name != "*" and name not in message.fields_by_name:
            raise TemplateError(f"{where}: {message.full_name} has no field {name!r}")
    return Route(
        http_method=verb,
        template=template,
        variables=tuple(parser.variables),
        body=rule.body,
        response_body=rule.response_body,
        method=method,
        regex=re.compile(regex),
        literal_count=parser.literals,
        has_verb=has_verb,
    )


def method_routes(method: MethodDescriptor) -> list[Route]:
    """The routes of one RPC: its http rule and its additional bindings."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [_route(method, rule)] + [_route(method, extra) for extra in rule.additional_bindings]


class BadPathVariable(ValueError):
    """A path variable's percent-decoded text is not UTF-8."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class NoRoute(LookupError):
    """No template fits the path."""


class MethodNotAllowed(LookupError):
    """Templates fit the path, but none for this method."""

    def __init__(self, allowed: Sequence[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = tuple(allowed)


class Router:
    """Finds the route of a request among the routes of every service."""

    def __init__(self, routes: Iterable[Route]) -> None:
        # Verbs and literal segments first: /v1/jobs/{id}:cancel beats /v1/jobs/{id}.
        self.routes = sorted(routes, key=_precedence)
        seen: dict[tuple[str, str], Route] = {}
        for route in self.routes:
            key = (route.http_method, route.regex.pattern)
            if key in seen:
                raise TemplateError(
                    f"{route.method.full_name} and {seen[key].method.full_name} "
                    f"both bind {route.http_method} {route.template}"
                )
            seen[key] = route
        # Routes by their literal prefix, so a request tries only its own resource's
        # routes (plus those whose prefix is not literal).
        by_prefix: dict[str, list[Route]] = {}
        for route in self.routes:
            by_prefix.setdefault(_prefix(route.template), []).append(route)
        wild = by_prefix.pop("", [])
        self._by_prefix = {
            key: sorted([*found, *wild], key=_precedence) for key, found in by_prefix.items()
        }
        self._wild = wild

    def resolve(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """The route and decoded path variables.

        Raises:
            NoRoute: no template fits the path.
            MethodNotAllowed: templates fit, none for ``http_method``.
            BadPathVariable: a variable's text is not UTF-8 once decoded.
        """
        candidates = self._by_prefix.get(_prefix(raw_path), self._wild)
        matched: list[tuple[Route, dict[str, str]]] = []
        for route in candidates:
            values = route.match(raw_path)
            if values is not None:
                matched.append((route, values))
        if not matched:
            raise NoRoute(raw_path)
        if matched[0][0].has_verb:
            matched = [m for m in matched if m[0].has_verb]
        for route, values in matched:
            if route.http_method == http_method:
                return route, values
        raise MethodNotAllowed(sorted({route.http_method for route, _ in matched}))


def _precedence(route: Route) -> tuple[bool, int, tuple[bool, ...]]:
    """Verbs first, then more literal segments, then literals earlier:
    /v1/clusters/by-name/{name} beats /v1/clusters/{id}/topology, so a cluster
    named "topology" is still found by name."""
    segments = route.template.split(":", 1)[0].split("/")
    return (not route.has_verb, -route.literal_count, tuple("{" in s for s in segments))


def _prefix(path: str) -> str:
    """The first two segments when both are literal (e.g. "/v1/clusters"), else ""."""
    parts = path.split("/", 3)
    if len(parts) < 3:
        return ""
    second = parts[2].split(":", 1)[0]
    if "{" in parts[1] or "{" in second or "*" in parts[1] or "*" in second:
        return ""
    return f"/{parts[1]}/{second}"
