"""A container's filesystem changes, as `docker diff` lists them: its upper directory
compared with the image's layers below (whiteouts, opaque directories and the runtime's own
mount points taken into account). Kind 0 is changed, 1 added, 2 deleted."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from vmctl_agent.build.steps import runtime_made
from vmctl_agent.store.layers import OPAQUE_XATTR

CHANGED, ADDED, DELETED = 0, 1, 2


def changes(upper: Path, layers: Sequence[str]) -> list[dict]:
    """`[{"Path": "/etc", "Kind": 0}, ...]`, sorted by path; `layers` are the lower dirs,
    top first."""
    found = []
    for path, info in _walk(upper, ""):
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            kind = DELETED
        else:
            kind = CHANGED if _below(layers, path) else ADDED
        found.append({"Path": "/" + path, "Kind": kind})
    return sorted(found, key=lambda c: c["Path"])


def _walk(root: Path, prefix: str):
    try:
        names = sorted(os.listdir(root / prefix if prefix else root))
    except FileNotFoundError:
        return
    for name in names:
        path = prefix + name
        info = os.lstat(root / path)
        if runtime_made(path, info):
            continue
        yield path, info
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(root, path + "/")


def _below(layers: Sequence[str], path: str) -> bool:
    """Whether `path` exists in the image the layers make (whiteouts and opaque dirs read)."""
    parts = path.split("/")
    for layer in layers:
        found = _in_layer(layer, parts)
        if found is not None:
            return found
    return False


def _in_layer(layer: str, parts: list[str]) -> bool | None:
    """True: here; False: hidden from here down; None: not in this layer, look below."""
    current = layer
    for i, part in enumerate(parts):
        opaque = i > 0 and _opaque(current)
        current = os.path.join(current, part)
        try:
            info = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            return False if opaque else None
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            return False
        if i < len(parts) - 1 and not stat.S_ISDIR(info.st_mode):
            return False
    return True


def _opaque(directory: str) -> bool:
    try:
        return os.getxattr(directory, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
