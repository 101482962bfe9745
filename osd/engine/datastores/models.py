"""Domain objects and inputs of the datastore registry (see osd.engine.datastores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# The labels a volume provisioned from a datastore version carries (the names).
LABEL_DATASTORE = "osd.dev/datastore"
LABEL_DATASTORE_VERSION = "osd.dev/datastore-version"


@dataclass(frozen=True)
class Datastore:
    """A database engine, e.g. "mysql", with its default version (empty: none)."""

    id: str
    name: str
    default_version_id: str
    default_version_name: str
    version_count: int
    create_time: datetime
    update_time: datetime
    generation: int


@dataclass(frozen=True)
class DatastoreVersion:
    """One version of a datastore and the image snapshot it boots from."""

    id: str
    datastore_id: str
    datastore_name: str
    name: str
    manager: str
    image_snapshot_id: str
    packages: list[str]
    active: bool
    default: bool
    volume_count: int
    create_time: datetime
    update_time: datetime
    generation: int


@dataclass(frozen=True)
class CreateDatastoreVersion:
    """A version to register; its datastore is created when absent.

    An empty ``manager`` means the datastore's name; ``active`` left as None
    means active.
    """

    datastore: str
    name: str
    image_snapshot_id: str
    manager: str = ""
    packages: list[str] = field(default_factory=list)
    active: bool | None = None
    default: bool = False


@dataclass(frozen=True)
class VersionRegistered:
    """The result of registering a version."""

    value: DatastoreVersion
    datastore_created: bool
    generation: int


@dataclass(frozen=True)
class ListVersionsQuery:
    """Paging and filters of a version list; at most one of the datastore filters."""

    page_size: int = 0
    page_token: str = ""
    datastore_id: str = ""
    datastore_name: str = ""
    active_only: bool = False


@dataclass(frozen=True)
class UpdateDatastoreVersion:
    """Fields left as None are not changed."""

    datastore_version_id: str
    image_snapshot_id: str | None = None
    manager: str | None = None
    packages: list[str] | None = None
    active: bool | None = None
    default: bool | None = None
    expected_generation: int = 0


@dataclass(frozen=True)
class ProvisioningSource:
    """What a volume provisioned from a datastore version is made of.

    The volume is a clone of ``image_snapshot_id`` and carries :attr:`labels`.
    """

    datastore_version_id: str
    image_snapshot_id: str
    datastore_name: str
    version_name: str

    @property
    def labels(self) -> dict[str, str]:
        """The labels the volume must carry: the datastore's and the version's names."""
        return {
            LABEL_DATASTORE: self.datastore_name,
            LABEL_DATASTORE_VERSION: self.version_name,
        }
