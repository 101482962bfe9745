"""WatchService.Watch over gRPC, on SQLite and PostgreSQL: every change to a
watched object is streamed in commit order with the object, a stream
resumes from a generation and follows a job's progress while it runs, and a
client that fell behind what is kept is told so."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import timedelta

import grpc
import pytest

from osd.store import events
from osd.store.models import utcnow
from osd.v1 import job_pb2, volume_pb2, watch_pb2, watch_pb2_grpc
from tests.conftest import RunningDaemon
from tests.factories import make_topology
from tests.helpers import error_of
from tests.test_jobs import wait_job
from tests.volume_helpers import create, volumes

T = 30
Kind = job_pb2.ObjectKind


def watch(d: RunningDaemon, **kw: object) -> list[watch_pb2.WatchEvent]:
    stub = watch_pb2_grpc.WatchServiceStub(d.channel)
    return list(stub.Watch(watch_pb2.WatchRequest(**kw), timeout=T))  # type: ignore[arg-type]


def test_changes_are_streamed_in_commit_order_with_their_objects(daemon: RunningDaemon) -> None:
    cluster_id, nodes, drives = make_topology(daemon.store)
    topology = watch(daemon)
    assert {e.object_id for e in topology if e.kind == Kind.OBJECT_KIND_NODE} == set(nodes)
    assert {e.object_id for e in topology if e.kind == Kind.OBJECT_KIND_DRIVE} == set(drives)
    assert all(e.HasField("node") for e in topology if e.kind == Kind.OBJECT_KIND_NODE)
    mark = topology[-1].generation

    volume = create(volumes(daemon), cluster_id, "watched", replicas=2)
    seen = watch(daemon, from_generation=mark, kinds=[Kind.OBJECT_KIND_VOLUME])
    assert [e.object_id for e in seen] and {e.object_id for e in seen} == {volume.id}
    assert seen[0].action == watch_pb2.WATCH_ACTION_CREATED
    assert [e.generation for e in seen] == sorted(e.generation for e in seen)
    # One event per change of an object in a transaction.
    keys = [(e.generation, e.object_id, e.action) for e in seen]
    assert len(keys) == len(set(keys))
    assert all(e.generation > mark for e in seen)
    assert seen[-1].volume.state == volume_pb2.VOLUME_STATE_UP  # the object as it is now

    volumes(daemon).DeleteVolume(volume_pb2.DeleteVolumeRequest(volume_id=volume.id))
    gone = watch(daemon, from_generation=seen[-1].generation, kinds=[Kind.OBJECT_KIND_VOLUME])
    assert gone[-1].action == watch_pb2.WATCH_ACTION_DELETED
    assert gone[-1].object_id == volume.id and not gone[-1].HasField("volume")


def test_a_following_stream_shows_a_jobs_progress_while_it_runs(daemon: RunningDaemon) -> None:
    cluster_id, _, _ = make_topology(daemon.store)
    source = create(volumes(daemon), cluster_id, "source", replicas=2)
    start = watch(daemon)[-1].generation
    stub = watch_pb2_grpc.WatchServiceStub(daemon.channel)
    stream = stub.Watch(
        watch_pb2.WatchRequest(from_generation=start, kinds=[Kind.OBJECT_KIND_JOB], follow=True),
        timeout=60,
    )
    seen: list[watch_pb2.WatchEvent] = []

    def read() -> None:
        try:
            for event in stream:
                seen.append(event)
                if event.job.state == job_pb2.JOB_STATE_DONE:
                    return
        except grpc.RpcError:
            return

    reader = threading.Thread(target=read)
    reader.start()
    # Each copy takes a while, so the job is seen part done while it runs.
    daemon.driver.delay_seconds = 0.6
    copied = volumes(daemon).CreateVolume(
        volume_pb2.CreateVolumeRequest(
            cluster_id=cluster_id,
            name="copy",
            size="1G",
            source=volume_pb2.VolumeSource(volume_id=source.id),
        )
    )
    assert wait_job(daemon, copied.job.id).state == job_pb2.JOB_STATE_DONE
    daemon.driver.delay_seconds = 0
    reader.join(timeout=T)
    stream.cancel()
    states = [e.job.state for e in seen if e.object_id == copied.job.id]
    assert states[-1] == job_pb2.JOB_STATE_DONE
    assert job_pb2.JOB_STATE_RUNNING in states
    steps = [e.job.progress.done_steps for e in seen if e.job.state == job_pb2.JOB_STATE_RUNNING]
    assert steps == sorted(steps) and 1 in steps  # one copy of two made, seen while it ran


def test_a_client_behind_what_is_kept_is_told_where_to_resume(daemon: RunningDaemon) -> None:
    make_topology(daemon.store)
    last = watch(daemon)[-1].generation
    with daemon.store.write() as s:
        events.prune(s, utcnow() + timedelta(seconds=1))
    with pytest.raises(grpc.RpcError) as info:
        watch(daemon, from_generation=1)
    err = error_of(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.OUT_OF_RANGE, "WATCH_EXPIRED")
    assert err.metadata["pruned_through"] == str(last)
    assert watch(daemon, from_generation=last) == []
    for request, field in (
        ({"from_generation": -1}, "from_generation"),
        ({"kinds": [Kind.OBJECT_KIND_UNSPECIFIED]}, "kinds"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            watch(daemon, **request)
        err = error_of(info.value)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and field in err.fields


def test_osd_watch_prints_one_json_line_per_change(sqlite_daemon: RunningDaemon) -> None:
    _, nodes, _ = make_topology(sqlite_daemon.store)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "osd.cli",
            "watch",
            "--endpoint",
            sqlite_daemon.target,
            "--kind",
            "node",
            "--no-follow",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert {e["object_id"] for e in printed} == set(nodes)
    assert all(e["kind"] == "OBJECT_KIND_NODE" and e["node"]["state"] for e in printed)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "osd.cli",
            "watch",
            "--endpoint",
            sqlite_daemon.target,
            "--kind",
            "unspecified",
            "--no-follow",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 3 and "kinds" in bad.stderr
