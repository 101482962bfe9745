"""How a response is printed: a table for people (``table``, ``wide``), or the
proto's JSON or YAML form for scripts.

A response that holds a list (``volumes``, ``jobs`` ...) prints one row per
item; one that holds an object prints its fields, one per row. Enum values
are shown without their prefix, byte counts as sizes like ``20G``, and
times in ISO 8601.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# The columns a narrow table shows, in this order, when the item has them.
NARROW = (
    "id",
    "name",
    "pool_id",
    "pool_name",
    "kind",
    "state",
    "status",
    "up",
    "target_kind",
    "target_id",
    "cluster_id",
    "volume_id",
    "node_id",
    "drive_id",
    "source_drive_id",
    "target_drive_id",
    "zone",
    "device_path",
    "mode",
    "device",
    "size_bytes",
    "bytes",
    "capacity_bytes",
    "used_bytes",
    "used_bytes_before",
    "used_bytes_after",
    "allocated_bytes",
    "free_bytes",
    "provisioned_bytes",
    "percent",
    "spread_percent",
    "health",
    "address",
    "datastore",
    "manager",
    "active",
    "subject",
    "method",
    "code",
    "create_time",
)
_UNITS = (("P", 1 << 50), ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


def size(nbytes: int) -> str:
    """``nbytes`` as the API writes sizes: 20G, 1.5T, 512M, 0."""
    for unit, scale in _UNITS:
        if nbytes >= scale:
            if nbytes % scale == 0:
                return f"{nbytes // scale}{unit}"
            return f"{nbytes / scale:.1f}{unit}"
    return str(nbytes)


def _enum_name(enum: Any, number: int) -> str:
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    # The prefix is the enum's name in upper snake case: JOB_STATE_DONE -> done.
    names = [v.name for v in enum.values]
    prefix = _common_prefix(names)
    name: str = value.name
    return name[len(prefix) :].lower() or name.lower()


def _common_prefix(names: list[str]) -> str:
    if len(names) < 2:
        return ""
    first = names[0]
    end = 0
    for i in range(len(first)):
        if all(len(n) > i and n[i] == first[i] for n in names):
            end = i + 1
        else:
            break
    return first[: first.rfind("_", 0, end) + 1] if end else ""


def _cell(message: Message, field: Any) -> str:
    value = getattr(message, field.name)
    if field.is_repeated:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        if field.message_type is not None:
            return json.dumps([_as_dict(v) for v in value], separators=(",", ":")) if value else ""
        if field.enum_type is not None:
            return ",".join(_enum_name(field.enum_type, v) for v in value)
        return ",".join(str(v) for v in value)
    if field.message_type is not None:
        if not message.HasField(field.name):
            return ""
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return str(value.ToJsonString())
        return json.dumps(_as_dict(value), separators=(",", ":"))
    if field.enum_type is not None:
        return _enum_name(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "yes" if value else "no"
    if _is_bytes(field.name) and isinstance(value, int):
        return size(value)
    return str(value)


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _is_bytes(name: str) -> bool:
    """Whether a field named ``name`` counts bytes (shown as 20G)."""
    return name == "bytes" or name.endswith("_bytes") or "_bytes_" in name


def _columns(descriptor: Any, wide: bool) -> list[Any]:
    fields = list(descriptor.fields)
    if wide:
        return fields
    by_name = {f.name: f for f in fields}
    chosen = [by_name[n] for n in NARROW if n in by_name]
    return chosen or [f for f in fields if f.message_type is None][:8]


def _list_field(response: Message) -> Any:
    """The field holding the response's items, if it is a list."""
    for field in response.DESCRIPTOR.fields:
        message = field.message_type
        if field.is_repeated and message is not None and not message.GetOptions().map_entry:
            return field
    return None


def _object_field(response: Message) -> Any:
    """The field holding the response's object, when it holds one."""
    objects = [
        f for f in response.DESCRIPTOR.fields if f.message_type is not None and not f.is_repeated
    ]
    if len(objects) >= 1 and response.HasField(objects[0].name):
        return objects[0]
    return None


def render(response: Message, output: str) -> str:
    """The text to print for ``response``."""
    if output == "json":
        return json_format.MessageToJson(response, preserving_proto_field_name=True, indent=2)
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(_as_dict(response), sort_keys=False)).rstrip("\n")
    return _table(response, wide=output == "wide")


def _capacity(c: Any) -> str:
    return f"{size(c.total_bytes)} total, {size(c.used_bytes)} used, {size(c.free_bytes)} free"


def _tree(response: Any) -> str:
    """A cluster's topology as a tree: zones, nodes, drives, then pools."""
    from rich.console import Console
    from rich.tree import Tree

    def state(message: Message) -> str:
        field = message.DESCRIPTOR.fields_by_name["state"]
        return _cell(message, field)

    c = response.cluster
    root = Tree(
        f"[bold]{c.name}[/bold] {c.id}: {_capacity(response.capacity)}; "
        f"{size(response.provisioned_bytes)} provisioned"
    )
    zones: dict[str, Any] = {}
    for entry in response.nodes:
        node = entry.node
        zone = zones.get(node.zone)
        if zone is None:
            zone = zones[node.zone] = root.add(f"zone [bold]{node.zone or '-'}[/bold]")
        branch = zone.add(
            f"node [bold]{node.name}[/bold] {node.id} {state(node)}: {_capacity(node.capacity)}"
        )
        for drive in entry.drives:
            branch.add(
                f"drive {drive.device_path} {drive.id} {state(drive)}: "
                f"{_capacity(drive.capacity)}, {drive.allocation_count} allocations"
            )
    if response.pools:
        pools = root.add("pools")
        for pool in response.pools:
            pools.add(
                f"pool [bold]{pool.name}[/bold] {pool.id}: {len(pool.drive_ids)} drives, "
                f"{_capacity(pool.capacity)}, {pool.volume_count} volumes"
            )
    printed = io.StringIO()
    console = Console(
        file=printed,
        width=None if sys.stdout.isatty() else 250,
        force_terminal=sys.stdout.isatty(),
        highlight=False,
    )
    console.print(root)
    return "\n".join(line.rstrip() for line in printed.getvalue().splitlines())


def _table(response: Message, *, wide: bool) -> str:
    if response.DESCRIPTOR.full_name == "osd.v1.GetClusterTopologyResponse":
        return _tree(response)
    from rich.console import Console
    from rich.table import Table

    printed = io.StringIO()
    console = Console(
        file=printed,
        width=None if sys.stdout.isatty() else 250,
        force_terminal=sys.stdout.isatty(),
        highlight=False,
    )
    obj = _object_field(response)
    listed = _list_field(response)
    footer: list[str] = []
    if obj is None and listed is not None:
        _print_list(console, listed, list(getattr(response, listed.name)), wide)
        others = [f for f in response.DESCRIPTOR.fields if f is not listed and _is_list(f)]
        for field in response.DESCRIPTOR.fields:
            # The generation is for programs (-o json, yaml), not the table.
            shown = field is not listed and field not in others and field.name != "generation"
            text = _cell(response, field) if shown else ""
            if text and text != "0":
                footer.append(f"{field.name}: {text}")
        if not getattr(response, listed.name):
            footer.insert(0, f"no {listed.name}")
        for field in others:  # a second list (a plan's drives): a table of its own
            items = list(getattr(response, field.name))
            if items:
                console.print(f"\n[bold]{field.name}[/bold]")
                _print_list(console, field, items, wide)
    else:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        rows: list[tuple[str, str]] = []
        lists = []
        if obj is not None:
            rows += _rows(getattr(response, obj.name), "")
            for field in response.DESCRIPTOR.fields:
                if field is obj or field.name == "generation":
                    continue
                if field is listed or (_is_list(field) and not wide):
                    lists.append(field)
                    continue
                rows.append((field.name, _cell(response, field)))
        else:
            rows += _rows(response, "")
        for name, text in rows:
            if text or wide:
                table.add_row(name, text)
        console.print(table)
        for field in lists:
            items = list(getattr(response, field.name))
            if items:
                console.print(f"\n[bold]{field.name}[/bold]")
                _print_list(console, field, items, wide)
    out = "\n".join(line.rstrip() for line in printed.getvalue().splitlines())
    return "\n".join([out, *footer]).rstrip("\n")


def _is_list(field: Any) -> bool:
    message = field.message_type
    return field.is_repeated and message is not None and not message.GetOptions().map_entry


def _print_list(console: Any, listed: Any, items: list[Message], wide: bool) -> None:
    from rich.table import Table

    columns = _columns(listed.message_type, wide)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column.name.removesuffix("_bytes").upper())
    for item in items:
        table.add_row(*(_cell(item, c) for c in columns))
    console.print(table)


def _rows(message: Message, prefix: str) -> list[tuple[str, str]]:
    """An object's fields as (name, text), a message field's own fields as
    parent.field rows."""
    rows: list[tuple[str, str]] = []
    for field in message.DESCRIPTOR.fields:
        sub = field.message_type
        nested = (
            sub is not None
            and not field.is_repeated
            and sub.full_name != "google.protobuf.Timestamp"
            and not prefix
        )
        if nested:
            if message.HasField(field.name):
                rows += _rows(getattr(message, field.name), f"{field.name}.")
            continue
        rows.append((prefix + field.name, _cell(message, field)))
    return rows
