"""A small QMP client: QEMU's JSON control protocol, one JSON object per line.

QEMU listens where `-qmp ADDRESS,server=on,wait=off` tells it. ADDRESS takes QEMU's own
chardev syntax so the same string serves both sides:

    unix:/path/to/qmp.sock     POSIX (and recent QEMU on Windows)
    tcp:127.0.0.1:4444         Windows: older QEMU builds there have no unix sockets

A session is: QEMU greets (`{"QMP": ...}`), we send `qmp_capabilities`, then every command gets
one reply (`{"return": ...}` or `{"error": ...}`) carrying the `id` we sent. Asynchronous events
(`{"event": ...}`) may arrive at any time in between and are skipped.

QmpError(VmctlError)   QEMU did not answer, refused us, or answered with an error
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from typing import Any

from vmctl.errors import VmctlError

DEFAULT_TIMEOUT = 5.0


class QmpError(VmctlError):
    """QMP failed: no QEMU listening, a timeout, a closed connection, or an error reply."""


def parse_address(address: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """`unix:PATH` or `tcp:HOST:PORT` as a socket family and a connect() address."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        if not hasattr(socket, "AF_UNIX"):
            raise QmpError(f"this Python has no unix sockets for {address!r}: use tcp:HOST:PORT")
        return socket.AF_UNIX, rest
    host, _, port = rest.rpartition(":")
    if kind == "tcp" and host and port.isdigit():
        return socket.AF_INET, (host, int(port))
    raise QmpError(f"bad QMP address {address!r}: use unix:PATH or tcp:HOST:PORT")


class QmpClient:
    """One QMP session; use as a context manager so the socket is always closed."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock = self._connect()
        self._buffer = b""
        try:
            greeting = self._read(time.monotonic() + timeout)
            if "QMP" not in greeting:
                raise QmpError(f"{address} does not speak QMP (it sent {greeting!r})")
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run `command`; return its `return` value, raise QmpError on an `error` reply."""
        request_id = f"vmctl-{next(self._ids)}"
        message: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            message["arguments"] = arguments
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") != request_id:  # an event, or a stale reply
                continue
            if "error" in reply:
                error = reply["error"]
                raise QmpError(
                    f"QEMU refused {command}: {error.get('desc', error)} "
                    f"({error.get('class', 'GenericError')})"
                )
            return reply.get("return")

    def _connect(self) -> socket.socket:
        family, target = parse_address(self.address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(target)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise QmpError(
                f"no QEMU listens on {self.address} ({exc.strerror or exc}): is the VM running?"
            ) from exc
        except OSError as exc:
            sock.close()
            raise QmpError(f"cannot connect to QMP at {self.address}: {exc}") from exc
        return sock

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise QmpError(f"QEMU closed QMP at {self.address}: {exc}") from exc

    def _read(self, deadline: float) -> dict[str, Any]:
        """The next JSON line, waiting no later than `deadline` (time.monotonic())."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpError(f"QEMU did not answer on {self.address} within {self.timeout} s")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise QmpError(f"QMP connection to {self.address} failed: {exc}") from exc
            if not chunk:
                raise QmpError(f"QEMU closed the QMP connection at {self.address}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as exc:
            raise QmpError(f"QEMU sent bad JSON on {self.address}: {line[:200]!r}") from exc
