"""What a container is made of, read back from the kernel and the disk: its namespaces beside
the agent's own, its cgroup's limits and usage, and its writable layer's changes.

This is the story `docker run` tells (namespaces isolate, cgroups limit, layers stack) as
facts: namespace ids are the inodes behind /proc/<pid>/ns/*, so a namespace the container
shares with the agent (`--network host`, the user namespace) has the same id as the agent's;
limits are the cgroup files' own values; changes are derived from the overlay's upper
directory the way moby's overlay driver derives `docker diff` (whiteouts are deletions).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from vmctl_agent.runtime import cgroupfs, rootfs
from vmctl_agent.runtime.cgroups import Cgroups
from vmctl_agent.runtime.containerconfig import INIT_LAYER
from vmctl_agent.runtime.index import Container
from vmctl_agent.store.content import tree_size
from vmctl_agent.store.layers import OPAQUE_XATTR

NAMESPACES = ("pid", "mnt", "uts", "ipc", "net", "cgroup", "user")
# Directories rootfs.setup makes when the image lacks them, to mount on (Docker's init layer
# has them): not changes the container made.
MOUNT_POINTS = ("/proc", "/dev", "/sys")
# Docker's change kinds (GET /containers/{id}/changes).
MODIFIED, ADDED, DELETED = 0, 1, 2

# The limit files of each cgroup version, with the value that means "no limit" (or the default).
LIMITS_V2 = (
    ("memory.max", "max"),
    ("memory.high", "max"),
    ("memory.swap.max", "max"),
    ("cpu.max", "max"),
    ("cpu.weight", "100"),
    ("pids.max", "max"),
)
LIMITS_V1 = (
    ("memory.limit_in_bytes", "unlimited"),
    ("memory.soft_limit_in_bytes", "unlimited"),
    ("memory.memsw.limit_in_bytes", "unlimited"),
    ("cpu.cfs_quota_us", "-1"),
    ("cpu.cfs_period_us", str(cgroupfs.CPU_PERIOD)),
    ("cpu.shares", "1024"),
    ("pids.max", "max"),
)


# -- namespaces ---------------------------------------------------------------------------------


def namespaces(pid: int) -> list[dict]:
    """Each namespace of process `pid` with its id and the agent's, and whether they are one."""
    return [_namespace(kind, pid) for kind in NAMESPACES]


def _namespace(kind: str, pid: int) -> dict:
    own, agent = namespace_id(f"/proc/{pid}/ns/{kind}"), namespace_id(f"/proc/self/ns/{kind}")
    return {"Type": kind, "Id": own, "AgentId": agent, "Shared": own == agent}


def namespace_id(path: str) -> int:
    """The inode number in the link's text, `net:[4026531840]`: the namespace's identity."""
    link = os.readlink(path)
    return int(link[link.index("[") + 1 : link.rindex("]")])


# -- cgroup -------------------------------------------------------------------------------------


def cgroup(groups: Cgroups, name: str) -> dict:
    """The cgroup's directories, every limit file with its value, and live usage."""
    paths = groups.path(name)
    table = LIMITS_V2 if groups.version == 2 else LIMITS_V1
    stats = groups.stats(name)
    return {
        "Version": groups.version,
        "Paths": [str(p) for p in paths],
        "Limits": [limit for file, free in table if (limit := _limit(paths, file, free))],
        "Usage": {
            "Memory": {"Current": stats.memory_usage, "Limit": stats.memory_limit or 0},
            "Cpu": {"UsageNanos": stats.cpu_usage_ns},
            "Pids": {"Current": stats.pids_current, "Limit": stats.pids_limit or 0},
        },
    }


def _limit(paths: tuple[Path, ...], file: str, free: str) -> dict | None:
    """The file's value as the kernel shows it; None where this kernel has no such file."""
    for directory in paths:
        with contextlib.suppress(FileNotFoundError):
            value = (directory / file).read_text().strip()
            return {"File": file, "Value": value, "Set": not _unlimited(value, free)}
    return None


def _unlimited(value: str, free: str) -> bool:
    if free == "unlimited":  # v1 memory: PAGE_COUNTER_MAX pages, just under 2**63
        return int(value) >= cgroupfs.V1_NO_LIMIT
    return value.split()[0] == free


# -- the writable layer -------------------------------------------------------------------------


def writable_layer(container: Container) -> dict:
    """The container's own layer: where it is, what it takes, and what changed in it."""
    upper = container.directory / "upper"
    return {
        "Path": str(upper),
        "Size": tree_size(upper),
        "Changes": changes(upper, lower(container)),
    }


def lower(container: Container) -> tuple[str, ...]:
    """The directories under the container's layer, top first, as its overlay stacks them."""
    layers = container.config.layers
    if rootfs.init_layer_fits(layers):
        return (str(container.directory.parent / INIT_LAYER), *layers)
    return layers


def changes(upper: Path, lower: tuple[str, ...]) -> list[dict]:
    """`docker diff`: each path in the upper directory, added or modified, or deleted where it
    is a whiteout; `lower` are the layers under it, top first. Sorted by path, as dockerd's."""
    found = [
        {"Path": path, "Kind": _kind(entry, path, lower)}
        for path, entry in _walk(upper, "")
        if not _mount_point(entry, path, lower)
    ]
    return sorted(found, key=lambda change: change["Path"])


def _walk(directory: Path, prefix: str):
    """(path in the container, DirEntry) of everything under `directory`, tolerating a
    running container that removes files while we look."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(directory) as it:
        for entry in it:
            path = f"{prefix}/{entry.name}"
            yield path, entry
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path), path)


def _kind(entry: os.DirEntry, path: str, lower: tuple[str, ...]) -> int:
    if is_whiteout(entry.path):
        return DELETED
    return MODIFIED if in_lower(path, lower) else ADDED


def is_whiteout(path: str) -> bool:
    """overlayfs marks a deletion with a 0:0 character device."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def in_lower(path: str, lower: tuple[str, ...]) -> bool:
    """Whether the image shows `path`: the topmost layer that has it does not white it out."""
    for layer in lower:
        candidate = layer + path
        if os.path.lexists(candidate):
            return not is_whiteout(candidate)
        if _opaque(layer, path):
            return False
    return False


def _opaque(layer: str, path: str) -> bool:
    """A directory marked opaque hides everything below it in the layers under this one."""
    parent = os.path.dirname(path)
    while parent not in ("", "/"):
        with contextlib.suppress(OSError):
            if os.getxattr(layer + parent, OPAQUE_XATTR, follow_symlinks=False) == b"y":
                return True
        parent = os.path.dirname(parent)
    return False


def _mount_point(entry: os.DirEntry, path: str, lower: tuple[str, ...]) -> bool:
    return (
        path in MOUNT_POINTS and entry.is_dir(follow_symlinks=False) and not in_lower(path, lower)
    )
