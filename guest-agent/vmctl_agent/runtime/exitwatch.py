"""One thread waits for every followed process to end, each through a pidfd in one epoll set,
and hands each end to a thread of its own, which lives only while that end is dealt with.

The engine follows each running container's shim this way. A thread per container, blocked
for the container's whole life, cost the engine its stack's pages and its Python state each
(on the guest's kernel, with transparent huge pages, up to 2 MiB a stack).
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from vmctl_agent.runtime import pids


class ExitWatch:
    """`when_ended` callbacks by pidfd; the watching thread starts with the first of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, Callable[[], None]] = {}
        self._epoll: select.epoll | None = None

    def when_ended(self, pid: int, started: int, then: Callable[[], None]) -> None:
        """Call `then()` once process `pid`, which started at `started`, has ended: at once
        if it already has, or if `pid` names another process by now."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone and collected already (or no pid at all)
            _run(then)
            return
        if not pids.same_process(pid, started):  # a zombie, or the pid was reused
            os.close(pidfd)
            _run(then)
            return
        with self._lock:
            self._waiting[pidfd] = then
            self._watching().register(pidfd, select.EPOLLIN)

    def watched(self) -> int:
        """How many processes are waited for."""
        with self._lock:
            return len(self._waiting)

    def _watching(self) -> select.epoll:
        """The epoll set, and its thread started (called with the lock held)."""
        if self._epoll is None:
            self._epoll = select.epoll()
            threading.Thread(
                target=self._watch, args=(self._epoll,), name="exits", daemon=True
            ).start()
        return self._epoll

    def _watch(self, epoll: select.epoll) -> None:
        while True:
            for pidfd, _ in epoll.poll():
                with self._lock:
                    then = self._waiting.pop(pidfd)
                    epoll.unregister(pidfd)
                os.close(pidfd)
                _run(then)


def _run(then: Callable[[], None]) -> None:
    threading.Thread(target=then, daemon=True).start()
