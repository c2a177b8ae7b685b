"""Calls due later, from one thread with a heap of deadlines: each due call then runs on a
thread of its own, which lives only while the call does (it may block: a healthcheck probe
runs a process in the container, a restart starts one).

The engine's healthcheck probes and restart back-offs wait here, rather than each on a thread
that slept between probes, or through a back-off of up to a minute, for nothing else.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Timers:
    """Pending calls by deadline; the thread that waits for them starts with the first."""

    def __init__(self) -> None:
        self._due = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # equal deadlines keep the order they were asked in
        self._started = False

    def after(self, delay: float, then: Callable[[], None]) -> None:
        """Call `then()` on a thread of its own `delay` seconds from now."""
        with self._due:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), then))
            if not self._started:
                self._started = True
                threading.Thread(target=self._wait, name="timers", daemon=True).start()
            self._due.notify()

    def pending(self) -> int:
        with self._due:
            return len(self._heap)

    def _wait(self) -> None:
        while True:
            with self._due:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._due.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, then = heapq.heappop(self._heap)
            threading.Thread(target=then, daemon=True).start()
