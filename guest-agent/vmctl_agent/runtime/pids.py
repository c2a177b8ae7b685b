"""Processes we supervise but did not necessarily start in this life of the agent: a pid
alone can be reused, so a process is named by its pid and its start time, and signalled
through a pidfd opened and then checked to be that process.
"""

from __future__ import annotations

import os
import select
import signal
import time


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: with the pid, it names a process even after pid reuse."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2 :].split()[19])


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return True
    return data[data.rindex(b")") + 2 :].startswith(b"Z")


def same_process(pid: int, started: int) -> bool:
    """Is `pid` still the process that started at `started` (and not a zombie)?"""
    try:
        return pid > 0 and start_time(pid) == started and not is_zombie(pid)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False


def send_signal(pid: int, started: int, sig: int) -> None:
    """Signal the container's process through a pidfd, checked to be the same process."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if same_process(pid, started):
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def reap(pid: int, timeout: float = 0.0) -> bool:
    """Collect `pid`'s exit if it is our child (a shim this agent started), waiting up to
    `timeout` for it to end: a shim exits right after writing exit.json. False if it is our
    child and still running. Asked first, so a pid that is not (or no longer) our child is
    never waited for: it may be anyone's by now."""
    if _collected(pid):
        return True
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return True
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return _collected(pid)


def reap_same(pid: int, started: int, timeout: float = 0.0) -> bool:
    """reap(), only while `pid` is still the process that started at `started` (a zombie
    included): a pid collected elsewhere may be a new child of ours by now."""
    try:
        if start_time(pid) != started:
            return True
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return True
    return reap(pid, timeout)


def _collected(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) != (0, 0)
    except (ChildProcessError, OSError):
        return True  # not our child, or collected already


def wait_for_exit(pid: int, deadline: float | None, also: int | None = None) -> None:
    """Sleep until process `pid` ends, or fd `also` is readable (a shim's end-of-work pipe,
    which it closes once exit.json is written: before its exit, which takes a while), or the
    deadline."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        watched = [pidfd] if also is None else [pidfd, also]
        if pidfd in select.select(watched, [], [], remaining)[0]:
            reap(pid)
    finally:
        os.close(pidfd)
