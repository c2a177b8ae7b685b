"""The engine's streams as the GUI reads them: lines of logs and output, decoded JSON
messages of stats. Each can be closed from another thread (the UI's cancel), which shuts its
socket and so ends a read that is blocked on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator


class LineStream:
    """Decoded lines of a docker-py stream. `close()` may come from another thread (the UI's
    cancel): it shuts the socket, which ends a blocked read. `first` lines come before the
    stream's (the engine's warnings); `tail()` gives a last line when the stream ended by
    itself; `cleanup()` runs however it ended (a quick run removes its container)."""

    def __init__(
        self,
        stream,
        tail: Callable[[], str] | None = None,
        cleanup: Callable[[], None] | None = None,
        first: list[str] | None = None,
    ) -> None:
        self._stream = stream
        self._first = first or []
        self._tail = tail
        self._cleanup = cleanup
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._stream.close()

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._first
            pending = b""
            for chunk in self._stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace") + "\n"
            if pending:
                yield pending.decode("utf-8", "replace")
            if self._tail is not None and not self.closed:
                yield self._tail()
        finally:
            if self._cleanup is not None:
                self._cleanup()


class JsonStream:
    """Decoded JSON messages of a docker-py CancellableStream (stats); `close()` from any
    thread ends it."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._stream.close()

    def __iter__(self) -> Iterator[dict]:
        yield from self._stream
