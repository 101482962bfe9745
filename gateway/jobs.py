"""Long-running operations: 202 Accepted with the job's Location.

A call that starts long-running work returns the persistent Job it recorded
(common.proto: "Calls that start long-running work return a Job"). Over REST
such a call answers ``202 Accepted`` with ``Location: /v1/jobs/{id}``, the
resource that reports the job's state (JobService.InspectJob), as Heketi's
asynchronous operations do. The body is still the full response.

The rule is generic: a response whose top-level field ``job`` is a set
``osd.v1.Job`` with an id, answering a method other than GET on a route that is
not itself under ``/v1/jobs`` (reading or steering a job is not starting one).
"""

from __future__ import annotations

from urllib.parse import quote

from google.protobuf.message import Message

from gateway.routes import Route

JOB_TYPE = "osd.v1.Job"
JOB_FIELD = "job"
JOBS_PATH = "/v1/jobs"


def _is_job_route(route: Route) -> bool:
    """Whether ``route`` reads or steers jobs themselves (/v1/jobs, /v1/jobs/..., /v1/jobs:...)."""
    rest = route.template.removeprefix(JOBS_PATH)
    return rest != route.template and rest[:1] in ("", "/", ":")


def _job_field(route: Route) -> bool:
    field = route.output_type.fields_by_name.get(JOB_FIELD)
    return bool(
        field is not None
        and not field.is_repeated
        and field.message_type is not None
        and field.message_type.full_name == JOB_TYPE
    )


def starts_jobs(route: Route) -> bool:
    """Whether ``route`` may answer 202 (for the OpenAPI document)."""
    return route.http_method != "GET" and not _is_job_route(route) and _job_field(route)


def job_location(route: Route, response: Message) -> str | None:
    """``/v1/jobs/{id}`` when ``response`` reports a job this call started, else None."""
    if not starts_jobs(route) or not response.HasField(JOB_FIELD):
        return None
    job_id = getattr(response, JOB_FIELD).id
    if not job_id:
        return None
    return f"{JOBS_PATH}/{quote(job_id, safe='')}"
