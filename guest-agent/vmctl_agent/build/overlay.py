"""An image's root filesystem, mounted with a fresh upper directory for a builder step that
needs no process inside the image (COPY, ADD, WORKDIR): whatever the step writes through the
mount lands in the upper directory, which then becomes the step's layer (layertar.py), just
as a RUN container's does.

The mount lives in a mount namespace of its own, made by a thread that exists only for this
(unshare(CLONE_NEWNS) applies to the calling thread): no other thread sees it, and it goes
away with the thread even if the agent is killed mid-step. Paths inside the image are
resolved with `scoped`, so a symlink in the image can never lead a write onto the host.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from vmctl_agent import syscalls as sc
from vmctl_agent.errors import AgentError
from vmctl_agent.runtime import rootfs

T = TypeVar("T")
_MAX_LINKS = 255
_MAX_MOUNT_DATA = 4095  # mount(2) takes one page of options


class TooManyLayers(AgentError):
    """The layers' paths do not fit in one overlay mount's options."""


def run_mounted(
    layers_root: Path,
    lowers: Sequence[Sequence[str]],
    work: Path,
    action: Callable[..., T],
    writable: bool = True,
) -> T:
    """`action(*roots)` with each entry of `lowers` (layer dirs, top first) mounted as a root:
    the first one writable (its changes go to `work/upper`) unless told not, the others
    read-only."""
    for name in ("upper", "work", "empty", "empty2"):
        (work / name).mkdir(exist_ok=True)
    result: dict = {}
    thread = threading.Thread(
        target=_in_namespace,
        args=(layers_root, lowers, work, action, result, writable),
        daemon=True,
    )
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _in_namespace(layers_root, lowers, work: Path, action, result: dict, writable) -> None:
    roots: list[str] = []
    try:
        sc.unshare(sc.CLONE_NEWNS)
        rootfs.make_private()
        for i, layers in enumerate(lowers):
            roots.append(_mount(layers_root, layers, work, i, writable and i == 0))
        result["value"] = action(*roots)
    except BaseException as e:  # handed to the calling thread
        result["error"] = e
    finally:  # unmounted now, not when the namespace goes: the upper may be moved next
        for root in reversed(roots):
            with contextlib.suppress(OSError):
                sc.umount(root)


def _mount(layers_root: Path, layers: Sequence[str], work: Path, index: int, rw: bool) -> str:
    pads = [os.path.relpath(work / name, layers_root) for name in ("empty", "empty2")]
    target = work / f"root{index}"
    target.mkdir(exist_ok=True)
    flags = sc.MS_NODEV
    if rw:
        lower = tuple(layers) or tuple(pads[:1])
        upper, workdir = str(work / "upper"), str(work / "work")
        data = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={workdir}"
    else:  # read-only: no upper, so overlayfs wants two lower dirs at least
        lower = (*layers, *pads)[: max(2, len(layers))]
        data = f"lowerdir={':'.join(lower)}"
        flags |= sc.MS_RDONLY
    if len(data) > _MAX_MOUNT_DATA:
        raise TooManyLayers(
            f"the image has too many layers ({len(layers)}) to mount in one overlay; "
            "combine steps (fewer RUN, COPY and ADD instructions) and build again"
        )
    cwd = os.open(".", os.O_RDONLY)
    try:
        os.chdir(layers_root)
        sc.mount("overlay", str(target), "overlay", flags, data)
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    return str(target)


class OutsideRoot(AgentError):
    """A path that would leave the directory it must stay in."""


def scoped(root: str, path: str, *, follow_last: bool = True, links=None) -> str:
    """`path` inside `root` with every symlink resolved as if `root` were `/` (Docker's
    FollowSymlinkInScope): `..` and absolute links stop at `root`. The result may not exist.
    `links(path)` gives a symlink's target or None (default: the disk's)."""
    links = links or _disk_link
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    count = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = links(os.path.join(root, *resolved, part)) if parts or follow_last else None
        if target is not None:
            count += 1
            if count > _MAX_LINKS:
                raise OutsideRoot(f"too many levels of symbolic links in {path}")
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved) if resolved else root


def _disk_link(path: str) -> str | None:
    return os.readlink(path) if os.path.islink(path) else None
