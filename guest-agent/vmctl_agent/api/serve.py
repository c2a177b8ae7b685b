"""`vmctl-agent serve`: the Engine API on unix sockets (and, only when asked, on a loopback TCP
port), until SIGTERM or SIGINT."""

from __future__ import annotations

import grp
import ipaddress
import signal
import socket
import socketserver
import sys
import threading
import urllib.parse

from vmctl_agent.api import events
from vmctl_agent.api.engine import Engine
from vmctl_agent.api.http import Handler, UnixServer, quiet_disconnects
from vmctl_agent.api.routes import router
from vmctl_agent.config import AgentConfig
from vmctl_agent.errors import AgentError


class _LoopbackServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN

    def handle_error(self, request, client_address) -> None:
        quiet_disconnects(sys.exc_info()[1])

    def __init__(self, address: tuple[str, int], route) -> None:
        self.router = route
        super().__init__(address, Handler)


def run(config: AgentConfig, listen: list[str]) -> int:
    gid = socket_group(config)
    engine = Engine(config)
    engine.images.collect_garbage(wait=False)
    for container in engine.runtime.list():  # found running after a restart of the agent
        events.watch(engine, container)
    servers = [_server(address, router(engine), gid) for address in listen]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print(f"vmctl-agent: serving the Engine API on {', '.join(listen)}", file=sys.stderr)
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


def socket_group(config: AgentConfig) -> int | None:
    """The gid that shares the socket (0660), as dockerd's `-G docker`: the VM's login user is
    in that group, so the host's SSH forward reaches the engine without being root."""
    try:
        return grp.getgrnam(config.group).gr_gid
    except KeyError:
        if config.group_required:
            raise AgentError(f"group {config.group!r} does not exist (from --group)") from None
        return None


def _server(address: str, route, gid: int | None = None):
    parts = urllib.parse.urlsplit(address)
    if parts.scheme == "unix":
        return UnixServer(parts.path, route, gid)
    if parts.scheme == "tcp":
        host = parts.hostname or ""
        if not _loopback(host):
            raise AgentError(f"refusing to listen on {host}: only loopback TCP addresses")
        return _LoopbackServer((host, parts.port or 2375), route)
    raise AgentError(f"unsupported listen address {address!r}: use unix:///PATH")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
