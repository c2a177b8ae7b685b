"""A step's directory of changes taken as its layer's directory, rather than unpacked again
from the tar just written from it: first made exactly what unpacking that tar would make
(store/layers.py), which it already is but for what a tar cannot say: times finer than a
second, overlayfs's own bookkeeping xattrs, and entries the tar leaves out (what the runtime
made, sockets). Anything else a tar would not carry (a redirect or metacopy xattr, an ACL, a
hard link to a file outside it) and it is not taken: the caller unpacks the tar instead.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from vmctl_agent.store.content import remove_tree
from vmctl_agent.store.layers import OPAQUE_XATTR

Skip = Callable[[str, os.stat_result], bool]
_BOOKKEEPING = tuple(
    f"trusted.overlay.{name}" for name in ("origin", "impure", "nlink", "uuid")
)  # where a copy-up came from, which dirs hold copied-up entries, the mount's id


def prune(root: Path, skip: Skip) -> None:
    """Remove from `root` what its layer's tar leaves out: what `skip(path, lstat)` names
    (with what is under it) and sockets; and give each whiteout an inode of its own, as
    unpacking makes it (overlayfs links them all to one in its work directory)."""
    for path, info in list(_walk(root)):
        full = root / path
        if skip(path, info) or stat.S_ISSOCK(info.st_mode):
            if os.path.lexists(full):  # not under an entry removed already
                remove_tree(full) if stat.S_ISDIR(info.st_mode) else os.unlink(full)
        elif _whiteout(info) and info.st_nlink > 1:
            os.unlink(full)
            os.mknod(full, stat.S_IFCHR, os.makedev(0, 0))


def _whiteout(info: os.stat_result) -> bool:
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def conform(root: Path) -> bool:
    """Make `root` (pruned) what unpacking its tar makes: whole-second times, no overlayfs
    bookkeeping, a 0755 root-owned top. False if it holds what no tar says."""
    links: dict[tuple[int, int], list[int]] = {}
    for path, info in _walk(root):
        full = root / path
        if not _strip_xattrs(full, info):
            return False
        if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
            if not stat.S_ISREG(info.st_mode):
                return False  # the tar links only files: unpacked, these are apart
            links.setdefault((info.st_dev, info.st_ino), [info.st_nlink, 0])[1] += 1
        if not _whiteout(info):  # whiteouts keep theirs, as unpacking leaves them
            whole = int(info.st_mtime) * 10**9
            os.utime(full, ns=(whole, whole), follow_symlinks=False)
    if any(count != nlink for nlink, count in links.values()):
        return False  # a hard link to a file outside the layer
    os.chown(root, 0, 0)
    os.chmod(root, 0o755)
    return _strip_xattrs(root, os.lstat(root)) and not _opaque(root)


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to `root`, lstat) of everything below it, each directory before what
    is in it."""
    pending = [""]
    while pending:
        here = pending.pop()
        with os.scandir(root / here if here else root) as entries:
            names = sorted(e.name for e in entries)
        for name in names:
            path = f"{here}{name}"
            info = os.lstat(root / path)
            yield path, info
            if stat.S_ISDIR(info.st_mode):
                pending.append(path + "/")


def _strip_xattrs(path: Path, info: os.stat_result) -> bool:
    """Drop overlayfs's bookkeeping; False for an xattr the tar would not carry or
    unpacking would not make."""
    for name in os.listxattr(path, follow_symlinks=False):
        if name in _BOOKKEEPING:
            os.removexattr(path, name, follow_symlinks=False)
        elif name == OPAQUE_XATTR:
            if not stat.S_ISDIR(info.st_mode) or not _opaque(path):
                return False
        elif stat.S_ISLNK(info.st_mode) or not name.startswith(("security.", "user.")):
            return False
    return True


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
