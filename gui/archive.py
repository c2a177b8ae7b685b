"""What the Files tab makes of the archive API (`docker cp`'s GET /containers/{id}/archive).

A directory is asked for as `PATH/.` (its tar's names are then `.` and `./NAME...`, and a
symlink to a directory is followed) and read as it streams, up to the first name deeper than
its top level: the engine writes a directory's own entries before its subdirectories' trees,
so the rest of a big tree is never read (the answer is closed and the engine stops writing).
A file's single member is saved through a temporary name beside the chosen one, renamed when
whole, so a failed or refused download leaves nothing at the chosen path.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vmctl_gui import fmt

STAT_HEADER = "X-Docker-Container-Path-Stat"
GO_DIR = 1 << 31  # Go's os.ModeDir, in the stat header's mode
COPY_BLOCK = 1 << 16


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


@dataclass(frozen=True)
class Listing:
    """A directory's top level, and how many bytes of its tar were read to get it."""

    path: str
    entries: list[FileEntry]
    bytes_read: int


class FileTooLarge(Exception):
    """The file does not fit where the user chose to save it."""


class ArchiveStream:
    """The GET answer as a file tarfile reads in stream mode; `close` (from any thread: a
    job's cancel) drops the connection, which ends the engine's side too."""

    def __init__(self, raw: BinaryIO, headers: Mapping[str, str], close: Callable[[], None]):
        self._raw, self._close = raw, close
        self.stat = decode_stat(headers.get(STAT_HEADER, ""))
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(None if size < 0 else size)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._close()


def decode_stat(header: str) -> dict:
    """The stat header: base64 of JSON (name, size, mode, mtime, linkTarget), Go's mode bits."""
    return json.loads(base64.b64decode(header)) if header else {}


def stat_is_dir(found: dict) -> bool:
    return bool(int(found.get("mode", 0)) & GO_DIR)


def directory_request(path: str) -> str:
    """The path to ask for a directory's contents: `/etc` → `/etc/.`, `/` → `/.`."""
    return path.rstrip("/") + "/."


def entry_of(member: tarfile.TarInfo, name: str) -> FileEntry:
    kind = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK,
            tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
            tarfile.FIFOTYPE: stat.S_IFIFO}.get(member.type, stat.S_IFREG)  # fmt: skip
    link = member.linkname if member.issym() else ""
    return FileEntry(name, member.size, stat.filemode(kind | member.mode), int(member.mtime), link)


def top_entries(stream: BinaryIO) -> list[FileEntry]:
    """The children of the directory whose tar (asked as `PATH/.`) `stream` carries, by name,
    directories first; reading stops at the first deeper name."""
    entries = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            parts = member.name.rstrip("/").split("/")
            if len(parts) > 2:
                break
            if len(parts) == 2:
                entries.append(entry_of(member, parts[1]))
    return sorted(entries, key=lambda e: (not e.is_dir, e.name))


def save_member(stream: BinaryIO, dest: Path) -> int:
    """The tar's single regular file written to `dest` via a temporary name; its size."""
    temporary = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            member = _single_file(tar)
            _check_room(member, dest)
            with tar.extractfile(member) as source, open(temporary, "wb") as out:
                shutil.copyfileobj(source, out, COPY_BLOCK)
        os.replace(temporary, dest)
    finally:
        temporary.unlink(missing_ok=True)
    return member.size


def _single_file(tar: tarfile.TarFile) -> tarfile.TarInfo:
    member = tar.next()
    if member is None or not member.isfile():
        name = member.name if member is not None else "it"
        raise IsADirectoryError(f"{name} is not a regular file: only files can be downloaded")
    return member


def _check_room(member: tarfile.TarInfo, dest: Path) -> None:
    free = shutil.disk_usage(dest.parent).free
    if member.size > free:
        raise FileTooLarge(
            f"{member.name} is {fmt.size(member.size)} but only {fmt.size(free)} is free "
            f"in {dest.parent}: free some space there or save it elsewhere."
        )
