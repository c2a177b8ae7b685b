"""Which path goes to which handler; versioned (/v1.50/...) and plain paths alike."""

from __future__ import annotations

import re
from collections.abc import Callable

from vmctl_agent.api import containers, events, execs, images, system
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
    ("POST", r"/containers/prune", containers.prune),
    ("POST", r"/images/prune", images.prune),
    ("GET", r"/images/json", images.list_),
    ("POST", r"/images/create", images.create),
    ("GET", r"/images/get", images.save),
    ("POST", r"/images/load", images.load),
    ("GET", rf"/images/{_NAME}/get", images.save),
    ("GET", rf"/images/{_NAME}/json", images.inspect),
    ("POST", rf"/images/{_NAME}/tag", images.tag),
    ("DELETE", rf"/images/{_NAME}", images.remove),
    ("POST", r"/containers/create", containers.create),
    ("GET", r"/containers/json", containers.list_),
    ("GET", rf"/containers/{_ID}/json", containers.inspect),
    ("POST", rf"/containers/{_ID}/start", containers.start),
    ("POST", rf"/containers/{_ID}/stop", containers.stop),
    ("POST", rf"/containers/{_ID}/restart", containers.restart),
    ("POST", rf"/containers/{_ID}/kill", containers.kill),
    ("POST", rf"/containers/{_ID}/wait", containers.wait),
    ("POST", rf"/containers/{_ID}/attach", containers.attach),
    ("POST", rf"/containers/{_ID}/resize", containers.resize),
    ("GET", rf"/containers/{_ID}/logs", containers.logs),
    ("GET", rf"/containers/{_ID}/top", containers.top),
    ("GET", rf"/containers/{_ID}/stats", containers.stats),
    ("DELETE", rf"/containers/{_ID}", containers.remove),
    ("POST", rf"/containers/{_ID}/exec", execs.create),
    ("POST", rf"/exec/{_ID}/start", execs.start),
    ("POST", rf"/exec/{_ID}/resize", execs.resize),
    ("GET", rf"/exec/{_ID}/json", execs.inspect),
]
_COMPILED = [(method, re.compile(pattern + "$"), fn) for method, pattern, fn in ROUTES]


def router(engine) -> Callable[[Request], Response]:
    def route(request: Request) -> Response:
        for method, pattern, handler in _COMPILED:
            match = pattern.match(request.path)
            if match and method == request.method:
                return handler(engine, request, **match.groupdict())
        raise ApiError(404, "page not found")

    return route
