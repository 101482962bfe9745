"""The audit trail: which calls are recorded, how, and for how long.

A call is recorded when it may change something (its RPC's role is user or
admin, and it is not an Inspect, List or Get), whatever its outcome, and when
it was refused UNAUTHENTICATED or PERMISSION_DENIED. Each record is also one
JSON line on the "osd.audit" logger. Credentials never reach a record: the
caller is kept as subject, roles, issuer and how it authenticated.

Records are written after the call, in a transaction of their own, and the
call answers once its record is stored. Calls that end together share that
transaction (a group commit, :class:`GroupWriter`): under load, one write
stores the records of every call that ended while the last was being
written. A record that cannot be written (the store is closing or down) is
logged and dropped, never turned into a failure of a call that has already
happened.

Anyone who reaches the port can make UNAUTHENTICATED refusals, so they cannot
be allowed to fill the store: they are recorded one by one up to a rate
(``unauthenticated_per_second``, with a burst), and past it they are folded
into one record per method whose ``count`` says how many calls it stands for,
written every ``FOLD_SECONDS``. Ids named by a caller that did not
authenticate are not recorded at all, and no record keeps more than
``MAX_TARGETS`` ids.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from osd.engine.shared import paging
from osd.engine.shared.models import Page
from osd.engine.shared.periodic import Periodic
from osd.errors import InvalidArgument
from osd.store import audit as repo
from osd.store.db import Store
from osd.store.models import AuditRow

log = logging.getLogger("osd.audit")
T = TypeVar("T")

# grpc.StatusCode values by number: OK 0 ... UNAUTHENTICATED 16.
CODE_NAMES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]
PERMISSION_DENIED = 7
UNAUTHENTICATED = 16
_ID = re.compile(r"[0-9a-f]{32}")
PRUNE_INTERVAL_SECONDS = 3600.0
FOLD_SECONDS = 10.0
MAX_TARGETS = 64


@dataclass(frozen=True)
class AuditEntry:
    subject: str
    roles: tuple[str, ...]
    via: str
    issuer: str
    method: str  # "osd.v1.VolumeService/DeleteVolume"
    target_ids: tuple[str, ...]
    code: int
    request_id: str
    count: int = 1


@dataclass(frozen=True)
class AuditRecord:
    id: str
    time: datetime
    subject: str
    roles: tuple[str, ...]
    via: str
    issuer: str
    method: str
    target_ids: tuple[str, ...]
    code: int
    request_id: str
    count: int = 1


@dataclass(frozen=True)
class AuditQuery:
    page_size: int = 0
    page_token: str = ""
    subject: str = ""
    method: str = ""
    target_id: str = ""
    codes: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


_READS = ("Inspect", "List", "Get")


def audited(method: str, required_role: str | None, code: int) -> bool:
    """Whether a call of ``method`` ("osd.v1.X/Name"), which needs
    ``required_role``, that ended with ``code`` is recorded: calls that may
    change something (not Inspect, List or Get; not view), and refusals."""
    if code in (PERMISSION_DENIED, UNAUTHENTICATED):
        return True
    name = method.rsplit("/", 1)[-1]
    return required_role in ("user", "admin") and not name.startswith(_READS)


def ids_in(values: Iterable[str]) -> tuple[str, ...]:
    """The values that are object ids (32 hex digits), each once, in order,
    at most ``MAX_TARGETS`` of them."""
    out: dict[str, None] = {}
    for v in values:
        if _ID.fullmatch(v):
            out[v] = None
            if len(out) == MAX_TARGETS:
                break
    return tuple(out)


class _Bucket:
    """A token bucket: ``take()`` is True at most ``rate`` times a second on
    average, and ``burst`` times at once. Not thread-safe on its own."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _Slot(Generic[T]):
    """One caller's item in a :class:`GroupWriter`, and what became of it."""

    __slots__ = ("error", "item", "lead", "ready")

    def __init__(self, item: T) -> None:
        self.item = item
        self.ready = threading.Event()
        self.lead = False  # this caller writes the next batch
        self.error: BaseException | None = None


class GroupWriter(Generic[T]):
    """Writes items in batches, each caller waiting until its item is written.

    The first caller writes; callers that come meanwhile queue, and when the
    write ends the first of them writes the whole queue in one batch, and so
    on. A caller waits for at most one write before its own, and one write
    stands for as many callers as ended during the last.
    """

    def __init__(self, write: Callable[[list[T]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._queue: list[_Slot[T]] = []
        self._busy = False

    def submit(self, item: T) -> None:
        """Returns once ``item`` is written; raises what its batch's write raised."""
        slot = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.ready.wait()
            if not slot.lead:
                if slot.error is not None:
                    raise slot.error
                return
        with self._lock:
            batch, self._queue = self._queue, []
        error: BaseException | None = None
        try:
            self._write([s.item for s in batch])
        except BaseException as exc:  # the callers waiting on it must hear of it
            error = exc
        for other in batch:
            if other is not slot:
                other.error = error
                other.ready.set()
        with self._lock:
            if self._queue:
                nxt = self._queue[0]
                nxt.lead = True
                nxt.ready.set()
            else:
                self._busy = False
        if error is not None:
            raise error


class AuditLog:
    def __init__(
        self,
        store: Store,
        *,
        retention_days: float = 90.0,
        unauthenticated_per_second: float = 5.0,
        unauthenticated_burst: int = 50,
    ) -> None:
        self.store = store
        self.retention = timedelta(days=retention_days)
        self._pruner = Periodic("osd-audit-prune", PRUNE_INTERVAL_SECONDS, self.prune)
        self._folder = Periodic("osd-audit-fold", FOLD_SECONDS, self.flush)
        self._lock = threading.Lock()
        self._bucket = _Bucket(unauthenticated_per_second, unauthenticated_burst)
        self._folded: dict[str, int] = {}
        self._writer: GroupWriter[tuple[AuditRow, Sequence[str]]] = GroupWriter(self._store_batch)

    def limit_unauthenticated(self, per_second: float, burst: int) -> None:
        """Sets how many UNAUTHENTICATED refusals are recorded one by one."""
        with self._lock:
            self._bucket = _Bucket(per_second, burst)

    # -- writing -------------------------------------------------------------------

    def record(self, entry: AuditEntry) -> None:
        """Writes the record and its log line, or folds an UNAUTHENTICATED
        refusal past the rate into its method's count; never raises."""
        if entry.code == UNAUTHENTICATED:
            with self._lock:
                if not self._bucket.take():
                    self._folded[entry.method] = self._folded.get(entry.method, 0) + 1
                    return
        self._write(entry)

    def flush(self) -> int:
        """Writes one record per method for the refusals folded since the last
        flush; returns how many calls they stand for."""
        with self._lock:
            folded, self._folded = self._folded, {}
        for method, count in sorted(folded.items()):
            self._write(
                AuditEntry(
                    subject="",
                    roles=(),
                    via="none",
                    issuer="",
                    method=method,
                    target_ids=(),
                    code=UNAUTHENTICATED,
                    request_id="",
                    count=count,
                )
            )
        return sum(folded.values())

    def _write(self, entry: AuditEntry) -> None:
        now = datetime.now(UTC)
        log.info(
            json.dumps(
                {
                    "time": now.isoformat(timespec="milliseconds"),
                    "request_id": entry.request_id,
                    "subject": entry.subject,
                    "roles": list(entry.roles),
                    "via": entry.via,
                    "method": entry.method,
                    "targets": list(entry.target_ids),
                    "code": CODE_NAMES[entry.code] if 0 <= entry.code < 17 else str(entry.code),
                    "count": entry.count,
                },
                separators=(",", ":"),
            )
        )
        row = AuditRow(
            id=uuid.uuid4().hex,
            time=now,
            subject=entry.subject[:200],
            roles=sorted(entry.roles),
            via=entry.via[:16],
            issuer=entry.issuer[:200],
            method=entry.method[:200],
            code=entry.code,
            request_id=entry.request_id[:128],
            count=entry.count,
        )
        try:
            self._writer.submit((row, entry.target_ids[:MAX_TARGETS]))
        except Exception as exc:
            log.warning("audit record of %s not stored: %s", entry.request_id, exc)

    def _store_batch(self, records: list[tuple[AuditRow, Sequence[str]]]) -> None:
        with self.store.write() as s:
            repo.add(s, records)

    # -- reading -------------------------------------------------------------------

    def list(self, query: AuditQuery) -> Page[AuditRecord]:
        size = paging.page_size(query.page_size)
        pages = paging.pager(self.store.page_key, "audit record", query)
        key = pages.after(query.page_token)
        after: tuple[datetime, str] | None = None
        if key is not None:
            try:
                after = (datetime.fromisoformat(str(key["t"])), str(key["i"]))
            except (KeyError, ValueError, TypeError):
                raise InvalidArgument.field(
                    "page_token", "is not a page token this server issued"
                ) from None
        if query.target_id and not _ID.fullmatch(query.target_id):
            raise InvalidArgument.field("target_id", "is not an id (32 hex characters)")
        for code in query.codes:
            if not 0 <= code < len(CODE_NAMES):
                raise InvalidArgument.field("codes", f"{code} is not a status code")
        where = repo.AuditFilter(
            subject=query.subject,
            method=query.method,
            target_id=query.target_id,
            codes=tuple(query.codes),
            since=query.since,
            until=query.until,
        )
        with self.store.read() as s:
            rows, token = pages.take(
                repo.scan(s, where, after, size + 1),
                size,
                lambda _r: True,
                lambda r: {"t": r[0].time.isoformat(), "i": r[0].id},
            )
            return Page(
                [
                    AuditRecord(
                        id=r.id,
                        time=r.time,
                        subject=r.subject,
                        roles=tuple(r.roles),
                        via=r.via,
                        issuer=r.issuer,
                        method=r.method,
                        target_ids=tuple(targets),
                        code=r.code,
                        request_id=r.request_id,
                        count=r.count,
                    )
                    for r, targets in rows
                ],
                token,
            )

    # -- pruning -------------------------------------------------------------------

    def prune(self, now: datetime | None = None) -> int:
        """Deletes the records older than the retention; returns how many."""
        before = (now or datetime.now(UTC)) - self.retention
        with self.store.write() as s:
            gone = repo.prune(s, before)
        if gone:
            log.info("pruned %d audit record(s) older than %s", gone, before.isoformat())
        return gone

    def start(self) -> None:
        self.start_folding()
        self.start_pruning()

    def start_folding(self) -> None:
        """Writes the refusals folded in this process every few seconds."""
        self._folder.start()

    def start_pruning(self) -> None:
        """Deletes the records past their retention, now and then."""
        self._pruner.start()

    def close(self, timeout: float) -> None:
        self._pruner.close(timeout)
        self._folder.close(timeout)
        self.flush()
