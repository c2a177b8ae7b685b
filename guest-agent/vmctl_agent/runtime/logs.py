"""Container output in Docker's json-file format: one JSON object a line,
`{"log": "hello\\n", "stream": "stdout", "time": "2024-01-01T00:00:00.123456789Z"}`.

The shim writes (a line at a time, partial lines flushed at 16 KiB as Docker does), and with
`--log-opt max-size` rotates the file as dockerd does (container-json.log.1 the newest of the
older ones, up to max-file files in all); readers go through all of them oldest first, filter
by since/until, keep the last N (tail), and follow a running container's file across rotations.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from vmctl_agent.runtime import logconfig

MAX_LINE = 16 * 1024
_FOLLOW_POLL = 0.05
_REOPEN_TRIES = 1000  # a rotation renames in microseconds; this is a second


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
    """Splits a stream's bytes into lines and appends them to the json-file log, rotated
    before a write that would take it past `rotation.max_size`."""

    def __init__(self, path: str, rotation: logconfig.Rotation = logconfig.NO_ROTATION) -> None:
        self._path, self._rotation = path, rotation
        self._open()
        self._partial: dict[str, bytes] = {}

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self._path, flags, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _append(self, data: bytes) -> None:
        limit = self._rotation.max_size
        if limit and self._size and self._size + len(data) > limit:
            os.close(self._fd)
            rotate(self._path, self._rotation.max_files)
            self._open()
        os.write(self._fd, data)
        self._size += len(data)

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
            lines = [_record(stream, r, stamp, newline=n) for r, n in records]
            for batch in lines if self._rotation.max_size else [b"".join(lines)]:
                self._append(batch)  # line by line when rotated: each file holds whole lines

    def flush(self) -> None:
        """At exit: whatever is left without a newline becomes a last entry."""
        for stream, rest in list(self._partial.items()):
            self._append(_record(stream, rest, now(), newline=False))
        self._partial.clear()

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def rotate(path: str, max_files: int) -> None:
    """path -> path.1 -> path.2 ..., the oldest beyond max_files gone; one file: dropped."""
    if max_files <= 1:
        os.unlink(path)
        return
    for n in range(max_files - 1, 1, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}.{n - 1}", f"{path}.{n}")
    os.replace(path, f"{path}.1")


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
    path: str | None = None,
) -> Iterator[Entry]:
    """Entries of the log at `source` (a path: its rotated files first; or a file opened
    earlier, which stays readable after an auto-removed container's directory is gone, from
    byte `offset`), oldest first; with follow, new ones until `running()` is False, through
    the rotations of the log at `path` (`source` when it is a path)."""
    if isinstance(source, str):
        files = _opened_all(source)
        if not files:
            return
        *older, f = files
        path = source
    else:
        older, f = [], source
    with contextlib.ExitStack() as opened:
        for each in (*older, f):
            opened.enter_context(each)
        if offset is not None:
            f.seek(offset)
        entries = itertools.chain(*(_parse(o) for o in older), _parse(f))
        entries = (e for e in entries if _in_window(e, since, until))
        yield from (deque(entries, maxlen=tail) if tail is not None else entries)
        if follow:
            yield from _follow(f, since, until, running, path)


def _opened_all(path: str) -> list:
    """Every file of the log at `path`, opened, oldest first, each checked to be the one
    its listing named (a rotation may rename them meanwhile)."""
    for _ in range(_REOPEN_TRIES):
        listing = _listing(path)
        if listing is not None:
            files = [_open(name) for name in listing[0]]
            opened = [o for o in files if o is not None]
            if [os.fstat(o.fileno()).st_ino for o in opened] == listing[1]:
                return opened[::-1]
            for o in opened:
                o.close()
        time.sleep(0.001)
    return [o for o in (_open(path),) if o is not None]


def _follow(f, since: float, until: float, running, path: str | None) -> Iterator[Entry]:
    with contextlib.ExitStack() as later_files:
        while True:
            alive = running()  # checked before reading: nothing written before exit is missed
            got = False
            for entry in _parse(f):
                got = True
                if _in_window(entry, since, until):
                    yield entry
            if got:
                continue
            newer = _reopened(f, path)
            if newer is not None:  # rotated: what the writer left in the old one, then on
                yield from (e for e in _parse(f) if _in_window(e, since, until))
                f = later_files.enter_context(newer)
            elif not alive:
                return
            else:
                time.sleep(_FOLLOW_POLL)


def _reopened(f, path: str | None):
    """The next newer file of the log at `path` once `f` was rotated away (the oldest one
    left if `f` itself was rotated out), else None. Cheap while nothing rotated: one stat.

    The shim renames files while this looks (path.1 -> path.2 ..., then path -> path.1), so
    a listing taken meanwhile is retried, and a file is used only when its inode is the one
    the listing named."""
    if path is None:
        return None
    mine = os.fstat(f.fileno()).st_ino
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == mine:
            return None
    for _ in range(_REOPEN_TRIES):
        listing = _listing(path)
        name = None  # None: a rotation is between its renames
        if listing is not None:
            names, inodes = listing
            if mine in inodes:
                at = inodes.index(mine)
                if at == 0:
                    return None
                name, wanted = names[at - 1], inodes[at - 1]
            elif inodes and os.fstat(f.fileno()).st_nlink == 0:
                name, wanted = names[-1], inodes[-1]  # rotated out: the oldest left
        if name is not None:
            newer = _open(name)
            if newer is not None and os.fstat(newer.fileno()).st_ino == wanted:
                return newer
            if newer is not None:
                newer.close()
        time.sleep(0.001)
    return None


def _listing(path: str) -> tuple[list[str], list[int]] | None:
    """The log's files newest first (`path`, path.1, ...) with their inodes; None while a
    rotation is visibly between renames (a name missing with the next one there, or a file
    seen under two names)."""
    names, inodes, name = [], [], path
    while True:
        try:
            inodes.append(os.stat(name).st_ino)
        except FileNotFoundError:
            if os.path.exists(f"{path}.{len(names) + 1}") or len(set(inodes)) < len(inodes):
                return None
            return names, inodes
        names.append(name)
        name = f"{path}.{len(names)}"


def _open(path: str):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


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
