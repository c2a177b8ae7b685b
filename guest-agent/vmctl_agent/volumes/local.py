"""The `local` driver's options (`docker volume create --opt type=.. --opt o=.. --opt
device=..`), checked and mounted as dockerd's local driver takes them.

A volume with options is its device mounted on the volume's _data directory, in the VM's own
mount namespace, before a container using it starts (so after a reboot too); it stays mounted
until the volume is removed, which unmounts it before anything is deleted (a `o=bind` device
is the user's own directory: removing the volume must never delete its files).
"""

from __future__ import annotations

import os
import re

from vmctl_agent import syscalls as sc
from vmctl_agent.errors import InvalidMount, VolumeError
from vmctl_agent.runtime.mounts import parse_options

DRIVER = "local"
VALID = ("type", "o", "device", "size")
_OCTAL = re.compile(r"\\([0-7]{3})")
REQUIRED = {"device": ("type",), "type": ("device",), "o": ("device", "type")}


def check(options: dict[str, str]) -> None:
    """dockerd's checks, in its words; `size` needs quotas, which the VM's ext4 lacks."""
    for key in options:
        if key not in VALID:
            raise InvalidMount(f'invalid option: "{key}"')
    if "size" in options:
        raise InvalidMount("quota size requested but no quota support")
    for key, required in REQUIRED.items():
        for other in required if key in options else ():
            if other not in options:
                raise InvalidMount(f'missing required option: "{other}"')


def needs_mount(options: dict[str, str] | None) -> bool:
    return bool(options and (options.get("device") or options.get("type")))


def mount(options: dict[str, str], path: str) -> None:
    """The device on `path`, unless already there (a second container, a restarted agent)."""
    if mounted(path):
        return
    flags, data = parse_options(options.get("o", ""))
    try:
        sc.mount(options["device"], path, options["type"], flags, data or None)
    except OSError as e:
        raise VolumeError(f"failed to mount local volume: {e}") from None


def mounted(path: str) -> bool:
    """Whether something is mounted on `path` itself (from mountinfo: a bind of a directory
    on the same filesystem fools os.path.ismount)."""
    return os.path.realpath(path) in mount_points()


def mounted_below(path: str) -> bool:
    """Whether anything is mounted on `path` or inside it: then it must not be deleted."""
    real = os.path.realpath(path)
    return any(p == real or p.startswith(real + "/") for p in mount_points())


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo", "rb") as f:
        fields = [line.split(b" ")[4] for line in f]
    # mountinfo writes space, tab, newline and backslash as octal escapes
    return [_OCTAL.sub(lambda m: chr(int(m[1], 8)), os.fsdecode(f)) for f in fields]


def unmount(path: str) -> None:
    """Until nothing is mounted on `path` (a device mounted twice by a crash is stacked)."""
    while mounted(path):
        try:
            sc.umount(path)
        except OSError as e:
            raise VolumeError(f"failed to unmount local volume: {e}") from None
