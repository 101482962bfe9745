"""Proto comments, the API reference, for the OpenAPI document.

Compiled descriptors carry no comments, so scripts/gen-protos also writes
``osd/v1/descriptor_set.binpb``: the osd.v1 files with their SourceCodeInfo.
Comments of a file are used only when that file in the set is the same as the
compiled one (after dropping the source info), so a stale set never attaches
a comment to the wrong element; it only leaves descriptions out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import resources

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError

log = logging.getLogger(__name__)

DESCRIPTOR_SET_PACKAGE = "osd.v1"
DESCRIPTOR_SET_NAME = "descriptor_set.binpb"

# Field numbers of the descriptor.proto messages, as SourceCodeInfo paths use them.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE, _FILE_SYNTAX = 4, 5, 6, 12
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2


def _clean(text: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
    return "\n".join(lines).strip()


class Comments:
    """Comments by the full name of the element they document.

    Keys: messages, fields, oneofs, enums, services and methods by their full
    name (``osd.v1.Cluster.name``, ``osd.v1.StartDriveReplaceRequest.target``);
    enum values as ``<enum full name>.<VALUE>``; a file's header comment by the
    file's name (``osd/v1/cluster.proto``).
    """

    def __init__(self, by_name: dict[str, str] | None = None) -> None:
        self.by_name = by_name or {}

    def get(self, name: str) -> str:
        return self.by_name.get(name, "")

    @classmethod
    def load(cls, files: Iterable[FileDescriptor], data: bytes | None = None) -> Comments:
        """Comments of ``files`` from a descriptor set (the packaged one by default)."""
        if data is None:
            data = _packaged_set()
        if not data:
            return cls()
        try:
            fds = descriptor_pb2.FileDescriptorSet.FromString(data)
        except DecodeError as exc:
            log.warning("descriptor set is unreadable (%s); the API document has no comments", exc)
            return cls()
        live = {f.name: f for f in files}
        by_name: dict[str, str] = {}
        for proto in fds.file:
            compiled = live.get(proto.name)
            if compiled is None or not _same(proto, compiled):
                # An imported file (google/...) may come from another release
                # than the one compiled in: its comments are only left out.
                if compiled is not None and proto.name.startswith("osd/"):
                    log.warning(
                        "%s differs from the compiled contract; run scripts/gen-protos", proto.name
                    )
                continue
            by_name.update(_file_comments(proto))
        return cls(by_name)


def _packaged_set() -> bytes:
    try:
        return resources.files(DESCRIPTOR_SET_PACKAGE).joinpath(DESCRIPTOR_SET_NAME).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return b""


def _same(proto: descriptor_pb2.FileDescriptorProto, compiled: FileDescriptor) -> bool:
    """Equal but for the source info and json_name, which protoc leaves out of compiled code."""
    stripped = descriptor_pb2.FileDescriptorProto()
    stripped.CopyFrom(proto)
    stripped.ClearField("source_code_info")
    live = descriptor_pb2.FileDescriptorProto.FromString(compiled.serialized_pb)
    for file in (stripped, live):
        for extension in file.extension:
            extension.ClearField("json_name")
        for message in file.message_type:
            _drop_json_names(message)
    return stripped == live


def _drop_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in (*message.field, *message.extension):
        field.ClearField("json_name")
    for nested in message.nested_type:
        _drop_json_names(nested)


def _file_comments(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    at: dict[tuple[int, ...], str] = {}
    for location in proto.source_code_info.location:
        text = "\n\n".join(
            _clean(t) for t in (location.leading_comments, location.trailing_comments) if t.strip()
        )
        if text:
            at[tuple(location.path)] = text
    header = [
        _clean(c)
        for loc in proto.source_code_info.location
        if tuple(loc.path) == (_FILE_SYNTAX,)
        for c in (*loc.leading_detached_comments, loc.leading_comments)
        if c.strip()
    ]
    out: dict[str, str] = {}
    if header:
        out[proto.name] = "\n\n".join(header)
    prefix = proto.package
    for i, message in enumerate(proto.message_type):
        _message(message, f"{prefix}.{message.name}", (_FILE_MESSAGE, i), at, out)
    for i, enum in enumerate(proto.enum_type):
        _enum(enum, f"{prefix}.{enum.name}", (_FILE_ENUM, i), at, out)
    for i, service in enumerate(proto.service):
        name = f"{prefix}.{service.name}"
        _put(out, name, at, (_FILE_SERVICE, i))
        for j, method in enumerate(service.method):
            _put(out, f"{name}.{method.name}", at, (_FILE_SERVICE, i, _SERVICE_METHOD, j))
    return out


def _put(
    out: dict[str, str], name: str, at: dict[tuple[int, ...], str], path: tuple[int, ...]
) -> None:
    text = at.get(path)
    if text:
        out[name] = text


def _message(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    path: tuple[int, ...],
    at: dict[tuple[int, ...], str],
    out: dict[str, str],
) -> None:
    _put(out, name, at, path)
    for i, field in enumerate(message.field):
        _put(out, f"{name}.{field.name}", at, (*path, _MESSAGE_FIELD, i))
    for i, oneof in enumerate(message.oneof_decl):
        _put(out, f"{name}.{oneof.name}", at, (*path, _MESSAGE_ONEOF, i))
    for i, nested in enumerate(message.nested_type):
        _message(nested, f"{name}.{nested.name}", (*path, _MESSAGE_NESTED, i), at, out)
    for i, enum in enumerate(message.enum_type):
        _enum(enum, f"{name}.{enum.name}", (*path, _MESSAGE_ENUM, i), at, out)


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto,
    name: str,
    path: tuple[int, ...],
    at: dict[tuple[int, ...], str],
    out: dict[str, str],
) -> None:
    _put(out, name, at, path)
    for i, value in enumerate(enum.value):
        _put(out, f"{name}.{value.name}", at, (*path, _ENUM_VALUE, i))
