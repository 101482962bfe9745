"""Scratch image files for the local driver's tests, and the check that this
machine can use them as loop devices.

The tests that need loop devices and mkfs are skipped with the reason on a
machine without them, except under CI (CI=true), where that is a failure.
Whatever a test leaves mounted or attached under its scratch folder is
unmounted and detached after it, so a failed test leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from osd.engine.drivers.local import loop_devices, mount_table

TOOLS = ("losetup", "mount", "umount", "blkid", "mkfs.xfs", "mkfs.btrfs", "mkfs.ext4")
# xfs wants at least 300 MiB; the files are sparse, so this costs nothing.
IMAGE_BYTES = 320 << 20


def require_loop_devices() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    reason = ""
    if os.geteuid() != 0:
        reason = "the local driver's tests need root, for loop devices and mounts"
    elif not Path("/dev/loop-control").exists():
        reason = "this machine has no loop devices (/dev/loop-control)"
    elif missing:
        reason = f"missing {', '.join(missing)} (Debian: xfsprogs btrfs-progs e2fsprogs util-linux)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must not skip the local driver's tests)")
        pytest.skip(reason)


def make_images(folder: Path, count: int, size: int = IMAGE_BYTES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(count):
        image = folder / f"drive{i}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        images.append(image)
    return images


def mounted_at(path: Path) -> tuple[str, str] | None:
    """(source, filesystem type) of what is mounted at ``path``, as findmnt
    tells an operator; None when nothing is."""
    done = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--mountpoint", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    source, fstype = done.stdout.split()[:2]
    return source, fstype


def write_at(device: str, offset: int, data: bytes) -> None:
    """Writes ``data`` through a device (or file) and syncs it."""
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_at(device: str, offset: int, length: int) -> bytes:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def _mounts_under(prefix: str) -> list[tuple[str, str]]:
    """(mount point, source) of every mount under ``prefix``, deepest first."""
    found = [(p, src) for p, (src, _fstype) in mount_table().items() if p.startswith(prefix)]
    return sorted(found, key=lambda m: -len(m[0]))


def clean_up(folder: Path) -> None:
    """Unmounts every mount under ``folder`` and detaches every loop device
    over a file under it: first the volumes mounted from loop devices over
    copies, then those loop devices (while the drives that hold their files
    are still mounted, so their paths are whole), then the drives."""
    prefix = str(folder.resolve()) + "/"

    def run(*argv: str) -> None:
        subprocess.run(list(argv), check=False, capture_output=True)

    ours = {dev for dev, (backing, _ro) in loop_devices().items() if backing.startswith(prefix)}
    for point, source in _mounts_under(prefix):
        if source in ours and "/replicas/" in loop_devices().get(source, ("", False))[0]:
            run("umount", point)
    for device, (backing, _ro) in loop_devices().items():
        if backing.startswith(prefix) and "/replicas/" in backing:
            run("losetup", "-d", device)
    for point, _source in _mounts_under(prefix):
        run("umount", point)
    for point, _source in _mounts_under(prefix):
        run("umount", "-l", point)  # whatever is still busy
    for device, (backing, _ro) in loop_devices().items():
        if backing.startswith(prefix):
            run("losetup", "-d", device)
