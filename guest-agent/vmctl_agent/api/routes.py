"""Which path goes to which handler; versioned (/v1.50/...) and plain paths alike."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable

from vmctl_agent.api import (
    attach,
    build,
    changes,
    containers,
    copies,
    distribution,
    events,
    execs,
    images,
    inside,
    listing,
    login,
    networks,
    published,
    snapshots,
    swarm,
    system,
    volumes,
)
from vmctl_agent.api.http import ApiError, Request, Response

_ID = r"(?P<id>[^/]+)"
_NAME = r"(?P<name>.+?)"

ROUTES: list[tuple[str, str, Callable]] = [
    ("GET", r"/_ping", system.ping),
    ("HEAD", r"/_ping", system.ping),
    ("GET", r"/version", system.version),
    ("GET", r"/info", system.info),
    ("GET", r"/events", events.stream),
    ("GET", r"/system/df", system.disk_usage),
    ("POST", r"/auth", login.login),
    ("POST", r"/containers/prune", containers.prune),
    ("POST", r"/images/prune", images.prune),
    ("GET", r"/images/json", images.list_),
    ("POST", r"/images/create", images.create),
    ("GET", r"/images/get", images.save),
    ("POST", r"/images/load", images.load),
    ("POST", r"/build", build.build),
    ("POST", r"/build/prune", build.prune),
    ("GET", rf"/images/{_NAME}/get", images.save),
    ("GET", rf"/images/{_NAME}/json", images.inspect),
    ("GET", rf"/images/{_NAME}/history", images.history),
    ("POST", rf"/images/{_NAME}/tag", images.tag),
    ("POST", rf"/images/{_NAME}/push", distribution.push),
    ("GET", rf"/distribution/{_NAME}/json", distribution.inspect),
    ("DELETE", rf"/images/{_NAME}", images.remove),
    ("POST", r"/containers/create", containers.create),
    ("GET", r"/containers/json", listing.list_),
    ("GET", rf"/containers/{_ID}/json", containers.inspect),
    ("POST", rf"/containers/{_ID}/start", containers.start),
    ("POST", rf"/containers/{_ID}/stop", containers.stop),
    ("POST", rf"/containers/{_ID}/restart", containers.restart),
    ("POST", rf"/containers/{_ID}/kill", containers.kill),
    ("POST", rf"/containers/{_ID}/wait", containers.wait),
    ("POST", rf"/containers/{_ID}/attach", attach.attach),
    ("POST", rf"/containers/{_ID}/resize", containers.resize),
    ("GET", rf"/containers/{_ID}/logs", containers.logs),
    ("GET", rf"/containers/{_ID}/top", containers.top),
    ("GET", rf"/containers/{_ID}/stats", containers.stats),
    ("GET", rf"/containers/{_ID}/changes", inside.changes),
    ("POST", rf"/containers/{_ID}/pause", changes.pause),
    ("POST", rf"/containers/{_ID}/unpause", changes.unpause),
    ("POST", rf"/containers/{_ID}/rename", changes.rename),
    ("POST", rf"/containers/{_ID}/update", changes.update),
    ("DELETE", rf"/containers/{_ID}", containers.remove),
    ("GET", rf"/containers/{_ID}/export", snapshots.export),
    ("HEAD", rf"/containers/{_ID}/archive", copies.head),
    ("GET", rf"/containers/{_ID}/archive", copies.get),
    ("PUT", rf"/containers/{_ID}/archive", copies.put),
    ("POST", r"/commit", snapshots.commit),
    ("POST", rf"/containers/{_ID}/exec", execs.create),
    ("POST", rf"/exec/{_ID}/start", execs.start),
    ("POST", rf"/exec/{_ID}/resize", execs.resize),
    ("GET", rf"/exec/{_ID}/json", execs.inspect),
    ("GET", r"/networks", networks.list_),
    ("POST", r"/networks/create", networks.create),
    ("POST", r"/networks/prune", networks.prune),
    ("GET", rf"/networks/{_ID}", networks.inspect),
    ("DELETE", rf"/networks/{_ID}", networks.remove),
    ("POST", rf"/networks/{_ID}/connect", networks.connect),
    ("POST", rf"/networks/{_ID}/disconnect", networks.disconnect),
    ("GET", r"/vmctl/ports", published.list_),
    ("POST", r"/vmctl/ports/(?P<proto>tcp|udp)/(?P<port>[0-9]+)/connect", published.connect),
    ("GET", rf"/vmctl/containers/{_ID}/inside", inside.inside),  # vendor: the app's Inside view
    ("POST", r"/volumes/create", volumes.create),
    ("POST", r"/volumes/prune", volumes.prune),
    ("GET", r"/volumes", volumes.list_),
    ("GET", rf"/volumes/{_NAME}", volumes.inspect),
    ("DELETE", rf"/volumes/{_NAME}", volumes.remove),
    ("POST", r"/swarm/leave", swarm.leave),
    ("POST", r"/swarm/(?:init|join)", swarm.unsupported),
    ("GET", r"/swarm", swarm.not_a_manager),
    ("GET", r"/(?P<kind>services|nodes|tasks|secrets|configs)(?:/.*)?", swarm.not_a_manager),
]
_COMPILED = [(method, re.compile(pattern + "$"), fn) for method, pattern, fn in ROUTES]
_PLAIN = {(m, p): fn for m, p, fn in ROUTES if re.escape(p) == p}  # no pattern: a dict look-up

# Answers that need no disk, no process and no lock, given on the server's event loop; each
# returns None when it cannot answer that way (the list, when its cache is stale).
AT_ONCE: dict[Callable, Callable] = {
    system.ping: system.ping,
    system.version: system.version,
    listing.list_: listing.cached,
}


class Router:
    """Finds each request's handler and calls it with the engine and the path's parts."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def __call__(self, request: Request) -> Response:
        handler, parts = _find(request)
        return handler(self.engine, request, **parts)

    def answer_now(self, request: Request) -> Response | None:
        """The answer if it can be given without waiting on anything, else None."""
        handler, parts = _find(request)
        quick = AT_ONCE.get(handler)
        return None if quick is None else quick(self.engine, request, **parts)


def _find(request: Request) -> tuple[Callable, dict[str, str]]:
    handler = _PLAIN.get((request.method, request.path))
    if handler is not None:
        return handler, {}
    for method, pattern, handler in _COMPILED:
        match = pattern.match(request.path)
        if match and method == request.method:  # parts decoded, as Go's router does
            return handler, {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
    raise ApiError(404, "page not found")
