"""The CSI identity service: the plugin's name, what it serves, and whether
the daemon behind it answers."""

from __future__ import annotations

import grpc
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from osd import __version__
from osd.client import Client
from osd.csi.errors import CsiError, answers
from osd.csi.v1 import csi_pb2, csi_pb2_grpc

PLUGIN_NAME = "csi.osd.dev"
Service = csi_pb2.PluginCapability.Service
Expansion = csi_pb2.PluginCapability.VolumeExpansion


class Identity(csi_pb2_grpc.IdentityServicer):
    def __init__(self, client: Client, *, controller: bool, probe_timeout: float = 5.0) -> None:
        self._client = client
        self._controller = controller
        self._probe_timeout = probe_timeout

    @answers
    def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=PLUGIN_NAME, vendor_version=__version__)

    @answers
    def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        out = csi_pb2.GetPluginCapabilitiesResponse()
        if self._controller:
            out.capabilities.add().service.type = Service.CONTROLLER_SERVICE
        out.capabilities.add().service.type = Service.VOLUME_ACCESSIBILITY_CONSTRAINTS
        out.capabilities.add().volume_expansion.type = Expansion.ONLINE
        return out

    @answers
    def Probe(
        self, request: csi_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ProbeResponse:
        """Ready when the daemon's health service answers SERVING; not yet
        ready while it starts; FAILED_PRECONDITION (unhealthy) when it cannot
        be reached."""
        try:
            reply = health_pb2_grpc.HealthStub(self._client.channel).Check(
                health_pb2.HealthCheckRequest(), timeout=self._probe_timeout
            )
        except grpc.RpcError as err:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the osd daemon at {self._client.endpoint} does not answer: {err.code().name}",
            ) from None
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=serving))
