"""DatastoreService: request -> engine input -> engine -> response.

Every RPC of this service needs the admin role; until authentication is
configured every caller is treated as admin.
"""

from __future__ import annotations

import grpc

from osd.engine.datastores import models as dm
from osd.engine.engine import Engine
from osd.engine.shared import models
from osd.server import convert
from osd.v1 import datastore_pb2 as pb
from osd.v1 import datastore_pb2_grpc

UPDATABLE = ("image_snapshot_id", "manager", "packages", "active", "default")


def datastore_to_proto(d: dm.Datastore) -> pb.Datastore:
    return pb.Datastore(
        id=d.id,
        name=d.name,
        default_version_id=d.default_version_id,
        default_version_name=d.default_version_name,
        version_count=d.version_count,
        create_time=convert.timestamp(d.create_time),
        update_time=convert.timestamp(d.update_time),
        generation=d.generation,
    )


def version_to_proto(v: dm.DatastoreVersion) -> pb.DatastoreVersion:
    return pb.DatastoreVersion(
        id=v.id,
        datastore_id=v.datastore_id,
        datastore_name=v.datastore_name,
        name=v.name,
        manager=v.manager,
        image_snapshot_id=v.image_snapshot_id,
        packages=v.packages,
        active=v.active,
        default=v.default,
        volume_count=v.volume_count,
        create_time=convert.timestamp(v.create_time),
        update_time=convert.timestamp(v.update_time),
        generation=v.generation,
    )


class DatastoreServicer(datastore_pb2_grpc.DatastoreServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._datastores = engine.datastores

    def CreateDatastoreVersion(
        self, request: pb.CreateDatastoreVersionRequest, context: grpc.ServicerContext
    ) -> pb.CreateDatastoreVersionResponse:
        result = self._datastores.create_version(
            dm.CreateDatastoreVersion(
                datastore=request.datastore,
                name=request.name,
                image_snapshot_id=request.image_snapshot_id,
                manager=request.manager,
                packages=list(request.packages),
                active=request.active if request.HasField("active") else None,
                default=request.default,
            )
        )
        return pb.CreateDatastoreVersionResponse(
            datastore_version=version_to_proto(result.value),
            datastore_created=result.datastore_created,
            generation=result.generation,
        )

    def InspectDatastoreVersion(
        self, request: pb.InspectDatastoreVersionRequest, context: grpc.ServicerContext
    ) -> pb.InspectDatastoreVersionResponse:
        version = self._datastores.inspect_version(request.datastore_version_id)
        return pb.InspectDatastoreVersionResponse(datastore_version=version_to_proto(version))

    def ListDatastoreVersions(
        self, request: pb.ListDatastoreVersionsRequest, context: grpc.ServicerContext
    ) -> pb.ListDatastoreVersionsResponse:
        page = self._datastores.list_versions(
            dm.ListVersionsQuery(
                page_size=request.page_size,
                page_token=request.page_token,
                datastore_id=request.datastore_id,
                datastore_name=request.datastore_name,
                active_only=request.active_only,
            )
        )
        return pb.ListDatastoreVersionsResponse(
            datastore_versions=[version_to_proto(v) for v in page.items],
            next_page_token=page.next_page_token,
        )

    def UpdateDatastoreVersion(
        self, request: pb.UpdateDatastoreVersionRequest, context: grpc.ServicerContext
    ) -> pb.UpdateDatastoreVersionResponse:
        paths = convert.update_paths(request.update_mask, UPDATABLE)
        result = self._datastores.update_version(
            dm.UpdateDatastoreVersion(
                datastore_version_id=request.datastore_version_id,
                image_snapshot_id=(
                    request.image_snapshot_id if "image_snapshot_id" in paths else None
                ),
                manager=request.manager if "manager" in paths else None,
                packages=list(request.packages) if "packages" in paths else None,
                active=request.active if "active" in paths else None,
                default=request.default if "default" in paths else None,
                expected_generation=request.expected_generation,
            )
        )
        return pb.UpdateDatastoreVersionResponse(
            datastore_version=version_to_proto(result.value), generation=result.generation
        )

    def DeleteDatastoreVersion(
        self, request: pb.DeleteDatastoreVersionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteDatastoreVersionResponse:
        return pb.DeleteDatastoreVersionResponse(
            generation=self._datastores.delete_version(request.datastore_version_id)
        )

    def InspectDatastore(
        self, request: pb.InspectDatastoreRequest, context: grpc.ServicerContext
    ) -> pb.InspectDatastoreResponse:
        return pb.InspectDatastoreResponse(
            datastore=datastore_to_proto(self._datastores.inspect(request.datastore_id))
        )

    def ListDatastores(
        self, request: pb.ListDatastoresRequest, context: grpc.ServicerContext
    ) -> pb.ListDatastoresResponse:
        page = self._datastores.list(
            models.ListQuery(page_size=request.page_size, page_token=request.page_token)
        )
        return pb.ListDatastoresResponse(
            datastores=[datastore_to_proto(d) for d in page.items],
            next_page_token=page.next_page_token,
        )

    def DeleteDatastore(
        self, request: pb.DeleteDatastoreRequest, context: grpc.ServicerContext
    ) -> pb.DeleteDatastoreResponse:
        return pb.DeleteDatastoreResponse(generation=self._datastores.delete(request.datastore_id))
