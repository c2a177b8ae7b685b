"""flock-based facts about a VM's processes: who is starting it (and at which stage), and
whether the host agent lives.

A lock held by a live process is released by the kernel when that process dies, however it
dies, so nothing read from here can be stale: no "stuck starting" after a crashed start, no
trusted pid of a process long gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from vmctl import paths as vmpaths
from vmctl.errors import VmctlError


@contextlib.contextmanager
def start_lock(paths: vmpaths.VMPaths) -> Iterator[None]:
    """One start at a time; a crashed start releases it, so nothing stays "starting"."""
    with open(paths.start_lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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


def holder(path: Path) -> int | None:
    """The pid in a lock file whose flock is held, or None when no live process holds it."""
    try:
        f = open(path)  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            first = f.read().split("\n", 1)[0].strip()
            return int(first) if first.isdigit() else -1
        fcntl.flock(f, fcntl.LOCK_UN)
        return None
