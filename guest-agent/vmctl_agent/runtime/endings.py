"""What this life of the agent knows about its shims' endings, so that it waits less for them.

Each shim keeps a pipe to us open until it has recorded its container's end (exit.json, the
cgroup removed), then closes it: a waiter wakes on that instead of on the shim's exit, which
comes a few milliseconds later (the kernel first unmaps the shim's copy of the agent). The
shim, our child, is then reaped by a later call of the runtime rather than waited for now.
An agent that restarted has no pipes and falls back to watching the shims' pids.
"""

from __future__ import annotations

import os
import threading

from vmctl_agent.runtime import pids


class Endings:
    """End-of-work pipes by container id, and shims that are done but may still be exiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipes: dict[str, int] = {}
        self._exiting: set[tuple[int, int]] = set()  # (pid, start time)

    def started(self, name: str, fd: int) -> None:
        """`fd` is the new shim's pipe for container `name` (now ours to close)."""
        with self._lock:
            old = self._pipes.pop(name, None)
            self._pipes[name] = fd
        if old is not None:
            os.close(old)

    def watch(self, name: str) -> int | None:
        """A copy of the pipe to select on (the caller closes it), or None if we have none:
        a copy, so that another thread closing ours cannot hand the number to a new file."""
        with self._lock:
            fd = self._pipes.get(name)
            return None if fd is None else os.dup(fd)

    def ended(self, name: str, shim_pid: int, shim_start_time: int) -> None:
        """The container ended: drop its pipe; reap its shim if it is gone, else later."""
        self.forget(name)
        if not pids.reap_same(shim_pid, shim_start_time):
            with self._lock:
                self._exiting.add((shim_pid, shim_start_time))

    def forget(self, name: str) -> None:
        with self._lock:
            fd = self._pipes.pop(name, None)
        if fd is not None:
            os.close(fd)

    def reap(self, timeout: float = 0.0) -> None:
        """Collect the shims that are done, waiting up to `timeout` for each (they exit
        within milliseconds of closing their pipe)."""
        with self._lock:
            pending = list(self._exiting)
        for shim in pending:
            if pids.reap_same(*shim, timeout):
                with self._lock:
                    self._exiting.discard(shim)
