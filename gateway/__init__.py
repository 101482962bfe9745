"""The REST gateway: HTTP /v1 -> gRPC, driven by the contract's google.api.http rules.

Public names:

* :class:`GatewayApp`: the ASGI application (gateway.app).
* :class:`GatewayServer`: runs it under uvicorn in a thread (gateway.server).
* :data:`HTTP_STATUS`: the gRPC code -> HTTP status table (gateway.errors).

See gateway/README.md for the mapping rules.
"""

from gateway.app import GatewayApp
from gateway.errors import HTTP_STATUS
from gateway.server import GatewayServer

__all__ = ["HTTP_STATUS", "GatewayApp", "GatewayServer"]
