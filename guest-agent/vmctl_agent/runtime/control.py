"""ctl.sock: a container's stdin, terminal size and live output, served by its shim.

A client connects and sends one line: `stdin` (then the bytes to forward, for as long as they
come), `resize ROWS COLS`, or `output` (then the connection is an output tap: taps.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import socket
import struct
import termios

from vmctl_agent.runtime import process

READ = 64 * 1024


def bind(state_dir: str) -> socket.socket:
    """ctl.sock (0600): stdin for the container, terminal resizes, output taps. Bound through
    /proc/self/fd so a long state path never hits the 108-byte socket path limit."""
    dirfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    path = f"/proc/self/fd/{dirfd}/ctl.sock"
    if os.path.lexists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
        os.close(dirfd)
    sock.listen(4)
    return sock


def unbind(control: socket.socket, state_dir: str) -> None:
    control.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{state_dir}/ctl.sock")


def accept(control: socket.socket, sel, stdio: process.Stdio, taps) -> None:
    """`resize ROWS COLS`, `output` (a tap from now on), or `stdin` followed by bytes to
    forward for as long as they come."""
    conn, _ = control.accept()
    conn.settimeout(5)
    try:
        head = _read_line(conn)
    except OSError:
        conn.close()
        return
    if head == b"stdin" and stdio.input_fd() is not None:
        conn.settimeout(None)
        sel.register(conn, selectors.EVENT_READ, "stdin")
        return
    if head == b"output":
        taps.add(conn)
        return
    if head.startswith(b"resize ") and stdio.tty:
        rows, cols = (int(x) for x in head.split()[1:3])
        size = struct.pack("HHHH", rows, cols, 0, 0)
        fcntl.ioctl(stdio.stdout[0], termios.TIOCSWINSZ, size)
    conn.close()


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < 256:
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
    return data.strip()


def forward_stdin(conn: socket.socket, sel, stdio: process.Stdio, stdin_once: bool) -> None:
    chunk = b""
    try:
        chunk = conn.recv(READ)
        if chunk and stdio.input_fd() is not None:
            os.write(stdio.input_fd(), chunk)
    except OSError:
        chunk = b""
    if chunk:
        return
    sel.unregister(conn)
    conn.close()
    if stdin_once and stdio.stdin:
        os.close(stdio.stdin[1])  # the client is done: the container sees end of input
        stdio.stdin = None
