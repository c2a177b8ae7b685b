"""HTTP/1.1 on the wire, as pure functions: a request's head from bytes, a response's head to
bytes. Written here rather than borrowed from http.server, whose email-based header parsing
cost more than answering a cached container list."""

from __future__ import annotations

import email.utils
import http
import time
from collections.abc import Iterable
from dataclasses import dataclass

MAX_HEAD = 64 << 10  # bytes of request line and headers together
MAX_HEADERS = 100
SERVER = "vmctl-agent"
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_REASONS = {s.value: s.phrase for s in http.HTTPStatus} | {101: "UPGRADED"}


class MalformedRequest(ValueError):
    """The bytes are not an HTTP/1.x request head: answered 400, then the connection closes."""


class Headers(dict):
    """Header fields by lower-cased name, since HTTP's names are case-insensitive; when a
    name repeats, the last value wins."""

    def get(self, name: str, default=None):
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


@dataclass(frozen=True)
class Head:
    """A parsed request line and its headers; the body, if any, is still on the socket."""

    method: str
    path: str
    query: str
    version: str
    headers: Headers

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    @property
    def has_body(self) -> bool:
        return "transfer-encoding" in self.headers or self.headers.get("content-length", "0") != "0"


def head_end(buffer: bytes | bytearray) -> tuple[int, int]:
    """(where the head ends, where the body starts) in `buffer`, or (-1, -1) if not yet whole.
    Bare LF line endings are accepted, as http.server did."""
    end = buffer.find(b"\r\n\r\n")
    if end >= 0:
        return end, end + 4
    end = buffer.find(b"\n\n")
    return (end, end + 2) if end >= 0 else (-1, -1)


def parse_head(raw: bytes) -> Head:
    """The request line and headers in `raw` (without the blank line that ends them)."""
    lines = raw.split(b"\n")
    method, target, version = _request_line(lines[0].rstrip(b"\r"))
    if len(lines) > MAX_HEADERS + 1:
        raise MalformedRequest("too many headers")
    headers = Headers()
    for line in lines[1:]:
        name, value = _header(line.rstrip(b"\r"))
        headers[name] = value
    path, _, query = target.partition("?")
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return Head(method, path, query.partition("#")[0], version, headers)


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise MalformedRequest(f"bad request line {line[:100]!r}")
    method, target, version = parts
    if not method or not _TOKEN.issuperset(method):
        raise MalformedRequest(f"bad method {method[:20]!r}")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise MalformedRequest(f"unsupported protocol {version[:20]!r}")
    if not target.startswith(b"/"):
        raise MalformedRequest(f"bad request target {target[:100]!r}")
    return method.decode(), target.decode("latin-1"), version.decode()


def _header(line: bytes) -> tuple[str, str]:
    name, colon, value = line.partition(b":")
    if not colon or not name or not _TOKEN.issuperset(name):
        raise MalformedRequest(f"bad header line {line[:100]!r}")
    return name.decode().lower(), value.strip(b" \t").decode("latin-1")


def content_length(headers: Headers) -> int:
    """The declared body length (0 if none); a malformed one is a malformed request."""
    value = headers.get("content-length", "0")
    if not value.isdigit():
        raise MalformedRequest(f"bad Content-Length {value[:20]!r}")
    return int(value)


def response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """Status line, Server and Date, then `headers`, then the blank line."""
    reason = _REASONS.get(status, "")
    lines = [f"HTTP/1.1 {status} {reason}", f"Server: {SERVER}", f"Date: {http_date()}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """Now, as HTTP writes it; formatted once a second."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, email.utils.formatdate(second, usegmt=True))
    return _date_cache[1]
