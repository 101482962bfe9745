"""The audit trail, over gRPC and again through the REST gateway: what is
recorded, how admins list it, and that it keeps no secret."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from google.rpc import code_pb2

from osd.engine.access.audit import GroupWriter
from osd.v1 import audit_pb2, pool_pb2
from tests.auth_helpers import (
    OK,
    PERMISSION_DENIED,
    Call,
    Wire,
    World,
    bearer,
    create_cluster,
    list_clusters,
    token,
)
from tests.test_ownership import create, delete, inspect, list_volumes, who


def list_audit(**kw: Any) -> Call:
    req = audit_pb2.ListAuditRecordsRequest(**kw)
    query = []
    for key, value in kw.items():
        if key in ("since", "until"):
            value = value.ToJsonString()
        for item in value if isinstance(value, list) else [value]:
            name = code_pb2.Code.Name(item) if key == "codes" else item
            query.append(f"{key}={name}")
    return Call(
        "/osd.v1.AuditService/ListAuditRecords",
        req,
        audit_pb2.ListAuditRecordsResponse,
        "GET",
        "/v1/audit?" + "&".join(query),
    )


def records(wire: Wire, w: World, **kw: Any) -> list[dict[str, Any]]:
    answer = wire(w, list_audit(**kw), who(w, "root", "admin"))
    assert answer.code == OK, answer
    assert answer.body is not None
    return list(answer.body.get("records", []))


def test_changes_and_refusals_are_recorded_and_reads_are_not(w: World, wire: Wire) -> None:
    alice, bob, dan = who(w, "alice"), who(w, "bob"), who(w, "dan", "view")
    volume = w_ok(wire, w, create(w.cluster_id, "audited"), alice)["volume"]
    assert wire(w, inspect(volume["id"]), alice).code == OK  # a read: not recorded
    assert wire(w, list_volumes(), alice).code == OK
    assert wire(w, delete(volume["id"]), bob).code == "NOT_FOUND"
    assert wire(w, create_cluster("nope"), dan).code == PERMISSION_DENIED
    assert wire(w, list_clusters(), {}).code == "UNAUTHENTICATED"

    got = records(wire, w)
    summary = [
        (r.get("subject", ""), r["method"].rsplit("/", 1)[1], r.get("code", "OK")) for r in got
    ]
    assert summary == [
        ("", "ListClusters", "UNAUTHENTICATED"),
        ("dan", "CreateCluster", "PERMISSION_DENIED"),
        ("bob", "DeleteVolume", "NOT_FOUND"),
        ("alice", "CreateVolume", "OK"),
    ]
    created = got[-1]
    assert created["roles"] == ["user"] and created["via"] == "jwt" and created["issuer"] == "osd"
    assert volume["id"] in created["target_ids"] and w.cluster_id in created["target_ids"]
    assert got[2]["target_ids"] == [volume["id"]]
    assert all(r["request_id"] and r["time"] for r in got)


def w_ok(wire: Wire, w: World, call: Call, headers: dict[str, str]) -> dict[str, Any]:
    answer = wire(w, call, headers)
    assert answer.code == OK, answer
    assert answer.body is not None
    return answer.body


def test_admins_filter_and_page_through_the_trail(w: World, wire: Wire) -> None:
    alice, bob = who(w, "alice"), who(w, "bob")
    start = datetime.now(UTC) - timedelta(seconds=1)
    made = [w_ok(wire, w, create(w.cluster_id, f"v{i}"), alice)["volume"]["id"] for i in range(3)]
    wire(w, create_cluster("x"), bob)
    assert [r["subject"] for r in records(wire, w, subject="bob")] == ["bob"]
    denied = records(wire, w, codes=[code_pb2.PERMISSION_DENIED])
    assert [r["method"] for r in denied] == ["osd.v1.ClusterService/CreateCluster"]
    assert len(records(wire, w, method="osd.v1.VolumeService/CreateVolume")) == 3
    [one] = records(wire, w, target_id=made[1])
    assert made[1] in one["target_ids"]
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(start)
    assert len(records(wire, w, since=since)) == 4
    until = timestamp_pb2.Timestamp()
    until.FromDatetime(start)
    assert records(wire, w, until=until) == []

    seen: list[str] = []
    page_token = ""
    root = who(w, "root", "admin")
    while True:
        kw: dict[str, Any] = {"page_size": 1, "subject": "alice"}
        if page_token:
            kw["page_token"] = page_token
        body = w_ok(wire, w, list_audit(**kw), root)
        seen += [t for r in body.get("records", []) for t in r["target_ids"] if t in made]
        page_token = body.get("next_page_token", "")
        if not page_token:
            break
    assert seen == list(reversed(made))  # newest first


def test_only_admins_read_the_trail_and_the_refusal_is_recorded(w: World, wire: Wire) -> None:
    answer = wire(w, list_audit(), who(w, "eve"))
    assert (answer.code, answer.reason) == (PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    [refused] = records(wire, w, subject="eve")
    assert refused["code"] == "PERMISSION_DENIED"


def test_no_secret_in_records_or_audit_lines(w: World, wire: Wire) -> None:
    secret_token = token(w.keys, roles=["admin"], subject="ops")
    wire(w, create_cluster("c-secret"), bearer(secret_token))
    wire(w, create_cluster("c-secret-2"), bearer(secret_token + "x"))
    dumped = json.dumps(records(wire, w))
    lines = [line for line in w.log if line.startswith("osd.audit INFO {")]
    assert lines, "no audit log line"
    parsed = [json.loads(line.split(" ", 2)[2]) for line in lines]
    assert {"request_id", "subject", "method", "code", "roles"} <= set(parsed[0])
    for text in (dumped, "\n".join(w.log)):
        assert secret_token not in text
        assert secret_token.split(".")[2] not in text


def test_old_records_are_pruned(w: World, wire: Wire) -> None:
    w_ok(wire, w, create(w.cluster_id, "old"), who(w, "alice"))
    audit = w.daemon.daemon.engine.audit
    assert audit.prune() == 0  # nothing is older than the retention yet
    assert len(records(wire, w)) == 1
    assert audit.prune(now=datetime.now(UTC) + timedelta(days=91)) >= 1
    assert records(wire, w) == []


def test_an_unauthenticated_caller_cannot_write_ids_into_the_trail(w: World, wire: Wire) -> None:
    named = uuid.uuid4().hex
    assert wire(w, delete(named), {}).code == "UNAUTHENTICATED"
    [refused] = records(wire, w, codes=[code_pb2.UNAUTHENTICATED])
    assert refused["method"] == "osd.v1.VolumeService/DeleteVolume"
    assert refused.get("target_ids", []) == []
    assert records(wire, w, target_id=named) == []


def test_a_record_keeps_at_most_64_ids(w: World, wire: Wire) -> None:
    many = [uuid.uuid4().hex for _ in range(200)]
    call = Call(
        "/osd.v1.PoolService/CreatePool",
        pool_pb2.CreatePoolRequest(cluster_id=w.cluster_id, name="wide", drive_ids=many),
        pool_pb2.CreatePoolResponse,
        "POST",
        "/v1/pools",
        {"cluster_id": w.cluster_id, "name": "wide", "drive_ids": many},
    )
    answer = wire(w, call, who(w, "root", "admin"))
    assert answer.code != OK
    [record] = records(wire, w, method="osd.v1.PoolService/CreatePool")
    assert len(record["target_ids"]) == 64
    assert set(record["target_ids"]) == {w.cluster_id, *many[:63]}


def test_a_flood_of_anonymous_calls_is_folded_into_counted_records(w: World, wire: Wire) -> None:
    audit = w.daemon.daemon.engine.audit
    audit.flush()
    audit.limit_unauthenticated(per_second=0.0, burst=3)
    for _ in range(20):
        assert wire(w, list_clusters(), {}).code == "UNAUTHENTICATED"
    for _ in range(5):
        assert wire(w, create_cluster("anon"), {}).code == "UNAUTHENTICATED"
    one_by_one = records(wire, w, codes=[code_pb2.UNAUTHENTICATED])
    assert len(one_by_one) == 3
    assert all(r["count"] == 1 and r["request_id"] for r in one_by_one)

    assert audit.flush() == 22
    assert audit.flush() == 0  # nothing twice
    got = records(wire, w, codes=[code_pb2.UNAUTHENTICATED])
    folded = {r["method"].rsplit("/", 1)[1]: r["count"] for r in got if r["count"] > 1}
    assert folded == {"ListClusters": 17, "CreateCluster": 5}
    assert sum(r["count"] for r in got) == 25
    lines = [json.loads(line.split(" ", 2)[2]) for line in w.log if "osd.audit INFO {" in line]
    assert len(lines) == 5  # three calls and two folded records, not 25 lines
    # Authenticated refusals are never folded.
    for _ in range(5):
        assert wire(w, create_cluster("x"), who(w, "dan", "view")).code == PERMISSION_DENIED
    assert len(records(wire, w, subject="dan")) == 5


def test_calls_ending_together_are_each_recorded(w: World, wire: Wire) -> None:
    """Records of concurrent calls share write transactions; none is lost."""
    callers = [who(w, f"u{i}", "view") for i in range(24)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(lambda h: wire(w, create_cluster("crowd"), h).code, callers))
    assert codes == [PERMISSION_DENIED] * 24
    got = records(wire, w, method="osd.v1.ClusterService/CreateCluster", page_size=100)
    assert sorted(r["subject"] for r in got) == sorted(f"u{i}" for i in range(24))
    assert len({r["request_id"] for r in got}) == 24


def test_a_group_write_answers_every_caller_of_its_batch() -> None:
    """While one write runs, the callers that come are written in one batch;
    a failed write raises in each caller of its batch, and the next goes on."""
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def write(items: list[int]) -> None:
        batches.append(items)
        if len(batches) == 1:
            started.set()
            release.wait(5)
        if 13 in items:
            raise RuntimeError("store down")

    writer: GroupWriter[int] = GroupWriter(write)
    outcomes: dict[int, str] = {}

    def submit(item: int) -> None:
        try:
            writer.submit(item)
            outcomes[item] = "ok"
        except RuntimeError as exc:
            outcomes[item] = str(exc)

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert started.wait(5)
    waiting = [threading.Thread(target=submit, args=(i,)) for i in (11, 12, 13)]
    for t in waiting:
        t.start()
    deadline = time.monotonic() + 5
    while len(writer._queue) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in [first, *waiting]:
        t.join(5)
    assert batches[0] == [0]
    assert sorted(batches[1]) == [11, 12, 13]
    assert outcomes == {0: "ok", 11: "store down", 12: "store down", 13: "store down"}
    submit(20)
    assert outcomes[20] == "ok" and batches[-1] == [20]
