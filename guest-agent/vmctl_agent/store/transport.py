"""A small HTTP/1.1 client over http.client: kept-alive connections and careful redirects.

Why not urllib: it opens a connection per request (slow for many small registry calls) and
forwards the Authorization header across redirects, which blob stores behind a registry's 307
(S3, GCS) reject. Connections are per thread, so parallel layer downloads never share one.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, BinaryIO

from vmctl_agent.errors import RegistryUnreachable

_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5
_USER_AGENT = "vmctl-agent/0.1 (linux)"
Body = bytes | BinaryIO | None


class Response:
    """A response whose body is read on demand; `close()` returns the connection to the pool."""

    def __init__(self, raw: http.client.HTTPResponse, url: str, release) -> None:
        self._raw = raw
        self._release = release
        self.url = url
        self.status = raw.status
        self.headers = raw.headers

    def read(self, size: int = -1) -> bytes:
        """Body bytes; a connection lost mid-body is RegistryUnreachable, not a short read."""
        try:
            data = self._raw.read(size if size >= 0 else None)
        except (OSError, http.client.HTTPException) as e:
            raise self._lost(_describe(e)) from e
        if not data and size != 0 and self._raw.length:
            raise self._lost(f"{self._raw.length} bytes short of its Content-Length")
        return data

    def _lost(self, reason: str) -> RegistryUnreachable:
        netloc = urllib.parse.urlsplit(self.url).netloc
        return RegistryUnreachable(f"connection to {netloc} lost while downloading: {reason}")

    def json(self) -> Any:
        return json.loads(self.read())

    def close(self) -> None:
        self._release(self._raw)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Transport:
    """Sends requests, follows redirects, and turns network failures into RegistryUnreachable."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._local = threading.local()

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        verify_tls: bool = True,
        body: Body = None,
    ) -> Response:
        """Send `method url` (with `body`: bytes, or a seekable file sent from where it is);
        redirects are followed without leaking credentials to other hosts."""
        headers = dict(headers or {})
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._send(method, url, headers, verify_tls, body)
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.read()
            response.close()
            url = self._redirect(url, location, headers)
        raise RegistryUnreachable(f"too many redirects fetching {url}")

    @staticmethod
    def _redirect(url: str, location: str, headers: dict[str, str]) -> str:
        target = urllib.parse.urljoin(url, location)
        if urllib.parse.urlsplit(target).netloc != urllib.parse.urlsplit(url).netloc:
            headers.pop("Authorization", None)
        return target

    def _send(
        self, method: str, url: str, headers: dict[str, str], verify: bool, body: Body = None
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers = {"User-Agent": _USER_AGENT, **headers}
        key = (parts.scheme, parts.netloc, verify)
        start = body.tell() if hasattr(body, "tell") else 0
        for attempt in range(2):
            conn = self._connection(key)
            if attempt and hasattr(body, "seek"):
                body.seek(start)  # a kept-alive connection the server had closed: again
            try:
                conn.request(method, target, body=body, headers=headers)
                raw = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop(key)
                if attempt:
                    raise _unreachable(parts.netloc, e) from e
                continue
            except (OSError, http.client.HTTPException) as e:
                self._drop(key)
                raise _unreachable(parts.netloc, e) from e
            return Response(raw, url, lambda r, key=key: self._release(key, r))
        raise AssertionError("unreachable")

    def _pool(self) -> dict:
        if not hasattr(self._local, "pool"):
            self._local.pool = {}
        return self._local.pool

    def _connection(self, key: tuple) -> http.client.HTTPConnection:
        pool = self._pool()
        if key not in pool:
            scheme, netloc, verify = key
            if scheme == "https":
                import ssl  # 10 ms at start-up that loopback and mirror pulls never need

                context = ssl.create_default_context()
                if not verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                pool[key] = http.client.HTTPSConnection(
                    netloc, timeout=self.timeout, context=context
                )
            else:
                pool[key] = http.client.HTTPConnection(netloc, timeout=self.timeout)
        return pool[key]

    def _release(self, key: tuple, raw: http.client.HTTPResponse) -> None:
        """Keep the connection only if its response was read to the end."""
        if not raw.isclosed():
            raw.close()
            self._drop(key)

    def _drop(self, key: tuple) -> None:
        conn = self._pool().pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._pool()):
            self._drop(key)


def _unreachable(netloc: str, error: BaseException) -> RegistryUnreachable:
    reason = _describe(error)
    return RegistryUnreachable(f"cannot reach registry {netloc}: {reason}")


def _describe(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the registry running?)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host name ({error.strerror})"
    ssl = sys.modules.get("ssl")  # only loaded if we spoke TLS
    if ssl and isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted ({error.verify_message}); list the registry in "
            "insecure-registries only if you trust this network"
        )
    if ssl and isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({error.reason})"
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out"
    return str(error) or type(error).__name__
