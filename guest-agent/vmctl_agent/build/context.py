"""The build context: the request body (a tar, plain or gzip, bzip2 or xz compressed) read
once as it arrives: decompressed, spooled as a plain tar and indexed in the same pass
(contexttree.py), never unpacked; the index refuses what the image store's extractor
refuses, so no entry (`..`, a path through a symlink, a hard link out) can lead a copy
outside it. Then the Dockerfile read and `.dockerignore` applied (the docker CLI has applied
it already; other clients may not have).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path

from vmctl_agent.build import ignore
from vmctl_agent.build.contexttree import ContextTree
from vmctl_agent.build.dockerfile import DockerfileError
from vmctl_agent.build.overlay import scoped
from vmctl_agent.errors import AgentError, UnsafeLayer

_OPENERS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
_CHUNK = 1 << 20


class ContextError(AgentError):
    """The context is not a tar we can read (answered 400)."""


def receive(body: io.RawIOBase, workspace: Path) -> ContextTree:
    """Spool and index the context into `workspace`; the tree to read it from."""
    tree = ContextTree(workspace / "context.tar")
    try:
        with open(tree.spool, "wb") as spool:
            _index(_ContextStream(body, spool), tree, workspace)
    except UnsafeLayer as e:
        raise ContextError(str(e).replace("layer", "build context")) from None
    except (OSError, EOFError, lzma.LZMAError, tarfile.TarError) as e:
        raise ContextError(f"the build context is not a readable tar archive: {e}") from None
    return tree


def _index(stream: _ContextStream, tree: ContextTree, workspace: Path) -> None:
    def data(member: tarfile.TarInfo):
        """The member's bytes, checked to be as many as its header says."""
        source = tar.extractfile(member) if member.sparse is not None else stream
        if member.sparse is None:
            stream.seek(member.offset_data)
        left = member.size
        while left:
            chunk = source.read(min(left, _CHUNK))
            if not chunk:
                raise EOFError(f"the context ends in the middle of {member.name!r}")
            left -= len(chunk)
            yield chunk

    try:
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            for member in tar:
                tree.add(member, data, workspace)
    except tarfile.ReadError as e:
        if str(e) != "empty file" or stream.had_data:
            raise
    stream.drain()


class _ContextStream:
    """The body as a forward-only plain tar (read, tell, seek ahead), decompressed as it
    comes and copied to the spool; it ends padded with the end-of-archive blocks: the
    docker CLI's `-f -` context ends its last member unpadded (Go's reader does not mind;
    Python's tarfile does)."""

    def __init__(self, body: io.RawIOBase, spool) -> None:
        self._source, self._spool = _decompressed(body), spool
        self._buffer, self._pos, self._offset = bytearray(), 0, 0
        self._done = False
        self.had_data = False

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buffer) - self._pos < size) and not self._done:
            self._fill()
        end = len(self._buffer) if size < 0 else min(len(self._buffer), self._pos + size)
        data = bytes(self._buffer[self._pos : end])
        self._offset += end - self._pos
        self._pos = end
        if self._pos > _CHUNK:
            del self._buffer[: self._pos]
            self._pos = 0
        return data

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self._offset:
            raise io.UnsupportedOperation("the context streams forward only")
        while self._offset < offset and self.read(min(offset - self._offset, _CHUNK)):
            pass
        return self._offset

    def drain(self) -> None:
        while not self._done:
            self._fill()
            self._buffer.clear()
            self._pos = 0

    def _fill(self) -> None:
        data = self._source.read(_CHUNK)
        if not data:
            size = self._spool.tell()
            data = b"\0" * (-size % 512 + 1024)
            self._done = True
        self.had_data = self.had_data or any(data)
        self._spool.write(data)
        self._buffer += data


def _decompressed(body: io.RawIOBase):
    """The body, decompressed if it starts as gzip, bzip2 or xz do."""
    head = b""
    while len(head) < 6 and (more := body.read(6 - len(head))):
        head += more
    source = _Prefixed(head, body)
    opener = next((o for magic, o in _OPENERS.items() if head.startswith(magic)), None)
    return opener(source, "rb") if opener is not None else source


class _Prefixed:
    """A few bytes already read, then the rest of the body."""

    def __init__(self, head: bytes, body: io.RawIOBase) -> None:
        self._head, self._body = head, body

    def read(self, size: int = -1) -> bytes:
        if self._head:
            cut = len(self._head) if size < 0 else size
            data, self._head = self._head[:cut], self._head[cut:]
            return data
        return self._body.read(size)


def spool_tar(body: io.RawIOBase, path: Path) -> None:
    """The body as a plain tar file, decompressed, and padded with the end-of-archive
    blocks: the docker CLI's `-f -` context ends its last member unpadded (Go's reader does
    not mind; Python's tarfile does)."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as out:
        shutil.copyfileobj(body, out, 1 << 20)
    opener = _opener(raw)
    if opener is None:
        os.rename(raw, path)
    else:
        with opener(raw, "rb") as source, open(path, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        raw.unlink()
    size = path.stat().st_size
    os.truncate(path, size + (-size % 512) + 1024)


def _opener(path: Path):
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, opener in _OPENERS.items():
        if head.startswith(magic):
            return opener
    return None


def read_dockerfile(tree: ContextTree, name: str) -> str:
    """The Dockerfile's text (`name` is a path in the context)."""
    name = name or "Dockerfile"
    path = _resolved(tree, posixpath.normpath("/" + name))
    if not _is_file(tree, path) and name == "Dockerfile":
        path = _resolved(tree, "/dockerfile")  # dockerd accepts the lower-case name too
    if not _is_file(tree, path):
        raise DockerfileError(f"Cannot locate specified Dockerfile: {name}")
    return tree.read_bytes(path).decode("utf-8", "replace")


def apply_dockerignore(tree: ContextTree) -> None:
    """Leave out what `.dockerignore` leaves out (a directory stays if an exception is under
    it)."""
    path = _resolved(tree, "/.dockerignore")
    if not _is_file(tree, path):
        return
    patterns = ignore.read(tree.read_bytes(path).decode("utf-8", "replace"))
    if not patterns:
        return
    for path in sorted(tree.entries, key=lambda p: -p.count("/")):  # the deepest first
        if path == "/" or not ignore.ignored(path[1:], patterns):
            continue
        if not tree.listdir(path):
            tree.remove(path)


def _resolved(tree: ContextTree, path: str) -> str:
    return scoped(tree.root, path, links=tree.link)


def _is_file(tree: ContextTree, path: str) -> bool:
    entry = tree.entries.get(path)
    return entry is not None and stat.S_ISREG(entry.st_mode)
