"""Container output on the wire: Docker's 8-byte frame header ([stream, 0, 0, 0, size]) when
stdout and stderr share one connection, the bytes as they are for a TTY."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from vmctl_agent.network.frames import read_exactly
from vmctl_agent.runtime.taps import HEADER, STREAMS, frame

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"
_NAMES = {number: name for name, number in STREAMS.items()}


def encode(stream: str, data: bytes, *, tty: bool) -> bytes:
    return data if tty else frame(stream, data)


def read_frames(sock: socket.socket) -> Iterator[tuple[str, bytes]]:
    """(stream, bytes) of each frame on `sock` (a shim's output tap), until it ends."""
    while (head := read_exactly(sock, HEADER.size)) is not None:
        number, size = HEADER.unpack(head)
        data = read_exactly(sock, size)
        if data is None:
            return
        yield _NAMES.get(number, "stdout"), data
