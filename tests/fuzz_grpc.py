"""A gRPC fuzzer driven by the osd.v1 message descriptors.

It enumerates the RPCs of every osd.v1 service and keeps those that create,
update, list, inspect or get, and the few of :data:`CONFINED` that change
state without destroying anything (never one that deletes, ejects, forgets,
drains, reverts, or adds or replaces a drive). It calls them through a real
channel, each with a deadline, with hostile requests built from the request
descriptors by a seeded random generator:

- strings: empty, huge (100 KB), control characters and NUL, odd Unicode,
  and invalid UTF-8 (which protobuf-python refuses to serialize, so the
  fuzzer writes those bytes on the wire itself), and other wire damage:
  unknown fields, truncated or flipped bytes;
- integers at the int32/int64/uint extremes, unknown enum numbers, NaN and
  infinities, and valid but extreme values (an int64 of seconds);
- maps and repeated fields of thousands of entries, nested messages, update
  masks naming anything;
- forged page tokens: random base64, issued tokens with edited bytes or a
  NUL byte, unsigned bodies, tokens of another list or other filters;
- callers that give up at once (a deadline of a millisecond);
- and, often enough that the calls reach past validation, plausible values:
  ids of objects that exist, valid names and labels, coherent durabilities
  and placements, update masks naming the fields set, the page tokens the
  daemon issued; and plausible requests with a single hostile field.

Before the first call it builds a small world of its own (a cluster of three
zones with ``tests.factories.make_topology`` when given the store, or through
the API otherwise; then a pool, replicated volumes, an attachment, a snapshot
image, a template and a datastore version) and every RESTORE_EVERY calls it
brings that world's nodes back ONLINE. Calls that change state only ever
name objects the fuzzer created; ids the daemon lists are used by the
read-only calls alone, so that a run against a shared daemon changes nothing
but what it made.

What fails a run (``Report.failures``):

- a call that answers INTERNAL or UNKNOWN, or UNAVAILABLE from the transport
  (the daemon went away);
- a call that takes more than :data:`SLOW_SECONDS`;
- an error logged by the daemon (its loggers, ``osd.*``) or by grpc's server,
  when the daemon runs in this process: a job or controller failing behind
  a call that answered well;
- the process's resident memory growing more than :data:`RSS_GROWTH_MAX`
  over what it was after the setup (VmRSS of /proc/self/status, which
  measures the daemon when it runs in this process).

Use :func:`run` from a test or a script::

    report = run(channel, store, calls=2000, seed=7)
    assert not report.failures, report.summary()

or run it standalone against an in-process daemon on a temporary SQLite
store (or on ``--database-url``)::

    .venv/bin/python -m tests.fuzz_grpc --seconds 60 [--seed N] [--workers N]
        [--database-url URL] [--per-method]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import json
import logging
import math
import random
import re
import string
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from osd.store.db import Store
from osd.v1 import (
    cluster_pb2,
    datastore_pb2,
    node_pb2,
    pool_pb2,
    service_pb2,
    template_pb2,
    volume_pb2,
)

# -- the bounds a run is held to ---------------------------------------------------

#: A call slower than this is a failure.
SLOW_SECONDS = 2.0
#: The deadline of each call: a hang shows as DEADLINE_EXCEEDED after this.
CALL_TIMEOUT = 10.0
#: Every this many calls the setup's nodes are brought back ONLINE.
RESTORE_EVERY = 250
#: The share of calls made with one of SHORT_DEADLINES instead.
SHORT_DEADLINE_SHARE = 0.03
SHORT_DEADLINES = (0.001, 0.01, 0.1)
#: Resident memory may grow this much over its size after the setup.
RSS_GROWTH_MAX = 300 * 1024 * 1024
#: Every this many calls the report keeps the RSS, to tell a leak from a plateau.
RSS_SAMPLE_CALLS = 1000
#: Statuses that always mean a bug in the daemon.
FAILING_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

SERVICE_MODULES = ("cluster", "node", "pool", "volume", "template", "datastore", "job", "service")
#: The RPCs fuzzed: by the prefix of their name.
FUZZED_PREFIXES = ("Create", "Update", "List", "Inspect", "Get")
#: Prefixes of the RPCs that only read: they may name any object the daemon lists.
READ_PREFIXES = ("List", "Inspect", "Get")
#: Other RPCs fuzzed: they change state but not destructively, and, as every
#: call that changes state, they only ever name objects the fuzzer created.
CONFINED = (
    "SetNodeState",
    "EnterMaintenance",
    "ExitMaintenance",
    "AddPoolMembers",
    "RemovePoolMembers",
    "AttachVolume",
    "DetachVolume",
    "ReassignAttachments",
    "FreezeVolume",
    "RepairVolume",
    "StartPoolRebalance",
    "PauseJob",
    "ResumeJob",
    "CancelJob",
)

# Descriptors as protobuf's runtime (upb) hands them out, which its type
# stubs do not name: a FieldDescriptor and a Descriptor.
FieldDesc = Any
MessageDesc = Any

ID_RE = re.compile(r"[0-9a-f]{32}")
KINDS = (
    "datastore_version",
    "datastore",
    "allocation",
    "attachment",
    "cluster",
    "snapshot",
    "template",
    "volume",
    "drive",
    "node",
    "pool",
    "job",
)


# -- the RPCs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One unary RPC of an osd.v1 service."""

    service: str  # e.g. "osd.v1.VolumeService"
    name: str  # e.g. "CreateVolume"
    input: MessageDesc
    output: MessageDesc

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def read_only(self) -> bool:
        return self.name.startswith(READ_PREFIXES)

    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.input)

    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.output)


def all_rpcs() -> list[Rpc]:
    """Every unary RPC of the osd.v1 services, in a stable order."""
    out: list[Rpc] = []
    for module in SERVICE_MODULES:
        file = importlib.import_module(f"osd.v1.{module}_pb2").DESCRIPTOR
        for service in file.services_by_name.values():
            for method in service.methods:
                if method.client_streaming or method.server_streaming:
                    continue
                out.append(
                    Rpc(service.full_name, method.name, method.input_type, method.output_type)
                )
    return out


def fuzzed_rpcs() -> list[Rpc]:
    """The RPCs a run calls: those that create, update, list, inspect or get,
    and those of :data:`CONFINED`. Never one that deletes, ejects, forgets,
    drains, reverts, or adds or replaces a drive."""
    return [r for r in all_rpcs() if r.name.startswith(FUZZED_PREFIXES) or r.name in CONFINED]


# -- what a run found --------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One thing that must not happen, with the call it happened on (for
    "log", the call during or after which the error was logged)."""

    kind: str  # "status", "unavailable", "slow", "log" or "memory"
    method: str
    code: str
    seconds: float
    request: str
    detail: str = ""
    # The request's bytes and the method's path, to replay the call:
    # channel.unary_unary(path, lambda b: b, lambda b: b)(data, timeout=10)
    data: bytes = field(default=b"", repr=False)
    path: str = ""

    def __str__(self) -> str:
        return (
            f"[{self.kind}] {self.method} -> {self.code} in {self.seconds:.2f}s: "
            f"{self.detail[:300]}\n    request: {self.request}"
        )


@dataclass
class Report:
    """What a run did and found."""

    seed: int
    calls: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    per_method: dict[str, Counter[str]] = field(default_factory=dict)
    per_method_slowest: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    slowest_seconds: float = 0.0
    slowest_method: str = ""
    slowest_request: str = ""
    rss_start: int = 0
    rss_peak: int = 0
    rss_samples: list[tuple[int, int]] = field(default_factory=list)  # (calls, bytes)
    wall_seconds: float = 0.0
    setup_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses.get("OK", 0)

    @property
    def rss_growth(self) -> int:
        return max(0, self.rss_peak - self.rss_start)

    def record(self, method: str, code: str, seconds: float, request: Callable[[], str]) -> None:
        self.calls += 1
        self.statuses[code] += 1
        self.per_method.setdefault(method, Counter())[code] += 1
        self.per_method_slowest[method] = max(self.per_method_slowest.get(method, 0.0), seconds)
        if seconds > self.slowest_seconds:
            self.slowest_seconds, self.slowest_method = seconds, method
            self.slowest_request = request()

    def table(self) -> str:
        """The statuses and the slowest call of each method, one line each."""
        return "\n".join(
            f"  {method:24} {self.per_method_slowest[method] * 1000:5.0f} ms  "
            + ", ".join(f"{k} {v}" for k, v in counts.most_common())
            for method, counts in sorted(self.per_method.items())
        )

    def line(self) -> str:
        """The run in one line: calls, seed, statuses, slowest call, memory, failures."""
        return (
            f"{self.calls} calls in {self.wall_seconds:.0f}s, seed {self.seed}; "
            + ", ".join(f"{k} {v}" for k, v in self.statuses.most_common())
            + f"; slowest {self.slowest_method} {self.slowest_seconds * 1000:.0f} ms"
            + f"; rss +{self.rss_growth / 2**20:.0f} MiB; {len(self.failures)} failures"
        )

    def summary(self, failures_shown: int = 20) -> str:
        rate = self.calls / self.wall_seconds if self.wall_seconds else 0.0
        lines = [
            f"seed {self.seed}: {self.calls} calls in {self.wall_seconds:.1f}s ({rate:.0f}/s), "
            f"{len(self.per_method)} methods",
            "statuses: " + ", ".join(f"{k} {v}" for k, v in self.statuses.most_common()),
            f"slowest: {self.slowest_method} {self.slowest_seconds * 1000:.0f} ms: "
            f"{self.slowest_request}",
            f"rss: {self.rss_start / 2**20:.0f} MiB after setup, peak "
            f"{self.rss_peak / 2**20:.0f} MiB (+{self.rss_growth / 2**20:.1f} MiB)",
        ]
        if self.rss_samples:
            lines.append(
                "rss by calls: "
                + ", ".join(f"{n}: {rss / 2**20:.0f}" for n, rss in self.rss_samples[-12:])
            )
        lines += [f"setup: {note}" for note in self.setup_notes]
        lines.append(f"failures: {len(self.failures)}")
        lines += [str(f) for f in self.failures[:failures_shown]]
        if len(self.failures) > failures_shown:
            lines.append(f"... and {len(self.failures) - failures_shown} more")
        return "\n".join(lines)


def process_rss() -> int:
    """This process's resident memory in bytes (VmRSS), 0 where unknown."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- values ---------------------------------------------------------------------------------

INT32 = (0, 1, -1, 2**31 - 1, -(2**31), 2**31 - 2, 1000, 1001)
INT64 = (0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1, 2**32, 1 << 40, -(1 << 40))
BIG_VALID = (2**31 - 1, 2**31 - 512, 2**53 + 1, 1 << 40, 2**62, 2**63 - 1, 2**63 - 512)
UINT32 = (0, 1, 2**32 - 1, 2**31)
UINT64 = (0, 1, 2**64 - 1, 2**63)
DOUBLES = (0.0, -0.0, 1.0, 0.5, 1.5, -1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324, 1e-9)
HUGE = 100_000
#: A plausible request with one hostile field (see Generator.request).
ONE_FIELD = -1.0
#: How many distinct plausible names a run uses.
PLAUSIBLE_NAMES = 40

HOSTILE_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n",
    "\r\n\t",
    "\x7f\x1b[31m",
    "\u202eevil",
    "\ufeffbom",
    "\u2028",
    "\U0010ffff",
    "\uffff",
    "e\u0301",
    "ǅİß",
    "\uff21\uff22\uff23",  # fullwidth ABC
    "😀" * 10,
    "../../etc/passwd",
    "%s%n%x",
    "' OR 1=1 --",
    '"; DROP TABLE volumes; --',
    "list",
    "status",
    ".",
    "..",
    "*",
    "%",
    "_",
    "\\",
    "null",
    "NaN",
    "-1",
    "9" * 40,
    "a" * 201,
    "A" * 63,
    "a/b",
    "a b",
    " leading",
    "trailing ",
    "0" * 32,
    "f" * 32,
    "F" * 32,
    "0" * 31,
    "0" * 33,
    "g" * 32,
)
HUGE_STRINGS = ("x" * HUGE, "😀" * (HUGE // 4), "\x00" * HUGE, "a." * (HUGE // 2))
SIZES = (
    "1G",
    "512M",
    "2G",
    "10M",
    "1Gi",
    "0",
    "0G",
    "-1G",
    "1.5T",
    "1e3",
    "1E",
    "1Z",
    "9" * 30 + "T",
    "18446744073709551616",
    "9223372036854775807",
    "1 G",
    "1GB",
    "NaN",
    "inf",
    "0x10",
    "\u0661G",  # an Arabic-Indic digit
    "  1G  ",
    "G",
    "1.G",
    ".5G",
    "1e-400G",
    "1" + "0" * 400,
)
REGEXES = (
    "^(a+)+$",
    "(",
    "a{1000}{1000}",
    "a{100000}",
    "\\C",
    "(a)\\1",
    "a(?=b)",
    "(?i)V",
    "^.*$",
    "\\p{Greek}",
    "[[:alpha:]]",
    ".*" * 100,
    "x" * 300,
    "(" * 200 + ")" * 200,
    "[\\x00-\\x{10FFFF}]",
    "\x00",
    "^f",
    "^v",
    "c",
)
DEVICE_PATHS = (
    "/dev/sdb",
    "/dev/sdc",
    "/dev/sdd",
    "/dev/nvme0n1",
    "sdb",
    "/dev/../etc/passwd",
    "/dev/sd\x00b",
    "/",
    "/dev/" + "x" * 5000,
)
ADDRESSES = ("10.0.0.1", "::1", "[::1]:7000", "host.lab", "999.999.999.999", "not an address")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def kind_of(field_name: str, container: str) -> str:
    """The kind of object an id field names ("volume", "drive"...), or "" for any."""
    if field_name == "id":
        return _snake(container)
    base = re.sub(r"_ids?$", "", field_name)
    if base.endswith("version"):
        return "datastore_version"
    for kind in KINDS:
        if base == kind or base.endswith("_" + kind):
            return kind
    return ""


def _is_id_field(name: str) -> bool:
    return name == "id" or name.endswith(("_id", "_ids"))


# -- the wire --------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


INVALID_UTF8 = (
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"a\x80b",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
)


@dataclass
class Request:
    """A request as sent: the message, and the bytes changed on the wire."""

    message: Message
    wire: list[str] = field(default_factory=list)  # what was done to the bytes
    data: bytes = b""

    def describe(self, limit: int = 400) -> str:
        text = describe_message(self.message)
        if self.wire:
            text += " + wire: " + "; ".join(self.wire)
        return text if len(text) <= limit else text[:limit] + "..."


def _short(value: Any) -> str:
    if isinstance(value, str):
        if len(value) > 40:
            return f"<str {len(value)} chars {value[:16]!r}...>"
        return repr(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value)


def describe_message(msg: Message) -> str:
    """A short one-line account of a message: huge values are summarized."""
    parts: list[str] = []
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            items = list(value.items())
            head = ", ".join(f"{_short(k)}: {_short(_plain(v))}" for k, v in items[:2])
            more = f", +{len(items) - 2}" if len(items) > 2 else ""
            parts.append(f"{fd.name}={{{head}{more}}}")
        elif _repeated(fd):
            items = list(value)
            shown = ", ".join(
                describe_message(v) if isinstance(v, Message) else _short(v) for v in items[:2]
            )
            more = f", +{len(items) - 2}" if len(items) > 2 else ""
            parts.append(f"{fd.name}=[{shown}{more}]")
        elif isinstance(value, Message):
            parts.append(f"{fd.name}={{{describe_message(value)}}}")
        else:
            parts.append(f"{fd.name}={_short(value)}")
    return f"{msg.DESCRIPTOR.name}({', '.join(parts)})"


def _plain(value: Any) -> Any:
    return describe_message(value) if isinstance(value, Message) else value


def _repeated(fd: FieldDesc) -> bool:
    return bool(fd.is_repeated)


def _is_map(fd: FieldDesc) -> bool:
    return fd.message_type is not None and bool(fd.message_type.GetOptions().map_entry)


# -- the generator --------------------------------------------------------------------------


@dataclass
class Known:
    """What the fuzzer learned from the daemon's answers."""

    own: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids it created
    seen: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids it was shown
    names: list[str] = field(default_factory=list)
    generations: list[int] = field(default_factory=list)
    tokens: dict[str, list[tuple[bytes, str]]] = field(default_factory=dict)  # path -> (req, tok)

    def add_id(self, kind: str, value: str, own: bool) -> None:
        for pool in (self.own, self.seen) if own else (self.seen,):
            ids = pool.setdefault(kind, [])
            if value not in ids:
                ids.append(value)
                if len(ids) > 200:
                    del ids[1]  # the first (of the setup's topology) stays

    def ids(self, kind: str, read_only: bool) -> list[str]:
        """A copy (other workers may be adding)."""
        pool = self.seen if read_only else self.own
        if kind:
            return list(pool.get(kind, ()))
        return [i for ids in list(pool.values()) for i in list(ids)]

    def issued(self, path: str) -> list[tuple[bytes, str]]:
        return list(self.tokens.get(path, ()))


class Generator:
    """Builds requests from descriptors with a seeded random generator."""

    def __init__(self, rng: random.Random, known: Known) -> None:
        self.rng = rng
        self.known = known

    # -- messages --

    def request(self, rpc: Rpc) -> Request:
        rng = self.rng
        # How hostile this call is: the chance that each field gets a hostile
        # value; ONE_FIELD makes a plausible request with one hostile field.
        hostility = rng.choice((0.0, 0.0, ONE_FIELD, ONE_FIELD, 0.05, 0.15, 0.3, 0.6, 1.0))
        msg = rpc.request_class()()
        self._fill(msg, rpc, max(hostility, 0.0), depth=0, small=False)
        if rpc.name.startswith("List") and rng.random() < 0.25:
            self._continue_a_list(msg, rpc)
        if hostility == ONE_FIELD:
            self._spoil_one_field(msg, rpc)
        derive = hostility <= 0 and "update_mask" in msg.DESCRIPTOR.fields_by_name
        if derive and rng.random() < 0.7:
            self._derive_mask(msg)
        req = Request(msg)
        req.data = msg.SerializeToString()
        if hostility != 0 and rng.random() < 0.15:
            self._tweak_wire(req, rpc)
        return req

    def _derive_mask(self, msg: Message) -> None:
        """Makes the update mask name the fields the request sets, as a client
        (or the REST gateway) derives it: so that the values reach the engine."""
        paths: list[str] = []
        for fd, value in msg.ListFields():
            if fd.name in ("update_mask", "expected_generation") or _is_id_field(fd.name):
                continue
            if isinstance(value, Message) and not _is_map(fd) and self.rng.random() < 0.5:
                paths += [f"{fd.name}.{sub.name}" for sub, _ in value.ListFields()]
            else:
                paths.append(fd.name)
        if paths:
            mask = msg.update_mask  # type: ignore[attr-defined]
            mask.Clear()
            mask.paths.extend(paths)

    def _spoil_one_field(self, msg: Message, rpc: Rpc, depth: int = 0) -> None:
        """Gives one field of ``msg`` (or of a message in it) a hostile value."""
        if not msg.DESCRIPTOR.fields:
            return  # a request of no fields (ListDaemons) has nothing to spoil
        fd: FieldDesc = self.rng.choice(msg.DESCRIPTOR.fields)
        if (
            fd.message_type is not None
            and not _is_map(fd)
            and not _repeated(fd)
            and fd.message_type.full_name != "google.protobuf.FieldMask"
            and depth < 3
            and self.rng.random() < 0.6
        ):
            sub = getattr(msg, fd.name)
            sub.SetInParent()
            self._spoil_one_field(sub, rpc, depth + 1)
            return
        msg.ClearField(fd.name)
        self._set(msg, fd, rpc, 1.0, depth, small=False)

    def _fill(self, msg: Message, rpc: Rpc, hostility: float, depth: int, small: bool) -> None:
        rng = self.rng
        desc = msg.DESCRIPTOR
        if hostility == 0 and desc.full_name in PRESETS and rng.random() < 0.8:
            # A plausible call: a coherent value, so that it gets past validation.
            msg.MergeFrom(rng.choice(PRESETS[desc.full_name])(self))
            return
        for oneof in desc.oneofs:
            # At most one member of a oneof; a later one would clear it anyway.
            members = list(oneof.fields)
            if rng.random() < self._chance(members[0], depth, hostility):
                self._set(msg, rng.choice(members), rpc, hostility, depth, small)
        for fd in desc.fields:
            if fd.containing_oneof is not None:
                continue
            if rng.random() < self._chance(fd, depth, hostility):
                self._set(msg, fd, rpc, hostility, depth, small)

    @staticmethod
    def _chance(fd: FieldDesc, depth: int, hostility: float) -> float:
        """How likely a field is set: plausible calls set the scalars of the
        request itself (names, ids) and leave most of the rest alone."""
        if hostility > 0:
            return 0.85 if depth == 0 else 0.6
        if depth == 0 and fd.message_type is None:
            return 0.6 if _repeated(fd) else 0.9
        return 0.3

    def _set(
        self, msg: Message, fd: FieldDesc, rpc: Rpc, hostility: float, depth: int, small: bool
    ) -> None:
        rng = self.rng
        hostile = rng.random() < hostility
        container = msg.DESCRIPTOR.name
        if _is_map(fd):
            target = getattr(msg, fd.name)
            for k, v in self._map(fd, hostile, small).items():
                target[k] = v
            return
        if fd.message_type is not None and fd.message_type.full_name == "google.protobuf.FieldMask":
            getattr(msg, fd.name).paths.extend(self._mask(rpc, hostile, small))
            return
        if _repeated(fd):
            count = self._count(hostile, small)
            target = getattr(msg, fd.name)
            inner_small = small or count > 20
            if fd.message_type is not None:
                if depth >= 4:
                    return
                for _ in range(count):
                    self._fill(target.add(), rpc, hostility, depth + 1, inner_small)
            else:
                same = rng.random() < 0.3
                first = self._scalar(fd, container, rpc, hostile, inner_small)
                target.extend(
                    first if same else self._scalar(fd, container, rpc, hostile, inner_small)
                    for _ in range(count)
                )
            return
        if fd.message_type is not None:
            if depth >= 4:
                return
            sub = getattr(msg, fd.name)
            sub.SetInParent()
            self._fill(sub, rpc, hostility, depth + 1, small)
            return
        setattr(msg, fd.name, self._scalar(fd, container, rpc, hostile, small))

    def _count(self, hostile: bool, small: bool) -> int:
        rng = self.rng
        if not hostile:
            return rng.choice((0, 1, 1, 2, 3))
        if small:
            return rng.choice((0, 1, 5, 30))
        return rng.choice((0, 1, 65, 1000, 3000, 10_000))

    # -- scalars --

    def _scalar(self, fd: FieldDesc, container: str, rpc: Rpc, hostile: bool, small: bool) -> Any:
        rng = self.rng
        t = fd.type
        if t == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if t == FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in fd.enum_type.values]
            if hostile:
                return rng.choice((-1, max(values) + 1, 99, 2**31 - 1, -(2**31)))
            return rng.choice(values)
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return rng.choice(DOUBLES) if hostile else rng.choice((1.5, 2.0, 10.0))
        if t in (
            FieldDescriptor.TYPE_INT32,
            FieldDescriptor.TYPE_SINT32,
            FieldDescriptor.TYPE_SFIXED32,
        ):
            return rng.choice(INT32) if hostile else self._plausible_int(fd.name, 2**31 - 1)
        if t in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SFIXED64,
        ):
            return rng.choice(INT64) if hostile else self._plausible_int(fd.name, 2**63 - 1)
        if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return rng.choice(UINT32)
        if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return rng.choice(UINT64)
        if t == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.choice((0, 1, 16, 1000)))
        return self._string(fd.name, container, rpc, hostile, small)

    def _plausible_int(self, name: str, top: int) -> int:
        rng = self.rng
        if name == "page_size":
            return rng.choice((0, 1, 1, 2, 3, 100, 1000))
        if name == "expected_generation":
            generations = list(self.known.generations)
            if generations and rng.random() < 0.5:
                return rng.choice(generations)
            return 0
        if rng.random() < 0.1:
            # Valid but extreme: what validation lets through may still
            # overflow further on (a date, a sum, a column).
            return rng.choice([v for v in BIG_VALID if v <= top])
        if name.endswith("bytes"):
            return min(top, rng.choice((0, 1 << 20, 1 << 30, 1 << 30, 2 << 30)))
        if name.endswith("seconds"):
            return rng.choice((0, 1, 60, 3600))
        return rng.choice((0, 1, 2, 3))

    def _string(self, name: str, container: str, rpc: Rpc, hostile: bool, small: bool) -> str:
        rng = self.rng
        if hostile:
            roll = rng.random()
            if roll < 0.08 and not small:
                return rng.choice(HUGE_STRINGS)
            if roll < 0.3 and _is_id_field(name):
                # An id of the wrong kind, or of an object that does not exist.
                ids = self.known.ids("", rpc.read_only)
                return rng.choice(ids) if ids and rng.random() < 0.5 else uuid.uuid4().hex
            if roll < 0.35:
                return "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 64)))
            return rng.choice(HOSTILE_STRINGS)
        if _is_id_field(name):
            ids = self.known.ids(kind_of(name, container), rpc.read_only)
            if ids and rng.random() < 0.85:
                # The first of a kind is the setup's: in the cluster with the drives.
                return ids[0] if rng.random() < 0.5 else rng.choice(ids)
            return rng.choice(("", uuid.uuid4().hex))
        if name == "page_token":
            return self._token(rpc)
        if name == "name_regex":
            return (
                rng.choice(("", "", "^v", "^f", "c", ".*"))
                if rng.random() < 0.7
                else rng.choice(REGEXES)
            )
        if name == "size":
            return rng.choice(SIZES[:4]) if rng.random() < 0.8 else rng.choice(SIZES)
        if name == "device_path" or name.endswith("device_path"):
            return rng.choice(DEVICE_PATHS[:4]) if rng.random() < 0.8 else rng.choice(DEVICE_PATHS)
        if name.endswith("addresses"):
            return rng.choice(ADDRESSES[:4]) if rng.random() < 0.8 else rng.choice(ADDRESSES)
        if name == "zone":
            return rng.choice(("zone0", "zone1", "zone2", "z9"))
        if name in ("name", "datastore", "datastore_name", "manager") or name.endswith("name"):
            names = list(self.known.names)
            if names and rng.random() < 0.3:
                return rng.choice(names)
            # A bounded set, so that a long run meets its own names again
            # (and does not grow the store without end).
            return f"fz-{rng.randrange(PLAUSIBLE_NAMES)}"
        return rng.choice(("", "x", "fuzz", f"v{rng.randrange(100)}"))

    def _map(self, fd: FieldDesc, hostile: bool, small: bool) -> dict[str, str]:
        rng = self.rng
        value_fd = fd.message_type.fields_by_name["value"]
        if value_fd.type != FieldDescriptor.TYPE_STRING:
            return {}
        if not hostile:
            return {f"k{i}": rng.choice(("v", "prod", "", "a-b")) for i in range(rng.randint(0, 3))}
        roll = rng.random()
        if roll < 0.2 and not small:
            n = rng.choice((65, 1000, 5000))
            return {f"key-{i}": f"value-{i}" for i in range(n)}
        if roll < 0.3 and not small:
            return {"k": "v" * HUGE} if rng.random() < 0.5 else {"k" * HUGE: "v"}
        if roll < 0.4 and not small:
            return {f"bad key {i}": "\x00" * 300 for i in range(2000)}
        return {
            rng.choice(HOSTILE_STRINGS): rng.choice(HOSTILE_STRINGS)
            for _ in range(rng.randint(1, 4))
        }

    def _mask(self, rpc: Rpc, hostile: bool, small: bool) -> list[str]:
        rng = self.rng
        names: list[str] = []
        for fd in rpc.input.fields:
            if fd.name in ("update_mask", "expected_generation") or _is_id_field(fd.name):
                continue
            names.append(fd.name)
            if fd.message_type is not None and not _is_map(fd):
                names += [f"{fd.name}.{sub.name}" for sub in fd.message_type.fields]
        if not hostile:
            return rng.sample(names, k=min(len(names), rng.randint(1, 3)))
        roll = rng.random()
        if roll < 0.1 and not small:
            return [f"name{i}" for i in range(3000)]
        if roll < 0.2 and not small:
            return ["x" * HUGE]
        if roll < 0.3:
            return names * 3
        return [
            rng.choice((*HOSTILE_STRINGS[:20], "a..b", "name.", ".name", "labels.k", "id", "*"))
            for _ in range(rng.randint(1, 4))
        ]

    # -- page tokens --

    def _token(self, rpc: Rpc) -> str:
        rng = self.rng
        mine = self.known.issued(rpc.path)
        others = [
            t
            for path in list(self.known.tokens)
            if path != rpc.path
            for _, t in self.known.issued(path)
        ]
        roll = rng.random()
        if roll < 0.45:
            return ""
        if roll < 0.6 and mine:
            return rng.choice(mine)[1]  # issued for this list, maybe with other filters
        if roll < 0.65 and others:
            return rng.choice(others)  # another list's
        return self.forged_token(mine + [(b"", t) for t in others])

    def forged_token(self, issued: Sequence[tuple[bytes, str]]) -> str:
        """A token this daemon did not issue, shaped as one or not."""
        rng = self.rng
        kinds = ["random", "nul", "huge", "odd", "unsigned"]
        if issued:
            kinds += ["edited", "edited", "mac", "appended"]
        kind = rng.choice(kinds)
        token = rng.choice(issued)[1] if issued else ""
        if kind == "random":
            raw = rng.randbytes(rng.choice((1, 16, 64, 300)))
            text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            return text if rng.random() < 0.3 else f"{text}.{_b64(rng.randbytes(16))}"
        if kind == "nul":
            return rng.choice(("\x00", f"{token}\x00", f"\x00.{token}", "a\x00.b"))
        if kind == "huge":
            return rng.choice(("A" * 5000 + "." + "A" * 22, "." * 5000, "A" * HUGE))
        if kind == "odd":
            return rng.choice((".", "..", "a.b", "====.====", " . ", "é.é", "%00.%00", "😀.😀"))
        if kind == "unsigned":
            body: dict[str, Any] = {
                "k": rng.choice(("volume", "cluster", "job", "node", 1, None)),
                "f": rng.choice(("0" * 16, "", None)),
                "t": rng.choice((int(time.time()), -1, 2**70, "now", None)),
                "a": rng.choice(({"c": "\x00", "n": "\x00"}, {"name": 1}, [], None, {"t": "x"})),
            }
            return f"{_b64(json.dumps(body).encode())}.{_b64(rng.randbytes(16))}"
        head = token.partition(".")[0]
        if kind == "mac":
            return f"{head}.{_b64(rng.randbytes(16))}"
        if kind == "appended":
            return token + rng.choice(("x", "=", "==", ".x", " "))
        # Edited: change one character of the body or the MAC.
        chars = list(token)
        i = rng.randrange(len(chars))
        chars[i] = rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        return "".join(chars)

    def _continue_a_list(self, msg: Message, rpc: Rpc) -> None:
        """Makes ``msg`` the next page of a list the daemon paged before."""
        issued = self.known.issued(rpc.path)
        if not issued:
            return
        data, token = self.rng.choice(issued)
        msg.Clear()
        msg.ParseFromString(data)
        msg.page_token = token  # type: ignore[attr-defined]

    # -- the wire --

    def _tweak_wire(self, req: Request, rpc: Rpc) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            path = self._string_path(rpc.input)
            if path:
                bad = rng.choice(INVALID_UTF8)
                payload = bad
                *parents, leaf = path
                payload = _length_delimited(leaf.number, bad)
                for parent in reversed(parents):
                    payload = _length_delimited(parent.number, payload)
                req.data += payload
                req.wire.append(f"{'.'.join(f.name for f in path)} = {bad!r} (not UTF-8)")
                return
        if roll < 0.65:
            number = rng.choice((99, 1000, 536_870_911))
            req.data += _varint(number << 3 | 0) + _varint(rng.getrandbits(64))
            req.wire.append(f"unknown field {number}")
            return
        if roll < 0.8 and req.data:
            cut = rng.randrange(len(req.data))
            req.data = req.data[:cut]
            req.wire.append(f"truncated to {cut} bytes")
            return
        if roll < 0.95 and req.data:
            data = bytearray(req.data)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            req.data = bytes(data)
            req.wire.append("bytes flipped")
            return
        req.data = rng.randbytes(rng.choice((1, 10, 1000)))
        req.wire.append(f"{len(req.data)} random bytes")

    def _string_path(self, desc: MessageDesc, depth: int = 0) -> list[FieldDesc]:
        """A path of fields to a string field of ``desc`` (through maps and messages)."""
        rng = self.rng
        candidates = [
            fd
            for fd in desc.fields
            if fd.type == FieldDescriptor.TYPE_STRING or (fd.message_type is not None and depth < 3)
        ]
        rng.shuffle(candidates)
        for fd in candidates:
            if fd.type == FieldDescriptor.TYPE_STRING:
                return [fd]
            rest = self._string_path(fd.message_type, depth + 1)
            if rest:
                return [fd, *rest]
        return []


def _own(gen: Generator, kind: str) -> str:
    ids = gen.known.own.get(kind, [])
    return gen.rng.choice(ids) if ids else ""


#: Coherent values of the shaping messages, for plausible calls.
PRESETS: dict[str, list[Callable[[Generator], Message]]] = {
    "osd.v1.Durability": [
        lambda g: volume_pb2.Durability(type=volume_pb2.DURABILITY_TYPE_NONE),
        lambda g: volume_pb2.Durability(
            type=volume_pb2.DURABILITY_TYPE_REPLICATE, replicas=g.rng.choice((2, 3))
        ),
        lambda g: volume_pb2.Durability(
            type=volume_pb2.DURABILITY_TYPE_ERASURE, data_fragments=2, redundancy_fragments=1
        ),
    ],
    "osd.v1.Placement": [
        lambda g: volume_pb2.Placement(),
        lambda g: volume_pb2.Placement(
            failure_domain=g.rng.choice(
                (volume_pb2.FAILURE_DOMAIN_DRIVE, volume_pb2.FAILURE_DOMAIN_NODE)
            )
        ),
        lambda g: volume_pb2.Placement(pool_id=_own(g, "pool")),
    ],
    "osd.v1.Qos": [
        lambda g: volume_pb2.Qos(),
        lambda g: volume_pb2.Qos(iops_limit=1000, bandwidth_limit_bytes=100 << 20),
    ],
    "osd.v1.VolumeSource": [
        lambda g: volume_pb2.VolumeSource(snapshot_id=_own(g, "snapshot")),
        lambda g: volume_pb2.VolumeSource(volume_id=_own(g, "volume")),
        lambda g: volume_pb2.VolumeSource(datastore_version_id=_own(g, "datastore_version")),
    ],
    "osd.v1.RepairPolicy": [
        lambda g: cluster_pb2.RepairPolicy(paused=g.rng.random() < 0.5),
        lambda g: cluster_pb2.RepairPolicy(delay_seconds=60, max_repairs=2),
    ],
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- the run -------------------------------------------------------------------------------


class LogWatch(logging.Handler):
    """Keeps the errors the daemon and grpc's server log: a job or a controller
    that fails behind a call that answered well, or a call that failed after
    its caller stopped waiting."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("osd", "grpc._server")):
            self._records.append(record)

    def take(self) -> list[logging.LogRecord]:
        taken, self._records = self._records, []
        return taken

    @staticmethod
    def describe(record: logging.LogRecord) -> str:
        text = f"{record.name} ({record.threadName}): {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f": {type(exc).__name__}: {exc}"
        return text


class Fuzzer:
    """Calls the fuzzed RPCs with hostile requests and keeps a :class:`Report`."""

    def __init__(
        self,
        channel: grpc.Channel,
        store: Store | None = None,
        seed: int = 0,
        rpcs: Sequence[Rpc] | None = None,
        rss: Callable[[], int] = process_rss,
        rss_growth_max: int = RSS_GROWTH_MAX,
        slow_seconds: float = SLOW_SECONDS,
        timeout: float = CALL_TIMEOUT,
        watch_logs: bool = True,
        workers: int = 1,
    ) -> None:
        self.channel = channel
        self.store = store
        self.seed = seed
        self.rng = random.Random(seed)
        self.known = Known()
        self.generator = Generator(self.rng, self.known)
        self.rpcs = list(rpcs if rpcs is not None else fuzzed_rpcs())
        self.rss = rss
        self.rss_growth_max = rss_growth_max
        self.slow_seconds = slow_seconds
        self.timeout = timeout
        self.report = Report(seed)
        self._memory_reported = False
        self._logs = LogWatch() if watch_logs else None
        self.workers = workers
        self._lock = threading.RLock()  # over the report and what was learned
        self._claimed = 0  # calls the workers took on
        self._setup_nodes: list[str] = []
        self._callables = {
            r.path: channel.unary_unary(
                r.path, request_serializer=_identity, response_deserializer=_identity
            )
            for r in self.rpcs
        }

    # -- setup --

    def setup(self) -> None:
        """A small topology of the fuzzer's own, and an object of each kind on
        it; what could not be made is said in ``report.setup_notes``."""
        tag = f"fz{self.rng.randrange(16**6):06x}"
        ch = self.channel
        clusters = _stub(ch, cluster_pb2, "ClusterService")
        nodes = _stub(ch, node_pb2, "NodeService")
        pools = _stub(ch, pool_pb2, "PoolService")
        volumes = _stub(ch, volume_pb2, "VolumeService")
        templates = _stub(ch, template_pb2, "TemplateService")
        datastores = _stub(ch, datastore_pb2, "DatastoreService")

        def step(what: str, method: Callable[..., Any], request: Message) -> Any:
            try:
                reply = method(request, timeout=30)
            except grpc.RpcError as exc:
                self.report.setup_notes.append(f"{what}: {exc.code().name} {exc.details()}")
                return None
            self._learn(reply, own=True)
            return reply

        node_ids: list[str] = []
        drive_ids: list[str] = []
        if self.store is not None:
            from tests.factories import make_topology

            cluster_id, node_ids, drive_ids = make_topology(self.store, cluster_name=f"{tag}-c0")
            for kind, ids in (("cluster", [cluster_id]), ("node", node_ids), ("drive", drive_ids)):
                for object_id in ids:
                    self.known.add_id(kind, object_id, own=True)
        else:
            made = step(
                "cluster",
                clusters.CreateCluster,
                cluster_pb2.CreateClusterRequest(name=f"{tag}-c0"),
            )
            if made is None:
                return
            cluster_id = made.cluster.id
            for z in range(3):
                node = step(
                    "node",
                    nodes.CreateNode,
                    node_pb2.CreateNodeRequest(
                        cluster_id=cluster_id,
                        name=f"{tag}-n{z}",
                        zone=f"zone{z}",
                        management_addresses=[f"{tag}-n{z}.lab"],
                    ),
                )
                if node is None:
                    continue
                node_ids.append(node.node.id)
                for dev in ("/dev/sdb", "/dev/sdc"):
                    drive = step(
                        "drive",
                        nodes.CreateDrive,
                        node_pb2.CreateDriveRequest(
                            node_id=node.node.id, device_path=dev, yes_i_really_mean_it=True
                        ),
                    )
                    if drive is not None:
                        drive_ids.append(drive.drive.id)
        self._setup_nodes = list(node_ids)
        for i in (1, 2):
            step(
                "cluster",
                clusters.CreateCluster,
                cluster_pb2.CreateClusterRequest(name=f"{tag}-c{i}"),
            )
        step(
            "pool",
            pools.CreatePool,
            pool_pb2.CreatePoolRequest(
                cluster_id=cluster_id, name=f"{tag}-p0", drive_ids=drive_ids[:3]
            ),
        )
        step(
            "pool",
            pools.CreatePool,
            pool_pb2.CreatePoolRequest(
                cluster_id=cluster_id, name=f"{tag}-p1", node_ids=node_ids[:1]
            ),
        )
        volume_ids: list[str] = []
        for i in range(3):
            made = step(
                "volume",
                volumes.CreateVolume,
                volume_pb2.CreateVolumeRequest(
                    cluster_id=cluster_id,
                    name=f"{tag}-v{i}",
                    size="1G",
                    labels={"fuzz": tag},
                    # Copies on several nodes: a node that goes away degrades it.
                    durability=volume_pb2.Durability(
                        type=volume_pb2.DURABILITY_TYPE_REPLICATE, replicas=2
                    ),
                ),
            )
            if made is not None:
                volume_ids.append(made.volume.id)
        for i in range(2):
            step(
                "template",
                templates.CreateTemplate,
                template_pb2.CreateTemplateRequest(
                    cluster_id=cluster_id, name=f"{tag}-t{i}", size="1G"
                ),
            )
        if not volume_ids:
            return
        if node_ids:
            step(
                "attachment",
                volumes.AttachVolume,
                volume_pb2.AttachVolumeRequest(
                    volume_id=volume_ids[0],
                    node_id=node_ids[0],
                    mode=volume_pb2.ATTACH_MODE_READ_WRITE,
                ),
            )
        snaps = [
            step(
                "snapshot",
                volumes.CreateSnapshot,
                volume_pb2.CreateSnapshotRequest(volume_id=volume_ids[0], name=f"{tag}-s{i}"),
            )
            for i in range(2)
        ]
        if snaps[0] is None:
            return
        image_id = snaps[0].snapshot.id
        step(
            "image",
            volumes.UpdateSnapshot,
            volume_pb2.UpdateSnapshotRequest(
                snapshot_id=image_id,
                image=True,
                update_mask=field_mask_pb2.FieldMask(paths=["image"]),
            ),
        )
        for version in ("1.0", "2.0"):
            step(
                "datastore version",
                datastores.CreateDatastoreVersion,
                datastore_pb2.CreateDatastoreVersionRequest(
                    datastore=f"{tag}-db", name=version, manager="mysql", image_snapshot_id=image_id
                ),
            )

    # -- calls --

    def call(self, rpc: Rpc, generator: Generator | None = None) -> None:
        """One fuzzed call of ``rpc``: recorded, and judged."""
        # What the generator reads of Known, it copies: no lock needed.
        req = (generator or self.generator).request(rpc)
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        details = ""
        reply: bytes | None = None
        transport_only = False
        timeout = self.timeout
        if (generator or self.generator).rng.random() < SHORT_DEADLINE_SHARE:
            # A caller that gives up at once: the daemon goes on without it.
            timeout = (generator or self.generator).rng.choice(SHORT_DEADLINES)
        try:
            reply = self._callables[rpc.path](req.data, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            details = exc.details() or ""
            transport_only = rpc_status.from_call(exc) is None
        seconds = time.perf_counter() - start
        with self._lock:
            self._judge(rpc, req, code, details, transport_only, seconds, reply)

    def _judge(
        self,
        rpc: Rpc,
        req: Request,
        code: grpc.StatusCode,
        details: str,
        transport_only: bool,
        seconds: float,
        reply: bytes | None,
    ) -> None:
        report = self.report
        report.record(rpc.name, code.name, seconds, req.describe)
        if code in FAILING_CODES:
            self._fail("status", rpc, code.name, seconds, req, details)
        elif code == grpc.StatusCode.UNAVAILABLE and transport_only:
            self._fail("unavailable", rpc, code.name, seconds, req, details)
        if seconds > self.slow_seconds:
            self._fail("slow", rpc, code.name, seconds, req, details)
        rss = self.rss()
        report.rss_peak = max(report.rss_peak, rss)
        if report.calls % RSS_SAMPLE_CALLS == 0:
            report.rss_samples.append((report.calls, rss))
        if rss - report.rss_start > self.rss_growth_max and not self._memory_reported:
            self._memory_reported = True
            growth = (rss - report.rss_start) / 2**20
            self._fail("memory", rpc, code.name, seconds, req, f"RSS grew {growth:.0f} MiB")
        self._check_logs(rpc.name, seconds, req.describe, reported=code in FAILING_CODES)
        if reply is not None:
            self._learn_reply(rpc, req, reply)

    def _check_logs(
        self, method: str, seconds: float, request: Callable[[], str], reported: bool = False
    ) -> None:
        """Errors the daemon logged: during the last call, or behind it. The
        access log's line of a failed call is left out when the caller saw the
        failure (``reported``)."""
        if self._logs is None:
            return
        for record in self._logs.take():
            if reported and record.name == "osd.access":
                continue
            self.report.failures.append(
                Failure(
                    "log", method, record.levelname, seconds, request(), LogWatch.describe(record)
                )
            )

    def _fail(
        self, kind: str, rpc: Rpc, code: str, seconds: float, req: Request, detail: str
    ) -> None:
        self.report.failures.append(
            Failure(kind, rpc.name, code, seconds, req.describe(), detail[:500], req.data, rpc.path)
        )

    def _learn_reply(self, rpc: Rpc, req: Request, data: bytes) -> None:
        try:
            reply = rpc.response_class().FromString(data)
        except DecodeError:
            return
        created = getattr(reply, "created", True) if rpc.name.startswith("Create") else False
        self._learn(reply, own=bool(created))
        token = getattr(reply, "next_page_token", "")
        if token and not req.wire and len(req.data) < 4096:
            issued = self.known.tokens.setdefault(rpc.path, [])
            issued.append((req.data, token))
            if len(issued) > 20:
                del issued[0]

    def _learn(self, msg: Message, own: bool) -> None:
        """Takes in the ids, names and generations of an answer."""
        container = msg.DESCRIPTOR.name
        for fd, value in msg.ListFields():
            if _is_map(fd):
                continue
            values = list(value) if _repeated(fd) else [value]
            for item in values:
                if isinstance(item, Message):
                    self._learn(item, own)
                elif isinstance(item, str):
                    if _is_id_field(fd.name) and ID_RE.fullmatch(item):
                        kind = kind_of(fd.name, container)
                        # Only the object itself is the fuzzer's: not those it names.
                        self.known.add_id(kind, item, own and fd.name == "id")
                    elif fd.name == "name" and own and item not in self.known.names:
                        self.known.names.append(item)
                elif fd.name == "generation" and isinstance(item, int) and item > 0:
                    self.known.generations.append(item)
                    del self.known.generations[:-50]

    # -- the loop --

    def _work(self, generator: Generator, end: float | None, calls: int | None) -> None:
        """One worker's calls: the RPCs in turn, each round in a new order."""
        while True:
            order = list(self.rpcs)
            generator.rng.shuffle(order)
            for rpc in order:
                with self._lock:
                    if calls is not None and self._claimed >= calls:
                        return
                    self._claimed += 1
                    restore = self._claimed % RESTORE_EVERY == 0
                if end is not None and time.monotonic() >= end:
                    return
                if restore:
                    self.restore()
                self.call(rpc, generator)

    def restore(self) -> None:
        """Brings the setup's nodes back ONLINE (out of maintenance), so that a
        long run does not drift into a world where nothing can be placed. Its
        calls are not fuzzed, and not counted."""
        nodes = _stub(self.channel, node_pb2, "NodeService")
        service = _stub(self.channel, service_pb2, "Service")
        for node_id in self._setup_nodes:
            with contextlib.suppress(grpc.RpcError):
                service.ExitMaintenance(
                    service_pb2.ExitMaintenanceRequest(node_id=node_id), timeout=10
                )
            with contextlib.suppress(grpc.RpcError):
                nodes.SetNodeState(
                    node_pb2.SetNodeStateRequest(node_id=node_id, state=node_pb2.NODE_STATE_ONLINE),
                    timeout=10,
                )

    def run(self, seconds: float | None = None, calls: int | None = None) -> Report:
        """Calls the RPCs in turn (each round in a new random order) until
        ``seconds`` have passed or ``calls`` calls were made; with several
        ``workers``, from as many threads at once (each with its own random
        generator, seeded from the run's)."""
        if seconds is None and calls is None:
            raise ValueError("give seconds, calls or both")
        report = self.report
        start = time.monotonic()
        daemon_log = logging.getLogger()  # the root: osd's loggers and grpc's
        if self._logs is not None:
            daemon_log.addHandler(self._logs)
        end = None if seconds is None else start + seconds
        try:
            self.setup()
            self._check_logs("(setup)", 0.0, lambda: "")
            report.rss_start = report.rss_peak = self.rss()
            if self.workers <= 1:
                self._work(self.generator, end, calls)
                return report
            threads = [
                threading.Thread(
                    target=self._work,
                    args=(Generator(random.Random(f"{self.seed}/{i}"), self.known), end, calls),
                    name=f"fuzz-{i}",
                )
                for i in range(self.workers)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return report
        finally:
            report.wall_seconds = time.monotonic() - start
            if self._logs is not None:
                self._check_logs("(after the last call)", 0.0, lambda: "")
                daemon_log.removeHandler(self._logs)


def run(
    channel: grpc.Channel,
    store: Store | None = None,
    seconds: float | None = None,
    calls: int | None = None,
    seed: int = 0,
    *,
    rpcs: Sequence[Rpc] | None = None,
    rss: Callable[[], int] = process_rss,
    workers: int = 1,
) -> Report:
    """Fuzzes the daemon behind ``channel``; returns what happened.

    ``store`` is the daemon's store when at hand: the topology is then made
    in it directly (else through the API). The run stops after ``seconds``
    or ``calls`` calls, whichever comes first (give at least one); the calls
    go to the RPCs of ``rpcs`` (by default :func:`fuzzed_rpcs`) in turn, so a
    number of calls that is a multiple of their count calls each as often.
    ``rss`` gives the daemon's resident memory (by default this process's,
    for a daemon in this process; ``lambda: 0`` for one elsewhere).
    ``workers`` calls from that many threads at once (races; the choices of
    each thread stay seeded, but the interleaving is not).
    ``report.failures`` lists what must not happen; ``report.summary()`` says it.
    """
    return Fuzzer(channel, store, seed, rpcs, rss, workers=workers).run(seconds, calls)


def _identity(data: bytes) -> bytes:
    return data


def _stub(channel: grpc.Channel, module: Any, service: str) -> Any:
    grpc_module = importlib.import_module(f"{module.__name__}_grpc")
    return getattr(grpc_module, f"{service}Stub")(channel)


# -- standalone -------------------------------------------------------------------------


@contextlib.contextmanager
def _daemon(database_url: str | None) -> Iterator[Any]:
    from tests.conftest import Database, running_daemon

    with contextlib.ExitStack() as stack:
        if database_url is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="osd-fuzz-"))
            database_url = f"sqlite:///{Path(tmp) / 'osd.db'}"
        store = Store(database_url)
        try:
            store.upgrade()
        finally:
            store.close()
        backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
        yield stack.enter_context(running_daemon(Database(backend, database_url)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz_grpc",
        description="Fuzz an in-process osd daemon through its gRPC API.",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (60)")
    parser.add_argument("--calls", type=int, default=None, help="stop after this many calls")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--workers", type=int, default=1, help="threads calling at once (default 1)"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="the daemon's store (default: a new SQLite store in a temporary folder)",
    )
    parser.add_argument(
        "--per-method", action="store_true", help="also print the statuses of each method"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    # The daemon's tracebacks (of INTERNAL answers) go to stderr; its access log does not.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with _daemon(args.database_url) as d:
        report = run(
            d.channel,
            d.store,
            seconds=args.seconds,
            calls=args.calls,
            seed=seed,
            workers=args.workers,
        )
    print(report.summary())
    if args.per_method:
        print(report.table())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
