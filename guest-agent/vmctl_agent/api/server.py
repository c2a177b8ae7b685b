"""The Engine API's front end: one thread and one selector for every connection.

It accepts, reads and parses requests itself, and answers at once those that need no disk,
no process and no lock (the ping, the version, a container list the engine has cached): that
is what clients poll, and answering them here costs no thread, no thread switch and no wait
for the GIL. Everything else goes, with its connection, to a thread of its own
(connection.exchange), which may block as long as it likes (bodies, streams, attach, exec,
pulls); a connection kept alive comes back to the loop when that thread is done.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from vmctl_agent.api.connection import Connection, encode, exchange
from vmctl_agent.api.http import Request, Response, error_response, quiet_disconnects, request_from
from vmctl_agent.api.wire import MAX_HEAD, Head, MalformedRequest, head_end, parse_head

_RECV = 65536
_ACCEPTS_PER_WAKE = 64


class Router(Protocol):
    """What the server needs from routes.Router."""

    def __call__(self, request: Request) -> Response: ...

    def answer_now(self, request: Request) -> Response | None: ...


class Server:
    """Serves `router` on the listening sockets `listeners` until shutdown()."""

    def __init__(self, listeners: list[socket.socket], router: Router) -> None:
        self.router = router
        self._listeners = listeners
        self._selector = selectors.DefaultSelector()
        self._returned: collections.deque[Connection] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._running = threading.Event()
        self._stopped = threading.Event()
        for listener in listeners:
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._rejoin)

    # -- the loop -------------------------------------------------------------------------

    def serve_forever(self) -> None:
        self._running.set()
        try:
            while not self._stopping:
                for key, events in self._selector.select():
                    try:
                        key.data(key.fileobj, events)
                    except Exception as e:  # a bug here must not stop the engine answering
                        quiet_disconnects(e)
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the loop (from another thread) and wait for it to stop."""
        self._stopping = True
        self._wake()
        if self._running.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        """Close the listeners and the idle connections; threads finish their own."""
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, functools.partial):
                key.data.args[0].close()
        for listener in self._listeners:
            listener.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _accept(self, listener: socket.socket, events: int) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors: the rest wait in the backlog
                quiet_disconnects(e)
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._watch(Connection(sock))

    def _watch(self, conn: Connection) -> None:
        self._selector.register(conn.sock, selectors.EVENT_READ, self._on_event_of(conn))

    def _on_event_of(self, conn: Connection) -> Callable[[socket.socket, int], None]:
        return functools.partial(self._on_event, conn)

    def _on_event(self, conn: Connection, _sock: socket.socket, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE:
                self._flush(conn)
            else:
                self._receive(conn)
        except Exception as e:  # one client's trouble must not stop the loop
            quiet_disconnects(e)
            self._drop(conn)

    # -- reading and answering ------------------------------------------------------------

    def _receive(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.inbox += data
        self._advance(conn)

    def _advance(self, conn: Connection) -> None:
        """Answer each whole request in `inbox` in turn, until one has to wait: for more
        bytes, for the client to take what we sent, or for a thread."""
        while not conn.outbox and not conn.closing:
            head = self._next_head(conn)
            if head is None:
                return
            response = None if head.has_body else self._answer_now(head)
            if response is None:
                self._hand_off(conn, head)
                return
            conn.closing = not head.keep_alive
            self._send(conn, encode(response, head.method, head.keep_alive))

    def _next_head(self, conn: Connection) -> Head | None:
        inbox = conn.inbox
        while inbox[:2] == b"\r\n":  # stray line ends between requests are allowed
            del inbox[:2]
        end, body = head_end(inbox)
        try:
            if end < 0:
                if len(inbox) > MAX_HEAD:
                    raise MalformedRequest("request head too large")
                return None
            raw = bytes(inbox[:end])
            del inbox[:body]
            return parse_head(raw)
        except MalformedRequest as e:
            conn.closing = True
            self._send(conn, encode(error_response(e), "GET", keep_alive=False))
            return None

    def _answer_now(self, head: Head) -> Response | None:
        """The answer if it needs no waiting, else None (a thread will answer)."""
        try:
            return self.router.answer_now(request_from(head, None))
        except Exception as e:
            return error_response(e)

    # -- writing --------------------------------------------------------------------------

    def _send(self, conn: Connection, data: bytes) -> None:
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        conn.outbox = memoryview(data)[sent:]
        if conn.outbox:
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, self._on_event_of(conn))
        elif conn.closing:
            self._drop(conn)

    def _flush(self, conn: Connection) -> None:
        """The client reads again: send on, and once all is sent, read on."""
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            return
        conn.outbox = conn.outbox[sent:]
        if conn.outbox:
            return
        if conn.closing:
            self._drop(conn)
            return
        self._selector.modify(conn.sock, selectors.EVENT_READ, self._on_event_of(conn))
        self._advance(conn)

    def _drop(self, conn: Connection) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.close()

    # -- threads --------------------------------------------------------------------------

    def _hand_off(self, conn: Connection, head: Head) -> None:
        self._selector.unregister(conn.sock)
        conn.sock.setblocking(True)
        worker = threading.Thread(target=self._serve_in_thread, args=(conn, head), daemon=True)
        try:
            worker.start()
        except RuntimeError as e:  # no more threads: this client must try again
            quiet_disconnects(e)
            conn.close()

    def _serve_in_thread(self, conn: Connection, head: Head) -> None:
        try:
            again = exchange(conn, head, self.router)
        except Exception as e:
            quiet_disconnects(e)
            again = False
        if not again or self._stopping:
            conn.close()
            return
        conn.sock.setblocking(False)
        self._returned.append(conn)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def _rejoin(self, fd: int, events: int) -> None:
        """Connections whose thread is done come back to be read by the loop."""
        with contextlib.suppress(BlockingIOError):
            while os.read(fd, 4096):
                pass
        while self._returned:
            conn = self._returned.popleft()
            self._watch(conn)
            if conn.inbox:  # the next request came with the last one
                try:
                    self._advance(conn)
                except Exception as e:
                    quiet_disconnects(e)
                    self._drop(conn)
