"""Plain HTTP/1.1 to the engine over a channel the caller opens (an SSH channel to its unix
socket): the few requests the host agent makes itself. No keep-alive: one request per
channel."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from vmctl.errors import VmctlError


class EngineError(VmctlError):
    """The engine answered with an error, or not as HTTP."""


def request(open_channel: Callable[[], object], method: str, path: str) -> bytes:
    channel = open_channel()
    try:
        _send(channel, method, path, "Connection: close\r\n")
        status, headers, rest = _head(channel)
        body = _body(channel, headers, rest)
    finally:
        channel.close()
    if status >= 400:
        raise EngineError(f"{method} {path}: {status} {body[:200].decode(errors='replace')}")
    return body


def hijack(open_channel: Callable[[], object], path: str) -> Stream:
    """A raw stream after the engine's 101."""
    channel = open_channel()
    try:
        _send(channel, "POST", path, "Connection: Upgrade\r\nUpgrade: tcp\r\n")
        status, _, rest = _head(channel)
    except BaseException:
        channel.close()
        raise
    if status != 101:
        channel.close()
        raise EngineError(f"POST {path}: {status}")
    return Stream(channel, rest)


class Stream:
    """A channel whose first bytes came with the answer's head (given back first)."""

    def __init__(self, channel, early: bytes) -> None:
        self.channel, self.early = channel, early

    def recv(self, size: int) -> bytes:
        if self.early:
            data, self.early = self.early[:size], self.early[size:]
            return data
        return self.channel.recv(size)

    def sendall(self, data: bytes) -> None:
        self.channel.sendall(data)

    def shutdown_write(self) -> None:
        self.channel.shutdown_write()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stream_lines(open_channel: Callable[[], object], path: str) -> Iterator[bytes]:
    """Each line of a streamed (chunked) answer, until the engine ends it."""
    channel = open_channel()
    _send(channel, "GET", path, "")
    status, _, rest = _head(channel)
    if status != 200:
        channel.close()
        raise EngineError(f"GET {path}: {status}")
    return _lines(channel, _dechunk(channel, rest))


def _lines(channel, chunks: Iterator[bytes]) -> Iterator[bytes]:
    buffer = b""
    try:
        for chunk in chunks:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line
    finally:
        channel.close()


def _send(channel, method: str, path: str, extra: str) -> None:
    channel.sendall(f"{method} {path} HTTP/1.1\r\nHost: engine\r\n{extra}\r\n".encode())


def _head(channel) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = channel.recv(65536)
        if not chunk:
            raise EngineError("the engine closed the connection before answering")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, rest


def _body(channel, headers: dict[str, str], rest: bytes) -> bytes:
    if headers.get("transfer-encoding") == "chunked":
        return b"".join(_dechunk(channel, rest))
    length = headers.get("content-length")
    data = rest
    while (length is None or len(data) < int(length)) and (chunk := channel.recv(65536)):
        data += chunk
    return data


def _dechunk(channel, data: bytes) -> Iterator[bytes]:
    while True:
        while b"\r\n" not in data:
            more = channel.recv(65536)
            if not more:
                return
            data += more
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return
        while len(data) < size + 2:
            more = channel.recv(65536)
            if not more:
                return
            data += more
        yield data[:size]
        data = data[size + 2 :]


def read_frame(channel) -> bytes | None:
    """One 2-byte-length-framed datagram (the engine's UDP carrying), None at the end."""
    head = _exactly(channel, 2)
    return None if head is None else _exactly(channel, struct.unpack("!H", head)[0])


def _exactly(channel, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = channel.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
