"""Messages each prefixed by its length in two big-endian bytes, on a stream socket: DNS over
TCP (RFC 1035 4.2.2), and the UDP datagrams the host agent carries to a published port."""

from __future__ import annotations

import socket
import struct


def read_frame(sock: socket.socket) -> bytes | None:
    """The next message, or None at the stream's end."""
    head = read_exactly(sock, 2)
    return None if head is None else read_exactly(sock, struct.unpack("!H", head)[0])


def read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None if the stream ends first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
