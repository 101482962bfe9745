"""DatastoreService over the wire, on SQLite and PostgreSQL.

Image snapshots and the volumes provisioned from a version are put in the
store directly (tests/factories.py): the volume service is not the subject.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import delete, select

from osd.engine.datastores.registry import provisioning_source
from osd.enums import SnapshotState
from osd.errors import FailedPrecondition, InvalidArgument, NotFound
from osd.store import allocations
from osd.store import datastores as repo
from osd.store.models import DatastoreRow, DatastoreVersionRow, StateRow, VolumeRow
from osd.v1 import datastore_pb2 as pb
from osd.v1 import datastore_pb2_grpc, volume_pb2_grpc
from osd.v1 import volume_pb2 as vpb
from tests.conftest import RunningDaemon
from tests.factories import make_cluster, make_snapshot, make_topology, make_volume_row
from tests.helpers import ErrorView, error_of

Stub = datastore_pb2_grpc.DatastoreServiceStub


@dataclass
class World:
    """A daemon, a stub, a cluster and two golden images plus a plain snapshot."""

    daemon: RunningDaemon
    stub: Stub
    cluster_id: str
    image: str
    image2: str
    plain: str


@pytest.fixture
def w(daemon: RunningDaemon) -> World:
    cluster_id = make_cluster(daemon.store)
    vol = uuid.uuid4().hex
    return World(
        daemon=daemon,
        stub=Stub(daemon.channel),
        cluster_id=cluster_id,
        image=make_snapshot(daemon.store, cluster_id, vol, "golden-1"),
        image2=make_snapshot(daemon.store, cluster_id, vol, "golden-2"),
        plain=make_snapshot(daemon.store, cluster_id, vol, "plain", image=False),
    )


def fails(call: Callable[[Any], Any], request: Any) -> ErrorView:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return error_of(info.value)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def generation(w: World) -> int:
    with w.daemon.store.read() as s:
        return s.scalars(select(StateRow.generation)).one()


def stored_datastores(w: World) -> list[DatastoreRow]:
    with w.daemon.store.read() as s:
        return list(s.scalars(select(DatastoreRow).order_by(DatastoreRow.name)))


def stored_versions(w: World) -> list[DatastoreVersionRow]:
    with w.daemon.store.read() as s:
        return list(s.scalars(select(DatastoreVersionRow).order_by(DatastoreVersionRow.name)))


def defaults(w: World, datastore_id: str) -> list[str]:
    with w.daemon.store.read() as s:
        return list(
            s.scalars(
                select(DatastoreVersionRow.name).where(
                    DatastoreVersionRow.datastore_id == datastore_id,
                    DatastoreVersionRow.is_default.is_(True),
                )
            )
        )


def register(w: World, datastore: str, name: str, **kw: Any) -> pb.CreateDatastoreVersionResponse:
    kw.setdefault("image_snapshot_id", w.image)
    return w.stub.CreateDatastoreVersion(
        pb.CreateDatastoreVersionRequest(datastore=datastore, name=name, **kw)
    )


def inspect(w: World, version_id: str) -> pb.DatastoreVersion:
    return w.stub.InspectDatastoreVersion(
        pb.InspectDatastoreVersionRequest(datastore_version_id=version_id)
    ).datastore_version


def update(w: World, version_id: str, *paths: str, **kw: Any) -> pb.UpdateDatastoreVersionResponse:
    return w.stub.UpdateDatastoreVersion(
        pb.UpdateDatastoreVersionRequest(
            datastore_version_id=version_id, update_mask=mask(*paths), **kw
        )
    )


def inspect_datastore(w: World, datastore_id: str) -> pb.Datastore:
    return w.stub.InspectDatastore(pb.InspectDatastoreRequest(datastore_id=datastore_id)).datastore


# -- register -------------------------------------------------------------------


def test_register_creates_the_datastore_and_the_version(w: World) -> None:
    before = generation(w)
    resp = register(w, "mysql", "8.0", packages=["mysql-server-8.0"], default=True)
    assert resp.datastore_created
    assert resp.generation == before + 1
    v = resp.datastore_version
    assert len(v.id) == 32 and len(v.datastore_id) == 32
    assert (v.datastore_name, v.name, v.manager, v.image_snapshot_id) == (
        "mysql",
        "8.0",
        "mysql",  # the manager defaults to the datastore's name
        w.image,
    )
    assert list(v.packages) == ["mysql-server-8.0"]
    assert (v.active, v.default, v.volume_count) == (True, True, 0)
    assert v.generation == resp.generation
    assert v.create_time.seconds > 0 and v.create_time == v.update_time
    assert inspect(w, v.id) == v

    [ds] = stored_datastores(w)
    assert (ds.id, ds.name, ds.generation) == (v.datastore_id, "mysql", resp.generation)
    [row] = stored_versions(w)
    assert (row.manager, row.packages, row.active, row.is_default) == (
        "mysql",
        ["mysql-server-8.0"],
        True,
        True,
    )


def test_register_into_an_existing_datastore(w: World) -> None:
    first = register(w, "postgresql", "15", manager="pg", active=False)
    assert not first.datastore_version.active and first.datastore_version.manager == "pg"
    second = register(w, "postgresql", "16")
    assert not second.datastore_created
    assert second.datastore_version.datastore_id == first.datastore_version.datastore_id
    assert len(stored_datastores(w)) == 1
    ds = inspect_datastore(w, first.datastore_version.datastore_id)
    assert ds.version_count == 2
    assert ds.generation == second.generation  # a new version changes its datastore


def test_register_the_same_version_again_is_already_exists(w: World) -> None:
    first = register(w, "mysql", "8.0").datastore_version
    before = generation(w)
    # Not idempotent, as in Trove: even the very same spec is refused.
    err = fails(
        w.stub.CreateDatastoreVersion,
        pb.CreateDatastoreVersionRequest(datastore="mysql", name="8.0", image_snapshot_id=w.image),
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "DATASTORE_VERSION_EXISTS"
    assert err.metadata["datastore_version_id"] == first.id
    assert err.metadata["datastore_id"] == first.datastore_id
    assert generation(w) == before
    assert len(stored_versions(w)) == 1


def test_same_version_name_in_another_datastore_is_fine(w: World) -> None:
    a = register(w, "mysql", "1.0").datastore_version
    b = register(w, "mariadb", "1.0").datastore_version
    assert a.datastore_id != b.datastore_id


@pytest.mark.parametrize(
    ("kw", "field", "why"),
    [
        ({"datastore": ""}, "datastore", "is required"),
        ({"datastore": "my sql"}, "datastore", "may contain only"),
        ({"datastore": "list"}, "datastore", "reserved"),
        ({"datastore": "d" * 201}, "datastore", "at most 200"),
        ({"name": ""}, "name", "is required"),
        ({"name": "8/0"}, "name", "may contain only"),
        ({"name": ".."}, "name", "reserved"),
        ({"manager": "my manager"}, "manager", "may contain only"),
        ({"image_snapshot_id": ""}, "image_snapshot_id", "is required"),
        ({"image_snapshot_id": "not-an-id"}, "image_snapshot_id", "not an id"),
        ({"packages": ["ok", ""]}, "packages[1]", "not a package name"),
        ({"packages": ["-leading-dash"]}, "packages[0]", "not a package name"),
        ({"packages": ["has space"]}, "packages[0]", "not a package name"),
        ({"packages": ["p" * 201]}, "packages[0]", "not a package name"),
        ({"packages": ["a", "b", "a"]}, "packages[2]", "repeats packages[0]"),
        ({"packages": [f"p{i}" for i in range(101)]}, "packages", "at most 100"),
        ({"active": False, "default": True}, "default", "inactive"),
    ],
)
def test_register_refuses_bad_input_and_writes_nothing(
    w: World, kw: dict[str, Any], field: str, why: str
) -> None:
    request: dict[str, Any] = {"datastore": "mysql", "name": "8.0", "image_snapshot_id": w.image}
    request.update(kw)
    before = generation(w)
    err = fails(w.stub.CreateDatastoreVersion, pb.CreateDatastoreVersionRequest(**request))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == [field]
    assert why in err.fields[field]
    assert field in err.message
    assert stored_datastores(w) == []
    assert stored_versions(w) == []
    assert generation(w) == before


def test_register_names_every_wrong_field_at_once(w: World) -> None:
    err = fails(
        w.stub.CreateDatastoreVersion,
        pb.CreateDatastoreVersionRequest(
            datastore="", name="bad name", packages=["x", "x"], active=False, default=True
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.fields) == {"datastore", "name", "image_snapshot_id", "packages[1]", "default"}


def test_package_names_accept_their_whole_alphabet(w: World) -> None:
    packages = ["Az09._+:~-x", "libc6:amd64", "g++-12", "1" * 200]
    v = register(w, "mysql", "8.0", packages=packages).datastore_version
    assert list(v.packages) == packages
    v = register(w, "mysql", "8.1", packages=[f"p{i}" for i in range(100)]).datastore_version
    assert len(v.packages) == 100


@pytest.mark.parametrize("which", ["missing", "not-an-image", "deleting"])
def test_register_with_an_unknown_image_is_not_found(w: World, which: str) -> None:
    snapshot_id = {
        "missing": uuid.uuid4().hex,
        "not-an-image": w.plain,
        "deleting": make_snapshot(
            w.daemon.store, w.cluster_id, uuid.uuid4().hex, "going", state=SnapshotState.DELETING
        ),
    }[which]
    before = generation(w)
    err = fails(
        w.stub.CreateDatastoreVersion,
        pb.CreateDatastoreVersionRequest(
            datastore="mysql", name="8.0", image_snapshot_id=snapshot_id
        ),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.reason == "IMAGE_NOT_FOUND"
    assert err.message == "image not found"
    assert list(err.fields) == ["image_snapshot_id"]
    assert snapshot_id in err.fields["image_snapshot_id"]
    assert err.metadata["id"] == snapshot_id
    # The datastore this call would have created is not left behind either.
    assert stored_datastores(w) == []
    assert generation(w) == before


def test_registering_a_new_default_clears_the_old_one(w: World) -> None:
    v1 = register(w, "mysql", "5.7", default=True).datastore_version
    v2 = register(w, "mysql", "8.0", default=True)
    assert defaults(w, v1.datastore_id) == ["8.0"]
    old = inspect(w, v1.id)
    assert not old.default
    assert old.generation == v2.generation  # cleared in the same transaction
    ds = inspect_datastore(w, v1.datastore_id)
    assert (ds.default_version_id, ds.default_version_name) == (v2.datastore_version.id, "8.0")
    # A non-default registration leaves the default alone.
    register(w, "mysql", "8.4")
    assert defaults(w, v1.datastore_id) == ["8.0"]


def test_concurrent_registrations_keep_one_default(w: World) -> None:
    results: list[pb.CreateDatastoreVersionResponse] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results.append(register(w, "racy", f"v{i}", default=True))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.datastore_created for r in results) == 1
    [ds] = stored_datastores(w)
    assert len(defaults(w, ds.id)) == 1
    # The last writer's version is the default.
    last = max(results, key=lambda r: r.generation)
    assert defaults(w, ds.id) == [last.datastore_version.name]


def test_concurrent_registrations_of_one_version_make_one(w: World) -> None:
    codes: list[grpc.StatusCode] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        try:
            register(w, "mysql", "8.0")
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(error_of(exc).code)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.name for c in codes) == ["ALREADY_EXISTS"] * 5 + ["OK"]
    assert len(stored_versions(w)) == 1


# -- inspect --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("nope", grpc.StatusCode.INVALID_ARGUMENT),
        ("A" * 32, grpc.StatusCode.INVALID_ARGUMENT),
        (uuid.uuid4().hex, grpc.StatusCode.NOT_FOUND),
    ],
)
def test_inspect_version_bad_ids(w: World, value: str, code: grpc.StatusCode) -> None:
    err = fails(
        w.stub.InspectDatastoreVersion,
        pb.InspectDatastoreVersionRequest(datastore_version_id=value),
    )
    assert err.code == code
    assert list(err.fields) == ["datastore_version_id"]
    if code == grpc.StatusCode.NOT_FOUND:
        assert err.metadata["kind"] == "datastore version"


def test_inspect_version_counts_its_volumes(w: World) -> None:
    v = register(w, "mysql", "8.0").datastore_version
    other = register(w, "mysql", "5.7").datastore_version
    make_volume_row(w.daemon.store, w.cluster_id, "db1", datastore_version_id=v.id)
    make_volume_row(w.daemon.store, w.cluster_id, "db2", datastore_version_id=v.id)
    make_volume_row(w.daemon.store, w.cluster_id, "plain")
    assert inspect(w, v.id).volume_count == 2
    assert inspect(w, other.id).volume_count == 0


@pytest.mark.parametrize(
    ("rpc", "request_cls", "field"),
    [
        ("InspectDatastore", pb.InspectDatastoreRequest, "datastore_id"),
        ("DeleteDatastore", pb.DeleteDatastoreRequest, "datastore_id"),
        ("DeleteDatastoreVersion", pb.DeleteDatastoreVersionRequest, "datastore_version_id"),
    ],
)
def test_bad_and_unknown_ids(w: World, rpc: str, request_cls: Any, field: str) -> None:
    call = getattr(w.stub, rpc)
    for value, code in [
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("xyz", grpc.StatusCode.INVALID_ARGUMENT),
        (uuid.uuid4().hex, grpc.StatusCode.NOT_FOUND),
    ]:
        err = fails(call, request_cls(**{field: value}))
        assert err.code == code, value
        assert list(err.fields) == [field]


# -- list versions --------------------------------------------------------------


def list_all_versions(w: World, page_size: int, **kw: Any) -> tuple[list[str], int]:
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        resp = w.stub.ListDatastoreVersions(
            pb.ListDatastoreVersionsRequest(page_size=page_size, page_token=token, **kw)
        )
        pages += 1
        assert len(resp.datastore_versions) <= page_size
        seen.extend(f"{v.datastore_name}/{v.name}" for v in resp.datastore_versions)
        token = resp.next_page_token
        if not token:
            return seen, pages


def test_list_versions_pages_in_datastore_then_version_order(w: World) -> None:
    wanted = []
    for ds in ("redis", "mysql", "postgresql"):
        for i in (3, 1, 2, 0):
            register(w, ds, f"{i}.0", active=i % 2 == 0)
            wanted.append(f"{ds}/{i}.0")
    wanted.sort()
    seen, pages = list_all_versions(w, 5)
    assert seen == wanted
    assert pages == 3  # 12 versions: 5 + 5 + 2, no empty last page
    seen, pages = list_all_versions(w, 3)
    assert (seen, pages) == (wanted, 4)  # an exact multiple has no empty last page


def test_list_versions_filters_across_pages(w: World) -> None:
    for ds in ("mysql", "postgresql"):
        for i in range(5):
            register(w, ds, f"{i}.0", active=i != 2)
    pg = next(d for d in stored_datastores(w) if d.name == "postgresql")
    by_name, _ = list_all_versions(w, 2, datastore_name="postgresql")
    by_id, _ = list_all_versions(w, 2, datastore_id=pg.id)
    assert by_name == by_id == [f"postgresql/{i}.0" for i in range(5)]
    active, pages = list_all_versions(w, 2, datastore_name="mysql", active_only=True)
    assert active == ["mysql/0.0", "mysql/1.0", "mysql/3.0", "mysql/4.0"]
    assert pages == 2
    everywhere, _ = list_all_versions(w, 3, active_only=True)
    assert len(everywhere) == 8 and "postgresql/2.0" not in everywhere


def test_list_versions_shows_volume_counts(w: World) -> None:
    v = register(w, "mysql", "8.0").datastore_version
    make_volume_row(w.daemon.store, w.cluster_id, "db1", datastore_version_id=v.id)
    [listed] = w.stub.ListDatastoreVersions(pb.ListDatastoreVersionsRequest()).datastore_versions
    assert listed.volume_count == 1
    assert listed == inspect(w, v.id)


@pytest.mark.parametrize(
    ("kw", "code", "fields"),
    [
        ({"page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, ["page_size"]),
        ({"page_size": 1001}, grpc.StatusCode.INVALID_ARGUMENT, ["page_size"]),
        ({"page_token": "garbage!"}, grpc.StatusCode.INVALID_ARGUMENT, ["page_token"]),
        # A token of the datastore list.
        (
            {"page_token": "eyJrIjoiZGF0YXN0b3JlIiwiYSI6eyJuYW1lIjoieCJ9fQ"},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["page_token"],
        ),
        ({"datastore_id": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, ["datastore_id"]),
        ({"datastore_name": "bad name"}, grpc.StatusCode.INVALID_ARGUMENT, ["datastore_name"]),
        (
            {"datastore_id": uuid.uuid4().hex, "datastore_name": "mysql"},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["datastore_id", "datastore_name"],
        ),
        ({"datastore_id": uuid.uuid4().hex}, grpc.StatusCode.NOT_FOUND, ["datastore_id"]),
        ({"datastore_name": "nosuch"}, grpc.StatusCode.NOT_FOUND, ["datastore_name"]),
    ],
)
def test_list_versions_bad_input(
    w: World, kw: dict[str, Any], code: grpc.StatusCode, fields: list[str]
) -> None:
    register(w, "mysql", "8.0")
    err = fails(w.stub.ListDatastoreVersions, pb.ListDatastoreVersionsRequest(**kw))
    assert err.code == code
    assert sorted(err.fields) == fields


# -- update ---------------------------------------------------------------------


def test_update_changes_only_the_masked_fields(w: World) -> None:
    v = register(w, "mysql", "8.0", manager="mysql", packages=["a"]).datastore_version
    resp = update(
        w,
        v.id,
        "manager",
        "packages",
        manager="mysql-guest",
        packages=["b", "c"],
        image_snapshot_id=w.image2,  # not in the mask: ignored
        active=False,  # not in the mask: ignored
    )
    u = resp.datastore_version
    assert (u.manager, list(u.packages), u.image_snapshot_id, u.active) == (
        "mysql-guest",
        ["b", "c"],
        w.image,
        True,
    )
    assert u.generation == resp.generation == generation(w)
    assert u.create_time == v.create_time
    assert inspect(w, v.id) == u
    [row] = stored_versions(w)
    assert (row.manager, row.packages, row.image_snapshot_id) == (
        "mysql-guest",
        ["b", "c"],
        w.image,
    )


def test_update_image_and_clear_packages(w: World) -> None:
    v = register(w, "mysql", "8.0", packages=["a"]).datastore_version
    u = update(w, v.id, "image_snapshot_id", "packages", image_snapshot_id=w.image2)
    assert u.datastore_version.image_snapshot_id == w.image2
    assert list(u.datastore_version.packages) == []


@pytest.mark.parametrize("which", ["missing", "not-an-image"])
def test_update_to_an_unknown_image_is_not_found(w: World, which: str) -> None:
    v = register(w, "mysql", "8.0").datastore_version
    snapshot_id = uuid.uuid4().hex if which == "missing" else w.plain
    before = generation(w)
    err = fails(
        w.stub.UpdateDatastoreVersion,
        pb.UpdateDatastoreVersionRequest(
            datastore_version_id=v.id,
            image_snapshot_id=snapshot_id,
            update_mask=mask("image_snapshot_id"),
        ),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert (err.reason, err.message) == ("IMAGE_NOT_FOUND", "image not found")
    assert list(err.fields) == ["image_snapshot_id"]
    assert generation(w) == before
    assert inspect(w, v.id).image_snapshot_id == w.image


def test_update_default_switches_and_clears(w: World) -> None:
    a = register(w, "mysql", "5.7", default=True).datastore_version
    b = register(w, "mysql", "8.0").datastore_version
    other = register(w, "mariadb", "10", default=True).datastore_version
    resp = update(w, b.id, "default", default=True)
    assert resp.datastore_version.default
    assert defaults(w, a.datastore_id) == ["8.0"]
    assert inspect(w, a.id).generation == resp.generation
    ds = inspect_datastore(w, a.datastore_id)
    assert (ds.default_version_id, ds.generation) == (b.id, resp.generation)
    assert defaults(w, other.datastore_id) == ["10"]  # other datastores keep theirs
    # Clearing the default leaves the datastore without one.
    cleared = update(w, b.id, "default", default=False)
    assert not cleared.datastore_version.default
    assert defaults(w, a.datastore_id) == []
    ds = inspect_datastore(w, a.datastore_id)
    assert (ds.default_version_id, ds.default_version_name) == ("", "")


def test_the_default_must_stay_active(w: World) -> None:
    d = register(w, "mysql", "8.0", default=True).datastore_version
    off = register(w, "mysql", "5.7", active=False).datastore_version
    before = generation(w)
    # Deactivating the default alone is refused...
    err = fails(
        w.stub.UpdateDatastoreVersion,
        pb.UpdateDatastoreVersionRequest(
            datastore_version_id=d.id, active=False, update_mask=mask("active")
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == ["active"]
    # ...as is making an inactive version the default...
    err = fails(
        w.stub.UpdateDatastoreVersion,
        pb.UpdateDatastoreVersionRequest(
            datastore_version_id=off.id, default=True, update_mask=mask("default")
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == ["default"]
    # ...or deactivating while making it the default.
    err = fails(
        w.stub.UpdateDatastoreVersion,
        pb.UpdateDatastoreVersionRequest(
            datastore_version_id=d.id,
            active=False,
            default=True,
            update_mask=mask("active", "default"),
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == ["default"]
    assert generation(w) == before
    assert defaults(w, d.datastore_id) == ["8.0"]
    assert [r.active for r in stored_versions(w)] == [False, True]
    # Together with clearing default, deactivating is fine.
    u = update(w, d.id, "active", "default", active=False, default=False).datastore_version
    assert (u.active, u.default) == (False, False)
    # Activating and making default at once is fine too.
    u = update(w, off.id, "active", "default", active=True, default=True).datastore_version
    assert (u.active, u.default) == (True, True)
    assert defaults(w, d.datastore_id) == ["5.7"]


@pytest.mark.parametrize(
    ("paths", "kw", "field"),
    [
        ((), {}, "update_mask"),
        (("name",), {}, "update_mask"),
        (("datastore_id",), {}, "update_mask"),
        (("manager", "volume_count"), {"manager": "x"}, "update_mask"),
        (("manager",), {"manager": ""}, "manager"),
        (("manager",), {"manager": "bad manager"}, "manager"),
        (("packages",), {"packages": ["ok", "not ok"]}, "packages[1]"),
        (("packages",), {"packages": ["dup", "dup"]}, "packages[1]"),
        (("image_snapshot_id",), {"image_snapshot_id": ""}, "image_snapshot_id"),
        (("image_snapshot_id",), {"image_snapshot_id": "zz"}, "image_snapshot_id"),
    ],
)
def test_update_bad_input_writes_nothing(
    w: World, paths: tuple[str, ...], kw: dict[str, Any], field: str
) -> None:
    v = register(w, "mysql", "8.0", packages=["p"]).datastore_version
    before = generation(w)
    err = fails(
        w.stub.UpdateDatastoreVersion,
        pb.UpdateDatastoreVersionRequest(datastore_version_id=v.id, update_mask=mask(*paths), **kw),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == [field]
    assert generation(w) == before
    assert inspect(w, v.id) == v


def test_update_expected_generation(w: World) -> None:
    v = register(w, "mysql", "8.0").datastore_version
    ok = update(w, v.id, "manager", manager="m2", expected_generation=v.generation)
    err = fails(
        w.stub.UpdateDatastoreVersion,
        pb.UpdateDatastoreVersionRequest(
            datastore_version_id=v.id,
            manager="m3",
            update_mask=mask("manager"),
            expected_generation=v.generation,
        ),
    )
    assert err.code == grpc.StatusCode.ABORTED
    assert err.reason == "GENERATION_MISMATCH"
    assert err.metadata["generation"] == str(ok.generation)
    assert inspect(w, v.id).manager == "m2"


def test_update_unknown_version(w: World) -> None:
    err = fails(
        w.stub.UpdateDatastoreVersion,
        pb.UpdateDatastoreVersionRequest(
            datastore_version_id=uuid.uuid4().hex, manager="m", update_mask=mask("manager")
        ),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert list(err.fields) == ["datastore_version_id"]


# -- delete ---------------------------------------------------------------------


def test_delete_version_is_refused_while_instances_exist(w: World) -> None:
    v = register(w, "mysql", "8.0", default=True).datastore_version
    vols = [
        make_volume_row(w.daemon.store, w.cluster_id, f"db{i}", datastore_version_id=v.id)
        for i in range(3)
    ]
    before = generation(w)
    err = fails(
        w.stub.DeleteDatastoreVersion, pb.DeleteDatastoreVersionRequest(datastore_version_id=v.id)
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "INSTANCES_EXIST"
    assert err.message == "instances exist"
    assert err.metadata["count"] == "3"
    assert generation(w) == before
    assert len(stored_versions(w)) == 1

    with w.daemon.store.write() as s:
        s.execute(delete(VolumeRow).where(VolumeRow.id.in_(vols)))
    resp = w.stub.DeleteDatastoreVersion(
        pb.DeleteDatastoreVersionRequest(datastore_version_id=v.id)
    )
    assert resp.generation == generation(w)
    assert stored_versions(w) == []
    # The datastore stays, without versions and without a default.
    ds = inspect_datastore(w, v.datastore_id)
    assert (ds.version_count, ds.default_version_id, ds.generation) == (0, "", resp.generation)
    err = fails(
        w.stub.DeleteDatastoreVersion, pb.DeleteDatastoreVersionRequest(datastore_version_id=v.id)
    )
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_delete_datastore_only_when_it_has_no_versions(w: World) -> None:
    a = register(w, "mysql", "8.0").datastore_version
    b = register(w, "mysql", "5.7").datastore_version
    before = generation(w)
    err = fails(w.stub.DeleteDatastore, pb.DeleteDatastoreRequest(datastore_id=a.datastore_id))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "DATASTORE_NOT_EMPTY"
    assert err.metadata["count"] == "2"
    assert generation(w) == before
    assert len(stored_datastores(w)) == 1

    for v in (a, b):
        w.stub.DeleteDatastoreVersion(pb.DeleteDatastoreVersionRequest(datastore_version_id=v.id))
    resp = w.stub.DeleteDatastore(pb.DeleteDatastoreRequest(datastore_id=a.datastore_id))
    assert resp.generation == generation(w)
    assert stored_datastores(w) == []
    err = fails(w.stub.InspectDatastore, pb.InspectDatastoreRequest(datastore_id=a.datastore_id))
    assert err.code == grpc.StatusCode.NOT_FOUND
    # Registering again creates a new datastore.
    again = register(w, "mysql", "8.0")
    assert again.datastore_created and again.datastore_version.datastore_id != a.datastore_id


# -- datastores -----------------------------------------------------------------


def test_list_datastores_with_their_defaults(w: World) -> None:
    names = [f"ds{i:02d}" for i in range(7)]
    for name in reversed(names):
        register(w, name, "1", default=name != "ds03")
        register(w, name, "2")
    seen: list[pb.Datastore] = []
    token = ""
    pages = 0
    while True:
        resp = w.stub.ListDatastores(pb.ListDatastoresRequest(page_size=3, page_token=token))
        pages += 1
        seen.extend(resp.datastores)
        token = resp.next_page_token
        if not token:
            break
    assert pages == 3
    assert [d.name for d in seen] == names
    assert all(d.version_count == 2 for d in seen)
    assert [d.default_version_name for d in seen] == ["1", "1", "1", "", "1", "1", "1"]
    assert seen[0] == inspect_datastore(w, seen[0].id)


@pytest.mark.parametrize(
    "kw",
    [
        {"page_size": -1},
        {"page_size": 1001},
        {"page_token": "garbage!"},
        {"page_token": "eyJrIjoiY2x1c3RlciIsImEiOnsibmFtZSI6IngifX0"},  # a cluster list's
    ],
)
def test_list_datastores_bad_input(w: World, kw: dict[str, Any]) -> None:
    err = fails(w.stub.ListDatastores, pb.ListDatastoresRequest(**kw))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(err.fields) == [next(iter(kw))]


# -- for the volume and snapshot code ---------------------------------------------


def test_provisioning_source(w: World) -> None:
    v = register(w, "mysql", "8.0").datastore_version
    off = register(w, "mysql", "5.7", active=False).datastore_version
    with w.daemon.store.read() as s:
        src = provisioning_source(s, v.id)
        assert (src.datastore_version_id, src.image_snapshot_id) == (v.id, w.image)
        assert src.labels == {"osd.dev/datastore": "mysql", "osd.dev/datastore-version": "8.0"}
        with pytest.raises(FailedPrecondition) as failed:
            provisioning_source(s, off.id)
        assert failed.value.reason == "DATASTORE_VERSION_INACTIVE"
        unknown = uuid.uuid4().hex
        with pytest.raises(NotFound) as missing:
            provisioning_source(s, unknown)
        assert missing.value.metadata == {
            "kind": "datastore version",
            "field": "source.datastore_version_id",
            "id": unknown,
        }
        with pytest.raises(InvalidArgument) as bad:
            provisioning_source(s, "")
        assert [x.field for x in bad.value.violations] == ["source.datastore_version_id"]


def test_versions_using_snapshot(w: World) -> None:
    a = register(w, "mysql", "8.0").datastore_version
    register(w, "mariadb", "10")
    register(w, "mysql", "5.7", image_snapshot_id=w.image2)
    with w.daemon.store.read() as s:
        assert repo.versions_using_snapshot(s, w.image) == 2
        assert repo.versions_using_snapshot(s, w.image2) == 1
        assert repo.versions_using_snapshot(s, w.plain) == 0
    update(w, a.id, "image_snapshot_id", image_snapshot_id=w.image2)
    with w.daemon.store.read() as s:
        assert repo.versions_using_snapshot(s, w.image) == 1
        assert repo.versions_using_snapshot(s, w.image2) == 2


def test_deployer_walkthrough(daemon: RunningDaemon) -> None:
    """The issue's scenario, entirely over gRPC: images are snapshots of real
    volumes, and the volume is provisioned from a version by CreateVolume."""
    cluster_id, _nodes, _drives = make_topology(daemon.store)
    volumes = volume_pb2_grpc.VolumeServiceStub(daemon.channel)
    stub = Stub(daemon.channel)
    images = {}
    for engine in ("mysql", "postgresql"):
        base = volumes.CreateVolume(
            vpb.CreateVolumeRequest(cluster_id=cluster_id, name=f"{engine}-base", size="10G")
        ).volume
        snap = volumes.CreateSnapshot(
            vpb.CreateSnapshotRequest(volume_id=base.id, name=f"{engine}-golden")
        ).snapshot
        volumes.UpdateSnapshot(
            vpb.UpdateSnapshotRequest(snapshot_id=snap.id, image=True, update_mask=mask("image"))
        )
        images[engine] = snap.id

    mysql = stub.CreateDatastoreVersion(
        pb.CreateDatastoreVersionRequest(
            datastore="mysql",
            name="8.0",
            manager="mysql",
            image_snapshot_id=images["mysql"],
            packages=["mysql-server-8.0"],
            active=True,
            default=True,
        )
    )
    pg = stub.CreateDatastoreVersion(
        pb.CreateDatastoreVersionRequest(
            datastore="postgresql",
            name="16",
            manager="postgresql",
            image_snapshot_id=images["postgresql"],
            active=True,
            default=True,
        )
    )
    assert mysql.datastore_created and pg.datastore_created
    listed = stub.ListDatastoreVersions(pb.ListDatastoreVersionsRequest()).datastore_versions
    assert [(v.datastore_name, v.name) for v in listed] == [("mysql", "8.0"), ("postgresql", "16")]
    vid = pg.datastore_version.id
    stub.UpdateDatastoreVersion(
        pb.UpdateDatastoreVersionRequest(
            datastore_version_id=vid, packages=["postgresql-16"], update_mask=mask("packages")
        )
    )

    db = volumes.CreateVolume(
        vpb.CreateVolumeRequest(
            cluster_id=cluster_id,
            name="orders-db",
            source=vpb.VolumeSource(datastore_version_id=vid),
        )
    ).volume
    assert db.parent_snapshot_id == images["postgresql"]
    assert db.labels["osd.dev/datastore"] == "postgresql"
    assert db.labels["osd.dev/datastore-version"] == "16"
    got = stub.InspectDatastoreVersion(
        pb.InspectDatastoreVersionRequest(datastore_version_id=vid)
    ).datastore_version
    assert got.volume_count == 1

    err = fails(
        stub.DeleteDatastoreVersion, pb.DeleteDatastoreVersionRequest(datastore_version_id=vid)
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSTANCES_EXIST")
    assert "instances exist" in err.message

    volumes.DeleteVolume(vpb.DeleteVolumeRequest(volume_id=db.id))
    stub.DeleteDatastoreVersion(pb.DeleteDatastoreVersionRequest(datastore_version_id=vid))
    left = stub.ListDatastoreVersions(pb.ListDatastoreVersionsRequest()).datastore_versions
    assert [v.name for v in left] == ["8.0"]
    with daemon.store.read() as s:
        assert allocations.check(s) == []
