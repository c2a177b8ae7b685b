"""Host devices in a container: `--device HOST[:CONTAINER[:PERMISSIONS]]` and every device of
the host under `--privileged`. A device is the host's node bound into the container's /dev
(its tmpfs is nodev, so a node made inside is useless); without a devices cgroup to narrow
access, only `rwm` is honoured and anything narrower is refused rather than widened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence

from vmctl_agent.runtime.spec import InvalidSpec

Device = tuple[str, str, str]  # (path on the host, path in the container, permissions)
# Made by the container's own /dev set-up, never bound from the host's.
OWN = ("pts", "shm", "mqueue", "fd", "stdin", "stdout", "stderr", "core", "ptmx", "console")


def parse(entries: Sequence[dict] | None) -> tuple[Device, ...]:
    """HostConfig.Devices, each checked to be a device node on this host (dockerd's words)."""
    return tuple(_one(entry) for entry in entries or ())


def _one(entry: dict) -> Device:
    if not isinstance(entry, dict):
        raise InvalidSpec(f"invalid device: {entry!r}")
    host = entry.get("PathOnHost") or ""
    inside = entry.get("PathInContainer") or host
    permissions = entry.get("CgroupPermissions") or "rwm"
    if not os.path.isabs(inside):
        raise InvalidSpec(f"{inside} is not an absolute path")
    if sorted(permissions) != sorted("rwm"):
        raise InvalidSpec(f"device permissions {permissions!r} are not supported yet: only rwm")
    _check_node(host)
    return (os.path.realpath(host), os.path.normpath(inside), permissions)


def _check_node(host: str) -> None:
    try:
        mode = os.stat(host).st_mode
    except OSError as e:
        raise InvalidSpec(
            f'error gathering device information while adding custom device "{host}": '
            f"{e.strerror.lower()}"
        ) from None
    if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
        raise InvalidSpec(
            f'error gathering device information while adding custom device "{host}": '
            "not a device node"
        )


def inspect(devices: Sequence[Device]) -> list[dict]:
    return [{"PathOnHost": h, "PathInContainer": c, "CgroupPermissions": p} for h, c, p in devices]


def host_nodes(dev: str = "dev") -> Iterator[str]:
    """Every device node under the host's /dev (`dev`: its path, relative to the old root
    during set-up), relative to it, but the ones a container makes for itself."""
    for top, dirs, files in os.walk(dev):
        relative = os.path.relpath(top, dev)
        if relative == ".":
            dirs[:] = [d for d in dirs if d not in OWN]
        for name in files:
            path = os.path.join(top, name)
            mode = os.lstat(path).st_mode
            if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and (relative != "." or name not in OWN):
                yield os.path.normpath(os.path.join(relative, name))
