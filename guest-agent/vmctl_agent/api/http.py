"""The Engine API's requests and responses as handlers see them, with what the docker CLI
needs beyond plain request/response: streamed (chunked) answers, hijacked connections for
attach and exec, request bodies read as they come, dockerd's API-version prefix and error bodies.
How they travel is in wire.py (bytes), connection.py (one exchange) and server.py (the loop).
"""

from __future__ import annotations

import functools
import io
import json
import re
import select
import socket
import sys
import traceback
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from vmctl_agent import errors
from vmctl_agent.api.wire import Head, Headers, MalformedRequest, content_length

API_VERSION = "1.50"
MIN_API_VERSION = "1.24"
MAX_BODY = 64 << 20
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")


class ApiError(errors.AgentError):
    """An error with the HTTP status dockerd would answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodySource(Protocol):
    """Where a request's body comes from: the client's connection (connection.Connection)."""

    sock: socket.socket

    def read(self, size: int) -> bytes: ...

    def readline(self, limit: int) -> bytes: ...


@dataclass(eq=False)
class Request:
    method: str
    path: str
    raw_query: str
    headers: Headers
    version: str
    source: BodySource | None = field(default=None, repr=False)
    _body: bytes | None = None
    _body_failed: bool = False
    _stream: _LimitedReader | None = None

    @functools.cached_property
    def query(self) -> dict[str, list[str]]:
        """Parsed on first use: the list answered from cache only needs the raw string."""
        return urllib.parse.parse_qs(self.raw_query, keep_blank_values=True)

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.arg(name, "")
        if value == "":
            return default
        return value.lower() not in ("0", "false", "no")

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name, "")
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, f"invalid value for {name}: {value!r}") from None

    def body(self) -> bytes:
        if self._body is None:
            if self._body_failed:
                raise ApiError(400, "the request body could not be read")
            try:
                self._body = read_body(self.headers, self.source)
            except Exception:
                self._body_failed = True  # what is left of it on the socket is unknown
                raise
        return self._body

    def json(self) -> dict:
        raw = self.body()
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError as e:
            raise ApiError(400, f"invalid JSON: {e}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "invalid JSON: expected an object")
        return value

    def body_stream(self) -> io.RawIOBase:
        """The body as a file to read from, for uploads too big to hold (docker load)."""
        if _chunked(self.headers):
            self._stream = _ChunkedReader(self.source)
        else:
            self._stream = _LimitedReader(self.source, _length(self.headers))
        return self._stream

    def discard_unread_body(self) -> bool:
        """Read and drop what the handler left of the body, so that the next request on the
        connection starts where it should; False when that cannot be (then it is closed)."""
        if self._stream is not None:
            return self._stream.exhausted
        if self._body_failed:
            return False
        try:
            self.body()
        except Exception:  # too large, malformed, or the client left
            return False
        return True

    @property
    def socket(self) -> socket.socket:
        return self.source.sock


def request_from(head: Head, source: BodySource | None) -> Request:
    """The request a handler sees: the /v1.xx prefix taken off the path and checked."""
    path, version = head.path, API_VERSION
    match = _VERSIONED.match(path)
    if match:
        version, path = match[1], match[2]
        check_version(version)
    return Request(head.method, path, head.query, head.headers, version, source)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None  # chunked
    hijack: Callable[[socket.socket], None] | None = None  # 101, then the raw socket
    raw_client: bool = False  # the client reads exactly the head (the host agent): no grace


def json_response(value, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode() + b"\n")


def error_response(error: Exception) -> Response:
    """dockerd's error body, with the status dockerd uses for this kind of error."""
    return json_response({"message": str(error)}, status_of(error))


def empty(status: int = 204) -> Response:
    return Response(status, b"", content_type="")


def read_body(headers: Headers, source: BodySource | None) -> bytes:
    """The request body: Content-Length or chunked (docker load streams its tar chunked)."""
    if _chunked(headers):
        return b"".join(read_chunks(source))
    length = _length(headers)
    if length > MAX_BODY:
        raise ApiError(400, f"request body too large ({length} bytes)")
    return source.read(length) if length else b""


def _chunked(headers: Headers) -> bool:
    return headers.get("transfer-encoding", "").lower() == "chunked"


def _length(headers: Headers) -> int:
    try:
        return content_length(headers)
    except MalformedRequest as e:
        raise ApiError(400, str(e)) from None


def read_chunks(source: BodySource | None, limit: int = MAX_BODY) -> Iterable[bytes]:
    total = 0
    while True:
        size_line = source.readline(1024)
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise ApiError(400, "malformed chunked body") from None
        if size == 0:
            source.readline(1024)
            return
        total += size
        if total > limit:
            raise ApiError(400, "request body too large")
        yield source.read(size)
        source.readline(1024)


class _LimitedReader(io.RawIOBase):
    def __init__(self, source: BodySource | None, length: int) -> None:
        self._source, self._left = source, length

    def readable(self) -> bool:
        return True

    @property
    def exhausted(self) -> bool:
        return self._left == 0

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._source.read(size) if size else b""
        self._left = 0 if size and not data else self._left - len(data)  # 0: the client left
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ChunkedReader(_LimitedReader):
    """A chunked request body, de-chunked as it is read."""

    def __init__(self, source: BodySource | None) -> None:
        super().__init__(source, 0)
        self._chunks = read_chunks(source, limit=1 << 40)
        self._buffer = b""
        self._ended = False

    @property
    def exhausted(self) -> bool:
        return self._ended

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
                return b""
            self._buffer = chunk
        size = len(self._buffer) if size < 0 else size
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def parse_filters(raw: str) -> dict[str, list[str]]:
    """`filters={"status": ["exited"]}` (or the older `{"status": {"exited": true}}` form)."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
        return {
            k: list(v) if isinstance(v, list) else [x for x, on in v.items() if on]
            for k, v in value.items()
        }
    except (ValueError, AttributeError):
        raise ApiError(400, f"invalid filters: {raw}") from None


def check_version(version: str) -> None:
    """dockerd's answer to a client outside the versions we speak."""
    if _vtuple(version) > _vtuple(API_VERSION):
        raise ApiError(
            400,
            f"client version {version} is too new. Maximum supported API version is {API_VERSION}",
        )
    if _vtuple(version) < _vtuple(MIN_API_VERSION):
        raise ApiError(
            400,
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version",
        )


def _vtuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


_NOT_FOUND = ("ImageNotFound", "ContainerNotFound", "ManifestUnknown", "ExecNotFound",
              "NetworkNotFound", "VolumeNotFound")  # fmt: skip
_CONFLICT = ("ImageConflict", "ContainerConflict", "NetworkConflict", "VolumeConflict")
_BAD_REQUEST = ("InvalidReference", "InvalidSpec", "ImpossibleLimit", "PlatformNotFound",
                "InvalidNetworkConfig", "InvalidPort", "InvalidMount")  # fmt: skip


def status_of(error: Exception) -> int:
    """The HTTP status dockerd uses for each kind of error."""
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, MalformedRequest):
        return 400
    name = type(error).__name__
    if name in _NOT_FOUND:
        return 404
    if name in _CONFLICT:
        return 409
    if name in ("NetworkForbidden", "PoolOverlap", "PoolExhausted"):
        return 403
    if name in _BAD_REQUEST:
        return 400
    if name == "AuthenticationError":
        return 401
    return 500


def client_alive(sock: socket.socket) -> bool:
    """False once the client has hung up: work it left behind must not linger."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def quiet_disconnects(error: BaseException | None) -> None:
    """A client that hangs up (the CLI does, after a wait or between requests) is normal."""
    if isinstance(error, ConnectionError | BrokenPipeError):
        return
    traceback.print_exception(error, file=sys.stderr)
