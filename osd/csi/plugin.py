"""``osd csi``: the CSI plugin's gRPC server on a unix socket, a client of the
osd daemon.

Modes: ``controller`` serves Identity and Controller (beside the
orchestrator's provisioner, attacher, snapshotter and resizer), ``node``
serves Identity and Node (on each node, as root, beside the node
registrar), ``all`` serves the three. The node mode acts for one osd node,
``--node-id`` (or ``--node-name``, looked up once at start).
"""

from __future__ import annotations

import logging
import os
import re
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from osd.client import Client
from osd.csi.controller import Controller
from osd.csi.identity import Identity
from osd.csi.node import Node
from osd.csi.v1 import csi_pb2_grpc
from osd.v1 import node_pb2

log = logging.getLogger("osd.csi")
MODES = ("controller", "node", "all")


class PluginError(Exception):
    """The plugin cannot start as asked (a bad flag, an unknown node)."""


@dataclass(frozen=True)
class Options:
    endpoint: str
    mode: str
    node_id: str = ""
    node_name: str = ""
    cluster_id: str = ""
    max_volumes_per_node: int = 0
    workers: int = 8


def socket_path(endpoint: str) -> str:
    """The file of a ``unix:///path`` (or ``unix:/path``, or plain path) endpoint."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:") :]
    elif "://" in endpoint:
        raise PluginError(f"--endpoint {endpoint!r}: the plugin listens on a unix socket")
    else:
        path = endpoint
    if not path.startswith("/"):
        raise PluginError(f"--endpoint {endpoint!r}: give an absolute path, unix:///path.sock")
    return path


def resolve_node(client: Client, options: Options) -> str:
    """The osd node id this plugin's node mode acts for."""
    nodes = client.stub("NodeService")
    if options.node_id:
        try:
            return str(
                nodes.InspectNode(node_pb2.InspectNodeRequest(node_id=options.node_id)).node.id
            )
        except grpc.RpcError as err:
            raise PluginError(f"--node-id {options.node_id}: {err.details()}") from None
    if not options.node_name:
        raise PluginError("the node mode needs --node-id or --node-name")
    found = nodes.ListNodes(
        node_pb2.ListNodesRequest(
            cluster_id=options.cluster_id,
            name_regex=f"^{re.escape(options.node_name)}$",
            page_size=2,
        )
    ).nodes
    if len(found) != 1:
        raise PluginError(
            f"--node-name {options.node_name}: "
            + ("no such node" if not found else "several clusters have it; give --cluster-id")
        )
    return str(found[0].id)


class Plugin:
    """The server, started by :meth:`start` and stopped by :meth:`stop`."""

    def __init__(self, client: Client, options: Options) -> None:
        if options.mode not in MODES:
            raise PluginError(f"--mode {options.mode!r} is not one of {', '.join(MODES)}")
        if options.max_volumes_per_node < 0:
            raise PluginError("--max-volumes-per-node cannot be negative")
        self.options = options
        self.path = socket_path(options.endpoint)
        self.node_id = resolve_node(client, options) if options.mode != "controller" else ""
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=options.workers))
        controller = options.mode in ("controller", "all")
        csi_pb2_grpc.add_IdentityServicer_to_server(
            Identity(client, controller=controller), self._server
        )
        if controller:
            csi_pb2_grpc.add_ControllerServicer_to_server(
                Controller(client, cluster_id=options.cluster_id), self._server
            )
        if options.mode in ("node", "all"):
            csi_pb2_grpc.add_NodeServicer_to_server(
                Node(client, node_id=self.node_id, max_volumes=options.max_volumes_per_node),
                self._server,
            )

    def start(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()  # a socket left by a plugin that did not stop cleanly
        elif path.exists():
            raise PluginError(f"{self.path} exists and is not a socket")
        self._server.add_insecure_port(f"unix://{self.path}")
        self._server.start()
        os.chmod(self.path, 0o660)
        log.info(
            "CSI plugin serving %s on %s%s",
            self.options.mode,
            self.path,
            f" for node {self.node_id}" if self.node_id else "",
        )

    def stop(self, grace: float = 5.0) -> None:
        self._server.stop(grace).wait()
        Path(self.path).unlink(missing_ok=True)
