"""The build context as the client streamed it: the plain tar, spooled to one file, and an
index of its entries made in the same pass (each file's place in the spool and its sha256).
Nothing is unpacked: a fully cached rebuild never writes the context's files, and a COPY
that runs copies each file straight from the spool into the image.

The index holds what the image store's extractor would have made of the tar (store/layers.py):
a later entry replaces an earlier one, missing parents are directories (0755, root's), a hard
link is its target's file, `.wh.` names are whiteouts; and it refuses what the extractor
refuses: `..` out of the root, a path through a symlink or a file, a hard link to nothing.
Paths are absolute from the context's root, `/`.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from vmctl_agent.build import trees
from vmctl_agent.errors import UnsafeLayer
from vmctl_agent.store.layers import OPAQUE_MARKER, WHITEOUT_PREFIX, clean_name

_CHUNK = 1 << 20
_TYPES = {
    tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK, tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO,
}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One path, with the fields of an lstat the copy rules read."""

    st_mode: int
    st_uid: int = 0
    st_gid: int = 0
    st_size: int = 0
    st_mtime_ns: int = 0
    st_rdev: int = 0
    linkname: str = ""
    offset: int = -1  # a file's contents in the spool
    sha256: str = ""
    backing: str = ""  # a file whose contents are on disk instead (a sparse member)

    @property
    def st_atime_ns(self) -> int:
        return self.st_mtime_ns


class ContextTree:
    """The index of a spooled context tar, read as a tree (trees.Tree)."""

    root = "/"

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        now = time.time_ns()
        self._implicit = Entry(stat.S_IFDIR | 0o755, st_mtime_ns=now)
        self.entries: dict[str, Entry] = {"/": self._implicit}
        self.children: dict[str, set[str]] = {"/": set()}

    # -- reading (trees.Tree) ----------------------------------------------------------------

    def lstat(self, path: str) -> Entry:
        try:
            return self.entries[_key(path)]
        except KeyError:
            raise FileNotFoundError(path) from None

    def listdir(self, path: str) -> list[str]:
        return list(self.children.get(_key(path), ()))

    def link(self, path: str) -> str | None:
        entry = self.entries.get(_key(path))
        return entry.linkname if entry is not None and stat.S_ISLNK(entry.st_mode) else None

    def digest(self, path: str) -> str:
        return self.lstat(path).sha256

    def copy_into(self, path: str, fd: int) -> None:
        entry = self.lstat(path)
        if entry.backing:
            trees.DISK.copy_into(entry.backing, fd)
            return
        with open(self.spool, "rb") as spool:
            trees.send(spool.fileno(), fd, entry.offset, entry.st_size)

    def open(self, path: str):
        entry = self.lstat(path)
        if entry.backing:
            return open(entry.backing, "rb")
        return _Slice(self.spool, entry.offset, entry.st_size)

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as f:
            return f.read()

    # -- building, entry by entry as the tar streams -----------------------------------------

    def add(self, member: tarfile.TarInfo, data, backing_dir: Path) -> None:
        """Index `member`; `data(member)` reads a file's contents from the stream."""
        path = _key(clean_name(member.name))
        base = posixpath.basename(path)
        if path == "/":  # its owner and mode, not its time (the extractor's way)
            self.entries["/"] = replace(_entry(member), st_mtime_ns=self._implicit.st_mtime_ns)
        elif base.startswith(WHITEOUT_PREFIX):
            self._whiteout(path, base)
        elif member.islnk():
            self._hardlink(member, path)
        elif member.isreg():
            self._put(path, self._file(member, data, backing_dir))
        elif member.isdir() and self._is_dir(path):
            self.entries[path] = _entry(member)  # kept with what is in it, as tar does
        elif member.type in _TYPES:
            self._put(path, _entry(member))

    def _file(self, member: tarfile.TarInfo, data, backing_dir: Path) -> Entry:
        digest, backing = hashlib.sha256(), ""
        if member.sparse is not None:  # its data is not one run of the spool
            backing = str(backing_dir / f"sparse-{os.urandom(6).hex()}")
            with open(backing, "wb") as out:
                for chunk in data(member):
                    digest.update(chunk)
                    out.write(chunk)
        else:
            for chunk in data(member):
                digest.update(chunk)
        return replace(
            _entry(member), offset=member.offset_data, sha256=digest.hexdigest(), backing=backing
        )

    def _hardlink(self, member: tarfile.TarInfo, path: str) -> None:
        target = _key(clean_name(member.linkname))
        found = self.entries.get(target)
        if found is None or stat.S_ISDIR(found.st_mode):
            raise UnsafeLayer(
                f"layer entry {member.name!r} links to {member.linkname!r}, "
                "which is not a file in this layer"
            )
        if target != path:
            self._put(path, found)

    def _whiteout(self, path: str, base: str) -> None:
        parent = posixpath.dirname(path)
        self._parent(parent, path)
        if base == OPAQUE_MARKER or base.startswith(WHITEOUT_PREFIX * 2):
            return  # an xattr on the parent, or nothing: no path to index
        self._put(posixpath.join(parent, base[len(WHITEOUT_PREFIX) :]), Entry(stat.S_IFCHR))

    def _put(self, path: str, entry: Entry) -> None:
        parent = posixpath.dirname(path)
        self._parent(parent, path)
        self._drop(path)
        self.entries[path] = entry
        self.children[parent].add(posixpath.basename(path))
        if stat.S_ISDIR(entry.st_mode):
            self.children[path] = set()

    def _parent(self, parent: str, path: str) -> None:
        """Every directory above `path`, made if missing; never through a symlink or a file."""
        walked = "/"
        for part in [p for p in parent.split("/") if p]:
            here = posixpath.join(walked, part)
            found = self.entries.get(here)
            if found is None:
                self.entries[here], self.children[here] = self._implicit, set()
                self.children[walked].add(part)
            elif not stat.S_ISDIR(found.st_mode):
                raise UnsafeLayer(
                    f"layer entry {path[1:]!r} goes through {part!r}, which is not a directory "
                    "(a symlink cannot be written through)"
                )
            walked = here

    def _is_dir(self, path: str) -> bool:
        found = self.entries.get(path)
        return found is not None and stat.S_ISDIR(found.st_mode)

    def _drop(self, path: str) -> None:
        """`path` and everything under it, out of the index."""
        if path not in self.entries:
            return
        self.children[posixpath.dirname(path)].discard(posixpath.basename(path))
        doomed = [path]
        while doomed:
            gone = doomed.pop()
            self.entries.pop(gone, None)
            doomed += [posixpath.join(gone, n) for n in self.children.pop(gone, ())]

    def remove(self, path: str) -> None:
        """Leave `path` out (.dockerignore)."""
        self._drop(_key(path))


def _key(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


def _entry(member: tarfile.TarInfo) -> Entry:
    kind = stat.S_IFREG if member.isreg() else _TYPES.get(member.type, stat.S_IFREG)
    text = member.pax_headers.get("mtime")
    mtime = int(Decimal(text) * 10**9) if text else int(member.mtime * 10**9)
    rdev = os.makedev(member.devmajor, member.devminor) if member.ischr() or member.isblk() else 0
    mode = 0o777 if member.issym() else member.mode & 0o7777  # a symlink's, on Linux
    return Entry(
        kind | mode, member.uid, member.gid, member.size if member.isreg() else 0,
        mtime, rdev, member.linkname if member.issym() else "",
    )  # fmt: skip


class _Slice:
    """A file's contents inside the spool, as a read-only binary file."""

    def __init__(self, spool: Path, offset: int, size: int) -> None:
        self._fd = os.open(spool, os.O_RDONLY | os.O_CLOEXEC)
        self._start, self._end, self._pos = offset, offset + size, offset

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._pos
        data = os.pread(self._fd, left if size < 0 else min(size, left), self._pos)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos - self._start

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: self._start, os.SEEK_CUR: self._pos, os.SEEK_END: self._end}[whence]
        self._pos = min(max(base + offset, self._start), self._end)
        return self.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Once: a second close must not close a descriptor the number was given to since."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> _Slice:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
