"""`osd call` and the Python client it is built on, against a daemon with
authentication on: any method by name with a JSON request, the answer as
JSON, and a failed call's status as its exit code with the reason, the
fields and the request id on stderr."""

from __future__ import annotations

import io
import json
from concurrent import futures
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import grpc
import pytest

from osd import cli
from osd.client import EXIT_CODES, CallError, Client, exit_code, find_method
from osd.v1 import cluster_pb2
from tests.auth_helpers import World, token


def osd(w: World, *argv: str, role: str = "admin", stdin: str = "") -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    creds = ["--endpoint", w.daemon.target]
    if role:
        creds += ["--token", token(w.keys, roles=[role], subject=f"cli-{role}")]
    with redirect_stdout(out), redirect_stderr(err), pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO(stdin))
        rc = cli.main([*argv, *creds])
    text = out.getvalue()
    return rc, (json.loads(text) if text.strip() else None), err.getvalue()


def test_any_method_by_name_with_json_in_and_out(w: World, tmp_path: Path) -> None:
    rc, made, err = osd(w, "call", "ClusterService.CreateCluster", "-d", '{"name": "by-call"}')
    assert rc == 0, err
    assert made["cluster"]["name"] == "by-call" and made["created"] is True
    cluster_id = made["cluster"]["id"]
    rc, got, _ = osd(
        w,
        "call",
        "osd.v1.ClusterService/InspectCluster",
        "-d",
        json.dumps({"cluster_id": cluster_id}),
    )
    assert rc == 0 and got["cluster"]["id"] == cluster_id
    request = tmp_path / "list.json"
    request.write_text('{"name_regex": "^by-"}')
    rc, listed, _ = osd(w, "call", "ClusterService/ListClusters", "-d", f"@{request}")
    assert rc == 0 and [c["name"] for c in listed["clusters"]] == ["by-call"]
    rc, listed, _ = osd(w, "call", "ClusterService.ListClusters", "-d", "-", stdin="{}")
    assert rc == 0 and {c["name"] for c in listed["clusters"]} == {"by-call", "c1"}
    # Sizes and enums in their JSON spellings reach the daemon.
    body = {
        "cluster_id": w.cluster_id,
        "name": "v1",
        "size": "2G",
        "provisioning": "PROVISIONING_THIN",
    }
    rc, volume, err = osd(w, "call", "VolumeService.CreateVolume", "-d", json.dumps(body))
    assert rc == 0, err
    assert volume["volume"]["size_bytes"] == str(2 << 30)


@pytest.mark.parametrize(
    ("argv", "role", "code"),
    [
        (
            ["ClusterService.InspectCluster", "-d", '{"cluster_id": "0" }'],
            "admin",
            "INVALID_ARGUMENT",
        ),
        (
            ["ClusterService.InspectCluster", "-d", '{"cluster_id": "' + "a" * 32 + '"}'],
            "admin",
            "NOT_FOUND",
        ),
        (
            ["ClusterService.CreateCluster", "-d", '{"name": "c1", "labels": {"x": "y"}}'],
            "admin",
            "ALREADY_EXISTS",
        ),
        (["ClusterService.ListClusters"], "", "UNAUTHENTICATED"),
        (["ClusterService.CreateCluster", "-d", '{"name": "nope"}'], "view", "PERMISSION_DENIED"),
    ],
    ids=["invalid", "not-found", "exists", "anonymous", "denied"],
)
def test_a_failed_call_exits_with_its_status_class(
    w: World, argv: list[str], role: str, code: str
) -> None:
    rc, out, err = osd(w, "call", *argv, role=role)
    assert out is None
    assert rc == EXIT_CODES[grpc.StatusCode[code]] == exit_code(grpc.StatusCode[code])
    assert err.startswith(f"osd: {code}: "), err
    assert "request id " in err
    if code == "INVALID_ARGUMENT":
        assert "\n  cluster_id: " in err  # the field, named


def test_the_cluster_commands_exit_the_same_way(w: World) -> None:
    rc, _, err = osd(w, "cluster", "inspect", "a" * 32)
    assert rc == EXIT_CODES[grpc.StatusCode.NOT_FOUND] and "NOT_FOUND" in err
    rc, _, err = osd(w, "cluster", "create", "x", role="view")
    assert rc == EXIT_CODES[grpc.StatusCode.PERMISSION_DENIED]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["NoService.Nothing"], "no service 'NoService'"),
        (["ClusterService.Nothing"], "ClusterService has no method 'Nothing'"),
        (["ClusterService"], "is not SERVICE.METHOD"),
        (["ClusterService.ListClusters", "-d", "{not json"], "-d: not a ListClustersRequest"),
        (["ClusterService.ListClusters", "-d", '{"page_sise": 1}'], "page_sise"),
        (["ClusterService.ListClusters", "-d", "@/nonexistent/file"], "-d @/nonexistent/file"),
    ],
)
def test_a_call_the_cli_cannot_make_is_a_usage_error(w: World, argv: list[str], says: str) -> None:
    rc, out, err = osd(w, "call", *argv)
    assert (rc, out) == (2, None)
    assert says in err


def test_the_python_client(w: World) -> None:
    admin = token(w.keys, roles=["admin"])
    with Client(w.daemon.target, token=admin) as client:
        made = client.call("ClusterService.CreateCluster", {"name": "from-python"})
        assert isinstance(made, cluster_pb2.CreateClusterResponse) and made.created
        stub = client.stub("ClusterService")
        got = stub.InspectCluster(cluster_pb2.InspectClusterRequest(cluster_id=made.cluster.id))
        assert got.cluster.name == "from-python"
        with pytest.raises(CallError) as info:
            client.call("ClusterService.CreateCluster", {"name": "bad name!"})
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "name" in info.value.fields and info.value.request_id
    with Client(w.daemon.target) as anonymous, pytest.raises(CallError) as info:
        anonymous.call("ClusterService.ListClusters")
    assert (info.value.code, info.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIALS_MISSING",
    )
    with pytest.raises(ValueError, match="not both"):
        Client(w.daemon.target, token=admin, api_key="k")
    assert find_method("VolumeService.ListVolumes").full_name == "osd.v1.VolumeService.ListVolumes"


def _copy_job(w: World, name: str) -> str:
    """Starts a VOLUME_COPY job (a volume made from another) and returns its id."""
    alice = token(w.keys, roles=["user"], subject="alice")
    with Client(w.daemon.target, token=alice) as client:
        source = client.call(
            "VolumeService.CreateVolume",
            {"cluster_id": w.cluster_id, "name": f"{name}-src", "size": "1G"},
        )
        client.call(
            "VolumeService.CreateVolume",
            {
                "cluster_id": w.cluster_id,
                "name": name,
                "source": {"volume_id": source.volume.id},  # type: ignore[attr-defined]
            },
        )
    admin = token(w.keys, roles=["admin"])
    with Client(w.daemon.target, token=admin) as client:
        jobs = client.call("JobService.ListJobs", {"kinds": ["JOB_KIND_VOLUME_COPY"]})
    newest = jobs.jobs[0]  # type: ignore[attr-defined]
    return str(newest.id)


def test_job_watch_follows_a_job_and_exits_by_how_it_ended(w: World) -> None:
    job_id = _copy_job(w, "copied")
    rc, job, err = osd(w, "job", "watch", job_id)
    assert rc == 0, err
    assert job["job"]["state"] == "JOB_STATE_DONE" and job["job"]["id"] == job_id
    assert f"{job_id} DONE 100%" in err

    w.daemon.driver.fail("clone_replica", times=1000)
    failing = _copy_job(w, "copied-again")
    rc, job, err = osd(w, "job", "watch", failing, "--quiet")
    w.daemon.driver.clear_faults()
    assert rc == 12, err
    assert job["job"]["state"] == "JOB_STATE_FAILED" and err == ""


def test_the_client_waits_for_a_job_with_a_callback(w: World) -> None:
    job_id = _copy_job(w, "waited")
    seen: list[int] = []
    admin = token(w.keys, roles=["admin"])
    with Client(w.daemon.target, token=admin) as client:
        job = client.wait_job(job_id, on_progress=lambda j: seen.append(j.state), timeout=60)
    assert job.state == 4 and seen[-1] == 4  # JOB_STATE_DONE
    rc, _, err = osd(w, "job", "watch", "f" * 32)
    assert rc == EXIT_CODES[grpc.StatusCode.NOT_FOUND], err


def test_the_client_retries_unavailable() -> None:
    """A server that answers UNAVAILABLE twice, then OK: the client's retry
    policy carries the call through, and with retries=1 it does not."""
    attempts: list[int] = []

    def list_clusters(request: bytes, context: grpc.ServicerContext) -> bytes:
        attempts.append(1)
        if len(attempts) % 3 != 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return cluster_pb2.ListClustersResponse().SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "osd.v1.ClusterService",
                {"ListClusters": grpc.unary_unary_rpc_method_handler(list_clusters)},
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}") as client:
            client.call("ClusterService.ListClusters")
        assert len(attempts) == 3
        attempts.clear()
        with Client(f"127.0.0.1:{port}", retries=1) as client, pytest.raises(CallError) as info:
            client.call("ClusterService.ListClusters")
        assert info.value.code == grpc.StatusCode.UNAVAILABLE and len(attempts) == 1
    finally:
        server.stop(grace=0)
