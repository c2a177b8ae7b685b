"""A VM's disk: a qcow2 overlay on the shared read-only base image, grown but never shrunk.

Every write lands in the overlay, so one downloaded or built base serves all VMs; deleting a
VM deletes only its overlay. `qemu-img` does the work (it ships with QEMU on every host OS).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vmctl import atomic
from vmctl.download import file_sha512
from vmctl.errors import VmctlError
from vmctl.image import MANIFEST, BaseImage, read_manifest

GIB = 1 << 30
VERIFIED_STAMP = ".verified.json"


@dataclass(frozen=True)
class DiskInfo:
    """What `qemu-img info` says about a disk, for reporting usage."""

    format: str  # "qcow2" | "raw" | ...
    virtual_size: int  # bytes the guest sees
    actual_size: int  # bytes used on the host (the overlay alone, not its base)
    backing_file: str | None


def _qemu_img(*args: str) -> str:
    try:
        proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise VmctlError(
            "qemu-img not found: install QEMU (Debian: apt-get install qemu-utils)"
        ) from e
    if proc.returncode != 0:
        message = proc.stderr.strip()
        if "lock" in message:
            message += " (is the VM running? stop it first)"
        raise VmctlError(f"qemu-img {args[0]} failed: {message}")
    return proc.stdout


def info(path: Path) -> DiskInfo:
    """Sizes and backing file; readable while the VM runs (`--force-share`)."""
    if not path.exists():
        raise VmctlError(f"no disk image at {path}")
    data = json.loads(_qemu_img("info", "--output=json", "--force-share", str(path)))
    return DiskInfo(
        data["format"],
        data["virtual-size"],
        data.get("actual-size", 0),
        data.get("backing-filename"),
    )


def create_overlay(base: BaseImage | Path, dest: Path, size_gib: int) -> Path:
    """A new qcow2 at `dest` backed by `base` (absolute path, opened read-only by QEMU), with
    `size_gib` GiB the guest sees; cloud-init grows the root filesystem to fill it."""
    backing = (base.disk if isinstance(base, BaseImage) else Path(base)).resolve()
    base_info = info(backing)
    if base_info.format not in ("qcow2", "raw"):
        raise VmctlError(f"{backing} is a {base_info.format} image; vmctl needs qcow2 or raw")
    if size_gib * GIB < base_info.virtual_size:
        base_size = base_info.virtual_size
        raise VmctlError(
            f"a {size_gib} GiB disk is smaller than its base image ({_gib(base_size)}): "
            f"ask for {-(-base_size // GIB)} GiB or more"
        )
    if dest.exists():
        raise VmctlError(f"{dest} already exists: delete the VM to start from a fresh disk")
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        options = ["-f", "qcow2", "-F", base_info.format, "-b", str(backing)]
        _qemu_img("create", "-q", *options, str(tmp), f"{size_gib}G")
        _fsync(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def grow(path: Path, size_gib: int) -> bool:
    """Make the disk `size_gib` GiB (the VM must be stopped); True when it grew, and the guest's
    filesystem must follow. Shrinking is refused: the guest may keep data at its disk's end."""
    current = info(path).virtual_size
    if size_gib * GIB < current:
        raise VmctlError(
            f"cannot shrink {path} from {_gib(current)} to {size_gib} GiB: a disk only grows; "
            "delete the VM to start over with a smaller one"
        )
    if size_gib * GIB > current:
        _qemu_img("resize", "-q", str(path), f"{size_gib}G")
        return True
    return False


def verify_base(base: BaseImage, full: bool = False) -> None:
    """Check the base's files against the SHA-512 digests in its manifest before a VM uses it.

    Hashing a ~300 MB base takes about a second, so after one full check a stamp records each
    file's size and mtime, and later calls compare only those (`full=True` hashes again).
    A disk without a manifest (a file the user named) has nothing to check against.
    """
    directory = base.disk.parent
    if not (directory / MANIFEST).is_file():
        return
    digests: dict[str, str] = read_manifest(directory).get("sha512", {})
    stamp = {name: _identity(directory / name) for name in digests}
    stamp_path = directory / VERIFIED_STAMP
    if not full and _read_json(stamp_path) == stamp:
        return
    for name, expected in digests.items():
        if file_sha512(directory / name) != expected:
            raise VmctlError(
                f"the base image file {directory / name} does not match its manifest (sha512 "
                f"differs): delete {directory} and build or download the image again"
            )
    _write_stamp(stamp_path, stamp)


def _identity(path: Path) -> list[int]:
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise VmctlError(
            f"the base image file {path} is missing: delete {path.parent} and build or "
            "download the image again"
        ) from e
    return [st.st_size, st.st_mtime_ns]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, stamp: dict) -> None:
    """Best effort: an image directory owned by another user (built with sudo) stays unstamped
    and is simply hashed each time."""
    with contextlib.suppress(OSError):
        atomic.write_text(path, json.dumps(stamp))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _gib(size: int) -> str:
    return f"{size / GIB:g} GiB"
