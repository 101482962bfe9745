"""The client commands, derived from the contract: ``osd GROUP VERB`` calls the
method :data:`osd.ctl.commands.COMMANDS` names, with a flag for each field of
its request.

* The object's id is the first argument (``osd volume inspect ID``), or
  its name (``osd volume inspect db1 --cluster-id c1``: text that is not an
  id is a name); a create takes the new object's name there (``osd volume
  create db1``). Every id, as an argument or a flag (``--node-id n1``),
  takes a name too, looked up in the cluster ``--cluster-id`` names (an id
  or a name).
* A scalar field is ``--field-name VALUE``; a boolean takes ``true`` or
  ``false``; an enum its value without the prefix (``--provisioning thin``);
  a repeated field is repeated; a map is ``--labels KEY=VALUE`` (repeated,
  or ``--label``).
* A message field takes its JSON form (``--qos '{"iops_limit": "100"}'``),
  and each of its scalar fields has a flag of its own
  (``--durability-replicas 3``).
* An update sends the fields given in its update mask.
* ``-d JSON`` (or ``@FILE``, or ``-`` for stdin) gives the request whole;
  flags change it.
* A call that starts a job takes ``--wait``: it follows the job with a
  progress bar, and exits 12 when it failed, 13 when it was cancelled.
* A list takes ``--all`` (every page) and ``--watch`` (printed again each
  time the store changes).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from osd import config as cfg
from osd.client import (
    EXIT_JOB_CANCELLED,
    EXIT_JOB_FAILED,
    CallError,
    Client,
)
from osd.contract import contract, message_class
from osd.ctl import connection, output
from osd.ctl.commands import COMMANDS, GROUPS
from osd.v1 import cluster_pb2, job_pb2

_WELL_KNOWN = ("google.protobuf.FieldMask", "google.protobuf.Timestamp")
# What an object id looks like: text that does not is taken as a name.
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Flag:
    """One flag of a derived command: the request path it sets."""

    param: str  # click's parameter name
    path: tuple[str, ...]  # the field, or (message field, its field)
    field: Any
    kind: str  # "scalar", "bool", "enum", "repeated", "map", "message"


@dataclass
class Derived:
    method: MethodDescriptor
    group: str
    verb: str
    positional: Any
    flags: list[Flag] = field(default_factory=list)

    @property
    def request(self) -> Descriptor:
        return self.method.input_type

    @property
    def is_update(self) -> bool:
        return "update_mask" in self.request.fields_by_name

    @property
    def is_list(self) -> bool:
        return "page_token" in self.request.fields_by_name

    @property
    def starts_jobs(self) -> bool:
        out = self.method.output_type.fields_by_name.get("job")
        return out is not None and self.group != "job" and not out.is_repeated


def _kind(f: Any) -> str:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        return "map"
    if f.is_repeated:
        return "repeated"
    if f.message_type is not None:
        return "message"
    if f.enum_type is not None:
        return "enum"
    if f.type == FieldDescriptor.TYPE_BOOL:
        return "bool"
    return "scalar"


def _dash(name: str) -> str:
    return name.replace("_", "-")


def derive(method: MethodDescriptor, group: str, verb: str) -> Derived:
    request = method.input_type
    fields = list(request.fields)
    positional: Any = None
    if verb == "create" and "name" in request.fields_by_name:
        positional = request.fields_by_name["name"]
    elif (
        fields
        and fields[0].name.endswith("_id")
        and not fields[0].is_repeated
        and verb not in ("create", "list")
        and "page_token" not in request.fields_by_name
    ):
        positional = fields[0]
    derived = Derived(method, group, verb, positional)
    taken = {"data", "wait", "all", "watch", "update_mask", *connection.SETTINGS}
    for f in fields:
        if f is positional or f.name == "update_mask":
            continue
        derived.flags.append(Flag(f.name, (f.name,), f, _kind(f)))
        taken.add(f.name)
    for f in fields:
        sub_message: Any = f.message_type
        if _kind(f) != "message" or sub_message.full_name in _WELL_KNOWN:
            continue
        for sub in sub_message.fields:
            param = f"{f.name}_{sub.name}"
            sub_kind = _kind(sub)
            if param in taken or sub_kind in ("message", "map"):
                continue
            derived.flags.append(Flag(param, (f.name, sub.name), sub, sub_kind))
            taken.add(param)
    return derived


def derived_commands() -> list[Derived]:
    """Every derived command, in the contract's order."""
    found = []
    for entry in contract():
        for method in entry.descriptor.methods:
            if method.client_streaming or method.server_streaming:
                continue
            group, verb = COMMANDS[method.full_name]
            found.append(derive(method, group, verb))
    return found


# -- turning flags into a request ----------------------------------------------


def _enum_value(f: Any, text: str) -> int:
    enum = f.enum_type
    wanted = text.strip().upper().replace("-", "_")
    names = [v.name for v in enum.values]
    prefix = output._common_prefix(names)
    for v in enum.values:
        if v.name in (wanted, prefix + wanted):
            return int(v.number)
    shown = ", ".join(v.name[len(prefix) :].lower() for v in enum.values if v.number)
    raise click.BadParameter(f"{text!r} is not one of {shown}", param_hint=f"--{_dash(f.name)}")


def _scalar(f: Any, text: str, hint: str) -> Any:
    kind = _kind(f) if not f.is_repeated else ("enum" if f.enum_type is not None else "scalar")
    if f.enum_type is not None or kind == "enum":
        return _enum_value(f, text)
    if f.type == FieldDescriptor.TYPE_BOOL:
        try:
            return cfg._bool(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not true or false", param_hint=hint) from None
    if f.cpp_type in (
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    ):
        try:
            return int(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a whole number", param_hint=hint) from None
    if f.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        try:
            return float(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a number", param_hint=hint) from None
    return text


def _read_data(text: str) -> str:
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_text()
        except OSError as exc:
            raise cfg.SettingsError(f"-d {text}: {exc.strerror}") from None
    return text


def build_request(d: Derived, values: dict[str, Any]) -> Message:
    request = message_class(d.request)()
    data = values.get("data")
    if data:
        try:
            json_format.Parse(_read_data(data) or "{}", request)
        except json_format.ParseError as exc:
            raise cfg.SettingsError(f"-d: not a {d.request.name}: {exc}") from None
    paths: list[str] = []
    if d.positional is not None and values.get(d.positional.name) is not None:
        setattr(
            request, _addressed(d.positional, values[d.positional.name]), values[d.positional.name]
        )
    for flag in d.flags:
        given = values.get(flag.param)
        if given is None or given == ():
            continue
        hint = f"--{_dash(flag.param)}"
        target: Any = request
        for part in flag.path[:-1]:
            target = getattr(target, part)
        name = flag.path[-1]
        if flag.kind == "map":
            entries = {}
            for pair in given:
                key, sep, value = pair.partition("=")
                if not sep or not key:
                    raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=hint)
                entries[key] = value
            getattr(target, name).clear()
            getattr(target, name).update(entries)
        elif flag.kind == "repeated":
            repeated = getattr(target, name)
            del repeated[:]
            if flag.field.message_type is not None:
                for text in given:
                    item = repeated.add()
                    _parse_json(item, text, hint)
            else:
                repeated.extend(_scalar(flag.field, t, hint) for t in given)
        elif flag.kind == "message":
            _parse_json(getattr(target, name), given, hint)
        else:
            setattr(target, name, _scalar(flag.field, given, hint))
        paths.append(".".join(flag.path))
    if d.is_update:
        mask = values.get("update_mask")
        chosen = [p.strip() for p in mask.split(",") if p.strip()] if mask else paths
        skip = {
            "expected_generation",
            "shrink_ok",
            "yes_i_really_mean_it",
            "propagate",
            *_addressing(d.request),
        }
        request.update_mask.paths[:] = [p for p in chosen if p not in skip]  # type: ignore[attr-defined]
    return request


def _addressed(f: FieldDescriptor, value: str) -> str:
    """The field an object's positional argument fills: its id field, or the
    name alternative beside it (``<kind>_name``) when the text is not an id."""
    oneof = f.containing_oneof
    if oneof is None or not oneof.name.endswith("_ref") or _ID.fullmatch(value):
        return f.name
    others = [o.name for o in oneof.fields if o.name != f.name]
    return others[0] if others else f.name


def _addressing(request: Descriptor) -> set[str]:
    """The fields that say which object an update changes (its id or name, and
    the cluster its name is in): never paths of the update."""
    out: set[str] = set()
    for oneof in request.oneofs:
        if oneof.name.endswith("_ref"):
            out.update(f.name for f in oneof.fields)
            if "cluster_id" in request.fields_by_name:
                out.add("cluster_id")
    return out


# Kinds an id flag may name instead: kind -> (its service, named within a cluster).
_NAMED = {
    "cluster": ("ClusterService", False),
    "datastore": ("DatastoreService", False),
    "node": ("NodeService", True),
    "pool": ("PoolService", True),
    "template": ("TemplateService", True),
    "volume": ("VolumeService", True),
    "snapshot": ("VolumeService", True),
}


def _named_kind(field_name: str) -> str | None:
    """The kind an id field names (``volume_id``, ``parent_snapshot_id``), if
    its objects have names."""
    for kind in _NAMED:
        if field_name == f"{kind}_id" or field_name.endswith(f"_{kind}_id"):
            return kind
    return None


def resolve_names(client: Client, request: Message, cluster: str = "") -> None:
    """Lets every id the command was given be a name: a value of an id field
    (top level, or one message down) that is not an id is looked up with the
    kind's Inspect by name. Names within a cluster are looked up in the
    request's ``cluster_id`` (itself resolved first), else in ``cluster``
    (the command's --cluster-id when its request has no such field)."""
    if "cluster_id" in request.DESCRIPTOR.fields_by_name:
        cluster = request.cluster_id  # type: ignore[attr-defined]
    scope = _lookup(client, "cluster", cluster, "")
    inner = [v for f, v in request.ListFields() if _kind(f) == "message"]
    for message in [request, *inner]:
        for f, value in message.ListFields():
            kind = _named_kind(f.name)
            if kind is not None and isinstance(value, str):
                setattr(message, f.name, _lookup(client, kind, value, scope))


def _lookup(client: Client, kind: str, value: str, scope: str) -> str:
    """``value`` when it is an id (or empty), else the id of the ``kind`` it names."""
    if not value or _ID.fullmatch(value):
        return value
    service, scoped = _NAMED[kind]
    if scoped and not scope:
        raise click.UsageError(f"{value!r} is not an id; name its cluster with --cluster-id")
    noun = kind.capitalize()
    found = client.call(
        f"{service}.Inspect{noun}",
        {f"{kind}_name": value, **({"cluster_id": scope} if scoped else {})},
    )
    return str(getattr(found, kind).id)


def _parse_json(message: Message, text: str, hint: str) -> None:
    try:
        json_format.Parse(text, message)
    except json_format.ParseError as exc:
        raise click.BadParameter(
            f"not a {message.DESCRIPTOR.name} in JSON: {exc}", param_hint=hint
        ) from None


# -- the click commands --------------------------------------------------------


@functools.cache
def _comments() -> Any:
    from gateway.comments import Comments

    return Comments.load({e.descriptor.file for e in contract()})


def _first_sentence(text: str) -> str:
    text = " ".join(text.split("\n\n")[0].split())
    end = re.search(r"\.\s+(?=[A-Z(])", text)
    return text if end is None else text[: end.start() + 1]


def _help(d: Derived) -> str:
    text = _comments().get(d.method.full_name)
    paragraph = text.split("\n\n")[0] if text else ""
    source = f"({d.method.containing_service.name}.{d.method.name})"
    return f"{' '.join(paragraph.split())}\n\n{source}" if paragraph else source


def _option(flag: Flag) -> Callable[[Any], Any]:
    f = flag.field
    names = [f"--{_dash(flag.param)}"]
    if flag.kind == "map" and flag.param.endswith("s"):
        names.append(f"--{_dash(flag.param[:-1])}")
    metavar = {
        "map": "KEY=VALUE",
        "bool": "BOOL",
        "message": "JSON",
        "enum": "|".join(_choices(f)) if f.enum_type is not None else "VALUE",
    }.get(flag.kind, "VALUE")
    if flag.kind == "repeated":
        metavar = (
            "JSON"
            if f.message_type is not None
            else ("|".join(_choices(f)) if f.enum_type is not None else "VALUE")
        )
    multiple = flag.kind in ("map", "repeated")
    about = _first_sentence(_comments().get(f.full_name))
    text = (about or ".".join(flag.path)) + (" (repeat)" if multiple else "")
    return click.option(
        *names, flag.param, multiple=multiple, default=None, metavar=metavar, help=text
    )


def _choices(f: Any) -> list[str]:
    names = [v.name for v in f.enum_type.values]
    prefix = output._common_prefix(names)
    return [v.name[len(prefix) :].lower() for v in f.enum_type.values if v.number]


class Failed(Exception):
    """A command's end other than success: its exit code (the message is
    printed already)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _tty() -> bool:
    return sys.stdout.isatty()


def make_command(d: Derived) -> click.Command:
    def run(**values: Any) -> None:
        conn = connection.resolve(values, tty=_tty())
        request = build_request(d, values)
        with conn.client() as client:
            resolve_names(client, request, values.get("lookup_cluster_id") or "")
            if d.is_list and values.get("watch"):
                _watch_list(client, d, request, conn.output)
                return
            response = _call(client, d, request, every_page=bool(values.get("all")))
            click.echo(output.render(response, conn.output))
            if d.starts_jobs and values.get("wait"):
                job = getattr(response, "job")  # noqa: B009 (a Message has no typed fields)
                if job.id:
                    end = follow_job(client, job.id, quiet=False)
                    click.echo(output.render(job_pb2.InspectJobResponse(job=end), conn.output))
                    job_exit(end)

    command = click.Command(d.verb, callback=run, help=_help(d), no_args_is_help=False)
    params: list[Callable[[Any], Any]] = []
    if d.positional is not None:
        params.append(
            click.argument(d.positional.name, required=False, metavar=d.positional.name.upper())
        )
    params += [_option(f) for f in d.flags]
    if "cluster_id" not in d.request.fields_by_name and any(
        _NAMED.get(k or "", ("", False))[1] for k in (_named_kind(f.name) for f in d.request.fields)
    ):
        params.append(
            click.option(
                "--cluster-id",
                "lookup_cluster_id",
                default=None,
                metavar="CLUSTER",
                help="the cluster (id or name) in which names given for ids are looked up",
            )
        )
    params.append(
        click.option(
            "-d",
            "--data",
            "data",
            default=None,
            metavar="JSON",
            help="the request as JSON, @FILE or - (stdin); flags change it",
        )
    )
    if d.is_update:
        params.append(
            click.option(
                "--update-mask",
                "update_mask",
                default=None,
                metavar="PATHS",
                help="the paths to change, comma-separated (default: the flags given)",
            )
        )
    if d.is_list:
        params.append(click.option("--all", "all", is_flag=True, help="every page"))
        params.append(
            click.option(
                "--watch", "watch", is_flag=True, help="print again each time the store changes"
            )
        )
    if d.starts_jobs:
        params.append(
            click.option(
                "--wait",
                "wait",
                is_flag=True,
                help="follow the job it starts to its end, with progress",
            )
        )
    for param in params:
        command = param(command)
    made: click.Command = connection.options(command)
    return made


def _call(client: Client, d: Derived, request: Message, *, every_page: bool) -> Message:
    response = client.call(d.method, request)
    if not (every_page and d.is_list):
        return response
    listed = output._list_field(response)
    page: Any = response
    asked: Any = request
    while listed is not None and page.next_page_token:
        asked.page_token = page.next_page_token
        more: Any = client.call(d.method, asked)
        getattr(page, listed.name).extend(getattr(more, listed.name))
        page.next_page_token = more.next_page_token
        if more.generation and more.generation < page.generation:
            # The pages together reflect the changes up to the lowest of theirs.
            page.generation = more.generation
    return response


def _watch_list(client: Client, d: Derived, request: Message, out: str) -> None:
    """Prints the list, then again after each change to the store, until
    interrupted."""
    wait = "ClusterService.WaitForGeneration"
    seen = client.call(wait, cluster_pb2.WaitForGenerationRequest(generation=1)).generation  # type: ignore[attr-defined]
    while True:
        response = client.call(d.method, request)
        if out in ("table", "wide") and _tty():
            click.clear()
        if out == "json":  # one line per listing
            click.echo(
                json_format.MessageToJson(response, preserving_proto_field_name=True, indent=None)
            )
        else:
            click.echo(output.render(response, out))
            if out == "yaml":
                click.echo("---")
        while True:
            reply = client.call(
                wait, cluster_pb2.WaitForGenerationRequest(generation=seen + 1, wait_seconds=25)
            )
            if reply.reached:  # type: ignore[attr-defined]
                seen = reply.generation  # type: ignore[attr-defined]
                break


def follow_job(
    client: Client, job_id: str, *, quiet: bool, timeout: float | None = None
) -> job_pb2.Job:
    """Follows a job to its end: a progress bar at a terminal, a line per
    change otherwise (on stderr)."""
    if quiet:
        return client.wait_job(job_id, timeout=timeout)
    if not sys.stderr.isatty():
        return client.wait_job(job_id, on_progress=progress_line, timeout=timeout)
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        transient=False,
    ) as bar:
        task = bar.add_task(job_id[:12], total=100, note="")

        def show(job: job_pb2.Job) -> None:
            state = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
            bar.update(
                task, completed=job.progress.percent, note=f"{state} {job.progress.message}".strip()
            )

        return client.wait_job(job_id, on_progress=show, timeout=timeout)


def progress_line(job: job_pb2.Job) -> None:
    state = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    p = job.progress
    steps = f" {p.done_steps}/{p.total_steps} steps" if p.total_steps else ""
    note = f": {p.message}" if p.message else ""
    print(f"{job.id} {state} {p.percent}%{steps}{note}", file=sys.stderr, flush=True)


def job_exit(job: job_pb2.Job) -> None:
    if job.state == job_pb2.JOB_STATE_FAILED:
        raise Failed(EXIT_JOB_FAILED)
    if job.state == job_pb2.JOB_STATE_CANCELLED:
        raise Failed(EXIT_JOB_CANCELLED)


def groups() -> dict[str, click.Group]:
    """A click group per resource, holding its derived commands."""
    made = {name: click.Group(name, help=text.capitalize() + ".") for name, text in GROUPS.items()}
    for d in derived_commands():
        made[d.group].add_command(make_command(d))
    return made


__all__ = ["CallError", "Failed", "derived_commands", "follow_job", "groups", "make_command"]
