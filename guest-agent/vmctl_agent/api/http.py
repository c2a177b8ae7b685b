"""HTTP/1.1 for the Engine API on a unix socket, with what the docker CLI needs beyond plain
request/response: streamed (chunked) answers, hijacked connections for attach and exec, and
dockerd's API-version prefix and error bodies.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import socketserver
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from vmctl_agent import errors

API_VERSION = "1.50"
MIN_API_VERSION = "1.24"
MAX_BODY = 64 << 20
HIJACK_GRACE = 0.02
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")


class ApiError(errors.AgentError):
    """An error with the HTTP status dockerd would answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    version: str
    handler: BaseHTTPRequestHandler = field(repr=False)
    _body: bytes | None = None

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
            self._body = read_body(self.handler)
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
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return _ChunkedReader(self.handler.rfile)
        return _LimitedReader(self.handler.rfile, int(self.headers.get("Content-Length") or 0))

    @property
    def socket(self) -> socket.socket:
        return self.handler.connection


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None  # chunked
    hijack: Callable[[socket.socket], None] | None = None  # 101, then the raw socket


def json_response(value, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode() + b"\n")


def empty(status: int = 204) -> Response:
    return Response(status, b"", content_type="")


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body: Content-Length or chunked (docker load streams its tar chunked)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return b"".join(read_chunks(handler.rfile))
    length = int(handler.headers.get("Content-Length") or 0)
    if length > MAX_BODY:
        raise ApiError(400, f"request body too large ({length} bytes)")
    return handler.rfile.read(length) if length else b""


def read_chunks(rfile, limit: int = MAX_BODY) -> Iterable[bytes]:
    total = 0
    while True:
        size_line = rfile.readline(1024)
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise ApiError(400, "malformed chunked body") from None
        if size == 0:
            rfile.readline(1024)
            return
        total += size
        if total > limit:
            raise ApiError(400, "request body too large")
        yield rfile.read(size)
        rfile.readline(1024)


class _LimitedReader(io.RawIOBase):
    def __init__(self, rfile, length: int) -> None:
        self._rfile, self._left = rfile, length

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._rfile.read(size) if size else b""
        self._left -= len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ChunkedReader(_LimitedReader):
    """A chunked request body, de-chunked as it is read."""

    def __init__(self, rfile) -> None:
        super().__init__(rfile, 0)
        self._chunks = read_chunks(rfile, limit=1 << 40)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
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


def status_of(error: Exception) -> int:
    """The HTTP status dockerd uses for each kind of error."""
    if isinstance(error, ApiError):
        return error.status
    name = type(error).__name__
    if name in ("ImageNotFound", "ContainerNotFound", "ManifestUnknown", "ExecNotFound"):
        return 404
    if name in ("ImageConflict", "ContainerConflict"):
        return 409
    if name in ("InvalidReference", "InvalidSpec", "ImpossibleLimit", "PlatformNotFound"):
        return 400
    if name == "AuthenticationError":
        return 401
    return 500


class Handler(BaseHTTPRequestHandler):
    """Parses, routes, and writes; the router is set on the server."""

    protocol_version = "HTTP/1.1"
    server_version = "vmctl-agent"

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_DELETE = do_PUT = do_GET

    def _serve(self) -> None:
        request = None
        try:
            request = self._request()
            response = self.server.router(request)
        except Exception as e:  # every error becomes dockerd's JSON
            if request is None or request._body is None:
                self._drain_body()  # what the handler left unread would poison the next request
            response = json_response({"message": str(e)}, status_of(e))
        self._write(response)

    def _request(self) -> Request:
        parts = urllib.parse.urlsplit(self.path)
        path, version = parts.path, API_VERSION
        match = _VERSIONED.match(path)
        if match:
            version, path = match[1], match[2]
            check_version(version)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        return Request(self.command, path, query, dict(self.headers.items()), version, self)

    def _drain_body(self) -> None:
        try:
            read_body(self)
        except Exception:
            self.close_connection = True

    def _write(self, response: Response) -> None:
        if response.hijack is not None:
            self._upgrade(response)
            return
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        if response.stream is not None:
            self._write_stream(response.stream)
            return
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _write_stream(self, chunks: Iterable[bytes]) -> None:
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except BaseException:
            # The status line is gone: hanging up is the only way left to tell the client
            # (a truncated chunked body), rather than leave it waiting for the next chunk.
            self.close_connection = True
            raise
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()

    def _upgrade(self, response: Response) -> None:
        """101 and the raw socket, as dockerd answers attach and exec start."""
        self.send_response(101, "UPGRADED")
        self.send_header("Content-Type", response.content_type)
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "tcp")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        # docker-py reads the stream from the raw socket under its buffered HTTP reader, so
        # bytes that arrive together with the 101 are lost (docker/docker-py#3332): give it
        # a moment to finish reading the headers before the first byte of the stream.
        time.sleep(HIJACK_GRACE)
        with contextlib.suppress(OSError):  # the client went away: nothing more to say
            response.hijack(self.connection)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args) -> None:
        if os.environ.get("VMCTL_AGENT_ACCESS_LOG"):
            super().log_message(format, *args)


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """One thread per connection, on a unix socket created 0660 (owner root)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = socket.SOMAXCONN  # 50 `docker run`s at once must all get in

    def handle_error(self, request, client_address) -> None:
        quiet_disconnects(sys.exc_info()[1])

    def __init__(
        self, path: str, router: Callable[[Request], Response], gid: int | None = None
    ) -> None:
        self.router = router
        if os.path.exists(path):
            _refuse_if_live(path)
            os.unlink(path)
        old = os.umask(0o117)
        try:
            super().__init__(path, Handler)
        finally:
            os.umask(old)
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, 0o660)

    def server_close(self) -> None:
        """A stopped engine leaves no socket behind for clients to hang on, as dockerd."""
        super().server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.server_address)


def quiet_disconnects(error: BaseException | None) -> None:
    """A client that hangs up (the CLI does, after a wait or between requests) is normal."""
    if isinstance(error, ConnectionError | BrokenPipeError):
        return
    traceback.print_exception(error, file=sys.stderr)


def _refuse_if_live(path: str) -> None:
    """Another agent answering on this socket must not be cut off by a second one."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return
    finally:
        probe.close()
    raise errors.AgentError(f"another engine is already listening on {path}")
