"""The userland side of published ports, as docker-proxy: a listening socket on the VM's
HostIp:HostPort per binding, each connection (TCP) or client (UDP) carried to the
container's address. Binding for real is what makes a taken port an error at start and
makes the port reachable from the VM itself; the host agent carries the user's machine's
connections to these listeners.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import socket
import threading
import time

from vmctl_agent.network.ports import Binding, PortAllocated

_CHUNK = 256 * 1024
_UDP_IDLE = 60.0  # seconds a UDP client's flow is kept without traffic


class Proxy:
    """Listeners by container id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[socket.socket]] = {}

    def publish(self, container_id: str, target: str, bindings: list[Binding]) -> list[Binding]:
        """Bind every binding (all or none) and start carrying; the bound ones come back
        with their real host ports."""
        made: list[tuple[socket.socket, Binding]] = []
        try:
            for b in bindings:
                made.append(_bind(b))
        except BaseException:
            for sock, _ in made:
                sock.close()
            raise
        for sock, b in made:
            run = _serve_tcp if b.proto == "tcp" else _serve_udp
            threading.Thread(target=run, args=(sock, (target, b.port)), daemon=True).start()
        with self._lock:
            self._listeners[container_id] = [sock for sock, _ in made]
        return [b for _, b in made]

    def unpublish(self, container_id: str) -> None:
        """The ports are free again when this returns."""
        with self._lock:
            listeners = self._listeners.pop(container_id, [])
        for sock in listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes its thread's accept or recv
            sock.close()


def _bind(b: Binding) -> tuple[socket.socket, Binding]:
    kind = socket.SOCK_STREAM if b.proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if b.proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((b.host_ip or "0.0.0.0", b.host_port))
        if b.proto == "tcp":
            sock.listen(socket.SOMAXCONN)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortAllocated(
                f"Bind for {b.host_ip or '0.0.0.0'}:{b.host_port} failed: port is already allocated"
            ) from None
        raise
    port = sock.getsockname()[1]
    return sock, Binding(b.proto, b.port, b.host_ip, port)


def _serve_tcp(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # unpublished
        threading.Thread(target=carry, args=(client, target), daemon=True).start()


def carry(client: socket.socket, target: tuple[str, int]) -> None:
    """One TCP connection to `target` and back, each way half-closed at its end; the client
    is closed if the target cannot be reached."""
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Until the source's end; then half-close the sink, as a TCP proxy must. Into a buffer
    mapped for this connection and unmapped at its end: a new 256 KiB bytes per recv made
    glibc raise its mmap threshold, and the pumps' threads' arenas kept ~1 MiB of them after
    the traffic had ended (bench/engine_rss.py)."""
    with mmap.mmap(-1, _CHUNK) as buffer, memoryview(buffer) as view, contextlib.suppress(OSError):
        while count := source.recv_into(view):
            sink.sendall(view[:count])
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _serve_udp(listener: socket.socket, target: tuple[str, int]) -> None:
    """One upstream socket per client address, so replies find their way back."""
    flows: dict = {}
    while True:
        try:
            data, client = listener.recvfrom(65535)
        except OSError:
            break
        if client is None:  # shut down: unpublished
            break
        flow = flows.get(client)
        if flow is None or flow[1] < time.monotonic() - _UDP_IDLE:
            flow = flows[client] = [_udp_flow(listener, client, target), time.monotonic()]
        flow[1] = time.monotonic()
        with contextlib.suppress(OSError):
            flow[0].send(data)
    for up, _ in flows.values():
        up.close()


def _udp_flow(listener: socket.socket, client, target) -> socket.socket:
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.connect(target)
    up.settimeout(_UDP_IDLE)
    threading.Thread(target=_udp_replies, args=(up, listener, client), daemon=True).start()
    return up


def _udp_replies(up: socket.socket, listener: socket.socket, client) -> None:
    with contextlib.suppress(OSError):
        while True:
            listener.sendto(up.recv(65535), client)
