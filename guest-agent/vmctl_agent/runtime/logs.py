"""Container output in Docker's json-file format: one JSON object a line,
`{"log": "hello\\n", "stream": "stdout", "time": "2024-01-01T00:00:00.123456789Z"}`.

The shim writes (a line at a time, partial lines flushed at 16 KiB as Docker does); readers
filter by since/until, keep the last N (tail), and follow a running container's file.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_LINE = 16 * 1024
_FOLLOW_POLL = 0.05


@dataclass(frozen=True)
class Entry:
    stream: str
    data: bytes
    time: str  # RFC 3339 with nanoseconds, UTC

    @property
    def timestamp(self) -> float:
        return parse_time(self.time)


def now() -> str:
    """RFC 3339 UTC with nanoseconds, as Docker writes it."""
    ns = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9))
    return f"{stamp}.{ns % 10**9:09d}Z"


def parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (nanoseconds cut to what a float holds)."""
    main, _, fraction = text.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(main).replace(tzinfo=UTC).timestamp()
    return whole + (float("0." + fraction) if fraction else 0.0)


class LogWriter:
    """Splits a stream's bytes into lines and appends them to the json-file log."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        *complete, rest = (self._partial.pop(stream, b"") + data).split(b"\n")
        records = [chunk for line in complete for chunk in _chunks(line, newline=True)]
        while len(rest) >= MAX_LINE:
            records.append((rest[:MAX_LINE], False))
            rest = rest[MAX_LINE:]
        if rest:
            self._partial[stream] = rest
        if records:
            stamp = now()
            os.write(self._fd, b"".join(_record(stream, r, stamp, newline=n) for r, n in records))

    def flush(self) -> None:
        """At exit: whatever is left without a newline becomes a last entry."""
        for stream, rest in list(self._partial.items()):
            os.write(self._fd, _record(stream, rest, now(), newline=False))
        self._partial.clear()

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def _chunks(line: bytes, *, newline: bool) -> list[tuple[bytes, bool]]:
    """A line longer than 16 KiB becomes several entries; only the last ends the line."""
    pieces = [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)] or [b""]
    return [(p, newline and i == len(pieces) - 1) for i, p in enumerate(pieces)]


def _record(stream: str, line: bytes, stamp: str, *, newline: bool = True) -> bytes:
    text = line.decode("utf-8", "replace") + ("\n" if newline else "")
    entry = {"log": text, "stream": stream, "time": stamp}
    return json.dumps(entry, ensure_ascii=False).encode() + b"\n"


def read(
    source,
    *,
    since: float = 0,
    until: float = 0,
    tail: int | None = None,
    follow: bool = False,
    running: Callable[[], bool] = lambda: False,
    offset: int | None = None,
) -> Iterator[Entry]:
    """Entries of the log at `source` (a path, or a file opened earlier: it stays readable
    after an auto-removed container's directory is gone), oldest first, from byte `offset`;
    with follow, new ones until `running()` is False."""
    try:
        f = open(source, "rb") if isinstance(source, str) else source  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        if offset is not None:
            f.seek(offset)
        entries = (e for e in _parse(f) if _in_window(e, since, until))
        yield from (deque(entries, maxlen=tail) if tail is not None else entries)
        if follow:
            yield from _follow(f, since, until, running)


def _follow(f, since: float, until: float, running: Callable[[], bool]) -> Iterator[Entry]:
    while True:
        alive = running()  # checked before reading, so nothing written before exit is missed
        got = False
        for entry in _parse(f):
            got = True
            if _in_window(entry, since, until):
                yield entry
        if not got and not alive:
            return
        if not got:
            time.sleep(_FOLLOW_POLL)


def _parse(f) -> Iterator[Entry]:
    while True:
        start = f.tell()
        line = f.readline()
        if not line.endswith(b"\n"):
            f.seek(start)  # a line still being written: read it next time
            return
        try:
            raw = json.loads(line)
            yield Entry(raw["stream"], raw["log"].encode(), raw["time"])
        except (ValueError, KeyError):
            continue


def _in_window(entry: Entry, since: float, until: float) -> bool:
    if not since and not until:
        return True
    stamp = entry.timestamp
    return stamp >= since and (not until or stamp <= until)
