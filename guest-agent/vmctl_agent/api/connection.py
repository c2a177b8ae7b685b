"""One client connection, and one request on it answered in full by a thread: what the event
loop (server.py) hands over when an answer may block (bodies, streams, hijacked attach and
exec, anything that touches the disk or a process)."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import termios
import time
from collections.abc import Callable, Iterable

from vmctl_agent.api.http import Request, Response, error_response, request_from
from vmctl_agent.api.wire import Head, response_head

HIJACK_GRACE = 0.02
HEAD_READ_WAIT = 10.0  # a client that reads nothing for this long gets its stream anyway
_RECV = 65536


class Connection:
    """A client's socket and the bytes read from it but not used yet. The loop reads into
    `inbox` without blocking; a thread that is given the connection reads on from `inbox`,
    then from the (then blocking) socket, and leaves in `inbox` what belongs to the next
    request."""

    __slots__ = ("closing", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = memoryview(b"")
        self.closing = False

    def read(self, size: int) -> bytes:
        """`size` bytes, or fewer if the client hangs up first."""
        if len(self.inbox) >= size:
            data = bytes(self.inbox[:size])
            del self.inbox[:size]
            return data
        data, self.inbox = self.inbox, bytearray()
        while len(data) < size:
            chunk = self.sock.recv(min(size - len(data), 1 << 20))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def readline(self, limit: int) -> bytes:
        """Up to and including the next LF (at most `limit` bytes)."""
        while True:
            end = self.inbox.find(b"\n", 0, limit)
            if end >= 0 or len(self.inbox) >= limit:
                size = end + 1 if end >= 0 else limit
                return self.read(size)
            chunk = self.sock.recv(_RECV)
            if not chunk:
                return self.read(len(self.inbox))
            self.inbox += chunk

    def close(self) -> None:
        """Half-close first, as socketserver did, so the client sees the end at once."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.sock.close()


def encode(response: Response, method: str, keep_alive: bool) -> bytes:
    """A whole (not streamed) response, head and body."""
    headers = _headers(response, keep_alive)
    headers.append(("Content-Length", str(len(response.body))))
    head = response_head(response.status, headers)
    return head if method == "HEAD" else head + response.body


def _headers(response: Response, keep_alive: bool) -> list[tuple[str, str]]:
    headers = list(response.headers.items())
    if response.content_type:
        headers.append(("Content-Type", response.content_type))
    if not keep_alive:
        headers.append(("Connection", "close"))
    return headers


def exchange(conn: Connection, head: Head, router: Callable[[Request], Response]) -> bool:
    """Answer the request `head` begins, on a blocking socket; True if the connection can
    carry another request."""
    if head.headers.get("expect", "").lower() == "100-continue":
        conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    request = None
    try:
        request = request_from(head, conn)
        response = router(request)
    except Exception as e:  # every error becomes dockerd's JSON
        response = error_response(e)
    if response.hijack is not None:
        _upgrade(conn, response)
        return False
    if request is None:
        request = Request(head.method, head.path, head.query, head.headers, "", conn)
    keep = head.keep_alive and request.discard_unread_body()
    if response.stream is not None:
        return _write_stream(conn, response, keep) and keep
    conn.sock.sendall(encode(response, head.method, keep))
    return keep


def _write_stream(conn: Connection, response: Response, keep: bool) -> bool:
    """Chunked: the head at once (the CLI waits on it), then each chunk as it comes."""
    headers = [*_headers(response, keep), ("Transfer-Encoding", "chunked")]
    chunks: Iterable[bytes] = response.stream or ()
    try:
        conn.sock.sendall(response_head(response.status, headers))
        for chunk in chunks:
            if chunk:
                conn.sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return False
    # Any other error leaves the status line sent: hanging up (the caller closes when this
    # raises) is the only way left to tell the client, rather than leave it waiting.
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()
    return True


def _upgrade(conn: Connection, response: Response) -> None:
    """101 and the raw socket, as dockerd answers attach and exec start."""
    headers = [("Content-Type", response.content_type), ("Connection", "Upgrade")]
    conn.sock.sendall(response_head(101, [*headers, ("Upgrade", "tcp")]))
    # docker-py reads the stream from the raw socket under its buffered HTTP reader, so
    # bytes that arrive together with the 101 are lost (docker/docker-py#3332): the stream
    # starts once the client has taken the whole head off its socket (a relay in between
    # takes it at once: then a moment more for whoever reads beyond it). A raw client (the
    # host agent's port streams) reads the head itself: no wait.
    if not response.raw_client:
        wait_until_read(conn.sock, HEAD_READ_WAIT)
        time.sleep(HIJACK_GRACE)
    with contextlib.suppress(OSError):  # the client went away: nothing more to say
        response.hijack(conn.sock)


def unread(sock: socket.socket) -> int:
    """Bytes we sent that the peer has not read yet (0 where the kernel cannot say)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return 0


def wait_until_read(sock: socket.socket, limit: float) -> bool:
    """True once the peer has read everything sent so far; False after `limit` seconds."""
    deadline = time.monotonic() + limit
    while unread(sock):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True
