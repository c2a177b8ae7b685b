"""The embedded resolver, as Docker's: on user-defined networks each container's
resolv.conf names 127.0.0.11, where the agent listens inside the container's own network
namespace (UDP and TCP sockets made there by a short-lived thread). It answers the names of the
containers that share a network with the asker (name, aliases, short id), each with its
address on that network, and forwards every other name to the VM's resolvers.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable

from vmctl_agent import syscalls as sc
from vmctl_agent.network import dnswire, frames
from vmctl_agent.network.etcfiles import EMBEDDED_DNS

_FORWARD_TIMEOUT = 5.0
Lookup = Callable[[str, str], list[str] | None]  # (asker's id, name) → addresses, None: unknown


class Resolver:
    """One thread serving every container's socket; `lookup` says what a name is."""

    def __init__(self, lookup: Lookup, upstream: Callable[[], tuple[str, ...]]) -> None:
        self.lookup = lookup
        self.upstream = upstream
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[str, tuple[socket.socket, ...]] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        threading.Thread(target=self._serve, name="dns", daemon=True).start()

    def serve(self, container_id: str, netns_path: str) -> None:
        """Listen on 127.0.0.11:53 in that namespace (again, if it was already)."""
        self.stop(container_id)
        udp, tcp = _sockets_in(netns_path)
        with self._lock:
            self._sockets[container_id] = (udp, tcp)
            self._selector.register(udp, selectors.EVENT_READ, (container_id, "udp"))
            self._selector.register(tcp, selectors.EVENT_READ, (container_id, "tcp"))
        os.write(self._wake_w, b"x")

    def stop(self, container_id: str) -> None:
        with self._lock:
            for sock in self._sockets.pop(container_id, ()):
                self._selector.unregister(sock)
                sock.close()

    def serving(self) -> list[str]:
        with self._lock:
            return list(self._sockets)

    def _serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    os.read(self._wake_r, 512)
                    continue
                asker, kind = key.data
                with contextlib.suppress(OSError):
                    if kind == "tcp":
                        conn, _ = key.fileobj.accept()
                        threading.Thread(target=self._tcp, args=(conn, asker), daemon=True).start()
                        continue
                    data, peer = key.fileobj.recvfrom(4096)
                    self._answer(key.fileobj, asker, data, peer)

    def _tcp(self, conn: socket.socket, asker: str) -> None:
        """DNS over TCP (what a client retries with after a truncated answer): each message
        framed by a 2-byte length; names answered here, the rest forwarded over TCP."""
        with conn, contextlib.suppress(OSError):
            conn.settimeout(_FORWARD_TIMEOUT)
            while (data := frames.read_frame(conn)) is not None:
                reply = self._reply(asker, data) or self._forward_tcp(data)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def _reply(self, asker: str, data: bytes) -> bytes | None:
        try:
            query = dnswire.parse_query(data)
        except dnswire.BadMessage:
            return None
        addresses = self.lookup(asker, query.name)
        return None if addresses is None else dnswire.answer(query, addresses)

    def _forward_tcp(self, data: bytes) -> bytes | None:
        for server in self.upstream():
            address = (server, 53)
            with contextlib.suppress(OSError), socket.create_connection(address, 5) as up:
                up.sendall(struct.pack("!H", len(data)) + data)
                reply = frames.read_frame(up)
                if reply is not None:
                    return reply
        return dnswire.failure(data, dnswire.SERVFAIL)

    def _answer(self, sock: socket.socket, asker: str, data: bytes, peer) -> None:
        reply = self._reply(asker, data)
        if reply is not None:
            sock.sendto(reply, peer)
            return
        threading.Thread(target=self._forward, args=(sock, data, peer), daemon=True).start()

    def _forward(self, sock: socket.socket, data: bytes, peer) -> None:
        """Ask the VM's resolvers in turn; SERVFAIL if none answers."""
        for server in self.upstream():
            with (
                contextlib.suppress(OSError),
                socket.socket(_family(server), socket.SOCK_DGRAM) as up,
            ):
                up.settimeout(_FORWARD_TIMEOUT)
                up.sendto(data, (server, 53))
                reply = up.recv(65535)
                with contextlib.suppress(OSError):
                    sock.sendto(reply, peer)
                return
        reply = dnswire.failure(data, dnswire.SERVFAIL)
        if reply is not None:
            with contextlib.suppress(OSError):
                sock.sendto(reply, peer)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _sockets_in(netns_path: str) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on 127.0.0.11:53 in the namespace at `netns_path`: made by a
    thread that enters it and ends (a socket stays in the namespace it was made in)."""
    made: list = []

    def make() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                sc.setns(fd, sc.CLONE_NEWNET)
            finally:
                os.close(fd)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((EMBEDDED_DNS, 53))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind((EMBEDDED_DNS, 53))
            tcp.listen(64)
            made.append((udp, tcp))
        except BaseException as e:
            made.append(e)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]
