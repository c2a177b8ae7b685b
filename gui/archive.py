"""What the Files tab makes of the archive API (`docker cp`'s GET and HEAD
/containers/{id}/archive): a directory's top-level entries read from its tar as it streams
(the rest of the tree is skipped, never kept), and a file's single member saved through a
temporary name, so a failed download leaves nothing half-written at the chosen path."""

from __future__ import annotations

import base64
import json
import os
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

GO_DIR = 1 << 31  # Go's os.ModeDir, in the X-Docker-Container-Path-Stat header's mode
GO_SYMLINK = 1 << 27


@dataclass(frozen=True)
class FileEntry:
    """One line of the Files tab: what `ls -l` shows of a path in the container."""

    name: str
    size: int
    mode: str  # drwxr-xr-x
    modified: int  # unix time
    link_target: str = ""

    @property
    def is_dir(self) -> bool:
        return self.mode.startswith("d")

    @property
    def is_file(self) -> bool:
        return self.mode.startswith("-")

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.modified))


def decode_stat(header: str) -> dict:
    """The X-Docker-Container-Path-Stat header: base64 of JSON (name, size, mode, mtime,
    linkTarget), the mode in Go's bits."""
    return json.loads(base64.b64decode(header))


def stat_is_dir(found: dict) -> bool:
    return bool(int(found.get("mode", 0)) & GO_DIR)


class ChunkReader:
    """A read-only file over an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        cut = len(self._buffer) if size < 0 else size
        data, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return data


def entry_of(member: tarfile.TarInfo, name: str) -> FileEntry:
    kind = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK,
            tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
            tarfile.FIFOTYPE: stat.S_IFIFO}.get(member.type, stat.S_IFREG)  # fmt: skip
    link = member.linkname if member.issym() else ""
    return FileEntry(name, member.size, stat.filemode(kind | member.mode), int(member.mtime), link)


def top_entries(chunks: Iterable[bytes]) -> list[FileEntry]:
    """A directory's children, by name: the tar's names are rebased to the directory's own
    name (`etc/hostname`), so a child is a name with exactly one slash; deeper ones pass by."""
    entries = []
    with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tar:
        for member in tar:
            parts = member.name.rstrip("/").split("/")
            if len(parts) == 2 and parts[1] not in ("", "."):
                entries.append(entry_of(member, parts[1]))
    return sorted(entries, key=lambda e: (not e.is_dir, e.name))


def save_member(chunks: Iterable[bytes], dest: Path) -> int:
    """Write the tar's single regular file to `dest` via a temporary name and a rename;
    the bytes written."""
    temporary = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tar:
            member = next(iter(tar), None)
            if member is None or not member.isfile():
                raise IsADirectoryError(f"{member.name if member else 'it'} is not a regular file")
            with tar.extractfile(member) as source, open(temporary, "wb") as out:
                while block := source.read(1 << 16):
                    out.write(block)
        os.replace(temporary, dest)
    finally:
        temporary.unlink(missing_ok=True)
    return member.size
