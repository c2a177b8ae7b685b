"""Published ports on the user's machine: the host agent listens where the engine's
containers publish (127.0.0.1 by default: `vmctl config --publish-address`; an
explicit `-p IP:...` is honoured) and carries each TCP connection over SSH to the
container's address, made by the guest's sshd as for `ssh -L` (no Python in the guest on
the way), and each UDP client's datagrams to the engine (its /vmctl/ports endpoints).

Listeners follow the engine: bound when a start the host agent carries is answered (before
the client hears of it, so the port works when `docker run -d` returns; a taken host port
fails that start in Docker's words), and kept in step by the engine's events for starts it
did not carry (restart policies, a restarted host agent, a rebooted VM).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable

from vmctl import enginehttp, sshmux
from vmctl.errors import VmctlError

_CHUNK = 256 * 1024
_UDP_IDLE = 60.0
_CHANGE = re.compile(
    rb"^(?:POST /(?:v[0-9.]+/)?containers/([^/?\s]+)/(start|stop|restart|kill)[?\s]"
    rb"|DELETE /(?:v[0-9.]+/)?containers/([^/?\s]+)[?\s]"
    rb"|GET /(?:v[0-9.]+/)?vmctl/(ports)[?\s])"
)
Key = tuple[str, int, str]  # (proto, port, host address)


class PortForwarder:
    """`open_channel` opens a stream to the engine's socket; `open_tcp(address, port)` one to
    an address in the VM (none: every connection goes through the engine); `mux`, where
    there is one, takes a client socket whole to such an address (sshmux.Master: OpenSSH
    then carries its bytes, not this process)."""

    def __init__(
        self,
        open_channel: Callable[[], object],
        publish_address: str,
        log,
        open_tcp: Callable[[str, int], object] | None = None,
        mux: sshmux.Master | None = None,
    ) -> None:
        self.open_channel = open_channel
        self.open_tcp = open_tcp
        self.mux = mux
        self.publish_address = publish_address
        self.log = log
        self._lock = threading.Lock()
        self._listeners: dict[Key, socket.socket] = {}
        self._owners: dict[Key, str] = {}
        self._targets: dict[Key, tuple[str, int]] = {}  # the container's address and port
        self._refused: set[Key] = set()

    def sync(self) -> dict[str, str]:
        """Listeners for exactly what the engine publishes now; failures by container id."""
        rows = json.loads(enginehttp.request(self.open_channel, "GET", "/vmctl/ports"))
        wanted = {self._key(r): r["Id"] for r in rows}
        targets = {self._key(r): (r.get("Address", ""), int(r["PrivatePort"])) for r in rows}
        failed = {}
        with self._lock:
            self._targets = targets
            for key in set(self._listeners) - set(wanted):
                _close(self._listeners.pop(key))
                self._owners.pop(key, None)
            for key, owner in wanted.items():
                if key not in self._listeners:
                    error = self._listen(key)
                    if error:
                        failed[owner] = error
                        continue
                self._owners[key] = owner
        return failed

    def _key(self, row: dict) -> Key:
        ip = row["HostIp"] if row["HostIp"] not in ("", "0.0.0.0") else self.publish_address
        return (row["Proto"], int(row["HostPort"]), ip)

    def _listen(self, key: Key) -> str:
        proto, port, address = key
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else
                             socket.SOCK_DGRAM)  # fmt: skip
        try:
            if proto == "tcp":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            if proto == "tcp":
                sock.listen(socket.SOMAXCONN)
        except OSError as e:
            sock.close()
            self.log(f"cannot publish {address}:{port}/{proto} on this machine: {e}")
            return f"Bind for {address}:{port} failed: port is already allocated"
        serve = self._serve_tcp if proto == "tcp" else self._serve_udp
        threading.Thread(target=serve, args=(sock, key), daemon=True).start()
        self._listeners[key] = sock
        self.log(f"publishing {address}:{port}/{proto}")
        return ""

    def published(self) -> list[Key]:
        with self._lock:
            return sorted(self._listeners)

    def close(self) -> None:
        with self._lock:
            for sock in self._listeners.values():
                _close(sock)
            self._listeners.clear()

    # -- carrying ---------------------------------------------------------------------------

    def _serve_tcp(self, listener: socket.socket, key: Key) -> None:
        while True:
            try:
                client = accept(listener)
            except OSError:
                return
            threading.Thread(target=self._carry_tcp, args=(client, key), daemon=True).start()

    def _carry_tcp(self, client: socket.socket, key: Key) -> None:
        with client:
            with self._lock:
                address, private_port = self._targets.get(key, ("", 0))
            if self.open_tcp is None:
                address = ""
            if address and self.mux is not None:
                try:
                    control = self.mux.forward(client, address, private_port)
                except sshmux.Unavailable:
                    pass  # not (yet) running: this connection goes through paramiko
                except sshmux.Refused as e:
                    self._say_refused(key, address, private_port, e)
                    address = ""
                else:
                    self._refused.discard(key)
                    client.close()  # the master holds it: its closing alone ends the client's
                    with control, contextlib.suppress(OSError):  # ours closes with the forward
                        while control.recv(4096):
                            pass
                    return
            channel = self._connect(key, address, private_port)
            if channel is None:
                return
            with channel:
                back = threading.Thread(target=_pump, args=(channel, client, _shut(client)),
                                        daemon=True)  # fmt: skip
                back.start()
                _pump(client, channel, channel.shutdown_write)
                back.join()

    def _connect(self, key: Key, address: str, private_port: int):
        """Straight to the container's address (none: not known, or refused already);
        through the engine's own listener for the port when that is refused (the container
        restarted elsewhere since the last sync)."""
        if self.open_tcp is not None and address:
            try:
                channel = self.open_tcp(address, private_port)
                self._refused.discard(key)
                return channel
            except Exception as e:  # refused, or SSH reconnecting: the engine's way may work
                self._say_refused(key, address, private_port, e)
        try:
            return enginehttp.hijack(self.open_channel, f"/vmctl/ports/tcp/{key[1]}/connect")
        except (OSError, enginehttp.EngineError, VmctlError) as e:
            self.log(f"cannot carry a connection to port {key[1]}: {e}")
            return None

    def _say_refused(self, key: Key, address: str, private_port: int, e: Exception) -> None:
        if key not in self._refused:  # said once (a client may poll until it serves)
            self._refused.add(key)
            self.log(f"{address}:{private_port} refused a connection for port {key[1]}: {e}")

    def _serve_udp(self, listener: socket.socket, key: Key) -> None:
        port = key[1]
        flows: dict = {}
        while True:
            try:
                data, client = listener.recvfrom(65535)
            except OSError:
                break
            if client is None:
                break
            flow = flows.get(client)
            if flow is None or flow.closed or flow.idle():
                flow = flows[client] = _UdpFlow(self.open_channel, port, listener, client)
            flow.send(data)
        for flow in flows.values():
            flow.close()

    # -- following the engine ---------------------------------------------------------------

    def follow(self, stop: threading.Event, retry: float = 3.0) -> None:
        """Sync at every container event, and once each time the event stream (re)opens."""
        wanted = {"type": ["container"], "event": ["start", "die", "destroy"]}
        path = "/events?filters=" + urllib.parse.quote(json.dumps(wanted))
        while not stop.is_set():
            try:
                lines = enginehttp.stream_lines(self.open_channel, path)
                self._report(self.sync())
                for _ in lines:
                    self._report(self.sync())
            except Exception as e:  # the VM restarting, SSH reconnecting: try again
                self.log(f"following the engine's events: {e}")
            stop.wait(retry)

    def _report(self, failed: dict[str, str]) -> None:
        for container, error in failed.items():
            self.log(f"container {container[:12]}: {error}")


class StartWatch:
    """Sits in one forwarded docker.sock connection: when the engine answers a container's
    start (or stop, restart, kill, removal), the host's listeners follow before the client
    hears the answer, so a port works when `docker run -d` returns and is free when
    `docker stop` does. A `GET /vmctl/ports` syncs too: whoever asks what is published (`vmctl
    start` before it returns, `vmctl status`) hears it once this machine listens there."""

    def __init__(self, forwarder: PortForwarder) -> None:
        self.forwarder = forwarder
        self.pending: tuple[str, str] | None = None

    def request(self, data: bytes) -> None:
        match = _CHANGE.match(data)
        if match and match.group(4):  # what is published: the listeners in step first
            self.pending = ("", "ports")
        elif match:
            container = (match.group(1) or match.group(3)).decode()
            self.pending = (container, (match.group(2) or b"remove").decode())

    def reply(self, data: bytes) -> bytes:
        pending, self.pending = self.pending, None
        if pending is None or not data.startswith(b"HTTP/1.1 2"):
            return data
        container, action = pending
        try:
            failed = self.forwarder.sync()
        except Exception as e:
            self.forwarder.log(f"cannot follow the ports of {container}: {e}")
            return data
        if failed and action in ("start", "restart"):
            error = failed.get(self._full_id(container), "")
            if error:
                return _failed_start(self.forwarder, container, error)
        return data

    def _full_id(self, ref: str) -> str:
        """The start named a container by id, prefix or name: its id."""
        with contextlib.suppress(Exception):
            path = f"/containers/{urllib.parse.quote(ref)}/json"
            return json.loads(enginehttp.request(self.forwarder.open_channel, "GET", path))["Id"]
        return ref


def _failed_start(forwarder: PortForwarder, container: str, error: str) -> bytes:
    """Docker's answer to a start whose port is taken; the container is stopped again."""
    with contextlib.suppress(Exception):
        enginehttp.request(forwarder.open_channel, "POST", f"/containers/{container}/kill")
    body = json.dumps({"message": f"driver failed programming external connectivity on "
                                  f"endpoint {container}: {error}"}).encode()  # fmt: skip
    head = (
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _UdpFlow:
    """One UDP client's datagrams over one hijacked stream, replies sent back to it."""

    def __init__(self, open_channel, port: int, listener: socket.socket, client) -> None:
        self.channel = enginehttp.hijack(open_channel, f"/vmctl/ports/udp/{port}/connect")
        self.listener, self.client = listener, client
        self.closed, self.last = False, time.monotonic()
        threading.Thread(target=self._replies, daemon=True).start()

    def idle(self) -> bool:
        return time.monotonic() - self.last > _UDP_IDLE

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        try:
            self.channel.sendall(struct.pack("!H", len(data)) + data)
        except OSError:
            self.close()

    def _replies(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            while (frame := enginehttp.read_frame(self.channel)) is not None:
                self.listener.sendto(frame, self.client)
        self.close()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError, EOFError):
            self.channel.close()


def accept(listener: socket.socket) -> socket.socket:
    """A client of a published port, Nagle off as `ssh -L` has it: an answer the container
    sends in two writes (headers, then body) reaches here in two pieces, and with Nagle on the
    second waited for the client's delayed ACK of the first, 40 ms."""
    client, _ = listener.accept()
    with contextlib.suppress(OSError):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def _pump(source, sink, half_close: Callable[[], None]) -> None:
    with contextlib.suppress(OSError, EOFError):
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    with contextlib.suppress(OSError, EOFError):
        half_close()


def _shut(sock: socket.socket) -> Callable[[], None]:
    return lambda: sock.shutdown(socket.SHUT_WR)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
