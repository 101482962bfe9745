"""A test-only service with every shape of field and http rule, and a fake server for it.

The osd.v1 contract uses few of the forms the gateway supports (nested path
variables, ``**`` patterns, a body that is one field, response_body,
additional bindings, streaming, every scalar and well-known type). This
module describes ``gwtest.v1.ShapeService`` with them, adds it to the default
descriptor pool, and serves it with a fake that echoes each request (and the
metadata it received) back, so the gateway's transcoding can be checked both
ways over the real wire.

ShapeService:

* ``Get``     GET   /v1/shapes/{shape.id}   (+ GET /v1/shapes/{shape.id}/named/{name=**})
* ``Create``  POST  /v1/shapes               body "*"
* ``Update``  PATCH /v1/shapes/{shape.id}    body "shape"
* ``Replace`` PATCH /v1/wholes/{shape.id}    body "*"
* ``Act``     POST  /v1/shapes/{shape.id}:act body "*"; returns a Job when name is "start-job"
* ``Inner``   GET   /v1/shapes/{shape.id}/inner, response_body "request"
* ``Fail``    POST  /v1/shapes:fail          body "*"; fails with code ``shape.small``
* ``Watch``   GET   /v1/shapes:watch         server streaming: ``shape.small`` echoes,
  then fails with ``shape.count`` as the code when it is not 0
* ``Upload``  POST  /v1/shapes:upload        client streaming (not over REST)
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import osd.v1.job_pb2

# The files shapes.proto imports must be in the default pool before it.
_DEPENDENCIES = (
    annotations_pb2,
    duration_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
    osd.v1.job_pb2,
)

FILE_NAME = "gwtest/v1/shapes.proto"
PACKAGE = "gwtest.v1"
SERVICE = f"{PACKAGE}.ShapeService"

F = descriptor_pb2.FieldDescriptorProto


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    type_name: str = "",
    *,
    repeated: bool = False,
    oneof: int | None = None,
    proto3_optional: bool = False,
) -> None:
    field = message.field.add(name=name, number=number, type=kind)
    field.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    if proto3_optional:
        field.proto3_optional = True


def _map(message: descriptor_pb2.DescriptorProto, name: str, number: int, value: int) -> None:
    entry_name = "".join(p.capitalize() for p in name.split("_")) + "Entry"
    entry = message.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, value)
    entry_type = f".{PACKAGE}.{message.name}.{entry_name}"
    _field(message, name, number, F.TYPE_MESSAGE, entry_type, repeated=True)


def _file() -> descriptor_pb2.FileDescriptorProto:
    fp = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    fp.dependency.extend(m.DESCRIPTOR.name for m in _DEPENDENCIES)
    color = fp.enum_type.add(name="Color")
    for number, name in enumerate(("COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_BLUE")):
        color.value.add(name=name, number=number)

    inner = fp.message_type.add(name="Inner")
    _field(inner, "name", 1, F.TYPE_STRING)
    _field(inner, "level", 2, F.TYPE_INT32)
    _field(inner, "tags", 3, F.TYPE_STRING, repeated=True)

    shape = fp.message_type.add(name="Shape")
    _field(shape, "id", 1, F.TYPE_STRING)
    _field(shape, "count", 2, F.TYPE_INT64)
    _field(shape, "size", 3, F.TYPE_UINT64)
    _field(shape, "small", 4, F.TYPE_INT32)
    _field(shape, "flag", 5, F.TYPE_BOOL)
    _field(shape, "ratio", 6, F.TYPE_DOUBLE)
    _field(shape, "fraction", 7, F.TYPE_FLOAT)
    _field(shape, "blob", 8, F.TYPE_BYTES)
    _field(shape, "color", 9, F.TYPE_ENUM, f".{PACKAGE}.Color")
    _field(shape, "colors", 10, F.TYPE_ENUM, f".{PACKAGE}.Color", repeated=True)
    _map(shape, "weights", 11, F.TYPE_INT64)
    _field(shape, "inner", 12, F.TYPE_MESSAGE, f".{PACKAGE}.Inner")
    _field(shape, "when", 13, F.TYPE_MESSAGE, ".google.protobuf.Timestamp")
    _field(shape, "span", 14, F.TYPE_MESSAGE, ".google.protobuf.Duration")
    _field(shape, "maybe_count", 15, F.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    _field(shape, "extra", 16, F.TYPE_MESSAGE, ".google.protobuf.Struct")
    shape.oneof_decl.add(name="choice")
    _field(shape, "a", 17, F.TYPE_STRING, oneof=0)
    _field(shape, "b", 18, F.TYPE_INT32, oneof=0)
    shape.oneof_decl.add(name="_note")
    _field(shape, "note", 19, F.TYPE_STRING, oneof=1, proto3_optional=True)
    _field(shape, "inners", 20, F.TYPE_MESSAGE, f".{PACKAGE}.Inner", repeated=True)

    request = fp.message_type.add(name="EchoRequest")
    _field(request, "shape", 1, F.TYPE_MESSAGE, f".{PACKAGE}.Shape")
    _field(request, "name", 2, F.TYPE_STRING)
    _field(request, "update_mask", 3, F.TYPE_MESSAGE, ".google.protobuf.FieldMask")
    _field(request, "expected_generation", 4, F.TYPE_INT64)
    _field(request, "names", 5, F.TYPE_STRING, repeated=True)
    _map(request, "labels", 6, F.TYPE_STRING)

    response = fp.message_type.add(name="EchoResponse")
    _field(response, "request", 1, F.TYPE_MESSAGE, f".{PACKAGE}.EchoRequest")
    _field(response, "job", 2, F.TYPE_MESSAGE, ".osd.v1.Job")
    _map(response, "metadata", 3, F.TYPE_STRING)

    service = fp.service.add(name="ShapeService")

    def rpc(name: str, rule: http_pb2.HttpRule, **streaming: bool) -> None:
        method = service.method.add(
            name=name,
            input_type=f".{PACKAGE}.EchoRequest",
            output_type=f".{PACKAGE}.EchoResponse",
            **streaming,
        )
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)

    get = http_pb2.HttpRule(get="/v1/shapes/{shape.id}")
    get.additional_bindings.add(get="/v1/shapes/{shape.id}/named/{name=**}")
    rpc("Get", get)
    rpc("Create", http_pb2.HttpRule(post="/v1/shapes", body="*"))
    rpc("Update", http_pb2.HttpRule(patch="/v1/shapes/{shape.id}", body="shape"))
    rpc("Replace", http_pb2.HttpRule(patch="/v1/wholes/{shape.id}", body="*"))
    rpc("Act", http_pb2.HttpRule(post="/v1/shapes/{shape.id}:act", body="*"))
    rpc("Inner", http_pb2.HttpRule(get="/v1/shapes/{shape.id}/inner", response_body="request"))
    rpc("Fail", http_pb2.HttpRule(post="/v1/shapes:fail", body="*"))
    rpc("Watch", http_pb2.HttpRule(get="/v1/shapes:watch"), server_streaming=True)
    rpc("Upload", http_pb2.HttpRule(post="/v1/shapes:upload", body="*"), client_streaming=True)
    return fp


def file_descriptor() -> FileDescriptor:
    """gwtest/v1/shapes.proto, added to the default pool on first use."""
    pool = descriptor_pool.Default()
    try:
        found: FileDescriptor = pool.FindFileByName(FILE_NAME)
    except KeyError:
        pool.Add(_file())
        found = pool.FindFileByName(FILE_NAME)
    return found


def service() -> ServiceDescriptor:
    found: ServiceDescriptor = file_descriptor().services_by_name["ShapeService"]
    return found


def message(name: str) -> Any:
    """The message class of gwtest.v1.<name>."""
    return message_factory.GetMessageClass(file_descriptor().message_types_by_name[name])


class _Fake:
    def __init__(self) -> None:
        self.request_cls = message("EchoRequest")
        self.response_cls = message("EchoResponse")

    def _start(self, context: grpc.ServicerContext) -> dict[str, str]:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        request_id = metadata.get("x-request-id", "fake-request-id")
        context.send_initial_metadata((("x-request-id", request_id),))
        return metadata

    def echo(self, request: Any, context: grpc.ServicerContext) -> Any:
        response = self.response_cls(metadata=self._start(context))
        response.request.CopyFrom(request)
        if request.name == "start-job":
            response.job.id = "0123456789abcdef0123456789abcdef"
        return response

    def fail(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._start(context)
        context.abort_with_status(_status(request.shape.small, request.name))

    def watch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        metadata = self._start(context)
        for i in range(request.shape.small):
            response = self.response_cls(metadata=metadata)
            response.request.CopyFrom(request)
            response.request.shape.small = i
            yield response
        if request.shape.count:
            context.abort_with_status(_status(request.shape.count, "stream failed"))

    def upload(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self._start(context)
        return self.response_cls()


def _status(code_number: int, message_text: str) -> grpc.Status:
    status = status_pb2.Status(code=code_number, message=message_text or "fake failure")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="FAKE", domain="osd.dev"))
    return rpc_status.to_status(status)


class FakeShapeServer:
    """The fake ShapeService on an ephemeral loopback port."""

    def __init__(self) -> None:
        fake = _Fake()
        req, resp = fake.request_cls, fake.response_cls
        unary = {
            name: grpc.unary_unary_rpc_method_handler(
                fake.echo,
                request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString,
            )
            for name in ("Get", "Create", "Update", "Replace", "Act", "Inner")
        }
        unary["Fail"] = grpc.unary_unary_rpc_method_handler(
            fake.fail,
            request_deserializer=req.FromString,
            response_serializer=resp.SerializeToString,
        )
        unary["Watch"] = grpc.unary_stream_rpc_method_handler(
            fake.watch,
            request_deserializer=req.FromString,
            response_serializer=resp.SerializeToString,
        )
        unary["Upload"] = grpc.stream_unary_rpc_method_handler(
            fake.upload,
            request_deserializer=req.FromString,
            response_serializer=resp.SerializeToString,
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, unary),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait()
