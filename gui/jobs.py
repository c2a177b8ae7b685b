"""Workers: every call that can block runs here, off the UI thread (vorta's job queues).

A `Job` wraps a function `fn(job)`; it runs on a QThreadPool thread and its outcome comes back to
the UI thread as a call of `on_done(result)`, `on_error(exc)` or `on_progress(value)`. Those
callbacks are delivered through a queued signal to a QObject that lives on the UI thread, so a
callback never touches widgets from a worker thread.

A job is cancellable: `cancel()` sets a flag the function polls (`job.cancelled`) and calls the
closers it registered (`job.on_cancel(stream.close)`), which is how a blocking read of an event
or log stream is interrupted. A cancelled job reports nothing.

`JobQueue` is a pool; a queue with `serial=True` runs one job at a time in order, which is
what one VM's lifecycle needs (a stop queued behind a start waits for it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot
from vmctl_gui.engine import Cancelled


class _Relay(QObject):
    """Lives on the UI thread; a signal emitted by the worker is delivered here, queued."""

    delivered = Signal(str, object)

    def __init__(self, job: Job) -> None:
        super().__init__()
        self._job = job
        self.delivered.connect(self._deliver)

    @Slot(str, object)
    def _deliver(self, kind: str, value: object) -> None:
        self._job._deliver(kind, value)


class Job(QRunnable):
    def __init__(
        self,
        fn: Callable[[Job], Any],
        *,
        label: str = "",
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the queue keeps it until its outcome is delivered
        self.fn = fn
        self.label = label
        self._callbacks = {"done": on_done, "error": on_error, "progress": on_progress}
        self._cancel = threading.Event()
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._relay = _Relay(self)
        self.finished = threading.Event()  # set once the outcome has been delivered
        self._forget: Callable[[Job], None] = lambda _job: None

    # ---- called from the worker ----

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def progress(self, value: object) -> None:
        if not self.cancelled:
            self._emit("progress", value)

    def on_cancel(self, closer: Callable[[], None]) -> None:
        """Run `closer` when the job is cancelled (at once if it already is)."""
        with self._lock:
            if not self.cancelled:
                self._closers.append(closer)
                return
        closer()

    def run(self) -> None:
        try:
            if self.cancelled:
                raise Cancelled
            result = self.fn(self)
        except Cancelled:
            self._emit("cancelled", None)
        except BaseException as e:
            self._emit("cancelled" if self.cancelled else "error", e)
        else:
            self._emit("cancelled" if self.cancelled else "done", result)

    def _emit(self, kind: str, value: object) -> None:
        with contextlib.suppress(RuntimeError):  # its relay is gone: the app quit meanwhile
            self._relay.delivered.emit(kind, value)

    # ---- called on the UI thread ----

    def cancel(self) -> None:
        with self._lock:
            self._cancel.set()
            closers, self._closers = self._closers, []
        for closer in closers:
            with contextlib.suppress(Exception):  # a stream that is already closed
                closer()

    def _deliver(self, kind: str, value: object) -> None:
        if kind != "progress":
            self.finished.set()
            self._forget(self)
        callback = self._callbacks.get(kind)
        if callback is not None and not (self.cancelled and kind == "progress"):
            callback(value)


class JobQueue:
    """A pool of worker threads; `serial` runs one job at a time, in submission order."""

    def __init__(self, name: str, *, serial: bool = False, threads: int = 4) -> None:
        self.name = name
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(1 if serial else threads)
        self.pool.setExpiryTimeout(30_000)
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> Job:
        job._forget = self._forget
        self.jobs.append(job)
        self.pool.start(job)
        return job

    def _forget(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)

    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    def cancel_all(self) -> None:
        for job in list(self.jobs):
            job.cancel()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything and wait for the threads: the app calls this as it quits."""
        self.pool.clear()
        self.cancel_all()
        return self.pool.waitForDone(timeout_ms)
