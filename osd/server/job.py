"""JobService: request -> engine input -> engine -> response; and the Job
message every service that starts a job answers with."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from osd.engine.engine import Engine
from osd.engine.jobs.models import Job, JobProgress, JobQuery, ObjectRef
from osd.server import convert
from osd.server.errors import DOMAIN
from osd.v1 import job_pb2 as pb
from osd.v1 import job_pb2_grpc


def ref_to_proto(ref: ObjectRef) -> pb.ObjectRef:
    return pb.ObjectRef(kind=pb.ObjectKind.ValueType(ref.kind), id=ref.id)


def progress_to_proto(p: JobProgress) -> pb.JobProgress:
    return pb.JobProgress(
        percent=p.percent,
        done_bytes=p.done_bytes,
        total_bytes=p.total_bytes,
        done_steps=p.done_steps,
        total_steps=p.total_steps,
        message=p.message,
    )


def job_to_proto(j: Job) -> pb.Job:
    msg = pb.Job(
        id=j.id,
        kind=pb.JobKind.ValueType(j.kind),
        cluster_id=j.cluster_id,
        target=ref_to_proto(j.target),
        related=[ref_to_proto(r) for r in j.related],
        state=pb.JobState.ValueType(j.state),
        cancel_requested=j.cancel_requested,
        pausable=j.pausable,
        cancellable=j.cancellable,
        progress=progress_to_proto(j.progress),
        restart_count=j.restart_count,
        create_time=convert.timestamp(j.create_time),
        update_time=convert.timestamp(j.update_time),
        generation=j.generation,
    )
    if j.start_time is not None:
        msg.start_time.CopyFrom(convert.timestamp(j.start_time))
    if j.end_time is not None:
        msg.end_time.CopyFrom(convert.timestamp(j.end_time))
    if j.error is not None:
        status = status_pb2.Status(code=j.error.code, message=j.error.message)
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=j.error.reason, domain=DOMAIN))
        msg.error.CopyFrom(status)
    if j.result is not None:
        msg.result.CopyFrom(
            pb.JobResult(
                complete=j.result.complete,
                reason=j.result.reason,
                summary=j.result.summary,
                counts=j.result.counts,
            )
        )
    return msg


class JobServicer(job_pb2_grpc.JobServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._jobs = engine.jobs

    def InspectJob(
        self, request: pb.InspectJobRequest, context: grpc.ServicerContext
    ) -> pb.InspectJobResponse:
        return pb.InspectJobResponse(job=job_to_proto(self._jobs.inspect(request.job_id)))

    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        page = self._jobs.list(
            JobQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                kinds=tuple(request.kinds),
                states=tuple(request.states),
                target_kind=request.target_kind,
                target_id=request.target_id,
                cluster_id=request.cluster_id,
            )
        )
        return pb.ListJobsResponse(
            jobs=[job_to_proto(j) for j in page.items], next_page_token=page.next_page_token
        )

    def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.ServicerContext
    ) -> pb.CancelJobResponse:
        result = self._jobs.cancel(request.job_id)
        return pb.CancelJobResponse(job=job_to_proto(result.value), generation=result.generation)

    def PauseJob(
        self, request: pb.PauseJobRequest, context: grpc.ServicerContext
    ) -> pb.PauseJobResponse:
        result = self._jobs.pause(request.job_id)
        return pb.PauseJobResponse(job=job_to_proto(result.value), generation=result.generation)

    def ResumeJob(
        self, request: pb.ResumeJobRequest, context: grpc.ServicerContext
    ) -> pb.ResumeJobResponse:
        result = self._jobs.resume(request.job_id)
        return pb.ResumeJobResponse(job=job_to_proto(result.value), generation=result.generation)
