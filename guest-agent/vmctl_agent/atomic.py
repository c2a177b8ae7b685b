"""Durable writes: a temp name in the same directory, fsync, rename, fsync the directory.

Readers see the old file or the new one, never half of one, even if the VM dies mid-write.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def boot_id() -> str:
    """This kernel boot's id. Data written in this boot survives our process being killed
    (it is in the page cache); only a crash, which changes the boot id, can lose it."""
    return _BOOT_ID.read_text().strip()


def write_bytes(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; durably (fsync) unless told it is not needed.

    Not durable is for what a crash makes moot anyway (a running container's state, files
    regenerated at each start): readers still never see half a file while the machine is up.
    """
    tmp = path.parent / _temp_name(path.name)
    try:
        fd = os.open(tmp, _TEMP_FLAGS, 0o600)
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def _temp_name(name: str) -> str:
    """Unique among live writers (process and thread); one a crash left behind is reused."""
    return f".{name}.{os.getpid()}-{threading.get_ident()}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    write_bytes(path, _json_bytes(value), durable=durable)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode() + b"\n"


def write_new_json(path: Path, value: Any, *, durable: bool = True) -> None:
    """A new file in a directory nobody reads yet (a staging directory renamed into place
    later): no temp name needed. Fsynced if durable; the directory is the caller's to fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, _json_bytes(value))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    _fsync(path, os.O_RDONLY | os.O_CLOEXEC)


def read_json(path: Path) -> Any:
    """The JSON in `path`; FileNotFoundError if absent."""
    with open(path, "rb") as f:
        return json.load(f)


def read_json_or_none(path: Path) -> Any:
    try:
        return read_json(path)
    except FileNotFoundError:
        return None


def fsync_dir(path: Path) -> None:
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush the whole filesystem holding `path`: one call instead of an fsync per file."""
    import ctypes  # only pulls that downloaded something pay for loading it

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


@contextmanager
def locked(
    path: Path, *, shared: bool = False, wait: bool = True, directory: bool = False
) -> Iterator[bool]:
    """An flock on `path`: serialises threads and processes alike (one open file each).
    The file is made if missing; with `directory`, the directory itself is locked (no file
    to make; FileNotFoundError if it is gone).

    Yields True once held; with `wait=False`, yields False at once if someone else holds it.
    """
    if directory:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
