"""Vendor endpoints for the host agent, which carries published ports to the user's machine:

    GET  /vmctl/ports                         every running container's published ports
    POST /vmctl/ports/{tcp|udp}/{port}/connect  a hijacked stream to that port in the VM:
         TCP as is; UDP as datagrams, each framed by a 2-byte big-endian length

A connect goes to the engine's own listener for the port (network/proxy.py), as a
connection made inside the VM does. The host agent uses it where it cannot reach the
container's address itself (UDP, or a direct connection refused).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from vmctl_agent.api.http import ApiError, Response, json_response
from vmctl_agent.network import frames, proxy
from vmctl_agent.network.ports import Binding

_UDP_IDLE = 60.0


def list_(engine, request) -> Response:
    """Each binding, with the container's address its connections are carried to (the host
    agent connects there itself, through sshd, as `ssh -L` would)."""
    rows = []
    for container_id in list(engine.networks.records.ports):
        address = engine.endpoints.address(container_id)
        for b in engine.endpoints.published(container_id):
            rows.append({"Id": container_id, "Proto": b.proto, "HostIp": b.host_ip,
                         "HostPort": b.host_port, "PrivatePort": b.port,
                         "Address": address})  # fmt: skip
    return json_response(rows)


def connect(engine, request, proto: str, port: str) -> Response:
    binding = _binding(engine, proto, int(port))
    target = (binding.host_ip or "127.0.0.1", binding.host_port)
    carry = proxy.carry if proto == "tcp" else _carry_udp
    return Response(content_type="application/vnd.vmctl.raw-stream", hijack=lambda sock: carry(
        sock, target), raw_client=True)  # fmt: skip


def _binding(engine, proto: str, port: int) -> Binding:
    for container_id in list(engine.networks.records.ports):
        for b in engine.endpoints.published(container_id):
            if b.proto == proto and b.host_port == port:
                return b
    raise ApiError(404, f"no container publishes {port}/{proto}")


def _carry_udp(client: socket.socket, target: tuple[str, int]) -> None:
    """Framed datagrams from the stream to the port and the replies back, until either
    side ends (the host agent closes a flow that stays idle)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
        up.connect(target)
        threading.Thread(target=_replies, args=(up, client), daemon=True).start()
        with contextlib.suppress(OSError):
            while (datagram := frames.read_frame(client)) is not None:
                up.send(datagram)


def _replies(up: socket.socket, client: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            data = up.recv(65535)
            client.sendall(struct.pack("!H", len(data)) + data)
