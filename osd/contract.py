"""The osd.v1 contract: every gRPC service the generated package defines.

A leaf module (it imports only the generated code), so both the gRPC server
and the REST gateway can enumerate the contract without importing each other.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import Message

import osd.v1


@dataclass(frozen=True)
class ServiceEntry:
    descriptor: ServiceDescriptor
    grpc_module: ModuleType

    @property
    def full_name(self) -> str:
        return str(self.descriptor.full_name)

    @property
    def base_class(self) -> type:
        cls: type = getattr(self.grpc_module, f"{self.descriptor.name}Servicer")
        return cls

    def add_to_server(self, servicer: Any, server: grpc.Server) -> None:
        getattr(self.grpc_module, f"add_{self.descriptor.name}Servicer_to_server")(servicer, server)


def contract() -> list[ServiceEntry]:
    """Every service in the generated osd.v1 package, by full name."""
    entries: list[ServiceEntry] = []
    for info in sorted(pkgutil.iter_modules(osd.v1.__path__), key=lambda m: m.name):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"osd.v1.{info.name}")
        services = module.DESCRIPTOR.services_by_name
        if not services:
            continue
        grpc_module = importlib.import_module(f"osd.v1.{info.name}_grpc")
        entries.extend(ServiceEntry(services[name], grpc_module) for name in sorted(services))
    return entries


def find_service(name: str) -> ServiceEntry:
    """The service named "osd.v1.VolumeService" or, for short, "VolumeService";
    KeyError naming the services there are otherwise."""
    entries = contract()
    for entry in entries:
        if name in (entry.full_name, entry.descriptor.name):
            return entry
    known = ", ".join(sorted(e.descriptor.name for e in entries))
    raise KeyError(f"no service {name!r}; the services are {known}")


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message descriptor."""
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def descriptors() -> list[ServiceDescriptor]:
    """The descriptors of every service of the contract."""
    return [entry.descriptor for entry in contract()]


def method_role(method: Any) -> str | None:
    """The role a method descriptor's ``(osd.v1.auth).role`` option names
    ("view" for ROLE_VIEW), if any."""
    from osd.v1 import auth_pb2

    options = method.GetOptions()
    if not options.HasExtension(auth_pb2.auth):
        return None
    role = options.Extensions[auth_pb2.auth].role
    if role == auth_pb2.ROLE_UNSPECIFIED:
        return None
    return auth_pb2.Role.Name(role).removeprefix("ROLE_").lower()


def method_roles() -> dict[str, str]:
    """The least role each RPC of the contract needs, by "package.Service/Method".

    Raises RuntimeError naming any RPC without a valid ``(osd.v1.auth).role``.
    """
    roles: dict[str, str] = {}
    missing: list[str] = []
    for entry in contract():
        for method in entry.descriptor.methods:
            role = method_role(method)
            if role is None:
                missing.append(method.full_name)
            else:
                roles[f"{entry.full_name}/{method.name}"] = role
    if missing:
        raise RuntimeError(f"RPCs without (osd.v1.auth).role: {', '.join(missing)}")
    return roles
