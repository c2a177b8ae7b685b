"""`docker export`: a container's whole filesystem as one tar, read through a read-only overlay
of its upper directory over its image's layers. The overlay lives in a mount thread's own
namespace (overlay.py); the tar is handed over through a small bounded queue, so the bytes
stream as the client reads them, and a client that goes away ends the thread and its mount.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from vmctl_agent.build import layertar, overlay
from vmctl_agent.store.content import remove_tree

_DONE = object()
_PUT_WAIT = 1.0


class _Stopped(Exception):
    """The reader went away: stop writing."""


def export(layers_root: Path, layers: Sequence[str], upper: Path, work: Path) -> Iterator[bytes]:
    """The tar of the container whose image layers (top first) and upper directory are
    given; `work` is a scratch directory of ours, removed at the end."""
    lowers = [os.path.relpath(p, layers_root) for p in (upper, *layers)]
    producer = _Producer(layers_root, lowers, work)
    work.mkdir()
    thread = threading.Thread(target=producer.run, daemon=True)
    thread.start()
    try:
        yield from _drain(producer.chunks)
    finally:
        producer.stop.set()
        thread.join()
        remove_tree(work)


class _Producer:
    """Mounts the container's files read-only and writes their tar into `chunks`."""

    def __init__(self, layers_root: Path, lowers: list[str], work: Path) -> None:
        self.layers_root, self.lowers, self.work = layers_root, lowers, work
        self.chunks: queue.Queue = queue.Queue(maxsize=16)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            overlay.run_mounted(self.layers_root, [self.lowers], self.work, self._write, False)
            _put(self.chunks, _DONE, self.stop)
        except _Stopped:
            pass
        except BaseException as e:  # handed to the reader, if it still reads
            with contextlib.suppress(_Stopped):
                _put(self.chunks, e, self.stop)

    def _write(self, root: str) -> None:
        for chunk in layertar.tar_chunks(Path(root)):
            _put(self.chunks, chunk, self.stop)


def _drain(chunks: queue.Queue) -> Iterator[bytes]:
    while (item := chunks.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item


def _put(chunks: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            chunks.put(item, timeout=_PUT_WAIT)
            return
        except queue.Full:
            continue
    raise _Stopped()
