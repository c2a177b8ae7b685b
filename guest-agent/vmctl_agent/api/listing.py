"""GET /containers/json (`docker ps`), answered from a cache of its serialized body.

Clients poll this list (`docker ps`, the GUI, compose); building it reads every container's
state and checks every running one's processes. So each answer is kept per query string and
given again, from the event loop, until the runtime's generation moves (a container created,
started, ended or removed: containers.Runtime.changed), a Status text in it ("Up 3 seconds")
would read differently, or a second has gone by, whichever is first. Status is still derived
from the containers' records and processes, each time the answer is rebuilt.
"""

from __future__ import annotations

import json
import threading
import time

from vmctl_agent.api import containers, networking
from vmctl_agent.api.ages import human_duration
from vmctl_agent.api.http import ApiError, Response, parse_filters
from vmctl_agent.api.labelfilter import matches as labels_match
from vmctl_agent.runtime import logs as logfile
from vmctl_agent.runtime.healthcheck import STATUSES
from vmctl_agent.runtime.index import Container
from vmctl_agent.runtime.records import ZERO_TIME

MAX_AGE = 1.0  # seconds: what a change the runtime was not told of could hide, at most
MAX_ENTRIES = 64  # distinct query strings kept


class ListCache:
    """Serialized answers by query string, each valid for one generation until a deadline."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, float, bytes]] = {}
        self.building = threading.Lock()  # one rebuild at a time; the others then find it

    def get(self, query: str, generation: int, now: float) -> bytes | None:
        entry = self._entries.get(query)
        if entry is None or entry[0] != generation or now >= entry[1]:
            return None
        return entry[2]

    def put(self, query: str, generation: int, until: float, body: bytes) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {}
        self._entries[query] = (generation, until, body)


def cached(engine, request) -> Response | None:
    """The cached answer, or None: then list_ builds it, on a thread."""
    body = engine.container_list.get(request.raw_query, engine.runtime.generation, time.time())
    return None if body is None else Response(200, body)


def list_(engine, request) -> Response:
    cache = engine.container_list
    with cache.building:
        found = cached(engine, request)
        if found is not None:  # another request built it while this one waited
            return found
        generation = engine.runtime.generation  # read first: a change meanwhile makes it stale
        now = time.time()
        body, valid_for = _build(engine, request, now)
        cache.put(request.raw_query, generation, now + min(valid_for, MAX_AGE), body)
    return Response(200, body)


def _build(engine, request, now: float) -> tuple[bytes, float]:
    """The answer, and for how many seconds its Status texts hold."""
    filters = parse_filters(request.arg("filters"))
    for wanted in filters.get("health", ()):
        if wanted not in STATUSES:
            raise ApiError(400, f"Unrecognised filter value for health: {wanted}")
    found = engine.runtime.list(all=request.flag("all") or "status" in filters)
    rows, valid_for = [], MAX_AGE
    for c in found:
        if _matches(c, filters, engine):
            row, holds = _row(c, now)
            row["Ports"] = networking.list_ports(engine, c)
            row["NetworkSettings"] = {"Networks": networking.list_networks(engine, c)}
            rows.append(row | (containers.disk_sizes(engine, c) if request.flag("size") else {}))
            valid_for = min(valid_for, holds)
    limit = request.int_arg("limit", -1)
    rows = rows[:limit] if limit and limit > 0 else rows
    return json.dumps(rows).encode() + b"\n", valid_for


def _matches(container: Container, filters: dict[str, list[str]], engine) -> bool:
    labels = container.config.create_options.labels
    checks = {
        "network": lambda v: networking.on_network(engine, container, v),
        "status": lambda v: v == ("paused" if container.paused else container.state.status),
        "name": lambda v: v.lstrip("/") in container.name,
        "id": lambda v: container.id.startswith(v),
        "ancestor": lambda v: v in (container.config.image, container.config.image_id),
        "volume": lambda v: _mounts(container, v),
        "health": lambda v: container.health_status == v,
    }
    for key, values in filters.items():
        check = checks.get(key)
        if key == "label":
            if not labels_match(labels, values):
                return False
        elif check is None:
            raise ApiError(400, f"invalid filter '{key}'")
        elif not any(check(v) for v in values):
            return False
    return True


def _mounts(container: Container, wanted: str) -> bool:
    """`--filter volume=`: a volume's name (a bind's source) or a mount point, as dockerd
    matches it."""
    mounts = container.config.create_options.mounts
    return any(wanted in (m.name or m.source, m.destination) for m in mounts if m.listed)


def summary(c: Container) -> dict:
    """A row of the list, as dockerd writes it (Status as of now)."""
    return _row(c, time.time())[0]


def _row(c: Container, now: float) -> tuple[dict, float]:
    process = c.config.process_spec
    status, holds = status_text(c, now)
    row = {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.config.image,
        "ImageID": c.config.image_id,
        "Command": " ".join(process.args),
        "Created": int(logfile.parse_time(c.config.created)),
        "Ports": [],
        "Labels": dict(c.config.create_options.labels),
        "State": "paused" if c.paused else c.state.status,
        "Status": status,
        "HostConfig": {"NetworkMode": c.config.network},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [m.inspect() for m in c.config.create_options.mounts if m.listed],
    }
    return row, holds


def status_text(c: Container, now: float) -> tuple[str, float]:
    """`Up 5 minutes`, `Exited (0) 3 seconds ago`, `Restarting (1) 1 second ago` or
    `Created`, and for how many more seconds it reads so."""
    state = c.state
    if state.running:
        text, holds = _ago(state.started_at, now)
        paused = " (Paused)" if c.paused else ""
        return "Up " + text + paused + _health_text(c), holds
    if state.status in ("exited", "restarting"):
        if state.finished_at == ZERO_TIME:  # an end nobody saw, e.g. a record from a crash
            return f"{state.status.capitalize()} ({state.exit_code})", MAX_AGE
        text, holds = _ago(state.finished_at, now)
        return f"{state.status.capitalize()} ({state.exit_code}) {text} ago", holds
    return "Created", MAX_AGE


def _health_text(c: Container) -> str:
    status = c.health_status
    if status == "none":
        return ""
    return " (health: starting)" if status == "starting" else f" ({status})"


def _ago(stamp: str, now: float) -> tuple[str, float]:
    return human_duration(now - logfile.parse_time(stamp))
