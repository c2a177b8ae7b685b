"""Output taps: a container's output as its shim reads it, for the clients attached to it.

An attach streams what the container writes when it writes it, as dockerd's attach reads the
container's stdio rather than its log: a prompt without a newline shows at once, and nothing
depends on finding the log's files again after a rotation or a `--rm`. A tap is a unix
socket to which the shim sends each chunk it reads, in Docker's multiplexed framing (8 bytes:
stream, 0, 0, 0, size; then the bytes). A tap made before a start (`docker run`,
`docker start -a`) goes to the shim with the fork, so the first bytes are in it; one made
later is asked for on ctl.sock (`output`).

A client that reads slowly holds the container back, never loses output: past BACKLOG bytes
waiting for one tap, the shim stops reading the container's pipes (dockerd's attach blocks
the container's writes the same way). A tap whose client is gone is dropped; once the
container has ended, a tap gets DRAIN_GRACE to take the rest, as dockerd waits for its
attach streams before it reports the exit.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time

BACKLOG = 256 * 1024
DRAIN_GRACE = 2.0
STREAMS = {"stdin": 0, "stdout": 1, "stderr": 2}  # Docker's stream ids
HEADER = struct.Struct(">BxxxL")  # stream, 0, 0, 0, size (big-endian)


def frame(stream: str, data: bytes) -> bytes:
    """`data` in Docker's multiplexed framing, as the shim sends it and attach answers it."""
    return HEADER.pack(STREAMS[stream], len(data)) + data


class Taps:
    """The shim's side: the taps, each with what it has not taken yet, written as the
    shim's selector says it can take more."""

    def __init__(self, sel: selectors.BaseSelector, socks: list[socket.socket]) -> None:
        self._sel = sel
        self._waiting: dict[socket.socket, bytearray] = {}
        for sock in socks:
            self.add(sock)

    def add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._waiting[sock] = bytearray()

    def send(self, stream: str, data: bytes) -> None:
        if not self._waiting:
            return
        framed = frame(stream, data)
        for sock, waiting in list(self._waiting.items()):
            waiting += framed
            if len(waiting) == len(framed):  # nothing was waiting: not watched yet, try now
                self._flush(sock)

    def writable(self, sock: socket.socket) -> None:
        """The selector says `sock` takes more: what waits for it, as much as it takes."""
        if sock in self._waiting:
            self._flush(sock)

    @property
    def full(self) -> bool:
        """A client is BACKLOG behind: read no more output until it catches up."""
        return any(len(w) >= BACKLOG for w in self._waiting.values())

    def drop_stuck(self) -> None:
        """The taps still behind (after the container's end, DRAIN_GRACE later)."""
        for sock in [s for s, waiting in self._waiting.items() if waiting]:
            self._drop(sock)

    def finish(self, grace: float = DRAIN_GRACE) -> None:
        """At the end: what is left goes out within `grace`; then every tap is closed, which
        ends its attach."""
        behind = [sock for sock, waiting in self._waiting.items() if waiting]
        for sock in behind:  # onto a selector of their own: the shim's has its listeners
            self._sel.unregister(sock)
        self._sel = selectors.DefaultSelector()
        for sock in behind:
            self._sel.register(sock, selectors.EVENT_WRITE, "tap")
        deadline = time.monotonic() + grace
        while any(self._waiting.values()) and (left := deadline - time.monotonic()) > 0:
            for key, _ in self._sel.select(left):
                self.writable(key.fileobj)
        for sock in list(self._waiting):
            self._drop(sock)

    def _flush(self, sock: socket.socket) -> None:
        """As much of what waits for `sock` as it takes now; the selector watches it for
        more room exactly while something is left."""
        waiting = self._waiting[sock]
        try:
            del waiting[: sock.send(waiting)]
        except BlockingIOError:
            pass
        except OSError:  # the client is gone
            self._drop(sock)
            return
        watched = sock in self._sel.get_map()
        if waiting and not watched:
            self._sel.register(sock, selectors.EVENT_WRITE, "tap")
        elif watched and not waiting:
            self._sel.unregister(sock)

    def _drop(self, sock: socket.socket) -> None:
        self._waiting.pop(sock, None)
        if sock in self._sel.get_map():
            self._sel.unregister(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


class Pending:
    """The agent's side: taps made while their container is not running, by container id,
    until its next start hands them to the shim (or its removal ends them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taps: dict[str, list[socket.socket]] = {}

    def add(self, container_id: str) -> socket.socket:
        """A tap on the container's next run: the end to read (the caller's to close)."""
        ours, shims = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            self._taps.setdefault(container_id, []).append(shims)
        return ours

    def take(self, container_id: str) -> list[socket.socket]:
        """For the start: the shim's ends (the caller closes its copies once the shim has
        them). An attach whose client left meanwhile ends at its first write."""
        with self._lock:
            return self._taps.pop(container_id, [])

    def discard(self, container_id: str) -> None:
        """The container is gone: its waiting attaches end."""
        for sock in self.take(container_id):
            sock.close()
