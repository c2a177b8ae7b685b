"""`vmctl-agent serve`: the Engine API on unix sockets (and, only when asked, on a loopback TCP
port), until SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import faulthandler
import grp
import ipaddress
import os
import signal
import socket
import sys
import threading
import urllib.parse

from vmctl_agent.api import build, supervision
from vmctl_agent.api.engine import Engine
from vmctl_agent.api.routes import Router
from vmctl_agent.api.server import Server
from vmctl_agent.config import AgentConfig
from vmctl_agent.errors import AgentError

_SIGNAL_LOOK = 0.5  # s


def run(config: AgentConfig, listen: list[str]) -> int:
    # First: a SIGTERM that comes once the socket exists (whoever waits for it may send one
    # at once) stops the engine cleanly, its socket removed, never by the default action.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # as dockerd: stacks to stderr
    gid = socket_group(config)
    engine = Engine(config)
    engine.images.collect_garbage(wait=False)
    engine.restore_networks()
    supervision.take_over(engine)  # what runs, and what its restart policy wants back
    build.sweep(engine)  # what a build of an agent killed mid-build left
    listeners = [listener(address, gid) for address in listen]
    server = Server(listeners, Router(engine))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"vmctl-agent: serving the Engine API on {', '.join(listen)}", file=sys.stderr)
    while not stop.wait(_SIGNAL_LOOK):  # a signal the kernel gave another thread runs its
        pass  # Python handler only once this one wakes: a wait without end never would
    server.shutdown()
    paths = [s.getsockname() for s in listeners if s.family == socket.AF_UNIX]
    server.server_close()
    for path in paths:  # a stopped engine leaves no socket for clients to hang on, as dockerd
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
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


def listener(address: str, gid: int | None = None) -> socket.socket:
    """A listening socket for `unix:///PATH` or `tcp://LOOPBACK:PORT`."""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme == "unix":
        return unix_listener(parts.path, gid)
    if parts.scheme == "tcp":
        host = parts.hostname or ""
        if not _loopback(host):
            raise AgentError(f"refusing to listen on {host}: only loopback TCP addresses")
        return socket.create_server(
            (host, parts.port or 2375), backlog=socket.SOMAXCONN, reuse_port=False
        )
    raise AgentError(f"unsupported listen address {address!r}: use unix:///PATH")


def unix_listener(path: str, gid: int | None = None) -> socket.socket:
    """A unix socket created 0660 (owner root, group `gid`), with room in its backlog for 50
    `docker run`s at once."""
    if os.path.exists(path):
        _refuse_if_live(path)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, 0o660)
    sock.listen(socket.SOMAXCONN)
    return sock


def _refuse_if_live(path: str) -> None:
    """Another agent answering on this socket must not be cut off by a second one."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return
    finally:
        probe.close()
    raise AgentError(f"another engine is already listening on {path}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
