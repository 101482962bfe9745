"""Ownership and access lists of volumes, their snapshots and attachments,
over gRPC and again through the REST gateway.

alice and bob are users, carol is a user in group "dev", dan has role view,
and root is admin. A volume the caller may not read answers exactly as a
missing one does, and lists leave it out.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from osd.v1 import job_pb2, node_pb2, template_pb2
from osd.v1 import volume_pb2 as pb
from tests.auth_helpers import OK, PERMISSION_DENIED, Call, Wire, World, bearer, token

NOT_FOUND = "NOT_FOUND"
ALREADY_EXISTS = "ALREADY_EXISTS"


def who(
    w: World, subject: str, role: str = "user", groups: list[str] | None = None
) -> dict[str, str]:
    extra: dict[str, Any] = {"groups": groups} if groups else {}
    return bearer(token(w.keys, roles=[role], subject=subject, **extra))


def rpc(
    name: str,
    request: Message,
    response: type[Message],
    verb: str,
    path: str,
    service: str = "VolumeService",
) -> Call:
    """A call of ``service`` (VolumeService by default); over REST the body is
    the request less its path fields."""
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    for field in re.findall(r"\{(\w+)\}", path):
        path = path.replace("{" + field + "}", body.pop(field, ""))
    return Call(
        f"/osd.v1.{service}/{name}",
        request,
        response,
        verb,
        path,
        body if verb in ("POST", "PATCH") else None,
    )


def create(cluster_id: str, name: str, **kw: Any) -> Call:
    req = pb.CreateVolumeRequest(cluster_id=cluster_id, name=name, size="1G", **kw)
    return rpc("CreateVolume", req, pb.CreateVolumeResponse, "POST", "/v1/volumes")


def inspect(volume_id: str) -> Call:
    req = pb.InspectVolumeRequest(volume_id=volume_id)
    return rpc("InspectVolume", req, pb.InspectVolumeResponse, "GET", "/v1/volumes/{volume_id}")


def list_volumes(page_size: int = 0, page_token: str = "") -> Call:
    req = pb.ListVolumesRequest(page_size=page_size, page_token=page_token)
    path = f"/v1/volumes?page_size={page_size}&page_token={page_token}"
    return rpc("ListVolumes", req, pb.ListVolumesResponse, "GET", path)


def update(volume_id: str, paths: list[str], **kw: Any) -> Call:
    req = pb.UpdateVolumeRequest(volume_id=volume_id, **kw)
    req.update_mask.paths.extend(paths)
    return rpc("UpdateVolume", req, pb.UpdateVolumeResponse, "PATCH", "/v1/volumes/{volume_id}")


def delete(volume_id: str) -> Call:
    req = pb.DeleteVolumeRequest(volume_id=volume_id)
    return rpc("DeleteVolume", req, pb.DeleteVolumeResponse, "DELETE", "/v1/volumes/{volume_id}")


def snapshot(volume_id: str, name: str) -> Call:
    req = pb.CreateSnapshotRequest(volume_id=volume_id, name=name)
    path = "/v1/volumes/{volume_id}/snapshots"
    return rpc("CreateSnapshot", req, pb.CreateSnapshotResponse, "POST", path)


def inspect_snapshot(snapshot_id: str) -> Call:
    req = pb.InspectSnapshotRequest(snapshot_id=snapshot_id)
    path = "/v1/snapshots/{snapshot_id}"
    return rpc("InspectSnapshot", req, pb.InspectSnapshotResponse, "GET", path)


def list_snapshots() -> Call:
    req = pb.ListSnapshotsRequest()
    return rpc("ListSnapshots", req, pb.ListSnapshotsResponse, "GET", "/v1/snapshots")


def delete_snapshot(snapshot_id: str) -> Call:
    req = pb.DeleteSnapshotRequest(snapshot_id=snapshot_id)
    path = "/v1/snapshots/{snapshot_id}"
    return rpc("DeleteSnapshot", req, pb.DeleteSnapshotResponse, "DELETE", path)


def attach(volume_id: str, node_id: str) -> Call:
    req = pb.AttachVolumeRequest(
        volume_id=volume_id, node_id=node_id, mode=pb.ATTACH_MODE_READ_WRITE
    )
    path = "/v1/volumes/{volume_id}:attach"
    return rpc("AttachVolume", req, pb.AttachVolumeResponse, "POST", path)


def list_attachments() -> Call:
    req = pb.ListAttachmentsRequest()
    return rpc("ListAttachments", req, pb.ListAttachmentsResponse, "GET", "/v1/attachments")


def grants(**by_user: int) -> list[pb.AccessGrant]:
    return [pb.AccessGrant(user=u, access=pb.Access.ValueType(a)) for u, a in by_user.items()]


def ok(wire: Wire, w: World, call: Call, headers: dict[str, str]) -> dict[str, Any]:
    answer = wire(w, call, headers)
    assert answer.code == OK, answer
    assert answer.body is not None
    return answer.body


def names(wire: Wire, w: World, headers: dict[str, str]) -> list[str]:
    return [v["name"] for v in ok(wire, w, list_volumes(), headers).get("volumes", [])]


def _node_id(w: World) -> str:
    from osd.store.models import NodeRow

    with w.daemon.store.read() as s:
        return s.query(NodeRow.id).order_by(NodeRow.name).first()[0]  # type: ignore[index]


# -- ownership ----------------------------------------------------------------------


def test_the_creator_owns_and_others_find_nothing(w: World, wire: Wire) -> None:
    alice, bob, root = who(w, "alice"), who(w, "bob"), who(w, "root", "admin")
    volume = ok(wire, w, create(w.cluster_id, "alices"), alice)["volume"]
    assert volume["owner"] == "alice"
    ok(wire, w, create(w.cluster_id, "bobs"), bob)

    # bob cannot tell alice's volume from one that does not exist.
    hidden = wire(w, inspect(volume["id"]), bob)
    missing_id = uuid.uuid4().hex
    missing = wire(w, inspect(missing_id), bob)
    assert (hidden.code, missing.code) == (NOT_FOUND, NOT_FOUND)
    assert hidden.message == missing.message.replace(missing_id, volume["id"])
    assert hidden.reason == missing.reason
    for call in (
        update(volume["id"], ["labels"], labels={"x": "y"}),
        delete(volume["id"]),
        snapshot(volume["id"], "s"),
        attach(volume["id"], _node_id(w)),
    ):
        assert wire(w, call, bob).code == NOT_FOUND, call.method

    assert names(wire, w, alice) == ["alices"]
    assert names(wire, w, bob) == ["bobs"]
    assert names(wire, w, root) == ["alices", "bobs"]
    assert ok(wire, w, inspect(volume["id"]), root)["volume"]["owner"] == "alice"


def test_a_name_taken_by_another_owner_says_only_that(w: World, wire: Wire) -> None:
    alice, bob = who(w, "alice"), who(w, "bob")
    volume = ok(wire, w, create(w.cluster_id, "shared-name"), alice)["volume"]
    taken = wire(w, create(w.cluster_id, "shared-name"), bob)
    assert (taken.code, taken.reason) == (ALREADY_EXISTS, "VOLUME_EXISTS")
    assert volume["id"] not in taken.message
    # The owner's own repeat is still idempotent.
    again = ok(wire, w, create(w.cluster_id, "shared-name"), alice)
    assert again["volume"]["id"] == volume["id"] and not again.get("created", False)


def test_lists_page_through_only_what_the_caller_may_read(w: World, wire: Wire) -> None:
    alice, bob = who(w, "alice"), who(w, "bob")
    for i in range(3):
        ok(wire, w, create(w.cluster_id, f"a{i}"), alice)
        ok(wire, w, create(w.cluster_id, f"b{i}"), bob)
    seen: list[str] = []
    page_token = ""
    while True:
        body = ok(wire, w, list_volumes(page_size=1, page_token=page_token), bob)
        seen += [v["name"] for v in body.get("volumes", [])]
        page_token = body.get("next_page_token", "")
        if not page_token:
            break
    assert seen == ["b0", "b1", "b2"]


# -- access lists ---------------------------------------------------------------------


def test_a_read_grant_lets_another_user_inspect_but_not_change_or_delete(
    w: World, wire: Wire
) -> None:
    alice, bob = who(w, "alice"), who(w, "bob")
    volume = ok(wire, w, create(w.cluster_id, "v"), alice)["volume"]
    body = ok(wire, w, update(volume["id"], ["acl"], acl=grants(bob=pb.ACCESS_READ)), alice)
    assert body["volume"]["acl"] == [{"user": "bob", "access": "ACCESS_READ"}]

    assert ok(wire, w, inspect(volume["id"]), bob)["volume"]["name"] == "v"
    assert names(wire, w, bob) == ["v"]
    [listed] = ok(wire, w, list_volumes(), alice)["volumes"]
    assert listed["acl"] == [{"user": "bob", "access": "ACCESS_READ"}]
    for call in (update(volume["id"], ["labels"], labels={"x": "y"}), delete(volume["id"])):
        answer = wire(w, call, bob)
        assert (answer.code, answer.reason) == (PERMISSION_DENIED, "ACCESS_DENIED"), answer
    # Nothing changed, and bob may not widen his own access.
    widen = wire(w, update(volume["id"], ["acl"], acl=grants(bob=pb.ACCESS_ADMIN)), bob)
    assert widen.code == PERMISSION_DENIED
    acl = ok(wire, w, inspect(volume["id"]), alice)["volume"]["acl"]
    assert acl == [{"user": "bob", "access": "ACCESS_READ"}]


def test_a_group_write_grant_allows_changes_and_snapshots_but_not_delete(
    w: World, wire: Wire
) -> None:
    alice, carol = who(w, "alice"), who(w, "carol", groups=["dev"])
    volume = ok(wire, w, create(w.cluster_id, "v"), alice)["volume"]
    group = pb.AccessGrant(group="dev", access=pb.ACCESS_WRITE)
    ok(wire, w, update(volume["id"], ["acl"], acl=[group]), alice)

    changed = ok(wire, w, update(volume["id"], ["labels"], labels={"by": "carol"}), carol)
    assert changed["volume"]["labels"] == {"by": "carol"}
    snap = ok(wire, w, snapshot(volume["id"], "carols-snap"), carol)["snapshot"]
    assert snap["owner"] == "alice"  # a snapshot takes its volume's owner
    assert wire(w, delete_snapshot(snap["id"]), carol).code == PERMISSION_DENIED
    assert wire(w, delete(volume["id"]), carol).code == PERMISSION_DENIED
    ok(wire, w, delete_snapshot(snap["id"]), alice)
    # Without the group the same subject sees nothing.
    assert wire(w, inspect(volume["id"]), who(w, "carol")).code == NOT_FOUND


def test_a_public_volume_is_readable_by_every_caller_even_view(w: World, wire: Wire) -> None:
    alice, dan = who(w, "alice"), who(w, "dan", "view")
    volume = ok(wire, w, create(w.cluster_id, "pub"), alice)["volume"]
    assert wire(w, inspect(volume["id"]), dan).code == NOT_FOUND
    ok(wire, w, update(volume["id"], ["public"], public=True), alice)
    assert ok(wire, w, inspect(volume["id"]), dan)["volume"]["public"] is True
    assert names(wire, w, dan) == ["pub"]
    # A view caller still may not change it: the role check comes first.
    assert wire(w, update(volume["id"], ["labels"], labels={"a": "b"}), dan).code == (
        PERMISSION_DENIED
    )


def test_bad_access_lists_are_refused_naming_the_entry(w: World, wire: Wire) -> None:
    alice = who(w, "alice")
    volume = ok(wire, w, create(w.cluster_id, "v"), alice)["volume"]
    twice = grants(bob=pb.ACCESS_READ) + grants(bob=pb.ACCESS_WRITE)
    answer = wire(w, update(volume["id"], ["acl"], acl=twice), alice)
    assert answer.code == "INVALID_ARGUMENT" and "acl[1]" in answer.message, answer
    if wire.__name__ == "over_grpc":  # REST refuses these shapes itself, by the schema
        none = [pb.AccessGrant(user="bob")]
        answer = wire(w, update(volume["id"], ["acl"], acl=none), alice)
        assert answer.code == "INVALID_ARGUMENT" and "acl[0].access" in answer.message
        nobody = [pb.AccessGrant(access=pb.ACCESS_READ)]
        answer = wire(w, update(volume["id"], ["acl"], acl=nobody), alice)
        assert answer.code == "INVALID_ARGUMENT" and "acl[0]" in answer.message
    assert ok(wire, w, inspect(volume["id"]), alice)["volume"].get("acl", []) == []


# -- owners, snapshots, clones and attachments ------------------------------------


def test_only_an_admin_changes_the_owner(w: World, wire: Wire) -> None:
    alice, bob, root = who(w, "alice"), who(w, "bob"), who(w, "root", "admin")
    volume = ok(wire, w, create(w.cluster_id, "v"), alice)["volume"]
    refused = wire(w, update(volume["id"], ["owner"], owner="bob"), alice)
    assert (refused.code, refused.reason) == (PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    ok(wire, w, update(volume["id"], ["owner"], owner="bob"), root)
    assert wire(w, inspect(volume["id"]), alice).code == NOT_FOUND
    ok(wire, w, delete(volume["id"]), bob)
    assert wire(w, inspect(volume["id"]), root).code == NOT_FOUND


def test_snapshots_and_clones_follow_their_volume(w: World, wire: Wire) -> None:
    alice, bob = who(w, "alice"), who(w, "bob")
    volume = ok(wire, w, create(w.cluster_id, "src"), alice)["volume"]
    snap = ok(wire, w, snapshot(volume["id"], "src-snap"), alice)["snapshot"]
    assert wire(w, inspect_snapshot(snap["id"]), bob).code == NOT_FOUND
    assert ok(wire, w, list_snapshots(), bob).get("snapshots", []) == []
    assert [s["name"] for s in ok(wire, w, list_snapshots(), alice)["snapshots"]] == ["src-snap"]

    clone_of = pb.VolumeSource(snapshot_id=snap["id"])
    assert wire(w, create(w.cluster_id, "bobs-clone", source=clone_of), bob).code == NOT_FOUND
    ok(wire, w, update(volume["id"], ["acl"], acl=grants(bob=pb.ACCESS_READ)), alice)
    refused = wire(w, create(w.cluster_id, "bobs-clone", source=clone_of), bob)
    assert refused.code == PERMISSION_DENIED  # a clone needs write on its source
    ok(wire, w, update(volume["id"], ["acl"], acl=grants(bob=pb.ACCESS_WRITE)), alice)
    clone = ok(wire, w, create(w.cluster_id, "bobs-clone", source=clone_of), bob)["volume"]
    assert clone["owner"] == "alice"
    assert clone["acl"] == [{"user": "bob", "access": "ACCESS_WRITE"}]


def test_attachments_need_write_and_lists_hide_others(w: World, wire: Wire) -> None:
    alice, bob = who(w, "alice"), who(w, "bob")
    volume = ok(wire, w, create(w.cluster_id, "v"), alice)["volume"]
    node_id = _node_id(w)
    ok(wire, w, attach(volume["id"], node_id), alice)
    assert ok(wire, w, list_attachments(), bob).get("attachments", []) == []
    listed = ok(wire, w, list_attachments(), alice)["attachments"]
    assert [a["volume_id"] for a in listed] == [volume["id"]]
    ok(wire, w, update(volume["id"], ["acl"], acl=grants(bob=pb.ACCESS_READ)), alice)
    assert len(ok(wire, w, list_attachments(), bob)["attachments"]) == 1
    assert wire(w, attach(volume["id"], node_id), bob).code == PERMISSION_DENIED


def test_a_copy_of_a_volume_keeps_its_sources_owner_and_acl(w: World, wire: Wire) -> None:
    alice, bob = who(w, "alice"), who(w, "bob")
    source = ok(wire, w, create(w.cluster_id, "src"), alice)["volume"]
    ok(wire, w, update(source["id"], ["acl"], acl=grants(bob=pb.ACCESS_WRITE)), alice)
    copy_of = pb.VolumeSource(volume_id=source["id"])
    made = ok(wire, w, create(w.cluster_id, "copy", source=copy_of), bob)["volume"]
    # The copy job makes the row; it still belongs to the source's owner.
    for caller in (alice, bob):
        seen = ok(wire, w, inspect(made["id"]), caller)["volume"]
        assert seen["owner"] == "alice"
        assert seen["acl"] == [{"user": "bob", "access": "ACCESS_WRITE"}]


def test_a_rename_onto_another_owners_name_does_not_give_its_id(w: World, wire: Wire) -> None:
    alice, bob = who(w, "alice"), who(w, "bob")
    bobs = ok(wire, w, create(w.cluster_id, "bobs-secret"), bob)["volume"]
    alices = ok(wire, w, create(w.cluster_id, "alices"), alice)["volume"]
    answer = wire(w, update(alices["id"], ["name"], name="bobs-secret"), alice)
    assert (answer.code, answer.reason) == (ALREADY_EXISTS, "VOLUME_EXISTS")
    assert bobs["id"] not in answer.message
    assert answer.metadata == {"name": "bobs-secret"}
    # alice's own names still say which volume holds them.
    taken = wire(w, update(alices["id"], ["name"], name="alices2"), alice)
    assert taken.code == OK
    ok(wire, w, create(w.cluster_id, "alices"), alice)
    mine = wire(w, update(alices["id"], ["name"], name="alices"), alice)
    assert mine.code == ALREADY_EXISTS and "volume_id" in mine.metadata


def list_jobs() -> Call:
    return Call(
        "/osd.v1.JobService/ListJobs",
        job_pb2.ListJobsRequest(),
        job_pb2.ListJobsResponse,
        "GET",
        "/v1/jobs",
    )


def inspect_job(job_id: str) -> Call:
    return Call(
        "/osd.v1.JobService/InspectJob",
        job_pb2.InspectJobRequest(job_id=job_id),
        job_pb2.InspectJobResponse,
        "GET",
        f"/v1/jobs/{job_id}",
    )


def inspect_drive(drive_id: str) -> Call:
    return Call(
        "/osd.v1.NodeService/InspectDrive",
        node_pb2.InspectDriveRequest(drive_id=drive_id),
        node_pb2.InspectDriveResponse,
        "GET",
        f"/v1/drives/{drive_id}",
    )


def test_jobs_show_only_the_volumes_the_caller_may_read(w: World, wire: Wire) -> None:
    alice, bob, dan, root = (
        who(w, "alice"),
        who(w, "bob"),
        who(w, "dan", "view"),
        who(w, "root", "admin"),
    )
    source = ok(wire, w, create(w.cluster_id, "src"), alice)["volume"]
    ok(wire, w, update(source["id"], ["acl"], acl=grants(bob=pb.ACCESS_WRITE)), alice)
    copy_of = pb.VolumeSource(volume_id=source["id"])
    made = ok(wire, w, create(w.cluster_id, "copy", source=copy_of), bob)["volume"]
    ok(wire, w, update(source["id"], ["acl"], acl=[]), alice)  # bob keeps the copy only
    [job] = ok(wire, w, list_jobs(), root)["jobs"]
    assert job["target"]["id"] == made["id"]
    assert [r["id"] for r in job["related"]] == [source["id"]]

    assert [r["id"] for r in ok(wire, w, list_jobs(), alice)["jobs"][0]["related"]] == [
        source["id"]
    ]
    [seen] = ok(wire, w, list_jobs(), bob)["jobs"]
    assert seen["target"]["id"] == made["id"] and seen.get("related", []) == []
    assert ok(wire, w, inspect_job(job["id"]), bob)["job"].get("related", []) == []
    # dan may read neither volume: the job is as missing as a job that never was.
    assert ok(wire, w, list_jobs(), dan).get("jobs", []) == []
    hidden = wire(w, inspect_job(job["id"]), dan)
    missing = wire(w, inspect_job(uuid.uuid4().hex), dan)
    assert (hidden.code, hidden.reason) == (NOT_FOUND, missing.reason)
    assert hidden.message.replace(job["id"], "X") == missing.message.replace(
        missing.message.split("'")[1], "X"
    )


def test_a_drive_shows_its_space_but_not_whose_volumes_fill_it(w: World, wire: Wire) -> None:
    alice, dan, root = who(w, "alice"), who(w, "dan", "view"), who(w, "root", "admin")
    volume = ok(wire, w, create(w.cluster_id, "on-drive"), alice)["volume"]
    allocation = ok(wire, w, inspect(volume["id"]), alice)["allocations"][0]
    drive = allocation["drive_id"]

    def mine(headers: dict[str, str]) -> list[dict[str, Any]]:
        found = ok(wire, w, inspect_drive(drive), headers)["allocations"]
        return [a for a in found if a["id"] == allocation["id"]]

    assert [a["volume_id"] for a in mine(root)] == [volume["id"]]
    assert [a["volume_id"] for a in mine(alice)] == [volume["id"]]
    [anonymous] = mine(dan)
    assert anonymous.get("volume_id", "") == "" and int(anonymous["bytes"]) > 0
    assert volume["id"] not in str(ok(wire, w, inspect_drive(drive), dan))


def test_a_snapshots_clones_are_named_only_to_who_may_read_them(w: World, wire: Wire) -> None:
    alice, root = who(w, "alice"), who(w, "root", "admin")
    volume = ok(wire, w, create(w.cluster_id, "base"), alice)["volume"]
    snap = ok(wire, w, snapshot(volume["id"], "base-snap"), alice)["snapshot"]
    clone_of = pb.VolumeSource(snapshot_id=snap["id"])
    own = ok(wire, w, create(w.cluster_id, "own-clone"), alice)["volume"]  # not a clone
    mine = ok(wire, w, create(w.cluster_id, "my-clone", source=clone_of), alice)["volume"]
    theirs = ok(wire, w, create(w.cluster_id, "their-clone", source=clone_of), alice)["volume"]
    ok(wire, w, update(theirs["id"], ["owner", "acl"], owner="carol", acl=[]), root)

    refused = wire(w, delete_snapshot(snap["id"]), alice)
    assert (refused.code, refused.reason) == ("FAILED_PRECONDITION", "SNAPSHOT_HAS_CLONES")
    assert refused.metadata["count"] == "2"
    assert refused.metadata["volume_ids"] == mine["id"]
    assert theirs["id"] not in refused.message and own["id"] not in refused.metadata["volume_ids"]
    by_root = wire(w, delete_snapshot(snap["id"]), root)
    assert sorted(by_root.metadata["volume_ids"].split(",")) == sorted([mine["id"], theirs["id"]])


def test_a_new_owner_takes_the_snapshots_with_the_volume(w: World, wire: Wire) -> None:
    alice, bob, root = who(w, "alice"), who(w, "bob"), who(w, "root", "admin")
    volume = ok(wire, w, create(w.cluster_id, "handed-over"), alice)["volume"]
    snap = ok(wire, w, snapshot(volume["id"], "handed-over-snap"), alice)["snapshot"]
    assert snap["owner"] == "alice"
    ok(wire, w, update(volume["id"], ["owner"], owner="bob"), root)
    assert wire(w, inspect_snapshot(snap["id"]), alice).code == NOT_FOUND
    assert wire(w, delete_snapshot(snap["id"]), alice).code == NOT_FOUND
    assert ok(wire, w, list_snapshots(), alice).get("snapshots", []) == []
    assert ok(wire, w, inspect_snapshot(snap["id"]), bob)["snapshot"]["owner"] == "bob"
    ok(wire, w, delete_snapshot(snap["id"]), bob)


def template_call(name: str, request: Message, verb: str, path: str) -> Call:
    response = getattr(template_pb2, f"{name}Response")
    return rpc(name, request, response, verb, path, service="TemplateService")


def test_users_own_the_templates_they_make_and_everyone_uses_them(w: World, wire: Wire) -> None:
    alice, bob, dan = who(w, "alice"), who(w, "bob"), who(w, "dan", "view")
    root = who(w, "root", "admin")
    made = template_pb2.CreateTemplateRequest(cluster_id=w.cluster_id, name="small", size="1G")
    create_t = template_call("CreateTemplate", made, "POST", "/v1/templates")
    template = ok(wire, w, create_t, alice)["template"]
    assert template["owner"] == "alice"
    refused = wire(w, create_t, dan)
    assert (refused.code, refused.reason) == (PERMISSION_DENIED, "ROLE_NOT_ALLOWED")

    tid = template["id"]
    rename = template_pb2.UpdateTemplateRequest(template_id=tid, name="smaller")
    rename.update_mask.paths.append("name")
    update_t = template_call("UpdateTemplate", rename, "PATCH", "/v1/templates/{template_id}")
    delete_t = template_call(
        "DeleteTemplate",
        template_pb2.DeleteTemplateRequest(template_id=tid),
        "DELETE",
        "/v1/templates/{template_id}",
    )
    for call in (update_t, delete_t):
        answer = wire(w, call, bob)
        assert (answer.code, answer.reason) == (PERMISSION_DENIED, "ACCESS_DENIED"), answer
        assert "alice" in answer.message
    # bob reads it and makes a volume with it; the volume is bob's.
    inspect_t = template_call(
        "InspectTemplate",
        template_pb2.InspectTemplateRequest(template_id=tid),
        "GET",
        "/v1/templates/{template_id}",
    )
    assert ok(wire, w, inspect_t, bob)["template"]["name"] == "small"
    from_template = pb.CreateVolumeRequest(
        cluster_id=w.cluster_id, name="from-template", template_id=tid
    )
    create_v = rpc("CreateVolume", from_template, pb.CreateVolumeResponse, "POST", "/v1/volumes")
    volume = ok(wire, w, create_v, bob)
    assert volume["volume"]["owner"] == "bob" and volume["volume"]["size_bytes"] == str(2**30)
    ok(wire, w, delete(volume["volume"]["id"]), bob)
    # Its owner and admins change it.
    assert ok(wire, w, update_t, alice)["template"]["name"] == "smaller"
    rename.name = "smallest"
    update_again = template_call("UpdateTemplate", rename, "PATCH", "/v1/templates/{template_id}")
    assert ok(wire, w, update_again, root)["template"]["name"] == "smallest"
    ok(wire, w, delete_t, alice)
