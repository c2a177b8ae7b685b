"""Container output on the wire: Docker's 8-byte frame header ([stream, 0, 0, 0, size]) when
stdout and stderr share one connection, the bytes as they are for a TTY."""

from __future__ import annotations

import struct

STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"


def frame(stream: str, data: bytes) -> bytes:
    return struct.pack(">BxxxL", STREAM_IDS[stream], len(data)) + data


def encode(stream: str, data: bytes, *, tty: bool) -> bytes:
    return data if tty else frame(stream, data)
