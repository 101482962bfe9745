"""202 Accepted with Location for calls that start a job."""

from __future__ import annotations

from gateway.jobs import job_location, starts_jobs
from gateway.routes import Route, Router, method_routes
from osd.contract import contract
from osd.v1 import job_pb2, node_pb2, volume_pb2
from tests.gateway.conftest import ShapesGateway

ROUTER = Router([r for e in contract() for m in e.descriptor.methods for r in method_routes(m)])


def route(method: str, path: str) -> Route:
    return ROUTER.resolve(method, path)[0]


def test_a_started_job_gives_its_location() -> None:
    response = node_pb2.DrainNodeResponse()
    response.job.CopyFrom(job_pb2.Job(id="ab12"))
    assert job_location(route("POST", "/v1/nodes/n1:drain"), response) == "/v1/jobs/ab12"


def test_no_location_without_a_job() -> None:
    drain = route("POST", "/v1/nodes/n1:drain")
    assert job_location(drain, node_pb2.DrainNodeResponse()) is None
    response = node_pb2.DrainNodeResponse()
    response.job.CopyFrom(job_pb2.Job())  # set but without an id
    assert job_location(drain, response) is None


def test_a_create_that_may_start_a_job() -> None:
    create = route("POST", "/v1/volumes")
    assert starts_jobs(create)
    assert job_location(create, volume_pb2.CreateVolumeResponse()) is None
    response = volume_pb2.CreateVolumeResponse()
    response.job.id = "c0py"
    assert job_location(create, response) == "/v1/jobs/c0py"


def test_reading_or_steering_a_job_is_not_starting_one() -> None:
    response = job_pb2.CancelJobResponse()
    response.job.id = "j1"
    assert job_location(route("POST", "/v1/jobs/j1:cancel"), response) is None
    inspect = job_pb2.InspectJobResponse()
    inspect.job.id = "j1"
    assert job_location(route("GET", "/v1/jobs/j1"), inspect) is None
    assert not starts_jobs(route("GET", "/v1/jobs/j1"))
    assert not starts_jobs(route("POST", "/v1/jobs/j1:pause"))
    assert not starts_jobs(route("GET", "/v1/nodes/n1/driveAddStatus"))


def test_routes_that_may_answer_202() -> None:
    expected = {
        "osd.v1.NodeService.DrainNode",
        "osd.v1.NodeService.EjectDrive",
        "osd.v1.Service.StartDriveAdd",
        "osd.v1.Service.StartDriveReplace",
        "osd.v1.Service.StartPoolRebalance",
        "osd.v1.VolumeService.CreateSnapshot",
        "osd.v1.VolumeService.CreateVolume",
        "osd.v1.VolumeService.RepairVolume",
        "osd.v1.VolumeService.UpdateVolume",
    }
    assert {r.method.full_name for r in ROUTER.routes if starts_jobs(r)} == expected


def test_202_over_http(shapes: ShapesGateway) -> None:
    response = shapes.http.post("/v1/shapes/s1:act", json={"name": "start-job"})
    assert response.status_code == 202
    assert response.headers["location"] == "/v1/jobs/0123456789abcdef0123456789abcdef"
    assert response.json()["job"]["id"] == "0123456789abcdef0123456789abcdef"
    plain = shapes.http.post("/v1/shapes/s1:act", json={"name": "no job"})
    assert plain.status_code == 200 and "location" not in plain.headers
