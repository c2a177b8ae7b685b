"""/events: what happened to containers and images, live, as `docker events` shows it.

The engine publishes as it acts (create, start, kill, destroy, pull, tag, delete...); a
container's end (die) and what follows it are published by its supervision (supervision.py).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from vmctl_agent.api import labelfilter
from vmctl_agent.api.http import Response, parse_filters

_HISTORY = 1024
_WITH_DETAIL = ("health_status", "exec_create", "exec_start")
_KEEPALIVE = 1.0


@dataclass(frozen=True)
class Event:
    type: str
    action: str
    actor_id: str
    attributes: dict
    time_ns: int

    def to_json(self) -> dict:
        seconds = self.time_ns // 10**9
        message = {
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": self.attributes},
            "scope": "local",
            "time": seconds,
            "timeNano": self.time_ns,
        }
        if self.type == "container":
            message.update(
                status=self.action,
                id=self.actor_id,
                **({"from": self.attributes["image"]} if "image" in self.attributes else {}),
            )
        return message


class EventBus:
    """Publish to every subscriber; keep the last events for `since`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue] = []
        self._history: deque[Event] = deque(maxlen=_HISTORY)

    def publish(self, type: str, action: str, actor_id: str, /, **attributes: str) -> None:
        event = Event(type, action, actor_id, attributes, time.time_ns())
        with self._lock:
            self._history.append(event)
            for subscriber in self._subscribers:
                subscriber.put(event)

    def subscribe(self) -> tuple[queue.Queue, list[Event]]:
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._subscribers.append(q)
            return q, list(self._history)

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            self._subscribers.remove(q)


def container_event(engine, action: str, container_id: str, container=None, **extra) -> None:
    """Publish with the container's name, image and labels (from `container` if given: an
    auto-removed one may be gone by the time we look)."""
    try:
        c = container or engine.runtime.get(container_id)
        attributes = {"name": c.name, "image": c.config.image, **extra}
        attributes.update(c.config.create_options.labels)
    except Exception:
        attributes = dict(extra)
    engine.events.publish("container", action, container_id, **attributes)


def volume_events(engine, action: str, container) -> None:
    """`mount` as a container starts and `unmount` as it ends, one per volume, as dockerd
    publishes them."""
    for m in container.config.create_options.mounts:
        if m.type != "volume":
            continue
        attributes = {"container": container.id, "driver": m.driver}
        if action == "mount":
            attributes |= {"destination": m.destination, "propagation": m.propagation}
            attributes["read/write"] = str(not m.read_only).lower()
        engine.events.publish("volume", action, m.name, **attributes)


def stream(engine, request) -> Response:
    """GET /events?since=&until=&filters= ; streams until `until` or the client leaves."""
    since = float(request.arg("since") or 0)
    until = float(request.arg("until") or 0)
    filters = parse_filters(request.arg("filters"))
    subscriber, history = engine.events.subscribe()
    past = [e for e in history if since and e.time_ns / 1e9 >= since]
    return Response(200, stream=_messages(engine, subscriber, past, until, filters))


def _messages(engine, subscriber: queue.Queue, past: list[Event], until: float, filters):
    try:
        for event in past:
            if _wanted(event, filters) and (not until or event.time_ns / 1e9 <= until):
                yield json.dumps(event.to_json()).encode() + b"\n"
        while not until or time.time() < until:
            try:
                event = subscriber.get(timeout=_KEEPALIVE)
            except queue.Empty:
                continue
            if _wanted(event, filters):
                yield json.dumps(event.to_json()).encode() + b"\n"
    finally:
        engine.events.unsubscribe(subscriber)


def _wanted(event: Event, filters: dict[str, list[str]]) -> bool:
    checks = {
        "type": lambda v: event.type == v,
        "event": lambda v: event.action == v or _prefix_of(v, event.action),
        "container": lambda v: (
            event.type == "container"
            and (event.actor_id.startswith(v) or event.attributes.get("name") == v)
        ),
        "image": lambda v: event.attributes.get("image") == v or event.actor_id == v,
        "volume": lambda v: event.type == "volume" and event.actor_id == v,
    }
    if not labelfilter.matches(event.attributes, filters.get("label", [])):
        return False
    return all(
        any(checks.get(k, lambda v: True)(v) for v in values)
        for k, values in filters.items()
        if k != "label"
    )


def _prefix_of(wanted: str, action: str) -> bool:
    """As dockerd: `health_status` (and `exec_create`, `exec_start`) match the actions that
    carry a detail after a colon (`health_status: healthy`)."""
    return wanted in _WITH_DETAIL and action.startswith(wanted + ":")
