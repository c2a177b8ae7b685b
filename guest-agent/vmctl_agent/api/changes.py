"""/containers/{id}/pause, /unpause, /rename and /update, with dockerd's answers and events."""

from __future__ import annotations

from vmctl_agent.api import events
from vmctl_agent.api.http import ApiError, Response, empty, json_response
from vmctl_agent.runtime.changes import Update
from vmctl_agent.runtime.restarts import RestartPolicy

# What `docker update` may change here; any other field given a value is refused by name.
UPDATABLE = ("Memory", "MemorySwap", "NanoCpus", "CpuShares", "PidsLimit", "RestartPolicy")


def pause(engine, request, id: str) -> Response:
    container = engine.runtime.pause(id)
    events.container_event(engine, "pause", container.id, container)
    return empty(204)


def unpause(engine, request, id: str) -> Response:
    container = engine.runtime.unpause(id)
    events.container_event(engine, "unpause", container.id, container)
    return empty(204)


def rename(engine, request, id: str) -> Response:
    wanted = request.arg("name")
    old = engine.runtime.rename(id, wanted)
    container = engine.runtime.get(id if id.lstrip("/") != old else wanted)
    events.container_event(engine, "rename", container.id, container, oldName="/" + old)
    return empty(204)


def update(engine, request, id: str) -> Response:
    body = request.json() or {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid update: the body must be a JSON object")
    container = engine.runtime.update(id, _update(body))
    events.container_event(engine, "update", container.id, container)
    return json_response({"Warnings": []})


def _update(body: dict) -> Update:
    unsupported = sorted(k for k, v in body.items() if k not in UPDATABLE and _given(v))
    if unsupported:
        names = ", ".join(unsupported)
        raise ApiError(400, f"this engine cannot update {names} of a container (yet)")
    if body.get("MemorySwap") not in (None, 0, -1):
        raise ApiError(400, "this engine cannot update MemorySwap of a container (yet)")
    policy = body.get("RestartPolicy") or {}
    try:
        return Update(
            memory=_positive(body, "Memory"),
            nano_cpus=_positive(body, "NanoCpus"),
            cpu_shares=_positive(body, "CpuShares"),
            pids_limit=None if body.get("PidsLimit") is None else int(body["PidsLimit"]),
            restart_policy=_restart_policy(policy),
        )
    except (TypeError, ValueError) as e:
        raise ApiError(400, f"invalid update: {e}") from None


def _given(value) -> bool:
    """dockerd's clients send every field, zero for "leave it": only a value asks for a change."""
    return value not in (None, 0, "", [], {}, False)


def _positive(body: dict, key: str) -> int | None:
    value = int(body.get(key) or 0)
    return value or None  # 0: unchanged


def _restart_policy(policy: dict) -> RestartPolicy | None:
    if not policy.get("Name"):
        return None
    return RestartPolicy(str(policy["Name"]), int(policy.get("MaximumRetryCount") or 0))
