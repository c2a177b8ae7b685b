"""/volumes: create, list, inspect, remove and prune, with dockerd's shapes, filters, status
codes and words (`docker volume ...`, docker-py's `client.volumes`)."""

from __future__ import annotations

import re

from vmctl_agent.api import labelfilter
from vmctl_agent.api.http import ApiError, Response, empty, json_response, parse_filters
from vmctl_agent.volumes.store import Volume

_CREATE_FIELDS = ("Name", "Driver", "DriverOpts", "Labels")
ALL_SINCE = (1, 42)  # prune takes every unused volume before this API version, else `all`


def create(engine, request) -> Response:
    body = request.json()
    for key, value in body.items():
        if key not in _CREATE_FIELDS and value:
            raise ApiError(400, f"{key} is not supported by this engine")
    name, driver = body.get("Name") or "", body.get("Driver") or "local"
    options, labels = _strings(body, "DriverOpts"), _strings(body, "Labels")
    volume = engine.volumes.create(name, driver, options, labels)
    engine.events.publish("volume", "create", volume.name, driver=volume.driver)
    return json_response(volume.inspect(), 201)


def _strings(body: dict, key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ApiError(400, f"{key} must be an object of strings")
    return dict(value)


def list_(engine, request) -> Response:
    filters = parse_filters(request.arg("filters"))
    volumes = engine.volumes.list()
    used = engine.volumes.use_counts() if "dangling" in filters else None
    rows = [v.inspect() for v in volumes if _matches(v, filters, used)]
    return json_response({"Volumes": rows, "Warnings": None})


def _matches(volume: Volume, filters: dict[str, list[str]], used) -> bool:
    checks = {
        "name": lambda v: _name_matches(volume.name, v),
        "driver": lambda v: volume.driver == v,
        "label": lambda v: labelfilter.matches(volume.labels, [v]),
        "label!": lambda v: not labelfilter.matches(volume.labels, [v]),
        "dangling": lambda v: (used[volume.name] == 0) == _truth(v, "dangling"),
    }
    for key, values in filters.items():
        check = checks.get(key)
        if check is None:
            raise ApiError(400, f"invalid filter '{key}'")
        combine = all if key in ("label", "label!") else any
        if not combine(check(v) for v in values):
            return False
    return True


def _name_matches(name: str, wanted: str) -> bool:
    """dockerd matches names as a regular expression (so a plain part of a name matches)."""
    try:
        return re.search(wanted, name) is not None
    except re.error:
        return wanted in name


def _truth(value: str, key: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise ApiError(400, f"invalid filter '{key}={value}'")


def inspect(engine, request, name: str) -> Response:
    return json_response(engine.volumes.get(name).inspect())


def remove(engine, request, name: str) -> Response:
    if engine.volumes.remove(name, force=request.flag("force")):
        engine.events.publish("volume", "destroy", name, driver="local")
    return empty(204)


def prune(engine, request) -> Response:
    """Unused volumes: only anonymous ones unless `all=true`, from API 1.42 (earlier: all)."""
    filters = parse_filters(request.arg("filters"))
    every = _version(request.version) < ALL_SINCE
    every = every or any(_truth(v, "all") for v in filters.pop("all", []))
    for key in filters:
        if key not in ("label", "label!"):
            raise ApiError(400, f"invalid filter '{key}'")

    def wanted(volume: Volume) -> bool:
        return (every or volume.anonymous) and _matches(volume, filters, None)

    deleted, reclaimed = engine.volumes.prune(wanted)
    for name in deleted:
        engine.events.publish("volume", "destroy", name, driver="local")
    engine.events.publish("volume", "prune", "", reclaimed=str(reclaimed))
    return json_response({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed})


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def disk_usage(engine) -> list[dict]:
    """`docker system df -v`'s volumes: each with its size and how many containers use it."""
    used = engine.volumes.use_counts()
    rows = []
    for volume in engine.volumes.list():
        row = volume.inspect()
        row["UsageData"] = {"Size": volume.size(), "RefCount": used[volume.name]}
        rows.append(row)
    return rows
