"""flock-based facts about a VM's processes: who is starting it (and at which stage), and
whether the host agent lives.

A lock held by a live process is released by the kernel when that process dies, however it
dies, so nothing read from here can be stale: no "stuck starting" after a crashed start, no
trusted pid of a process long gone. POSIX uses flock; Windows locks one byte far past the
pid with msvcrt (its locks are mandatory: the pid itself must stay readable).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from vmctl import paths as vmpaths
from vmctl.errors import VmctlError

if sys.platform == "win32":
    import msvcrt

    _FAR = 1 << 30  # the locked byte, beyond any pid we write

    def _try_lock(f: IO[str], exclusive: bool) -> bool:
        try:
            f.seek(_FAR)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            f.seek(0)
        return True

    def _unlock(f: IO[str]) -> None:
        f.seek(_FAR)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        f.seek(0)

else:
    import fcntl

    def _try_lock(f: IO[str], exclusive: bool) -> bool:
        try:
            fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(f: IO[str]) -> None:
        fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def start_lock(paths: vmpaths.VMPaths) -> Iterator[None]:
    """One start at a time; a crashed start releases it, so nothing stays "starting"."""
    with open(paths.start_lock, "a+") as f:
        if not _try_lock(f, exclusive=True):
            raise VmctlError(
                f"VM {paths.name!r} is already being started by another vmctl "
                f"(stage: {stage_of(paths) or 'preparing'})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def record_stage(paths: vmpaths.VMPaths, stage: str) -> None:
    """The stage a start has reached, for `vmctl status` (read while the lock is held)."""
    with open(paths.start_lock, "r+") as f:
        lines = f.read().splitlines()
        f.seek(0)
        f.truncate()
        f.write(f"{lines[0] if lines else os.getpid()}\n{stage}\n")


def stage_of(paths: vmpaths.VMPaths) -> str:
    with contextlib.suppress(OSError):
        lines = paths.start_lock.read_text().splitlines()
        return lines[1] if len(lines) > 1 else ""
    return ""


def hold(path: Path) -> IO[str] | None:
    """Lock `path` for this process's life and write our pid in it; None if a live process
    holds it already. Keep the returned file open: closing it releases the lock."""
    f = open(path, "a+")  # noqa: SIM115 - returned open, on purpose
    if not _try_lock(f, exclusive=True):
        f.close()
        return None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def holder(path: Path) -> int | None:
    """The pid in a lock file whose flock is held, or None when no live process holds it."""
    try:
        f = open(path)  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return None
    with f:
        if not _try_lock(f, exclusive=False):
            first = f.read().split("\n", 1)[0].strip()
            return int(first) if first.isdigit() else -1
        _unlock(f)
        return None
