"""Server reflection as grpc.reflection.v1, beside v1alpha.

grpcio-reflection serves only grpc.reflection.v1alpha.ServerReflection;
newer tools (grpcurl, Postman, grpcui) ask v1 first. The two protocols are
the same messages under another package, so v1 is served by the same
servicer through a handler of its own, and its file, the v1alpha file under
the v1 names, is added to the descriptor pool so that v1 can describe
itself.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"


def _register_v1_file() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(SERVICE_NAME)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = _V1
    proto.options.Clear()
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(f".{_V1ALPHA}."):
                field.type_name = f".{_V1}." + field.type_name.removeprefix(f".{_V1ALPHA}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_V1ALPHA, _V1)
            method.output_type = method.output_type.replace(_V1ALPHA, _V1)
    pool.Add(proto)


def enable(service_names: list[str], server: grpc.Server) -> None:
    """Serves reflection for ``service_names`` (and both reflection
    services) as v1alpha and as v1."""
    _register_v1_file()
    names = [*service_names, reflection.SERVICE_NAME, SERVICE_NAME]
    servicer = reflection.ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE_NAME,
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        servicer.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            ),
        )
    )
