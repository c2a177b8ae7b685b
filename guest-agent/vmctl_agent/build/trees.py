"""Where COPY and ADD read their sources: a directory on disk (a mounted image for `--from`,
a heredoc, a download) or the build context as the client streamed it (contexttree.py, read
from its tar without unpacking it). Both answer the same few questions (lstat, listdir,
readlink, contents), so the copy rules and the cache's content hash are written once.

The content hash is the classic builder's cache key for a COPY or ADD: every path under
each source with its type, mode, owner, link target or device, and its contents' sha256;
not its times, as dockerd's tarsum leaves them out. A changed file, mode or owner misses
the cache; an unchanged context hits it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from typing import Protocol

_CHUNK = 1 << 20


class Tree(Protocol):
    def lstat(self, path: str): ...  # an os.stat_result, or what has its st_* fields
    def listdir(self, path: str) -> list[str]: ...
    def link(self, path: str) -> str | None: ...  # a symlink's target; None if no symlink
    def digest(self, path: str) -> str: ...  # a regular file's sha256, hex
    def copy_into(self, path: str, fd: int) -> None: ...  # a regular file's contents
    def open(self, path: str): ...  # a regular file, as a binary file object


class DiskTree:
    """Files as the kernel has them."""

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def link(self, path: str) -> str | None:
        return os.readlink(path) if os.path.islink(path) else None

    def digest(self, path: str) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def copy_into(self, path: str, fd: int) -> None:
        with open(path, "rb") as source:
            send(source.fileno(), fd, 0, os.fstat(source.fileno()).st_size)

    def open(self, path: str):
        return open(path, "rb")


DISK = DiskTree()


def send(source: int, fd: int, offset: int, count: int) -> None:
    """`count` bytes of file `source` from `offset` to `fd`, in the kernel."""
    while count:
        sent = os.sendfile(fd, source, offset, min(count, 1 << 30))
        if sent == 0:
            raise OSError(f"the source ended {count} bytes early")
        offset, count = offset + sent, count - sent


def lexists(tree: Tree, path: str) -> bool:
    try:
        tree.lstat(path)
    except FileNotFoundError:
        return False
    return True


def kind(tree: Tree, path: str) -> int:
    """The file type bits of `path` (0 if absent), not following a symlink."""
    try:
        return stat.S_IFMT(tree.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return 0


def walk(tree: Tree, top: str) -> Iterator[tuple[str, str, object]]:
    """(relative path, path, lstat) of `top` and, for a directory, everything under it:
    each directory's entries by name, then its subdirectories' in turn (as os.walk)."""
    info = tree.lstat(top)
    yield ".", top, info
    pending = [""] if stat.S_ISDIR(info.st_mode) else []
    while pending:
        rel = pending.pop()
        below = []
        for name in sorted(tree.listdir(os.path.join(top, rel) if rel else top)):
            child = os.path.join(rel, name) if rel else name
            path = os.path.join(top, child)
            info = tree.lstat(path)
            yield child, path, info
            if stat.S_ISDIR(info.st_mode):
                below.append(child)
        pending += reversed(below)


def content_hash(sources: list[tuple[str, Tree, str]]) -> str:
    """dockerd's `file:`, `dir:` or `multi:` label over (name, tree, path) sources."""
    digest = hashlib.sha256()
    for name, tree, top in sources:
        for rel, path, info in walk(tree, top):
            mode, owner = info.st_mode, f"{info.st_uid}:{info.st_gid}"
            digest.update(f"{name}/{rel}\0{mode:o}\0{owner}\0".encode())
            if stat.S_ISLNK(mode):
                digest.update((tree.link(path) or "").encode())
            elif stat.S_ISREG(mode):
                digest.update(tree.digest(path).encode())
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                digest.update(str(info.st_rdev).encode())
            digest.update(b"\0")
    _, tree, top = sources[0]
    single = "dir" if kind(tree, top) == stat.S_IFDIR else "file"
    return f"{'multi' if len(sources) > 1 else single}:{digest.hexdigest()}"
