"""Storage drivers: the engine's only way to touch storage."""

from pathlib import Path

from osd.engine.drivers.base import (
    AttachmentOps,
    CopyRef,
    DriveFull,
    DriveInfo,
    DriveOps,
    DriverError,
    Mount,
    NoAgent,
    Refused,
    ReplicaOps,
    SnapshotAttachmentOps,
    SnapshotOps,
    StorageDriver,
)

__all__ = [
    "AttachmentOps",
    "CopyRef",
    "DriveFull",
    "DriveInfo",
    "DriveOps",
    "DriverError",
    "Mount",
    "NoAgent",
    "Refused",
    "ReplicaOps",
    "SnapshotAttachmentOps",
    "SnapshotOps",
    "StorageDriver",
]


def load(
    name: str,
    data_dir: Path | None = None,
    *,
    node_name: str = "",
    filesystem: str = "xfs",
    mount_roots: tuple[str, ...] = (),
) -> StorageDriver:
    """The driver called ``name`` in settings.

    The local driver keeps what it set up in ``data_dir/local-driver``; it acts
    for this host, known also as ``node_name``, and formats drives with
    ``filesystem``.

    The fake driver keeps its "storage" in ``data_dir/fake-driver.db`` (a
    SQLite file) when a data directory is given (and OSD_FAKE_DRIVER_STATE
    does not name another file), so a restarted daemon finds the replicas its
    store records. The ``fake-driver.json`` of earlier versions is taken over.
    """
    if name == "fake":
        import os

        from osd.engine.drivers.fake import STATE_ENV, FakeDriver

        if data_dir is not None and not os.environ.get(STATE_ENV):
            data_dir.mkdir(parents=True, exist_ok=True)
            state, legacy = data_dir / "fake-driver.db", data_dir / "fake-driver.json"
            if legacy.exists() and not state.exists():
                os.replace(legacy, state)  # JSON, which the driver converts in place
            return FakeDriver(state_file=state)
        return FakeDriver()
    if name == "local":
        from osd.engine.drivers.local import LocalDriver

        if data_dir is None:
            raise ValueError("the local driver needs a data directory")
        return LocalDriver(
            data_dir, node_name=node_name, filesystem=filesystem, mount_roots=mount_roots
        )
    raise ValueError(f"unknown storage driver {name!r}; known drivers: fake, local")


class ReadsOnly:
    """The driver of a process that serves reads beside the primary: it has
    none, and a call that reaches it is a bug that says so, not storage work
    done behind the primary's back."""

    def __init__(self, *, takes_files: bool = False) -> None:
        # What the primary's driver takes as drives, for the reads that check
        # a device path (GetDriveAddStatus).
        self.takes_files = takes_files

    def __getattr__(self, name: str) -> object:
        def refuse(*_args: object, **_kwargs: object) -> None:
            raise DriverError(
                f"{name}: this process serves reads only; the primary process drives storage"
            )

        return refuse
