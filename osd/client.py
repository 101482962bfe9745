"""A Python client of the osd daemon: a channel with its credentials and TLS,
a stub of every service, any method called by name, and a failed call
decoded into its code, reason, field violations and request id.

    with Client("127.0.0.1:9100", token=os.environ["OSD_TOKEN"]) as osd:
        volumes = osd.stub("VolumeService").ListVolumes(volume_pb2.ListVolumesRequest())
        try:
            osd.call("osd.v1.ClusterService/DeleteCluster", {"cluster_id": "..."})
        except CallError as err:
            print(err.code.name, err.reason, err.fields)

The command line (``osd call``, ``osd cluster ...``) is built on it, and
exits with :func:`exit_code` of a failed call's status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from osd.contract import find_service, message_class
from osd.enums import JobState
from osd.v1 import job_pb2

if TYPE_CHECKING:
    from gateway.upstream import ClientTls

DEFAULT_ENDPOINT = "127.0.0.1:9100"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# The exit code of a command whose call failed, one per class of failure.
# 0 is success, 2 a command line or settings the command cannot use.
EXIT_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 3,
    grpc.StatusCode.OUT_OF_RANGE: 3,
    grpc.StatusCode.NOT_FOUND: 4,
    grpc.StatusCode.ALREADY_EXISTS: 5,
    grpc.StatusCode.UNAUTHENTICATED: 6,
    grpc.StatusCode.PERMISSION_DENIED: 7,
    grpc.StatusCode.FAILED_PRECONDITION: 8,
    grpc.StatusCode.ABORTED: 8,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 9,
    grpc.StatusCode.UNAVAILABLE: 10,
    grpc.StatusCode.DEADLINE_EXCEEDED: 10,
    grpc.StatusCode.CANCELLED: 10,
    grpc.StatusCode.UNIMPLEMENTED: 11,
}
EXIT_OTHER = 1  # INTERNAL, UNKNOWN, DATA_LOSS, and anything else
# The exit code of a command that followed a job to an end other than DONE.
EXIT_JOB_FAILED = 12
EXIT_JOB_CANCELLED = 13


def exit_code(code: grpc.StatusCode) -> int:
    """The exit code of a command whose call ended with ``code``."""
    return 0 if code == grpc.StatusCode.OK else EXIT_CODES.get(code, EXIT_OTHER)


@dataclass
class CallError(Exception):
    """A failed call: its status code and message, and the google.rpc details
    the daemon sends (ErrorInfo's reason and metadata, BadRequest's field
    violations, RequestInfo's request id)."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    request_id: str = ""

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" (reason {self.reason})"
        for name, why in self.fields.items():
            text += f"\n  {name}: {why}"
        if self.request_id:
            text += f"\n  request id {self.request_id}"
        return text


def error_of(err: grpc.RpcError) -> CallError:
    """The code, message and google.rpc details of a failed call."""
    if not isinstance(err, grpc.Call):
        return CallError(grpc.StatusCode.UNKNOWN, str(err))
    view = CallError(err.code(), err.details() or "")
    try:
        status = rpc_status.from_call(err)
    except ValueError:  # a status whose code or message disagree with the call's
        return view
    if status is None:
        return view
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            view.reason = info.reason
            view.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            view.fields = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            req = error_details_pb2.RequestInfo()
            detail.Unpack(req)
            view.request_id = req.request_id
    return view


def find_method(name: str) -> MethodDescriptor:
    """The method named "osd.v1.VolumeService/ListVolumes", or for short
    "VolumeService.ListVolumes" or "VolumeService/ListVolumes"; KeyError
    saying what there is otherwise."""
    service, sep, method = name.replace(".", "/").rpartition("/")
    if not sep:
        raise KeyError(f"{name!r} is not SERVICE.METHOD, e.g. VolumeService.ListVolumes")
    descriptor = find_service(service.replace("/", ".")).descriptor
    found: MethodDescriptor | None = descriptor.methods_by_name.get(method)
    if found is None:
        known = ", ".join(sorted(descriptor.methods_by_name))
        raise KeyError(f"{descriptor.name} has no method {method!r}; it has {known}")
    return found


class _Authed:
    """A stub whose every call carries the client's credentials and deadline."""

    def __init__(self, stub: object, client: Client) -> None:
        self._stub = stub
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        client = self._client

        def call(request: Message, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", client.timeout)
            metadata = [*client.metadata, *kwargs.pop("metadata", ())]
            return method(request, metadata=metadata, **kwargs)

        return call


def _retry_config(attempts: int) -> str:
    """A gRPC service config retrying UNAVAILABLE for every method."""
    if attempts <= 1:
        return json.dumps({})
    policy = {
        "maxAttempts": min(attempts, 5),
        "initialBackoff": "0.2s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps({"methodConfig": [{"name": [{}], "retryPolicy": policy}]})


class Client:
    """A connection to one daemon, sending a bearer token or an API key with
    every call, over TLS when given ``tls``."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        token: str = "",
        api_key: str = "",
        tls: ClientTls | None = None,
        timeout: float = 30.0,
        retries: int = 4,
    ) -> None:
        """``retries``: attempts of a call answered UNAVAILABLE (the daemon
        restarting, or not reached), with backoff from 0.2 s to 2 s; 1 turns
        retrying off. Every osd call may be retried: creates are idempotent
        by name, and other changes by their expected generation."""
        if token and api_key:
            raise ValueError("give a token or an API key, not both")
        self.endpoint = endpoint
        self.timeout = timeout
        self.metadata: list[tuple[str, str]] = []
        if token:
            self.metadata.append(("authorization", f"Bearer {token}"))
        elif api_key:
            self.metadata.append(("x-api-key", api_key))
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.service_config", _retry_config(retries)),
            ("grpc.enable_retries", 1 if retries > 1 else 0),
        ]
        if tls is None:
            self.channel = grpc.insecure_channel(endpoint, options=options)
        else:
            self.channel = grpc.secure_channel(
                endpoint, tls.credentials(), options=[*options, *tls.options()]
            )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def stub(self, service: str) -> Any:
        """The stub of a service ("VolumeService" or "osd.v1.VolumeService"),
        whose calls carry the credentials; they raise grpc.RpcError."""
        entry = find_service(service)
        stub_class = getattr(entry.grpc_module, f"{entry.descriptor.name}Stub")
        return _Authed(stub_class(self.channel), self)

    def call(
        self,
        method: str | MethodDescriptor,
        request: Message | Mapping[str, Any] | None = None,
    ) -> Message:
        """Calls a method, by name (see :func:`find_method`) or descriptor,
        with a request message or its JSON form as a dict; raises
        :class:`CallError`."""
        descriptor = find_method(method) if isinstance(method, str) else method
        if descriptor.client_streaming or descriptor.server_streaming:
            raise ValueError(f"{descriptor.full_name} streams; call it with its stub")
        request_class = message_class(descriptor.input_type)
        response_class = message_class(descriptor.output_type)
        if not isinstance(request, Message):
            request = json_format.ParseDict(dict(request or {}), request_class())
        path = f"/{descriptor.containing_service.full_name}/{descriptor.name}"
        rpc = self.channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            reply: Message = rpc(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise error_of(err) from None
        return reply

    def wait_job(
        self,
        job_id: str,
        *,
        on_progress: Callable[[job_pb2.Job], None] | None = None,
        timeout: float | None = None,
        poll_seconds: float = 0.5,
    ) -> job_pb2.Job:
        """Follows a job to its end and returns it (DONE, FAILED or
        CANCELLED), calling ``on_progress`` with the job each time its state
        or progress changes; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[int, int, int, str] | None = None
        while True:
            reply = self.call("JobService.InspectJob", job_pb2.InspectJobRequest(job_id=job_id))
            assert isinstance(reply, job_pb2.InspectJobResponse)
            job = reply.job
            seen = (job.state, job.progress.percent, job.progress.done_steps, job.progress.message)
            if seen != last and on_progress is not None:
                on_progress(job)
            last = seen
            if JobState(job.state).final:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job_pb2.JobState.Name(job.state)}")
            time.sleep(poll_seconds)
