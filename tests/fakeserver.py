"""A scripted HTTP server on loopback, for what a real registry will not do on request: lie,
redirect to blob storage, speak schema 1, or trickle bytes so a pull can be killed mid-way.

Most tests use the real registry; this stands in front of it (`proxy_to`) or replaces it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""


Handler = Callable[[Request], Reply]


class FakeServer:
    """Serves `handler`'s replies on 127.0.0.1; records every request in `self.requests`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._serve(self)

            do_HEAD = do_GET

            def log_message(self, *args) -> None:
                pass

        return _Handler

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        request = Request(h.command, h.path, dict(h.headers.items()))
        self.requests.append(request)
        reply = self.handler(request)
        body = reply.body
        h.send_response(reply.status)
        for key, value in reply.headers.items():
            h.send_header(key, value)
        if isinstance(body, bytes):
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(body)
            return
        h.end_headers()
        try:
            for chunk in body:
                h.wfile.write(chunk)
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def proxy_to(upstream: str, *, bytes_per_second: int | None = None) -> Handler:
    """Forward to a real registry, optionally trickling blob bodies."""

    def handle(request: Request) -> Reply:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("accept", "authorization")
        }
        resp = requests.get(upstream + request.path, headers=headers, stream=True, timeout=30)
        keep = ("content-type", "docker-content-digest", "www-authenticate", "content-length")
        out = {k: v for k, v in resp.headers.items() if k.lower() in keep}
        if "/blobs/" in request.path and bytes_per_second and resp.status_code == 200:
            return Reply(resp.status_code, out, _trickle(resp, bytes_per_second))
        return Reply(resp.status_code, out, resp.content)

    return handle


def _trickle(resp: requests.Response, rate: int) -> Iterable[bytes]:
    chunk = max(rate // 20, 1)
    for data in resp.iter_content(chunk):
        yield data
        time.sleep(chunk / rate)
