"""Job specs and checkpoints as JSON: records round-trip, a malformed stored value
is refused with its field named, and the shapes jobs stored before typed specs
still read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest

from osd.engine.jobs import kinds
from osd.engine.jobs.handler import AsStored, NoCheckpoint
from osd.engine.jobs.kinds.drive_add import DriveAddRequest, DriveAddSpec
from osd.engine.jobs.kinds.drive_replace import DriveReplaceSpec, Probe
from osd.engine.jobs.kinds.evacuation import EvacuationCheckpoint
from osd.engine.jobs.kinds.pool_rebalance import PoolRebalanceCheckpoint
from osd.engine.jobs.kinds.volume_copy import VolumeCopyRequest, VolumeCopySpec
from osd.engine.jobs.kinds.volume_job import VolumeJobCheckpoint, Work
from osd.engine.jobs.kinds.volume_move import VolumeMoveSpec
from osd.engine.jobs.kinds.volume_replica_change import VolumeReplicaChangeSpec
from osd.engine.jobs.moves import Inflight, Move
from osd.engine.jobs.records import Record, RecordError, from_json, to_json
from osd.engine.volumes.models import Durability, Placement, Qos, Source
from osd.enums import DriveState, FailureDomain, Provisioning, SourceKind, VolumeKind


class Color(Enum):
    RED = "r"
    BLUE = "b"


@dataclass(frozen=True)
class Part(Record):
    name: str
    size: int = 0


@dataclass(frozen=True)
class Everything(Record):
    text: str
    number: int
    ratio: float
    flag: bool
    state: DriveState
    color: Color
    part: Part
    maybe: Part | None
    names: list[str]
    parts: tuple[Part, ...]
    pair: tuple[str, int]
    labels: dict[str, str]
    nested: dict[str, list[int]] = field(default_factory=dict)
    note: str = "none"


def everything() -> Everything:
    return Everything(
        text="t",
        number=7,
        ratio=1.5,
        flag=True,
        state=DriveState.FAILED,
        color=Color.BLUE,
        part=Part("p", 3),
        maybe=None,
        names=["a", "b"],
        parts=(Part("x"), Part("y", 2)),
        pair=("d", 4),
        labels={"k": "v"},
        nested={"n": [1, 2]},
    )


# -- round trip ----------------------------------------------------------------------


def test_a_record_round_trips_through_json_text() -> None:
    record = everything()
    data = json.loads(json.dumps(record.to_json()))
    assert Everything.from_json(data) == record


def test_the_json_form_is_plain_data() -> None:
    data = everything().to_json()
    assert data["state"] == int(DriveState.FAILED) and type(data["state"]) is int
    assert data["color"] == "BLUE"
    assert data["part"] == {"name": "p", "size": 3}
    assert data["maybe"] is None
    assert data["parts"] == [{"name": "x", "size": 0}, {"name": "y", "size": 2}]
    assert data["pair"] == ["d", 4]
    assert to_json(everything()) == data


def test_a_missing_field_with_a_default_reads_as_the_default() -> None:
    data = everything().to_json()
    del data["note"], data["nested"]
    data["part"] = {"name": "p"}
    record = Everything.from_json(data)
    assert (record.note, record.nested, record.part) == ("none", {}, Part("p", 0))


def test_keys_no_field_names_are_ignored() -> None:
    data = {**everything().to_json(), "extra": {"anything": 1}}
    assert Everything.from_json(data) == everything()


def test_an_integer_reads_as_a_float() -> None:
    data = {**everything().to_json(), "ratio": 2}
    ratio = Everything.from_json(data).ratio
    assert ratio == 2.0 and type(ratio) is float


def test_plain_dataclasses_nest() -> None:
    request = VolumeCopyRequest(
        volume_id="v" * 32,
        cluster_id="c" * 32,
        name="copy",
        kind=VolumeKind.BLOCK,
        size_bytes=1 << 30,
        size_field="size",
        durability=Durability(1, 3),
        placement=Placement(failure_domain=int(FailureDomain.NODE), node_selector={"a": "b"}),
        provisioning=Provisioning.THIN,
        snapshot_factor=0.0,
        qos=Qos(100, 0),
        labels={"l": "1"},
        template_id="",
        source=Source(SourceKind.VOLUME, "s" * 32),
        multi_attach=False,
    )
    data = json.loads(json.dumps(request.to_json()))
    assert data["source"] == {"kind": int(SourceKind.VOLUME), "id": "s" * 32}
    assert VolumeCopyRequest.from_json(data) == request


# -- malformed values are refused, naming the field ---------------------------------


def refused(data: object) -> RecordError:
    with pytest.raises(RecordError) as info:
        Everything.from_json(data)
    return info.value


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        ({"text": 1}, "text"),
        ({"number": "7"}, "number"),
        ({"number": True}, "number"),
        ({"number": 1.5}, "number"),
        ({"ratio": "x"}, "ratio"),
        ({"flag": 1}, "flag"),
        ({"state": 999}, "state"),
        ({"state": "FAILED"}, "state"),
        ({"color": "GREEN"}, "color"),
        ({"color": 1}, "color"),
        ({"part": "p"}, "part"),
        ({"part": {"size": 1}}, "part.name"),
        ({"maybe": {"name": 5}}, "maybe.name"),
        ({"names": "ab"}, "names"),
        ({"names": ["a", None]}, "names[1]"),
        ({"parts": [{"name": "x"}, {"name": "y", "size": "big"}]}, "parts[1].size"),
        ({"parts": {"name": "x"}}, "parts"),
        ({"pair": ["d"]}, "pair"),
        ({"pair": ["d", "4"]}, "pair[1]"),
        ({"labels": {"k": 1}}, "labels['k']"),
        ({"labels": ["k"]}, "labels"),
        ({"nested": {"n": [1, "2"]}}, "nested['n'][1]"),
    ],
)
def test_a_malformed_value_is_refused_with_its_field_named(
    change: dict[str, Any], field_name: str
) -> None:
    error = refused({**everything().to_json(), **change})
    assert error.field == field_name
    assert error.record == "Everything"
    assert str(error).startswith(f"Everything.{field_name}: ")


def test_a_missing_required_field_is_named() -> None:
    data = everything().to_json()
    del data["number"]
    error = refused(data)
    assert (error.field, error.problem) == ("number", "is missing")
    assert str(error) == "Everything.number: is missing"


def test_a_value_that_is_not_an_object_is_refused() -> None:
    for data in (None, [], "spec", 3):
        assert refused(data).field == ""


def test_the_error_shows_the_bad_value_briefly() -> None:
    error = refused({**everything().to_json(), "number": "x" * 100})
    assert "not an integer" in error.problem and len(error.problem) < 80


def test_a_field_type_a_record_cannot_hold_is_a_type_error() -> None:
    @dataclass(frozen=True)
    class Holds(Record):
        value: object

    with pytest.raises(TypeError, match=r"Holds\.value"):
        Holds.from_json({"value": 1})
    with pytest.raises(TypeError, match=r"Holds\.value"):
        Holds(1).to_json()


def test_from_json_builds_any_dataclass() -> None:
    assert from_json(Part, {"name": "n", "size": 2}) == Part("n", 2)


# -- the kinds' records ---------------------------------------------------------------


def test_every_kind_declares_records_it_can_store() -> None:
    for handler in kinds.handlers():
        for cls in (handler.request_type, handler.spec_type, handler.checkpoint_type):
            assert issubclass(cls, Record), (handler.kind.name, cls)
        checkpoint = handler.checkpoint_type.from_json({})
        assert handler.checkpoint_type.from_json(checkpoint.to_json()) == checkpoint


def test_a_move_in_flight_keeps_its_stored_shape() -> None:
    move = Move(
        allocation_id="a",
        volume_id="v",
        snapshot_id=None,
        index=1,
        nbytes=10,
        source_drive_id="d1",
        rebuild=False,
        target_drive_id="d2",
        target_node_id="n2",
        replica_id="a",
    )
    stored = {"inflight": {**move.to_json(), "reservation_id": "r"}, "cleanup": ["d0", "x"]}
    checkpoint = EvacuationCheckpoint.from_json(stored)
    assert checkpoint.inflight == move.reserved("r")
    assert isinstance(checkpoint.inflight, Inflight)
    assert (checkpoint.cleanup, checkpoint.busy_waits) == (("d0", "x"), 0)
    assert checkpoint.to_json()["inflight"] == stored["inflight"]


def test_checkpoints_stored_before_typed_specs_read() -> None:
    assert PoolRebalanceCheckpoint.from_json({"skipped": ["v:1"]}).skipped == ["v:1"]
    assert EvacuationCheckpoint.from_json({"busy_waits": 3}).busy_waits == 3
    volume = VolumeJobCheckpoint.from_json(
        {"made": ["r1"], "switched": True, "cleanup": [["d", "r0"]]}
    )
    assert volume == VolumeJobCheckpoint(made=["r1"], switched=True, cleanup=[("d", "r0")])
    assert volume.to_json() == {"made": ["r1"], "switched": True, "cleanup": [["d", "r0"]]}
    assert NoCheckpoint.from_json({}) == NoCheckpoint()


def test_specs_stored_before_typed_specs_read() -> None:
    work = {"reservation_id": "r", "drive_id": "d", "replica_id": "r", "nbytes": 5, "index": 0}
    add = DriveAddSpec.from_json(
        {"node_id": "n", "device_path": "/dev/sdb", "address": "a", "pool_ids": ["p"]}
    )
    assert add.pool_ids == ("p",)
    replace = DriveReplaceSpec.from_json(
        {
            "source_state": int(DriveState.FAILED),
            "target_drive_id": "t",
            "new_device": True,
            "device_path": "/dev/sdz",
            "address": "a",
        }
    )
    assert replace.source_state is DriveState.FAILED
    copy = VolumeCopySpec.from_json({"volume_id": "v", "source_volume_id": "s", "work": [work]})
    assert copy.work == (Work("r", "d", "r", 5, 0),)
    change = VolumeReplicaChangeSpec.from_json(
        {"volume_id": "v", "replicas": 2, "previous": 3, "work": [], "remove": ["a"]}
    )
    assert (change.replicas, change.previous, change.remove) == (2, 3, ("a",))
    placement = {
        "pool_id": "p",
        "tail_pool_id": "",
        "failure_domain": int(FailureDomain.NODE),
        "node_selector": {"rack": "1"},
        "drive_selector": {},
    }
    move = VolumeMoveSpec.from_json({"volume_id": "v", "placement": placement, "work": [work]})
    assert move.placement == Placement("p", "", int(FailureDomain.NODE), {"rack": "1"}, {})
    assert move.to_json()["placement"] == placement


def test_a_request_takes_its_json_form() -> None:
    request = DriveAddRequest.from_json(
        {"node_id": "n", "device_path": "/dev/sdb", "probe": {"size_bytes": 9}}
    )
    assert request.probe == Probe(size_bytes=9)
    assert (request.journal, request.pool_ids, request.labels) == (False, (), {})


def test_data_a_kind_does_not_read_is_kept_as_stored() -> None:
    stored = {"anything": [1, {"x": None}]}
    kept = AsStored.from_json(stored)
    assert kept.to_json() == stored
    assert AsStored.from_json("not an object").to_json() == {}
